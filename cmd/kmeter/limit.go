package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/limitapi"
)

// newLimitCmd is `kmeter limit`: set, show and remove a tenant's in-kernel
// limits on a running agent.
func newLimitCmd() *cobra.Command {
	var server, tokenFile string
	cmd := &cobra.Command{
		Use:   "limit",
		Short: "Set, show and remove a tenant's in-kernel limits on a running agent",
	}
	cmd.PersistentFlags().StringVar(&server, "server", limitapi.DefaultServer, "agent API base URL")
	cmd.PersistentFlags().StringVar(&tokenFile, "token-file", "", "file holding the agent's API token")
	client := func() (*limitapi.Client, error) {
		c := &limitapi.Client{Server: server}
		if tokenFile != "" {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return nil, fmt.Errorf("read token file: %w", err)
			}
			c.Token = strings.TrimSpace(string(b))
		}
		return c, nil
	}

	var spec enforce.Spec
	set := &cobra.Command{
		Use:   "set TENANT",
		Short: "Set a tenant's limits (replaces the previous ones; unset rates are unlimited)",
		Example: `  kmeter limit set shop --egress 10MiB/s --connect-rate 100/s --connect-burst 100
  kmeter limit set /system.slice/web.service --tls-rate 50/s`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := spec.Parse(); err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			t, err := c.Set(cmd.Context(), args[0], spec)
			if err != nil {
				return err
			}
			return printLimitJSON(cmd, t)
		},
	}
	f := set.Flags()
	f.StringVar(&spec.Egress, "egress", "", "egress bandwidth, like 10MiB/s")
	f.Uint64Var(&spec.EgressBurst, "egress-burst", 0, "egress burst in bytes (default 20 ms of the rate, at least 64 KiB)")
	f.StringVar(&spec.Ingress, "ingress", "", "ingress bandwidth, like 10MiB/s")
	f.Uint64Var(&spec.IngressBurst, "ingress-burst", 0, "ingress burst in bytes")
	f.StringVar(&spec.ConnectRate, "connect-rate", "", "new outbound TCP connections per second, like 100/s")
	f.Uint64Var(&spec.ConnectBurst, "connect-burst", 0, "connections allowed at once (default: one second's worth)")
	f.StringVar(&spec.TLSRate, "tls-rate", "", "TLS handshakes per second, like 50/s")
	f.Uint64Var(&spec.TLSBurst, "tls-burst", 0, "TLS handshakes allowed at once (default: one second's worth)")

	get := &cobra.Command{
		Use:   "get TENANT",
		Short: "Show a tenant's limits, money policy and enforcement counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			t, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printLimitJSON(cmd, t)
		},
	}
	rm := &cobra.Command{
		Use:   "rm TENANT",
		Short: "Remove a tenant's limits (a money policy stays in force)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			return c.Remove(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(set, get, rm)
	return cmd
}

func printLimitJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
