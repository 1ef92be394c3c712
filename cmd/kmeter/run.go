package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/kmeter/kmeter/internal/agent"
	"github.com/kmeter/kmeter/internal/billing"
	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/exposition"
	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/limitapi"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/quota"
	"github.com/kmeter/kmeter/internal/server"
	"github.com/kmeter/kmeter/internal/tenant"
	"github.com/kmeter/kmeter/internal/window"
)

// runFlags are the flags of `kmeter run`.
type runFlags struct {
	listen     string
	interval   time.Duration
	dataDir    string
	pinDir     string
	configFile string
	mountsFile string

	nodeID        string
	ledgerURL     string
	plugin        string
	trustedKeys   string
	revocations   string
	allowUnsigned bool
	tokenFile     string
	protectReads  bool
	noEnforcement bool
	// billInterval is the usage window length; 0 means bill_interval
	// from the config, else interval.
	billInterval time.Duration
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: load the kernel meters and serve /metrics and the API (as root)",
		Long: `Run loads kmeter's eBPF meters, pins their maps and links under --pin-dir so the
kernel keeps counting while the agent restarts, reads the counters every --interval
and serves Prometheus metrics and the JSON API on --listen. Usage is priced and
committed to the ledger every --bill-interval (default: every --interval); longer
windows bill the same totals with fewer, larger ledger rows.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:9477", "address for /metrics and the HTTP API")
	fl.DurationVar(&f.interval, "interval", 5*time.Second, "how often kernel counters are read (and billed, unless --bill-interval is longer)")
	fl.DurationVar(&f.billInterval, "bill-interval", 0, "usage window length: how often usage is priced and committed to the ledger; at least --interval (default: bill_interval from the config, else --interval)")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/kmeter", "directory for the ledger and agent state")
	fl.StringVar(&f.pinDir, "pin-dir", "/sys/fs/bpf/kmeter", "bpffs directory for pinned maps and links")
	fl.StringVar(&f.configFile, "config", "", "YAML config file (tenants, pricing, limits, slices); see docs/config.md")
	fl.StringVar(&f.mountsFile, "mounts", "/proc/mounts", "mount table used to find the cgroup2 file system")
	_ = fl.MarkHidden("mounts")
	fl.StringVar(&f.nodeID, "node-id", "", "this agent's name in the ledger (default: node_id from the config, else the host name)")
	fl.StringVar(&f.ledgerURL, "ledger", "", "PostgreSQL URL (postgres://...) for a fleet ledger; default SQLite in --data-dir")
	fl.StringVar(&f.plugin, "plugin", "", "signed Wasm pricing plugin for every tenant and meter (config pricing rules are more specific)")
	fl.StringVar(&f.trustedKeys, "trusted-keys", "", "directory of trusted publisher keys (*.pub); plugins must be signed by one")
	fl.StringVar(&f.revocations, "revocations", "", "file of revoked publisher keys and plugin sha256s, re-read on every load")
	fl.BoolVar(&f.allowUnsigned, "allow-unsigned", false, "DEVELOPMENT ONLY: load plugins without checking signatures")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token required by API writes (without it, writes are refused)")
	fl.BoolVar(&f.protectReads, "protect-reads", false, "require the bearer token for API reads too")
	fl.BoolVar(&f.noEnforcement, "no-enforcement", false, "do not load the in-kernel limiter (limits and quota policies are then unavailable)")
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
	billFlag := f.billInterval
	if billFlag == 0 {
		billFlag = cfg.BillInterval
	}
	billEvery, err := billing.WindowInterval(f.interval, billFlag)
	if err != nil {
		return err
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
	var token httpauth.Token
	if f.tokenFile != "" {
		if token, err = httpauth.FromFile(f.tokenFile); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}

	var enf *enforce.Enforcer
	if !f.noEnforcement {
		if enf, err = enforce.Open(enforce.Config{PinDir: f.pinDir, CgroupDir: cgroupDir, Resolver: res}); err != nil {
			return fmt.Errorf("load the in-kernel limiter (or run with --no-enforcement): %w", err)
		}
		defer enf.Close()
		if err := enf.ApplyConfig(cfg); err != nil {
			return fmt.Errorf("apply limits and slices from the config: %w", err)
		}
	}

	acfg := agent.Config{
		Meter:    meter.Config{PinDir: f.pinDir, CgroupDir: cgroupDir},
		Interval: f.interval,
		DataDir:  f.dataDir,
		Resolver: res,
		Openers:  agent.Meters(),
		Logger:   log,
	}
	if enf != nil {
		acfg.Enforced = enf.Enforced
	}
	a, err := agent.New(acfg)
	if err != nil {
		return err
	}
	defer a.Close()

	rules := cfg.Pricing
	if f.plugin != "" {
		rules = append(rules, config.PricingRule{Plugin: f.plugin})
	}
	nodeID := f.nodeID
	if nodeID == "" {
		nodeID = cfg.NodeID
	}
	if nodeID == "" {
		nodeID = billing.NodeID()
	}
	bill, err := billing.Open(ctx, billing.Config{
		NodeID:         nodeID,
		DataDir:        f.dataDir,
		LedgerURL:      f.ledgerURL,
		Interval:       billEvery,
		Rules:          rules,
		Tenants:        cfg.Tenants,
		TrustedKeysDir: f.trustedKeys,
		RevocationFile: f.revocations,
		AllowUnsigned:  f.allowUnsigned,
		Token:          token,
		ProtectReads:   f.protectReads,
		// The biller walks the latest snapshot in place (snapshots are
		// never changed once published), in billing order.
		Source: window.SortedWalk(func(_ context.Context, fn func(tenant, meter string, count uint64)) error {
			s := a.Latest()
			if s == nil {
				return errors.New("no usage read yet")
			}
			s.Tenants.Walk(fn)
			return nil
		}),
		Attrs: res.Attributes,
		Log:   log,
	})
	if err != nil {
		return err
	}
	defer bill.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), a.Collector())
	for _, m := range a.Meters() {
		if c, ok := m.(prometheus.Collector); ok {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("register metrics of meter %s: %w", m.Status().Meter, err)
			}
		}
	}
	for _, c := range bill.Collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register billing metrics: %w", err)
		}
	}
	metrics, err := exposition.NewHandler(reg, append([]exposition.Source{a.UsageFamilies()}, bill.Sources()...), exposition.HandlerOpts{ErrorLog: log})
	if err != nil {
		return fmt.Errorf("serve /metrics: %w", err)
	}
	mux.Handle("GET /metrics", metrics)
	var onRead func(*agent.Snapshot)
	if enf != nil {
		reg.MustRegister(enf.Collector())
		limits := limitapi.Handler(enf, token)
		mux.Handle("/v1/limits", limits)
		mux.Handle("/v1/limits/", limits)
		q, err := quota.New(bill.Ledger(), enf, cfg.Tenants, log)
		if err != nil {
			return err
		}
		if q.Tenants() > 0 {
			onRead = func(*agent.Snapshot) {
				if err := q.Apply(ctx); err != nil {
					log.Error("quota policies", "err", err)
				}
			}
			onRead(nil) // a tenant with an empty balance is throttled from the start
		}
	}
	// /readyz goes up last: a client that saw it ready also sees the
	// quota policies applied.
	a.Register(mux)
	bill.Register(mux)

	log.Info("kmeter running", "listen", srv.Addr(), "interval", f.interval, "bill_interval", billEvery, "pin_dir", f.pinDir, "cgroup2", cgroupDir, "node_id", nodeID)
	billErr := make(chan error, 1)
	go func() { billErr <- bill.Run(ctx) }()
	err = a.Run(ctx, onRead)
	if berr := <-billErr; berr != nil {
		err = errors.Join(err, fmt.Errorf("billing: %w", berr))
	}
	log.Info("kmeter stopped; pinned programs keep counting until the next start")
	return err
}
