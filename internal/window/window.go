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

// SortedWalk is a [Walker] whose series come in billing order: tenants
// ascending, a tenant's meters ascending by name (both in byte order),
// each series once, as the agent's snapshots hold them. The biller puts
// such a reading into its table in one pass beside the table's own
// sorted rows, without a lookup per series; a series out of that order
// (or new) is looked up as from any Walker, so it is still billed right.
type SortedWalk func(ctx context.Context, fn func(tenant, meter string, count uint64)) error

// Walk implements [Walker].
func (f SortedWalk) Walk(ctx context.Context, fn func(tenant, meter string, count uint64)) error {
	return f(ctx, fn)
}

// Read implements [Source].
func (f SortedWalk) Read(ctx context.Context) (map[Key]uint64, error) {
	m := map[Key]uint64{}
	err := f(ctx, func(tenant, meter string, count uint64) { m[Key{tenant, meter}] = count })
	if err != nil {
		return nil, err
	}
	return m, nil
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

	// Buffers reused by every tick (ticks hold mu): the tick's windows
	// as 24-byte entries that name their table row (a ledger.Window is
	// about 200 bytes: 14 MB at 70,000 series), the ledger's view of
	// them, and one pricing chunk's records and charges.
	pend    []pending
	commit  tickWindows
	recs    []pricing.Record
	charges []pricing.Charge
	// tagIndex finds a (currency, plugin) pair in commit.tags.
	tagIndex map[chargeTag]uint32
	// remap is the table's buffer for compacting its checkpoints.
	remap []uint32

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
	b.commit.node, b.commit.started = cfg.NodeID, b.started
	b.forgetTags()
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
	// Series committed together share their checkpoint's seq and end.
	ids := map[checkpoint]uint32{}
	for _, c := range cps {
		r := b.table.row(c.Tenant, c.Meter)
		cp := checkpoint{seq: c.Seq, end: c.End}
		id, ok := ids[cp]
		if !ok {
			id = b.table.addCheckpoint(cp)
			ids[cp] = id
		}
		r.counter, r.cp = c.Counter, id
		b.next = max(b.next, c.Seq+1)
	}
	b.table.kept = len(b.table.cps)
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
	if len(b.commit.tags) > maxTags {
		b.forgetTags()
	}
	b.remap = b.table.compactCheckpoints(b.remap)
	defer b.commit.release()
	// The tick's windows: the rows read with another count than their
	// checkpoint's. The rest of a window follows from its row, the tick
	// (b.commit) and, once priced, its charge.
	pend := slices.Grow(b.pend[:0], len(rows)) // at most one window per row
	for i := range rows {
		r := &rows[i]
		switch {
		case r.tick != tick:
			continue // not in this reading
		case r.count < r.counter:
			// The maps were re-created (or the tenant's sum lost a
			// cgroup). Which part of the count is new usage is
			// unknowable, so the window bills nothing and re-bases:
			// under-billing by at most the count, reported, rather than
			// risking billing usage twice.
			res.Rebased++
			k := b.table.key(r)
			b.resets[k]++
			b.cfg.Log.Warn("usage counter went backwards; re-basing it without billing", "tenant", k.Tenant, "meter", k.Meter,
				"checkpoint", r.counter, "now", r.count)
			pend = append(pend, pending{row: int32(i), tag: noCharge}) // nothing to price
		case r.count == r.counter:
			if len(b.unbilled) > 0 {
				delete(b.unbilled, b.table.key(r))
			}
		default:
			pend = append(pend, pending{row: int32(i), tag: unpriced})
		}
	}
	b.pend = pend
	b.commit.use(&b.table, b.next, now, pend)
	// Price per route, one batch per pricer.
	var held heldSeries
	b.checkRoutes()
	batches := b.batches
	for ri := range batches {
		batches[ri] = batches[ri][:0]
	}
	for i := range pend {
		if pend[i].tag != unpriced {
			continue
		}
		r := &rows[pend[i].row]
		ri, err := b.route(r)
		if err != nil {
			k := b.table.key(r)
			b.hold(k, quantity(r), "")
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
			b.priceChunk(ctx, b.routes[ri], idx[lo:min(lo+MaxBatch, len(idx))], &held)
		}
	}
	held.log(b.cfg.Log)
	// The windows to commit are the priced ones, moved to the front of
	// pend in place.
	n := 0
	for _, p := range pend {
		if p.tag == unpriced {
			res.Held++
			continue
		}
		pend[n] = p
		n++
	}
	pend = pend[:n]
	b.commit.pend = pend
	if err := b.fault(AfterPrice); err != nil {
		return res, err
	}
	if len(pend) > 0 {
		start := time.Now()
		// The ledger reads the windows from the table through b.commit:
		// no row changes until the commit returns.
		err := b.cfg.Ledger.Commit(ctx, &b.commit)
		b.write.Observe(time.Since(start).Seconds())
		if err != nil {
			// The commit may have landed (a lost reply) or not: ask the
			// ledger before the next tick. Duplicate keys make a retry of
			// a landed window fail rather than bill twice.
			b.stale = true
			for _, p := range pend {
				r := &rows[p.row]
				b.unbilled[b.table.key(r)] = quantity(r)
			}
			return res, fmt.Errorf("commit window: %w", err)
		}
	}
	if err := b.fault(AfterCommit); err != nil {
		b.stale = true
		return res, err
	}
	var cp uint32
	if len(pend) > 0 {
		cp = b.table.addCheckpoint(checkpoint{seq: b.next, end: now})
		b.next++
	}
	for _, p := range pend {
		r := &rows[p.row]
		res.Windows++
		res.Quantity += quantity(r)
		r.counter, r.cp = r.count, cp
		if len(b.unbilled) > 0 {
			delete(b.unbilled, b.table.key(r))
		}
	}
	b.lastTick = now
	return res, nil
}

