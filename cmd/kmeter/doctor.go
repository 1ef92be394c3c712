package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var opts doctor.Options
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check whether this host can run the agent, hook by hook",
		Long: `Doctor prints the kernel version, BTF, cgroup2 mount, bpffs, capabilities and, for
each kernel hook kmeter may use, whether a program of that kind loads and attaches
here. It exits non-zero when the agent could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := doctor.Run(opts)
			if err := r.Write(cmd.OutOrStdout()); err != nil {
				return err
			}
			if !r.OK() {
				return &exitError{code: 1, err: errors.New("host is not ready (see the FAIL lines above)")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.PinDir, "pin-dir", "/sys/fs/bpf/kmeter", "pin dir the agent would use")
	cmd.Flags().StringVar(&opts.MountsFile, "mounts", "/proc/mounts", "mount table to find cgroup2 in")
	return cmd
}
