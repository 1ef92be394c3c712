package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/ledger"
)

// ledgerFlags are the flags of commands that open the ledger directly:
// SQLite in --data-dir by default, or PostgreSQL with --ledger.
type ledgerFlags struct {
	dataDir string
	url     string
}

func (f *ledgerFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "/var/lib/kmeter", "agent data directory holding the SQLite ledger ("+ledger.DBFile+")")
	cmd.Flags().StringVar(&f.url, "ledger", "", "PostgreSQL ledger URL (postgres://...) instead of SQLite in --data-dir")
}

func (f *ledgerFlags) open(cmd *cobra.Command) (*ledger.Ledger, error) {
	cfg, err := ledger.ConfigFrom(f.dataDir, f.url)
	if err != nil {
		return nil, err
	}
	return ledger.Open(cmd.Context(), cfg)
}

// newLedgerCmd is `kmeter ledger`: checks and corrections on the ledger.
func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Verify the ledger, close billing periods, reverse entries",
	}
	cmd.AddCommand(newLedgerVerifyCmd(), newLedgerCloseCmd(), newLedgerReverseCmd(), newLedgerTotalsCmd())
	return cmd
}

func newLedgerVerifyCmd() *cobra.Command {
	var lf ledgerFlags
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that debits equal credits and every checkpoint chain is unbroken (exit 1 if not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			r, err := l.Verify(cmd.Context())
			if err != nil {
				return err
			}
			if err := printLedgerJSON(cmd, r); err != nil {
				return err
			}
			if !r.OK() {
				return &exitError{code: 1, err: fmt.Errorf("ledger verify: %d problems found", len(r.Problems))}
			}
			return nil
		},
	}
	lf.add(cmd)
	return cmd
}

func newLedgerCloseCmd() *cobra.Command {
	var lf ledgerFlags
	cmd := &cobra.Command{
		Use:   "close-period PERIOD",
		Short: "Close a billing period (YYYY-MM); later usage for it goes to the next period, flagged late",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			if err := l.ClosePeriod(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "period %s closed\n", args[0])
			return nil
		},
	}
	lf.add(cmd)
	return cmd
}

func newLedgerReverseCmd() *cobra.Command {
	var lf ledgerFlags
	var memo string
	cmd := &cobra.Command{
		Use:   "reverse ENTRY_ID",
		Short: "Book a reversal of a ledger entry (entries are never edited or deleted)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("entry id %q is not a number", args[0])
			}
			if memo == "" {
				return errors.New("--memo is required: say why the entry is reversed")
			}
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			rid, err := l.Reverse(cmd.Context(), id, memo)
			if err != nil {
				return err
			}
			return printLedgerJSON(cmd, map[string]int64{"reversed": id, "reversal_entry_id": rid})
		},
	}
	cmd.Flags().StringVar(&memo, "memo", "", "why the entry is reversed (recorded in the ledger)")
	lf.add(cmd)
	return cmd
}

func newLedgerTotalsCmd() *cobra.Command {
	var lf ledgerFlags
	cmd := &cobra.Command{
		Use:   "totals",
		Short: "Show what each (node, tenant, meter) series has billed, to reconcile with kernel counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			ts, err := l.Totals(cmd.Context())
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []ledger.Total{}
			}
			return printLedgerJSON(cmd, ts)
		},
	}
	lf.add(cmd)
	return cmd
}

func printLedgerJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