// quantity is what the window of r bills: the growth of its counter
// since the checkpoint, or nothing when the counter went backwards.
func quantity(r *row) uint64 {
	if r.count < r.counter {
		return 0
	}
	return r.count - r.counter
}

// pending is one window of a tick: its row, and its charge once priced.
type pending struct {
	row int32
	// tag is the index in the biller's tags of the charge's currency and
	// plugin; unpriced until the window is priced.
	tag            uint32
	amount, vendor int64
}

const (
	// noCharge is the tag of a window that bills nothing (tags[0]).
	noCharge uint32 = 0
	// unpriced is the tag of a window not (yet) priced.
	unpriced = ^uint32(0)
)

// chargeTag is what a window's charge shares with most others.
type chargeTag struct{ currency, plugin string }

// maxTags bounds the tags kept from tick to tick: plugins are few, but
// each reload brings a new sha256.
const maxTags = 256

// forgetTags leaves only tags[0], between ticks.
func (b *Biller) forgetTags() {
	b.commit.tags = append(b.commit.tags[:0], chargeTag{})
	clear(b.tagIndex)
	if b.tagIndex == nil {
		b.tagIndex = map[chargeTag]uint32{}
	}
	b.tagIndex[chargeTag{}] = noCharge
}

// tag returns the index in the tags of (currency, plugin), adding it
// when it is new.
func (b *Biller) tag(currency, plugin string) uint32 {
	k := chargeTag{currency, plugin}
	if i, ok := b.tagIndex[k]; ok {
		return i
	}
	i := uint32(len(b.commit.tags))
	b.commit.tags = append(b.commit.tags, k)
	b.tagIndex[k] = i
	return i
}

// tickWindows is a tick's windows as the ledger reads them: window i is
// built when asked from pend[i], its table row and the tick, the same
// each time, as long as the rows do not change (they do not during a
// commit). It holds the table's slices itself, so that building a
// window (twice per window and commit in the ledger) chases no
// pointers.
type tickWindows struct {
	node         string
	seq          uint64
	started, end time.Time
	rows         []row
	names        []string
	meters       []string
	cps          []checkpoint
	// tags are the distinct (currency, plugin) pairs of the charges,
	// tags[0] the empty pair of the windows that bill nothing; a pending
	// window keeps the index of its own. They are kept between ticks.
	tags []chargeTag
	pend []pending
}

