// Package window turns cumulative kernel counters into usage windows and
// bills each window exactly once.
//
// Every interval a [Biller] reads each (tenant, meter) counter, prices the
// growth since the last checkpoint and commits the window, its charges
// and the new checkpoint to the ledger in one transaction keyed by (node,
// tenant, meter, seq). The checkpoint lives only in the ledger, so after a
// crash the next agent resumes from it; pinned kernel counters kept
// counting meanwhile, so nothing is lost and nothing is billed twice.
package window

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/pricing"
)

// Key names one billed series on a node.
type Key struct {
	Tenant string
	Meter  string
}

// String is "tenant/meter".
func (k Key) String() string { return k.Tenant + "/" + k.Meter }

// Source reads cumulative usage: per (tenant, meter) a count that only
// grows while the kernel maps live. A count that goes down means the maps
// were re-created; the biller re-bases it. A Source that also implements
// [Walker] is walked instead, without the map.
type Source interface {
	Read(ctx context.Context) (map[Key]uint64, error)
}

// SourceFunc adapts a function to [Source].
type SourceFunc func(ctx context.Context) (map[Key]uint64, error)

// Read implements [Source].
func (f SourceFunc) Read(ctx context.Context) (map[Key]uint64, error) { return f(ctx) }

// Walker is a [Source] that hands its series to fn one by one instead of
// building a map of them: at 70,000 series the map is about 6 MB built
// and hashed on every tick. Walk calls fn once per series; a tenant's
// series should come one after the other (the biller looks a tenant up
// once per run of its series).
type Walker interface {
	Source
	Walk(ctx context.Context, fn func(tenant, meter string, count uint64)) error
}

// TenantsFunc is a [Walker] over per-tenant cumulative counts (tenant ->
// meter -> count), as the agent's snapshots hold them. The biller reads
// the maps it returns during the tick without copying them, so they must
// not change afterwards (snapshots never do); it reads them tenant by
// tenant rather than through Walk.
type TenantsFunc func(ctx context.Context) (map[string]map[string]uint64, error)

// Read implements [Source] through [FromTenants].
func (f TenantsFunc) Read(ctx context.Context) (map[Key]uint64, error) {
	m, err := f(ctx)
	if err != nil {
		return nil, err
	}
	return FromTenants(m), nil
}

// Walk implements [Walker].
func (f TenantsFunc) Walk(ctx context.Context, fn func(tenant, meter string, count uint64)) error {
	m, err := f(ctx)
	if err != nil {
		return err
	}
	for tenant, byMeter := range m {
		for meter, v := range byMeter {
			fn(tenant, meter, v)
		}
	}
	return nil
}

// Store is the part of the ledger the biller needs; *ledger.Ledger
// implements it.
type Store interface {
	Checkpoints(ctx context.Context, node string) ([]ledger.Checkpoint, error)
	Commit(ctx context.Context, ws ledger.WindowSource) error
}

// Route is the pricer chosen for a series. Name identifies it (the
// plugin path); records with the same Name are priced in one batch.
type Route struct {
	Name   string
	Pricer pricing.Pricer
}

// Pricers picks the pricer of a series; [Router] implements it from the
// config's pricing rules. The biller asks once per series and keeps the
// route it got (an error is not kept: it asks again on the series' next
// window); Pricers whose routes change while the biller runs implement
// [RoutesVersioner].
type Pricers interface {
	PricerFor(tenant, meter string) (Route, error)
}

// RoutesVersioner is implemented by [Pricers] whose routes can change
// while a biller uses them: when RoutesVersion returns another number
// than at the previous tick, the biller asks for every series' route
// again.
type RoutesVersioner interface {
	RoutesVersion() uint64
}

// FaultPoint is a place in [Biller.Tick] where tests inject a crash.
type FaultPoint int

const (
	// AfterPrice is after pricing, before the ledger commit.
	AfterPrice FaultPoint = iota
	// AfterCommit is after the ledger commit, before the biller updates
	// its in-memory checkpoints.
	AfterCommit
)

