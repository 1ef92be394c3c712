// Package agent wires kmeter's data flow together: it opens the kernel
// meters, reads their per-cgroup counters every interval, aggregates them
// per tenant, and publishes the result to /metrics, the HTTP API and the
// usage windows that bill it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
	"github.com/kmeter/kmeter/internal/tenant"
)

// Opener opens one kernel meter.
type Opener struct {
	// Name is the meter's name, reported when it cannot attach.
	Name string
	// Counters are the counter names it would produce.
	Counters []string
	Open     func(meter.Config) (meter.Meter, error)
}

// Config configures an [Agent]. It is validated by [New].
type Config struct {
	Meter    meter.Config
	Interval time.Duration
	// DataDir keeps the agent's state (cgroup path cache, ledger).
	DataDir  string
	Resolver *tenant.Resolver
	Openers  []Opener
	// Enforced, when set, reads the enforcement decisions per tenant and
	// kind, so they show beside usage in /v1/usage and `kmeter top`.
	Enforced func() (map[string]map[string]uint64, error)
	// OnTLSEvent, when set, receives every TLS handshake record from the
	// ring buffer (for per-event pricing); it must not block.
	OnTLSEvent func(tlsmeter.Event)
	Logger     *slog.Logger
}

func (c Config) validate() error {
	var errs []error
	if err := meter.CheckConfig(c.Meter, true); err != nil {
		errs = append(errs, err)
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v must be positive", c.Interval))
	}
	if c.Resolver == nil {
		errs = append(errs, errors.New("no tenant resolver"))
	}
	if len(c.Openers) == 0 {
		errs = append(errs, errors.New("no meters to open"))
	}
	return errors.Join(errs...)
}

// Snapshot is the cumulative usage read at one moment.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Tenants maps tenant -> counter -> cumulative value.
	Tenants map[string]map[string]uint64 `json:"tenants"`
	// SyscallsByNumber maps tenant -> syscall number -> cumulative count.
	SyscallsByNumber map[string]map[uint32]uint64 `json:"syscalls_by_number,omitempty"`
	// Enforced maps tenant -> enforcement kind -> decisions (drops,
	// denied connects) made by the in-kernel limiter.
	Enforced map[string]map[string]uint64 `json:"enforced,omitempty"`
	// Unavailable lists counters whose meter could not attach: they are
	// not zero, they are unknown.
	Unavailable []string `json:"unavailable,omitempty"`
}

// Agent reads the kernel meters. It is safe for concurrent use.
type Agent struct {
	cfg      Config
	meters   []meter.Meter
	statuses []meter.Status
	log      *slog.Logger

	snap       atomic.Pointer[Snapshot]
	readErrors atomic.Uint64

	readMu     sync.Mutex
	unresolved map[uint64]bool // cgroup ids no rescan could name
	// counts and rowTenants are a read's table and the tenant of each of
	// its rows, kept across reads (under readMu) so that a read fills
	// them without allocating; only the snapshot is new.
	counts     meter.Counts
	rowTenants []string
	walkLogged bool // the fallback to rescans was logged

	events    *tlsEvents
	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New opens every meter. A meter that cannot attach is reported in
// [Agent.Statuses] and logged, and the agent runs with the others; New
// fails only when no meter attached at all.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: log, stop: func() {}, unresolved: map[uint64]bool{}}
	var errs []error
	for _, o := range cfg.Openers {
		m, err := o.Open(cfg.Meter)
		if err != nil {
			errs = append(errs, fmt.Errorf("meter %s: %w", o.Name, err))
			a.statuses = append(a.statuses, meter.Status{Meter: o.Name, Counters: o.Counters, Err: err.Error()})
			log.Error("meter not attached: its counters are unavailable", "meter", o.Name, "counters", o.Counters, "err", err)
			continue
		}
		st := m.Status()
		a.meters = append(a.meters, m)
		a.statuses = append(a.statuses, st)
		log.Info("meter attached", "meter", st.Meter, "hook", st.Hook, "fallback", st.Fallback, "reused_pinned_link", st.Reused)
	}
	if len(a.meters) == 0 {
		return nil, fmt.Errorf("no meter attached (run `kmeter doctor`): %w", errors.Join(errs...))
	}
	if err := cfg.Resolver.Load(a.pathCache()); err != nil {
		log.Warn("cgroup path cache ignored", "err", err)
	}
	var ctx context.Context
	ctx, a.stop = context.WithCancel(context.Background())
	for _, m := range a.meters {
		if tm, ok := m.(*tlsmeter.Meter); ok {
			ev, err := startTLSEvents(ctx, &a.wg, tm, cfg.OnTLSEvent)
			if err != nil {
				a.Close()
				return nil, fmt.Errorf("read tls events: %w", err)
			}
			a.events = ev
		}
	}
	if _, err := a.Read(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Agent) pathCache() string { return filepath.Join(a.cfg.DataDir, "cgroup-paths.json") }

// Statuses reports every meter's hook, or why it could not attach.
func (a *Agent) Statuses() []meter.Status { return a.statuses }

// Meters returns the attached meters, for collectors that export what a
// particular meter knows (ring buffer statistics, map sizes).
func (a *Agent) Meters() []meter.Meter { return a.meters }

// Resolver returns the tenant resolver.
func (a *Agent) Resolver() *tenant.Resolver { return a.cfg.Resolver }

// read reads the cumulative per-cgroup counts of every attached meter
// into a.counts, the syscalls meter's breakdown by number included.
func (a *Agent) read() error {
	a.counts.Reset()
	var errs []error
	for _, m := range a.meters {
		if err := m.ReadInto(&a.counts); err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", m.Status().Meter, err))
		}
	}
	return errors.Join(errs...)
}