// use makes s the windows pend of the tick numbered seq ending at end.
func (s *tickWindows) use(t *series, seq uint64, end time.Time, pend []pending) {
	s.seq, s.end, s.pend = seq, end, pend
	s.rows, s.names, s.meters, s.cps = t.rows, t.names, t.meters, t.cps
}

// release drops the table's slices after a tick: the table may grow
// new ones meanwhile.
func (s *tickWindows) release() {
	s.rows, s.names, s.meters, s.cps, s.pend = nil, nil, nil, nil, nil
}

// Len implements [ledger.WindowSource].
func (s *tickWindows) Len() int { return len(s.pend) }

// Window implements [ledger.WindowSource]. It fills its result in place
// (a window is some 200 bytes, built twice per window and commit).
func (s *tickWindows) Window(i int) (w ledger.Window) {
	p := &s.pend[i]
	r := &s.rows[p.row]
	w.Node, w.Tenant, w.Meter = s.node, s.names[r.tenant], s.meters[r.meter]
	w.Seq, w.PrevSeq, w.FromCounter, w.ToCounter = s.seq, s.cps[r.cp].seq, r.counter, r.count
	w.Rebased, w.Quantity = r.count < r.counter, quantity(r)
	w.Start, w.End = s.start(r), s.end
	if p.tag != unpriced {
		tag := &s.tags[p.tag]
		w.Charge.AmountMicro, w.Charge.Currency, w.Charge.VendorMicro = p.amount, tag.currency, p.vendor
		w.PluginSHA256 = tag.plugin
	}
	return w
}

// start is when the window of r starts: at its checkpoint, or when the
// biller started for a series' first window.
func (s *tickWindows) start(r *row) time.Time {
	if cp := &s.cps[r.cp]; cp.seq != 0 {
		return cp.end
	}
	return s.started
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
	rt, err := b.cfg.Pricers.PricerFor(b.table.tenant(r), b.table.meter(r))
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
	if f, ok := b.cfg.Source.(SortedWalk); ok {
		return t.tick, t.putSorted(ctx, f)
	}
	put := func(tenant, meter string, v uint64) {
		r := t.row(tenant, meter)
		r.count, r.tick = v, t.tick
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

// priceChunk prices the tick's windows at idx (in b.pend) with route
// and keeps their charges, or holds them all.
func (b *Biller) priceChunk(ctx context.Context, route Route, idx []int32, held *heldSeries) {
	t, pend, end := &b.table, b.pend, b.commit.end
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
		r := &t.rows[pend[i].row]
		tenant := t.tenant(r)
		recs[j] = pricing.Record{Tenant: tenant, Meter: t.meter(r), Quantity: quantity(r), Start: b.commit.start(r), End: end}
		if b.cfg.Attrs != nil {
			if !haveAttrs || tenant != attrsOf {
				attrs, attrsOf, haveAttrs = b.cfg.Attrs(tenant), tenant, true
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
		// fails its chunk here instead: the other series go on. Most
		// charges share their currency, so the tag is looked up again
		// only when it changes.
		tag, tagOf := b.tag("", out.PluginSHA256), ""
		for j, i := range idx {
			c, p := &out.Charges[j], &pend[i]
			if c.Currency != tagOf {
				tag, tagOf = b.tag(c.Currency, out.PluginSHA256), c.Currency
			}
			p.tag, p.amount, p.vendor = tag, c.AmountMicro, c.VendorMicro
			if verr := b.commit.Window(int(i)).Validate(); verr != nil && err == nil {
				err = fmt.Errorf("pricer returned an unusable charge: %w", verr)
			}
		}
	}
	for _, i := range idx {
		if err != nil {
			p := &pend[i]
			p.tag = unpriced
			r := &t.rows[p.row]
			k := t.key(r)
			b.hold(k, quantity(r), route.Name)
			held.add(k, route.Name, err)
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

// add counts k, making the map on the first series held: most ticks
// hold none.
func (h *heldSeries) add(k Key, route string, err error) {
	if *h == nil {
		*h = heldSeries{}
	}
	g := (*h)[[2]string{route, err.Error()}]
	if g == nil {
		g = &heldGroup{example: k}
		(*h)[[2]string{route, err.Error()}] = g
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
