package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/audit"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the hash-chained audit log of plugin loads, refusals and swaps",
	}
	cmd.AddCommand(newAuditVerifyCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var path, anchor string
	cmd := &cobra.Command{
		Use:   "verify [--log FILE] [--anchor HASH]",
		Short: "Verify every link of the audit log (exit 1 naming the first broken line)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			head, err := audit.VerifyFile(path, anchor)
			if errors.Is(err, audit.ErrBroken) {
				return &exitError{code: 1, err: fmt.Errorf("%s: %w", path, err)}
			}
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, %d entries, head %s\n", path, head.Seq, head.Hash)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "log", audit.DefaultPath, "audit log file")
	cmd.Flags().StringVar(&anchor, "anchor", "", "head hash recorded earlier; fails if no entry has it (catches truncation)")
	return cmd
}
