package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/agent"
	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/server"
	"github.com/kmeter/kmeter/internal/tenant"
)

// runFlags are the flags of `kmeter run`.
type runFlags struct {
	listen     string
	interval   time.Duration
	dataDir    string
	pinDir     string
	configFile string
	mountsFile string
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: load the kernel meters and serve /metrics and the API (as root)",
		Long: `Run loads kmeter's eBPF meters, pins their maps and links under --pin-dir so the
kernel keeps counting while the agent restarts, reads the counters every --interval
and serves Prometheus metrics and the JSON API on --listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:9477", "address for /metrics and the HTTP API")
	fl.DurationVar(&f.interval, "interval", 5*time.Second, "how often kernel counters are read and billed")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/kmeter", "directory for the ledger and agent state")
	fl.StringVar(&f.pinDir, "pin-dir", "/sys/fs/bpf/kmeter", "bpffs directory for pinned maps and links")
	fl.StringVar(&f.configFile, "config", "", "YAML config file (tenants, pricing, limits, slices); see docs/config.md")
	fl.StringVar(&f.mountsFile, "mounts", "/proc/mounts", "mount table used to find the cgroup2 file system")
	_ = fl.MarkHidden("mounts")
	return cmd
}

func runAgent(ctx context.Context, f runFlags) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := &config.Config{}
	if f.configFile != "" {
		var err error
		if cfg, err = config.Load(f.configFile); err != nil {
			return err
		}
	}
	if f.interval <= 0 {
		return fmt.Errorf("--interval %v must be positive", f.interval)
	}
	cgroupDir, err := hostfs.Cgroup2Dir(f.mountsFile)
	if err != nil {
		return fmt.Errorf("find cgroup2 mount in %s: %w", f.mountsFile, err)
	}
	if err := hostfs.EnsureBPFFS(f.pinDir); err != nil {
		return fmt.Errorf("prepare --pin-dir: %w", err)
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir: %w", err)
	}
	// Bind first: a port in use is reported before any program loads.
	mux := http.NewServeMux()
	srv, err := server.Listen(f.listen, mux)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	res, err := tenant.NewResolver(cgroupDir, cfg.Tenants)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Meter:    meter.Config{PinDir: f.pinDir, CgroupDir: cgroupDir},
		Interval: f.interval,
		DataDir:  f.dataDir,
		Resolver: res,
		Openers:  agent.Meters(),
		Logger:   log,
	})
	if err != nil {
		return err
	}
	defer a.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), a.Collector())
	for _, m := range a.Meters() {
		if c, ok := m.(prometheus.Collector); ok {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("register metrics of meter %s: %w", m.Status().Meter, err)
			}
		}
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	a.Register(mux)

	log.Info("kmeter running", "listen", srv.Addr(), "interval", f.interval, "pin_dir", f.pinDir, "cgroup2", cgroupDir)
	err = a.Run(ctx, nil)
	log.Info("kmeter stopped; pinned programs keep counting until the next start")
	return err
}
