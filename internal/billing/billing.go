// Package billing assembles the money half of the agent: usage windows
// (internal/window) priced by signed Wasm plugins (internal/plugin) and
// committed to the ledger (internal/ledger), plus the money API and its
// metrics. It owns their lifecycle: Open builds everything or nothing,
// Close releases it all.
package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/api"
	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/exposition"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/trust"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// Config configures [Open].
type Config struct {
	// NodeID names this agent in the ledger's exactly-once keys.
	NodeID string
	// DataDir holds the SQLite ledger, the audit log and the compiled
	// plugin cache.
	DataDir string
	// LedgerURL selects PostgreSQL (postgres://...); empty means SQLite.
	LedgerURL string
	// Interval is the usage window length.
	Interval time.Duration
	// Rules assign plugins to tenants and meters.
	Rules []config.PricingRule
	// Tenants are the configured tenants (accounts, thresholds).
	Tenants []config.Tenant
	// TrustedKeysDir holds the publisher keys plugins must be signed with.
	TrustedKeysDir string
	// RevocationFile lists revoked keys and module hashes (optional).
	RevocationFile string
	// AllowUnsigned loads plugins without checking signatures. For
	// development only: it is logged loudly and exported in /metrics.
	AllowUnsigned bool
	// Token guards the API's writes.
	Token httpauth.Token
	// ProtectReads requires the token for API reads too.
	ProtectReads bool
	// Source reads cumulative usage per tenant and meter.
	Source window.Source
	// Attrs returns a tenant's attributes for pricing.
	Attrs func(tenant string) map[string]string
	// ReloadInterval is how often plugin files are checked for a new
	// version (hot reload); default 2s.
	ReloadInterval time.Duration
	Log            *slog.Logger
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if c.Source == nil {
		errs = append(errs, errors.New("no usage source"))
	}
	if len(c.Rules) > 0 && c.TrustedKeysDir == "" && !c.AllowUnsigned {
		errs = append(errs, errors.New("pricing plugins are configured but no --trusted-keys dir is given: name the publishers' keys, or use --allow-unsigned for development"))
	}
	if c.ReloadInterval <= 0 {
		c.ReloadInterval = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return errors.Join(errs...)
}

// ReleaseMemoryAfter is the shortest usage window after which the
// biller hands the memory of its commit back to the OS (a forced
// collection and debug.FreeOSMemory, about one GC's CPU per window).
// At 10,000 tenants a commit grows the heap by about 50 MB that the Go
// runtime would keep resident for minutes: with 60 s windows the agent's
// median RSS was 196 MiB with it kept and 130 MiB with it returned, for
// the same CPU (docs/benchmarks/agent.md). Shorter windows reuse that
// memory soon, and a collection per window would cost them more CPU.
const ReleaseMemoryAfter = 30 * time.Second

// Billing is the running money pipeline. It is safe for concurrent use.
type Billing struct {
	cfg    Config
	ledger *ledger.Ledger
	audit  *audit.Log
	api    *api.API
	router *window.Router // nil when no pricing is configured
	biller *window.Biller
	verify plugin.Verifier

	mu          sync.Mutex
	engines     map[string]*plugin.Engine // plugin path -> engine
	watchCtx    context.Context
	stopWatches context.CancelFunc
	closeOnce   sync.Once
}

// Open opens the ledger, the audit log and the plugins named by the
// pricing rules, and prepares the biller. Without pricing rules usage is
// metered but not billed, and Open says so in the log.
func Open(ctx context.Context, cfg Config) (_ *Billing, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("billing config: %w", err)
	}
	b := &Billing{cfg: cfg, engines: map[string]*plugin.Engine{}}
	b.watchCtx, b.stopWatches = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	lcfg, err := ledger.ConfigFrom(cfg.DataDir, cfg.LedgerURL)
	if err != nil {
		return nil, err
	}
	if b.ledger, err = ledger.Open(ctx, lcfg); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if err := b.ledger.SyncTenants(ctx, ledgerTenants(cfg.Tenants)); err != nil {
		return nil, fmt.Errorf("record configured tenants in the ledger: %w", err)
	}
	if b.audit, err = audit.Open(filepath.Join(cfg.DataDir, "audit.log")); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if b.api, err = api.New(api.Config{Ledger: b.ledger, Token: cfg.Token, ProtectReads: cfg.ProtectReads, Log: cfg.Log}); err != nil {
		return nil, err
	}
	if len(cfg.Rules) == 0 {
		cfg.Log.Warn("no pricing configured (--plugin or pricing: in the config): usage is metered but not billed")
		return b, nil
	}
	if cfg.AllowUnsigned {
		cfg.Log.Warn("UNSIGNED PLUGINS ALLOWED (--allow-unsigned): any module in the pricing rules will run; never use this in production")
		b.verify = plugin.AllowUnsigned()
	} else {
		tv, err := trust.New(trust.Config{KeysDir: cfg.TrustedKeysDir, RevocationFile: cfg.RevocationFile, Audit: b.audit})
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		b.verify = tv
	}
	if b.router, err = window.NewRouter(cfg.Rules, b.pricer); err != nil {
		return nil, fmt.Errorf("load pricing plugins: %w", err)
	}
	wcfg := window.Config{
		NodeID:   cfg.NodeID,
		Source:   cfg.Source,
		Ledger:   b.ledger,
		Pricers:  b.router,
		Interval: cfg.Interval,
		Attrs:    cfg.Attrs,
		Log:      cfg.Log,
	}
	if cfg.Interval >= ReleaseMemoryAfter {
		wcfg.AfterTick = debug.FreeOSMemory
	}
	b.biller, err = window.New(ctx, wcfg)
	if err != nil {
		return nil, fmt.Errorf("start usage windows: %w", err)
	}
	return b, nil
}

