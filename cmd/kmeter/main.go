// Command kmeter meters what each tenant asks of the Linux kernel, enforces
// per-tenant limits in the kernel and prices usage with signed Wasm plugins.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kmeter:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kmeter",
		Short:         "Meter, limit and bill what tenants ask of the Linux kernel",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each subcommand lives in its own file as newXxxCmd.
	root.AddCommand(
		newRunCmd(),
		newDoctorCmd(),
		newTopCmd(),
		newLimitCmd(),
		newPluginCmd(),
		newAuditCmd(),
		newTraceCmd(),
		newTenantsCmd(), newTopupCmd(), newInvoiceCmd(), newLedgerCmd(),
	)
	return root
}

// exitError carries a specific exit code (for example 1 for "invalid" from
// plugin verify) through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
