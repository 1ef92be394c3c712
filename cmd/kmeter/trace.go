package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
)

func newTraceCmd() *cobra.Command {
	trace := &cobra.Command{
		Use:   "trace",
		Short: "Print kernel events live",
	}
	var cgroupDir string
	tls := &cobra.Command{
		Use:   "tls",
		Short: "Print TLS handshakes live, one line each, until Ctrl-C",
		Long: `Print every TLS ClientHello and ServerHello that a TCP socket of any cgroup
sends as its first payload: time, cgroup path, pid, comm, client/server,
TLS version, source -> destination and the SNI server name.

trace tls loads its own private, unpinned copy of the TLS meter: it never
takes events from, nor changes the counts of, a running kmeter agent, and
it detaches when it exits. pid is 0 (and comm "-") when the hello left the
socket outside its process's context, for example from softirq. SNI names
are cut at 127 bytes ("..." marks a cut). At exit it prints how many
events were produced and dropped (ring buffer full). Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cgroupDir == "" {
				dir, err := hostfs.Cgroup2Dir("/proc/mounts")
				if err != nil {
					return err
				}
				cgroupDir = dir
			}
			stats, err := tlsmeter.Trace(cmd.Context(), cmd.OutOrStdout(), cgroupDir)
			if err != nil {
				return fmt.Errorf("trace tls: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "produced %d, delivered %d, dropped %d\n", stats.Produced, stats.Delivered, stats.Dropped)
			return nil
		},
	}
	tls.Flags().StringVar(&cgroupDir, "cgroup2", "", "cgroup v2 mount point (default: found in /proc/mounts)")
	trace.AddCommand(tls)
	return trace
}
