// Package agent wires kmeter's data flow together: it opens the kernel
// meters, reads their per-cgroup counters every interval, aggregates them
// per tenant, and publishes the result to /metrics, the HTTP API and the
// usage windows that bill it.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
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
	// Tenants holds each tenant's cumulative counters; in JSON
	// tenant -> counter -> value.
	Tenants Usage `json:"tenants"`
	// SyscallsByNumber holds each tenant's cumulative syscalls by
	// number; in JSON tenant -> syscall number -> count.
	SyscallsByNumber Syscalls `json:"syscalls_by_number,omitzero"`
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
	// counts is a read's table, kept across reads (under readMu) so that
	// a read fills it without allocating; only the snapshot is new.
	counts meter.Counts
	// What perTenant keeps across reads: the tenant of each row of
	// counts, the rows in tenant order (still in order on the next read
	// while the tenants stay), each row's tenant index in the snapshot,
	// a write position per tenant, and the tenant names of the last
	// snapshot, shared by the next while they are the same (a published
	// slice is never changed).
	rowTenants []string
	order      []int32
	rowIndex   []int32
	pos        []int32
	lastNames  []string
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

// perTenant adds a.counts up per tenant into a new [Usage] and
// [Syscalls]: snapshots are shared, so each has its own, made of a few
// flat slices (a map per tenant was 5 MB per read at 10,000 tenants).
// Each cgroup is named once. Tenants are sorted by sorting the rows by
// tenant; the order is kept for the next read, whose rows are mostly
// the same, and only checked then.
func (a *Agent) perTenant() (Usage, Syscalls) {
	rows := a.counts.Rows()
	n := len(rows)
	a.rowTenants = slices.Grow(a.rowTenants[:0], n)[:n]
	for i := range rows {
		a.rowTenants[i] = a.cfg.Resolver.Tenant(rows[i].Cgroup)
	}
	tenantOf := a.rowTenants
	if len(a.order) != n || !slices.IsSortedFunc(a.order, func(x, y int32) int { return strings.Compare(tenantOf[x], tenantOf[y]) }) {
		a.order = slices.Grow(a.order[:0], n)[:n]
		for i := range a.order {
			a.order[i] = int32(i)
		}
		slices.SortFunc(a.order, func(x, y int32) int { return strings.Compare(tenantOf[x], tenantOf[y]) })
	}
	nt := 0
	for k, ri := range a.order {
		if k == 0 || tenantOf[ri] != tenantOf[a.order[k-1]] {
			nt++
		}
	}
	// The names are the last snapshot's while they are the same.
	names := a.lastNames
	var fresh []string
	if len(names) != nt {
		fresh = make([]string, nt)
	}
	counters := make([]Counters, nt)
	a.rowIndex = slices.Grow(a.rowIndex[:0], n)[:n]
	ti := -1
	for k, ri := range a.order {
		t := tenantOf[ri]
		if k == 0 || t != tenantOf[a.order[k-1]] {
			ti++
			if fresh == nil && names[ti] != t {
				fresh = make([]string, nt)
				copy(fresh, names[:ti])
			}
			if fresh != nil {
				fresh[ti] = t
			}
		}
		a.rowIndex[ri] = int32(ti)
		counters[ti].add(&rows[ri])
	}
	if fresh != nil {
		names = fresh
		a.lastNames = fresh
	}
	u := Usage{names: names, rows: counters}
	nrs := a.counts.Numbers()
	if len(nrs) == 0 {
		return u, Syscalls{}
	}
	// The counts by number, grouped by tenant (a counting sort), then
	// each tenant's sorted by number and their repeats added up.
	starts := make([]int32, nt+1)
	for _, c := range nrs {
		starts[a.rowIndex[c.Row]+1]++
	}
	for i := 1; i <= nt; i++ {
		starts[i] += starts[i-1]
	}
	a.pos = append(a.pos[:0], starts[:nt]...)
	counts := make([]SyscallCount, len(nrs))
	for _, c := range nrs {
		ti := a.rowIndex[c.Row]
		counts[a.pos[ti]] = SyscallCount{Nr: c.Nr, Count: c.Count}
		a.pos[ti]++
	}
	w := int32(0)
	for ti := range nt {
		run := counts[starts[ti]:starts[ti+1]]
		if !slices.IsSortedFunc(run, bySyscall) {
			slices.SortFunc(run, bySyscall)
		}
		starts[ti] = w
		for _, c := range run { // w never passes the count read
			if w > starts[ti] && counts[w-1].Nr == c.Nr {
				counts[w-1].Count += c.Count
				continue
			}
			counts[w] = c
			w++
		}
	}
	starts[nt] = w
	return u, Syscalls{names: names, starts: starts, counts: counts[:w:w]}
}

func bySyscall(x, y SyscallCount) int { return cmp.Compare(x.Nr, y.Nr) }

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
