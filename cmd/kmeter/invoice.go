package main

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/invoice"
)

// newInvoiceCmd is `kmeter invoice`: a tenant's invoice for one period.
func newInvoiceCmd() *cobra.Command {
	var (
		lf                               ledgerFlags
		tenant, period, format, currency string
	)
	cmd := &cobra.Command{
		Use:     "invoice",
		Short:   "Print a tenant's invoice for a period as JSON, CSV or HTML",
		Example: `  kmeter invoice --tenant shop --period 2026-11 --format html > shop-2026-11.html`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" || period == "" {
				return errors.New("--tenant and --period (YYYY-MM) are required")
			}
			if !strings.Contains(" "+strings.Join(invoice.Formats, " ")+" ", " "+format+" ") {
				return errors.New("--format must be one of " + strings.Join(invoice.Formats, ", "))
			}
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			inv, err := invoice.Build(cmd.Context(), l, tenant, period, currency)
			if err != nil {
				return err
			}
			return inv.Write(cmd.OutOrStdout(), format)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant name")
	cmd.Flags().StringVar(&period, "period", "", "billing period, a month such as 2026-11")
	cmd.Flags().StringVar(&format, "format", "json", "json, csv or html")
	cmd.Flags().StringVar(&currency, "currency", "", "currency, when the tenant was charged in several")
	lf.add(cmd)
	return cmd
}
