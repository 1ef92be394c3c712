package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/ledger"
)

// newTenantsCmd is `kmeter tenants`: every tenant in the ledger with its
// balances.
func newTenantsCmd() *cobra.Command {
	var lf ledgerFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "List tenants with their account type and balances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			ts, err := l.Tenants(cmd.Context())
			if err != nil {
				return err
			}
			type row struct {
				ledger.Tenant
				Balances []ledger.Balance `json:"balances"`
			}
			rows := make([]row, 0, len(ts))
			for _, t := range ts {
				bs, err := l.Balances(cmd.Context(), t.Name)
				if err != nil {
					return err
				}
				rows = append(rows, row{t, bs})
			}
			if asJSON {
				return printLedgerJSON(cmd, rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tACCOUNT\tCURRENCY\tBALANCE\tCHARGED\tLOW")
			for _, r := range rows {
				if len(r.Balances) == 0 {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\n", r.Name, r.Account)
				}
				for _, b := range r.Balances {
					low := ""
					if b.Low {
						low = "LOW"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Account, b.Currency,
						ledger.FormatAmount(b.BalanceMicro), ledger.FormatAmount(b.ChargedMicro), low)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	lf.add(cmd)
	return cmd
}
