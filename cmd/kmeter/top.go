package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/top"
)

func newTopCmd() *cobra.Command {
	var (
		srv     string
		every   time.Duration
		rows    int
		once    bool
		timeout = 5 * time.Second
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live per-tenant view of a running agent's meters (rates and totals)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c := &http.Client{Timeout: timeout}
			out := cmd.OutOrStdout()
			prev, err := top.Fetch(ctx, c, srv)
			if err != nil {
				return err
			}
			if once {
				return top.Render(out, nil, prev, rows)
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				cur, err := top.Fetch(ctx, c, srv)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				fmt.Fprint(out, "\033[H\033[2J") // clear the screen
				if err := top.Render(out, prev, cur, rows); err != nil {
					return err
				}
				prev = cur
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&srv, "server", "http://127.0.0.1:9477", "address of the running agent")
	fl.DurationVar(&every, "refresh", 2*time.Second, "refresh period (the agent itself reads every --interval)")
	fl.IntVar(&rows, "rows", 40, "show at most this many tenants (0: all)")
	fl.BoolVar(&once, "once", false, "print totals once and exit")
	return cmd
}