// Read reads every meter now, aggregates per tenant, and publishes the
// snapshot returned by [Agent.Latest].
func (a *Agent) Read() (*Snapshot, error) {
	a.readMu.Lock()
	defer a.readMu.Unlock()
	if err := a.read(); err != nil {
		a.readErrors.Add(1)
		return nil, err
	}
	if err := a.resolve(&a.counts); err != nil {
		a.readErrors.Add(1)
		return nil, err
	}
	s := &Snapshot{Time: time.Now()}
	s.Tenants, s.SyscallsByNumber = a.perTenant()
	if a.cfg.Enforced != nil {
		var err error
		if s.Enforced, err = a.cfg.Enforced(); err != nil {
			a.readErrors.Add(1)
			return nil, fmt.Errorf("read enforcement counters: %w", err)
		}
	}
	for _, st := range a.statuses {
		if st.Err != "" {
			s.Unavailable = append(s.Unavailable, st.Counters...)
		}
	}
	sort.Strings(s.Unavailable)
	a.snap.Store(s)
	return s, nil
}

// perTenant adds a.counts up per tenant into new maps: snapshots are
// shared, so each has its own. A tenant's maps are made at their final
// size (most tenants have one cgroup), and each cgroup is named once.
// The breakdown by number is nil when no meter gave one.
func (a *Agent) perTenant() (map[string]map[string]uint64, map[string]map[uint32]uint64) {
	rows := a.counts.Rows()
	tenants := make(map[string]map[string]uint64, len(rows))
	a.rowTenants = slices.Grow(a.rowTenants[:0], len(rows))[:len(rows)]
	for i := range rows {
		r := &rows[i]
		t := a.cfg.Resolver.Tenant(r.Cgroup)
		a.rowTenants[i] = t
		m := tenants[t]
		if m == nil {
			m = make(map[string]uint64, r.Len())
			tenants[t] = m
		}
		for k := range meter.Counter(meter.NumCounters) {
			if r.Has(k) {
				m[k.Name()] += r.Values[k]
			}
		}
	}
	nrs := a.counts.Numbers()
	if len(nrs) == 0 {
		return tenants, nil
	}
	byNr := make(map[string]map[uint32]uint64, len(rows))
	// A meter adds a cgroup's numbers one after another: each such run
	// fills one map, made at the run's length.
	for i := 0; i < len(nrs); {
		row := nrs[i].Row
		j := i + 1
		for j < len(nrs) && nrs[j].Row == row {
			j++
		}
		t := a.rowTenants[row]
		m := byNr[t]
		if m == nil {
			m = make(map[uint32]uint64, j-i)
			byNr[t] = m
		}
		for ; i < j; i++ {
			m[nrs[i].Nr] += nrs[i].Count
		}
	}
	return tenants, byNr
}

// resolve names the cgroups in c the resolver does not know. It looks
// them up by id (a few syscalls each) and rescans the whole hierarchy
// only where that does not work: walking 10,000 cgroups cost 0.2 s CPU,
// and on a host where cgroups come and go (containers, tests) it ran on
// almost every read. An id still unknown after that (a cgroup made and
// removed between two reads) is not looked up again.
func (a *Agent) resolve(c *meter.Counts) error {
	var unknown []uint64
	rows := c.Rows()
	for i := range rows {
		id := rows[i].Cgroup
		if _, ok := a.cfg.Resolver.Path(id); !ok && !a.unresolved[id] {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	gone, err := a.cfg.Resolver.LookupIDs(unknown)
	if err == nil {
		for _, id := range gone {
			a.unresolved[id] = true
		}
		return nil
	}
	if !a.walkLogged {
		a.walkLogged = true
		a.log.Info("cgroups cannot be looked up by id here; rescanning the hierarchy when new ones appear", "err", err)
	}
	if err := a.cfg.Resolver.Refresh(); err != nil {
		return err
	}
	for _, id := range unknown {
		if _, ok := a.cfg.Resolver.Path(id); !ok {
			a.unresolved[id] = true
		}
	}
	return nil
}

// Latest returns the last snapshot published by Read.
func (a *Agent) Latest() *Snapshot { return a.snap.Load() }

// ReadErrors is the number of reads that failed.
func (a *Agent) ReadErrors() uint64 { return a.readErrors.Load() }

// Run reads the meters every interval until ctx is done, then saves the
// cgroup path cache. Failed reads are logged and counted; the loop goes on.
func (a *Agent) Run(ctx context.Context, onRead func(*Snapshot)) error {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	saved := -1
	for {
		// Save the cgroup path cache as soon as a new cgroup is seen, so
		// that after a SIGKILL the usage of a cgroup removed meanwhile
		// still goes to its tenant.
		if n := a.cfg.Resolver.Known(); n != saved {
			if err := a.cfg.Resolver.Save(a.pathCache()); err != nil {
				a.log.Warn("save cgroup path cache", "err", err)
			} else {
				saved = n
			}
		}
		select {
		case <-ctx.Done():
			return a.cfg.Resolver.Save(a.pathCache())
		case <-t.C:
			s, err := a.Read()
			if err != nil {
				a.log.Error("read meters", "err", err)
				continue
			}
			if onRead != nil {
				onRead(s)
			}
		}
	}
}

// Close closes the meters. Their programs stay attached through pinned
// links and keep counting until the next agent starts. Close is idempotent.
func (a *Agent) Close() error {
	var errs []error
	a.closeOnce.Do(func() {
		a.stop()
		a.wg.Wait()
		for _, m := range a.meters {
			errs = append(errs, m.Close())
		}
	})
	return errors.Join(errs...)
}