// Config configures a [Biller].
type Config struct {
	// NodeID is this agent's name in the ledger's idempotency keys. It
	// must be stable across restarts and unique in a fleet.
	NodeID  string
	Source  Source
	Ledger  Store
	Pricers Pricers
	// Interval is the window length; default 5s.
	Interval time.Duration
	// Attrs returns a tenant's attributes for pricing; optional. It is
	// called once per tenant and chunk of records; a tenant's records
	// share the map it returns.
	Attrs func(tenant string) map[string]string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Fault, when set, is called at each [FaultPoint]; an error aborts the
	// tick there as a crash would. For tests.
	Fault func(FaultPoint) error
	// Log receives warnings (counter resets, held windows); default
	// slog.Default().
	Log *slog.Logger
	// AfterTick, when set, runs after every tick of [Biller.Run], such as
	// debug.FreeOSMemory when windows are long: a commit of 70,000
	// windows grows the heap by tens of MB that the Go runtime otherwise
	// keeps resident for minutes, though the next tick is far away.
	AfterTick func()
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is empty (set node_id in the config; it must be unique in the fleet)"))
	}
	if c.Source == nil {
		errs = append(errs, errors.New("usage source is nil"))
	}
	if c.Ledger == nil {
		errs = append(errs, errors.New("ledger is nil"))
	}
	if c.Pricers == nil {
		errs = append(errs, errors.New("pricers are nil"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %v is negative", c.Interval))
	}
	return errors.Join(errs...)
}

// Biller bills usage windows of one node. Its methods are safe for
// concurrent use; ticks run one at a time.
type Biller struct {
	cfg     Config
	started time.Time
	write   prometheus.Histogram

	mu sync.Mutex
	// table holds every series the biller has seen or loaded, with its
	// checkpoint as committed; stale means a commit may or may not have
	// landed and the checkpoints must be read again from the ledger.
	table series
	stale bool
	// next is the node's next window number: above every checkpoint.
	next uint64
	// unbilled is counted but not (yet) billed usage per series: held
	// by a pricing failure or a failed commit.
	unbilled        map[Key]uint64
	resets          map[Key]uint64
	pricingFailures map[string]uint64
	lastTick        time.Time

	// Buffers reused by every tick (ticks hold mu). from[i] is the
	// table row of the tick's window i. windows is kept only for windows
	// shorter than keepWindowsBelow.
	windows []ledger.Window
	from    []int32
	priced  []bool
	recs    []pricing.Record
	charges []pricing.Charge

	// routes are the distinct routes (by name) of the series, in the
	// order first seen; a row keeps the index of its own, so the pricer
	// of a series is asked for once, not on every tick (at 70,000 series
	// PricerFor was a quarter of a tick's CPU besides the commit).
	// routesVersion is the Pricers' RoutesVersion they were asked at.
	// batches[i] lists the tick's windows priced by routes[i].
	routes        []Route
	routeIndex    map[string]int32
	routesVersion uint64
	batches       [][]int32
}

// New validates cfg and loads the node's checkpoints from the ledger.
func New(ctx context.Context, cfg Config) (*Biller, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("window biller: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	b := &Biller{
		cfg:     cfg,
		started: cfg.Now(),
		write: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kmeter_ledger_write_seconds",
			Help:    "Time to commit one usage window (all series of the node) to the ledger.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		unbilled:        map[Key]uint64{},
		resets:          map[Key]uint64{},
		pricingFailures: map[string]uint64{},
	}
	if err := b.load(ctx); err != nil {
		return nil, err
	}
	b.lastTick = b.started
	return b, nil
}

func (b *Biller) load(ctx context.Context) error {
	cps, err := b.cfg.Ledger.Checkpoints(ctx, b.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("load checkpoints: %w", err)
	}
	b.table.resetCheckpoints()
	b.next = 1
	for _, c := range cps {
		r := b.table.row(c.Tenant, c.Meter)
		r.seq, r.counter, r.end = c.Seq, c.Counter, c.End
		b.next = max(b.next, c.Seq+1)
	}
	b.stale = false
	return nil
}

// TickResult says what one tick did.
type TickResult struct {
	// Windows were committed, billing Quantity units in total.
	Windows  int
	Quantity uint64
	// Held series were counted but not billed (pricing failed); their
	// usage is billed by a later tick.
	Held int
	// Rebased series had a counter that went backwards; they were
	// re-based without billing.
	Rebased int
}

// Tick bills one window: it reads the source, prices the growth of every
// series since its checkpoint and commits all windows in one ledger
// transaction. A series whose pricing fails is held: its checkpoint does
// not move and the next tick bills the accumulated growth. A failed
// commit leaves every series unbilled until a later tick.
func (b *Biller) Tick(ctx context.Context) (TickResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var res TickResult
	if b.stale {
		if err := b.load(ctx); err != nil {
			return res, err
		}
	}
	tick, err := b.read(ctx)
	if err != nil {
		return res, fmt.Errorf("read usage: %w", err)
	}
	now := b.cfg.Now()
	b.table.sort()
	rows := b.table.rows
	moved := 0
	for i := range rows {
		if r := &rows[i]; r.tick == tick && r.count != r.counter {
			moved++
		}
	}
	pending, from := b.windowBuffer(moved), b.from[:0]
	for i := range rows {
		r := &rows[i]
		if r.tick != tick {
			continue // not in this reading
		}
		v := r.count
		w := ledger.Window{Node: b.cfg.NodeID, Tenant: r.tenant, Meter: r.meter, Seq: b.next, PrevSeq: r.seq,
			FromCounter: r.counter, ToCounter: v, Start: r.end, End: now}
		if r.seq == 0 {
			w.Start = b.started
		}
		switch {
		case v < r.counter:
			// The maps were re-created (or the tenant's sum lost a
			// cgroup). Which part of v is new usage is unknowable, so the
			// window bills nothing and re-bases: under-billing by at most
			// v, reported, rather than risking billing usage twice.
			w.Rebased = true
			res.Rebased++
			b.resets[Key{r.tenant, r.meter}]++
			b.cfg.Log.Warn("usage counter went backwards; re-basing it without billing", "tenant", r.tenant, "meter", r.meter,
				"checkpoint", r.counter, "now", v)
		case v == r.counter:
			if len(b.unbilled) > 0 {
				delete(b.unbilled, Key{r.tenant, r.meter})
			}
			continue
		default:
			w.Quantity = v - r.counter
		}
		pending = append(pending, w)
		from = append(from, int32(i))
	}
	b.from = from
	// Price per route, one batch per pricer.
	held := heldSeries{}
	priced := slices.Grow(b.priced[:0], len(pending))[:len(pending)]
	clear(priced)
	b.priced = priced
	b.checkRoutes()
	batches := b.batches
	for ri := range batches {
		batches[ri] = batches[ri][:0]
	}
	for i := range pending {
		w := &pending[i]
		if w.Rebased {
			priced[i] = true // bills nothing: nothing to price
			continue
		}
		ri, err := b.route(&rows[from[i]])
		if err != nil {
			k := Key{w.Tenant, w.Meter}
			b.hold(k, w.Quantity, "")
			held.add(k, "", err)
			continue
		}
		batches = b.batches // route may have added one
		batches[ri] = append(batches[ri], int32(i))
	}
	for ri, idx := range b.batches {
		// Price in chunks: a plugin call has a record limit, and a failed
		// chunk holds only its own series.
		for lo := 0; lo < len(idx); lo += MaxBatch {
			b.priceChunk(ctx, b.routes[ri], pending, idx[lo:min(lo+MaxBatch, len(idx))], priced, held)
		}
	}
	held.log(b.cfg.Log)
	defer clear(pending) // see windowBuffer
	// The windows to commit are the priced ones, moved to the front of
	// pending in place.
	ws, wfrom := pending[:0], from[:0]
	for i := range pending {
		switch {
		case !priced[i]:
			res.Held++
		case len(ws) == i: // nothing held so far: already in place
			ws, wfrom = ws[:i+1], wfrom[:i+1]
		default:
			ws = append(ws, pending[i])
			wfrom = append(wfrom, from[i])
		}
	}
	if err := b.fault(AfterPrice); err != nil {
		return res, err
	}
	if len(ws) > 0 {
		start := time.Now()
		err := b.cfg.Ledger.Commit(ctx, ledger.Windows(ws))
		b.write.Observe(time.Since(start).Seconds())
		if err != nil {
			// The commit may have landed (a lost reply) or not: ask the
			// ledger before the next tick. Duplicate keys make a retry of
			// a landed window fail rather than bill twice.
			b.stale = true
			for _, w := range ws {
				b.unbilled[Key{w.Tenant, w.Meter}] = w.Quantity
			}
			return res, fmt.Errorf("commit window: %w", err)
		}
	}
	if err := b.fault(AfterCommit); err != nil {
		b.stale = true
		return res, err
	}
	if len(ws) > 0 {
		b.next++
	}
	for j, w := range ws {
		r := &b.table.rows[wfrom[j]]
		r.seq, r.counter, r.end = w.Seq, w.ToCounter, w.End
		if len(b.unbilled) > 0 {
			delete(b.unbilled, Key{w.Tenant, w.Meter})
		}
		res.Windows++
		res.Quantity += w.Quantity
	}
	b.lastTick = now
	return res, nil
}

// keepWindowsBelow: ticks closer than this reuse one buffer for their
// windows; further apart, each tick allocates its windows and drops them
// after the commit. At 70,000 series the buffer is 14 MB that the ledger
// needs only during the commit: kept, it stays in the live heap (and in
// RSS) between ticks, and the GC lets the heap grow to twice the live
// heap; allocated anew, it costs 10-40 ms of CPU per tick in
// BenchmarkTick (zeroing and GC), which matters only when ticks are
// frequent.
const keepWindowsBelow = 30 * time.Second

// windowBuffer returns an empty slice for n windows.
func (b *Biller) windowBuffer(n int) []ledger.Window {
	if b.cfg.Interval >= keepWindowsBelow {
		b.windows = nil
		return make([]ledger.Window, 0, n)
	}
	// Every tick clears what it used (below), so no strings of series
	// gone from the source stay reachable through the buffer.
	b.windows = slices.Grow(b.windows[:0], n)
	return b.windows
}

// checkRoutes forgets every row's route when the Pricers say their
// routes changed since they were asked.
func (b *Biller) checkRoutes() {
	v, ok := b.cfg.Pricers.(RoutesVersioner)
	if !ok || v.RoutesVersion() == b.routesVersion {
		return
	}
	b.routesVersion = v.RoutesVersion()
	for i := range b.table.rows {
		b.table.rows[i].route = 0
	}
	b.routes, b.batches = nil, nil
	clear(b.routeIndex)
}

// route returns the index in b.routes of r's route, asking the Pricers
// the first time. A refusal is not kept: the series is asked for again
// on its next window.
func (b *Biller) route(r *row) (int, error) {
	if r.route > 0 {
		return int(r.route - 1), nil
	}
	rt, err := b.cfg.Pricers.PricerFor(r.tenant, r.meter)
	if err != nil {
		return 0, err
	}
	i, ok := b.routeIndex[rt.Name]
	if !ok {
		if b.routeIndex == nil {
			b.routeIndex = map[string]int32{}
		}
		i = int32(len(b.routes))
		b.routeIndex[rt.Name] = i
		b.routes = append(b.routes, rt)
		b.batches = append(b.batches, nil)
	}
	r.route = i + 1
	return int(i), nil
}

// read puts the source's reading into the table and returns the tick
// number its rows carry: rows with another number are not in it.
func (b *Biller) read(ctx context.Context) (uint32, error) {
	t := &b.table
	t.tick++
	put := func(tenant, meter string, v uint64) {
		r := t.row(tenant, meter)
		r.count, r.tick = v, t.tick
	}
	if f, ok := b.cfg.Source.(TenantsFunc); ok {
		m, err := f(ctx)
		if err != nil {
			return t.tick, err
		}
		t.putTenants(m)
		return t.tick, nil
	}
	if w, ok := b.cfg.Source.(Walker); ok {
		return t.tick, w.Walk(ctx, put)
	}
	counts, err := b.cfg.Source.Read(ctx)
	if err != nil {
		return t.tick, err
	}
	for k, v := range counts {
		put(k.Tenant, k.Meter, v)
	}
	return t.tick, nil
}

// MaxBatch is the most records priced in one plugin call; a window with
// more series for one pricer is priced in several calls.
const MaxBatch = 4096

// priceChunk prices the pending series at idx with route and marks them
// priced, or holds them all.
func (b *Biller) priceChunk(ctx context.Context, route Route, pending []ledger.Window, idx []int32, priced []bool, held heldSeries) {
	recs := slices.Grow(b.recs[:0], len(idx))[:len(idx)]
	b.recs = recs
	defer clear(recs) // drop the tenants' strings and attributes
	// A tenant's windows are adjacent (billing order): its attributes
	// are looked up once per run of them, not once per series, and its
	// records share the map.
	var (
		attrs     map[string]string
		attrsOf   string
		haveAttrs bool
	)
	for j, i := range idx {
		w := &pending[i]
		recs[j] = pricing.Record{Tenant: w.Tenant, Meter: w.Meter, Quantity: w.Quantity, Start: w.Start, End: w.End}
		if b.cfg.Attrs != nil {
			if !haveAttrs || w.Tenant != attrsOf {
				attrs, attrsOf, haveAttrs = b.cfg.Attrs(w.Tenant), w.Tenant, true
			}
			recs[j].Attrs = attrs
		}
	}
	// Records and charges go through buffers kept from chunk to chunk.
	out, err := pricing.PriceAppend(ctx, route.Pricer, recs, b.charges[:0])
	if err == nil {
		b.charges = out.Charges[:0]
	}
	if err == nil && len(out.Charges) != len(recs) {
		err = fmt.Errorf("pricer returned %d charges for %d records", len(out.Charges), len(recs))
	}
	if err == nil {
		// A charge the ledger would refuse fails the whole commit, so it
		// fails its chunk here instead: the other series go on.
		for j, i := range idx {
			w := &pending[i]
			w.Charge, w.PluginSHA256 = out.Charges[j], out.PluginSHA256
			if verr := w.Validate(); verr != nil && err == nil {
				err = fmt.Errorf("pricer returned an unusable charge: %w", verr)
			}
		}
	}
	for _, i := range idx {
		if err != nil {
			k := Key{pending[i].Tenant, pending[i].Meter}
			b.hold(k, pending[i].Quantity, route.Name)
			held.add(k, route.Name, err)
		} else {
			priced[i] = true
		}
	}
}

func (b *Biller) hold(k Key, qty uint64, route string) {
	b.unbilled[k] = qty
	b.pricingFailures[route]++
}

// heldSeries groups the series held in one tick by pricer and error, so
// a failing plugin logs one line per tick, not one per tenant.
type heldSeries map[[2]string]*heldGroup

type heldGroup struct {
	n       int
	example Key
}

func (h heldSeries) add(k Key, route string, err error) {
	g := h[[2]string{route, err.Error()}]
	if g == nil {
		g = &heldGroup{example: k}
		h[[2]string{route, err.Error()}] = g
	}
	g.n++
}

func (h heldSeries) log(l *slog.Logger) {
	for k, g := range h {
		l.Warn("pricing failed; holding usage for the next window", "series", g.n,
			"example_tenant", g.example.Tenant, "example_meter", g.example.Meter, "pricer", k[0], "err", k[1])
	}
}

func (b *Biller) fault(p FaultPoint) error {
	if b.cfg.Fault == nil {
		return nil
	}
	return b.cfg.Fault(p)
}

// Unbilled returns the usage counted but not billed per series, such as
// usage held by a pricing failure.
func (b *Biller) Unbilled() map[Key]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.unbilled)
}

// Run ticks every interval until ctx ends, then bills a last window so
// that a graceful stop leaves nothing unbilled. Tick errors are logged
// and retried on the next tick; Run returns ctx's end as nil.
func (b *Biller) Run(ctx context.Context) error {
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if _, err := b.Tick(final); err != nil {
				return fmt.Errorf("final window: %w", err)
			}
			return nil
		case <-t.C:
			if _, err := b.Tick(ctx); err != nil && ctx.Err() == nil {
				b.cfg.Log.Error("usage window", "err", err)
			}
			if b.cfg.AfterTick != nil {
				b.cfg.AfterTick()
			}
		}
	}
}

// FromTenants converts per-tenant cumulative counts (tenant -> counter ->
// value, as the agent's snapshots hold them) into a [Source] reading.
func FromTenants(m map[string]map[string]uint64) map[Key]uint64 {
	n := 0
	for _, byMeter := range m {
		n += len(byMeter)
	}
	out := make(map[Key]uint64, n)
	for t, byMeter := range m {
		for meter, v := range byMeter {
			out[Key{Tenant: t, Meter: meter}] = v
		}
	}
	return out
}
