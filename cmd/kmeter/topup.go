package main

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/ledger"
)

// newTopupCmd is `kmeter topup`: credit a prepaid balance, straight into
// the ledger (the agent need not run; over HTTP use POST /v1/topups).
func newTopupCmd() *cobra.Command {
	var (
		lf             ledgerFlags
		currency, memo string
		key            string
	)
	cmd := &cobra.Command{
		Use:   "topup TENANT AMOUNT",
		Short: "Credit a tenant's prepaid balance (AMOUNT in currency units, such as 25.50)",
		Long: `Topup credits TENANT with AMOUNT of --currency, writing directly to the ledger in
--data-dir (or --ledger postgres://...). It is applied once per --key: run it again
with the same --key and the same amount and nothing new is booked. Without --key a
random key is made and printed, so a retry must pass it.`,
		Example: `  kmeter topup shop 25.50 --currency USD --key order-1234
  kmeter topup shop 0.000001 --currency USD   # one micro-unit`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			micro, err := ledger.ParseAmount(args[1])
			if err != nil {
				return err
			}
			if key == "" {
				var b [16]byte
				if _, err := rand.Read(b[:]); err != nil {
					return err
				}
				key = hex.EncodeToString(b[:])
			}
			l, err := lf.open(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			res, err := l.TopUp(cmd.Context(), ledger.TopUp{Tenant: args[0], AmountMicro: micro, Currency: currency, Memo: memo, Key: key})
			if err != nil {
				return err
			}
			return printLedgerJSON(cmd, struct {
				Key string `json:"idempotency_key"`
				ledger.TopUpResult
			}{key, res})
		},
	}
	cmd.Flags().StringVar(&currency, "currency", "USD", "ISO 4217 currency code")
	cmd.Flags().StringVar(&memo, "memo", "", "note recorded with the top-up")
	cmd.Flags().StringVar(&key, "key", "", "idempotency key (default: random, printed)")
	lf.add(cmd)
	return cmd
}