func ledgerTenants(ts []config.Tenant) []ledger.Tenant {
	out := make([]ledger.Tenant, 0, len(ts))
	for _, t := range ts {
		out = append(out, ledger.Tenant{Name: t.Name, Account: t.Account, LowBalanceMicro: t.LowBalanceMicro})
	}
	return out
}

// pricer is the router's factory: one engine per plugin file, loaded and
// verified now, then watched for new versions (hot reload).
func (b *Billing) pricer(path string) (pricing.Pricer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.engines[path]; ok {
		return e, nil
	}
	e, err := plugin.New(b.watchCtx, plugin.Config{
		Verifier: b.verify,
		Audit:    b.audit,
		CacheDir: filepath.Join(b.cfg.DataDir, "wasm-cache"),
		Logger:   b.cfg.Log.With("plugin", path),
	})
	if err != nil {
		return nil, fmt.Errorf("plugin engine: %w", err)
	}
	id, err := e.LoadFile(b.watchCtx, path)
	if err != nil {
		e.Close()
		return nil, err // names the path already, as does the router
	}
	b.cfg.Log.Info("plugin live", "path", path, "plugin_sha256", id.SHA256, "signer", id.Signer)
	b.engines[path] = e
	go e.Watch(b.watchCtx, path, b.cfg.ReloadInterval)
	return e, nil
}

// Register mounts the money API on mux.
func (b *Billing) Register(mux *http.ServeMux) { b.api.Register(mux) }

// Ledger returns the open ledger.
func (b *Billing) Ledger() *ledger.Ledger { return b.ledger }

// Collectors returns the metrics of the usage windows and each plugin
// engine (labelled by plugin path). The ledger's per-tenant balances are
// in [Billing.Sources].
func (b *Billing) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{unsignedGauge(b.cfg.AllowUnsigned)}
	if b.biller != nil {
		cs = append(cs, b.biller)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for path, e := range b.engines {
		cs = append(cs, prometheus.WrapCollectorWith(prometheus.Labels{"plugin": path}, e))
	}
	return cs
}

// Sources returns the metric families written straight into /metrics
// (see exposition.NewHandler): the ledger's balances and charges per
// tenant.
func (b *Billing) Sources() []exposition.Source { return []exposition.Source{b.ledger.Families()} }

func unsignedGauge(on bool) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kmeter_plugins_unsigned_allowed",
		Help: "1 when the agent runs with --allow-unsigned (development only): plugin signatures are not checked.",
	})
	if on {
		g.Set(1)
	}
	return g
}

// Run bills a window every interval until ctx is done. Without pricing it
// just waits.
func (b *Billing) Run(ctx context.Context) error {
	if b.biller == nil {
		<-ctx.Done()
		return nil
	}
	err := b.biller.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Close stops plugin watches and closes the engines, the audit log and the
// ledger. It is idempotent.
func (b *Billing) Close() error {
	var errs []error
	b.closeOnce.Do(func() {
		b.stopWatches()
		if b.router != nil {
			errs = append(errs, b.router.Close())
		}
		b.mu.Lock()
		for _, e := range b.engines {
			errs = append(errs, e.Close())
		}
		b.mu.Unlock()
		if b.audit != nil {
			errs = append(errs, b.audit.Close())
		}
		if b.ledger != nil {
			errs = append(errs, b.ledger.Close())
		}
	})
	return errors.Join(errs...)
}

// NodeID returns the default node id: the host name.
func NodeID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	return h
}
