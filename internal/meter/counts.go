package meter

import (
	"fmt"
	"math/bits"
)

// Counter is one of the counters of [Names], by its position there.
// Meters add to [Counts] by Counter: an index into a row, where a name
// was a string hash into a map per cgroup.
type Counter uint8

// The counters, in the order of [Names].
const (
	CounterSyscalls Counter = iota
	CounterTCPConnects
	CounterTCPAccepts
	CounterNetTxBytes
	CounterNetRxBytes
	CounterTLSClientHandshakes
	CounterTLSServerHandshakes
)

// NumCounters is how many counters there are: the length of [Names].
const NumCounters = 7

// Row.Set and agent.Counters hold a bit per counter in a uint8: a ninth
// counter needs wider masks, and this stops the build until they are.
var _ [8 - NumCounters]struct{}

// Name returns the counter's name, as exported in
// kmeter_usage_total{meter="..."}.
func (k Counter) Name() string { return Names[k] }

// String returns the counter's name.
func (k Counter) String() string {
	if int(k) >= len(Names) {
		return fmt.Sprintf("Counter(%d)", uint8(k))
	}
	return Names[k]
}

// CounterOf returns the counter named name, and false if there is none.
func CounterOf(name string) (Counter, bool) {
	for k, n := range Names {
		if n == name {
			return Counter(k), true
		}
	}
	return 0, false
}

// Row is one cgroup's counters in [Counts].
type Row struct {
	// Cgroup is the cgroup's id.
	Cgroup uint64
	// Values holds the cumulative counts, indexed by [Counter].
	Values [NumCounters]uint64
	// Set has bit k when a meter reported counter k for the cgroup (a
	// count of 0 included): the others are absent, not zero.
	Set uint8
}

// Has reports whether a meter reported counter k for the row's cgroup.
func (r *Row) Has(k Counter) bool { return r.Set&(1<<k) != 0 }

// Len is how many counters a meter reported for the row's cgroup.
func (r *Row) Len() int { return bits.OnesCount8(r.Set) }

// NumberCount is a cgroup's cumulative count of one syscall number.
type NumberCount struct {
	// Row is the cgroup's index in [Counts.Rows].
	Row int32
	// Nr is the syscall number.
	Nr uint32
	// Count is the cumulative count.
	Count uint64
}

// Counts are the cumulative kernel counts of one read: a row of counters
// per cgroup and, from the syscalls meter, their breakdown by syscall
// number. Values only grow while the pinned maps live.
//
// Counts is a flat table refilled every read: [Counts.Reset] keeps its
// memory, so reading 10,000 cgroups allocates nothing once it has grown
// (a map per cgroup, made again every read, was a quarter of a read's
// CPU). The zero value is empty and ready to use. It is not safe for
// concurrent use.
type Counts struct {
	rows []Row
	nrs  []NumberCount
	// last is the row of the latest add, plus one (0: none): meters add
	// a cgroup's counters one after another, so most adds find it here.
	last int32
	// seq is the row each lookup of this read found, in order, and prev
	// the previous read's. A meter reads its map in the same order every
	// read while the map's keys stay the same, so the n-th lookup finds
	// the row the n-th did last time, and makes it if that lookup did:
	// checked, that needs no hashing (a hash lookup per key was most of
	// filling the table).
	seq, prev []int32
	// diverged is set once a lookup of this read missed its hint: the
	// rows made so far may then differ from the previous read's, so a
	// hint may no longer make a row, only find one.
	diverged bool
	// index maps cgroup ids to rows, for lookups that miss their hint.
	// It is built only then, and holds rows[:indexed].
	index   map[uint64]int32
	indexed int
}

// Reset empties c and keeps its memory for the next read.
func (c *Counts) Reset() {
	if c.indexed > 0 {
		clear(c.index)
		c.indexed = 0
	}
	c.rows = c.rows[:0]
	c.nrs = c.nrs[:0]
	c.last = 0
	c.prev, c.seq = c.seq, c.prev[:0]
	c.diverged = false
}

// row returns the index of cgroup's row, adding one if needed.
func (c *Counts) row(cgroup uint64) int32 {
	if c.last > 0 && c.rows[c.last-1].Cgroup == cgroup {
		return c.last - 1
	}
	var i int32
	switch n := len(c.seq); {
	case n >= len(c.prev):
		i = c.lookup(cgroup)
	case int(c.prev[n]) < len(c.rows) && c.rows[c.prev[n]].Cgroup == cgroup:
		i = c.prev[n] // rows are unique: this is cgroup's
	case !c.diverged && int(c.prev[n]) == len(c.rows) && len(c.rows) < cap(c.rows) &&
		c.rows[:len(c.rows)+1][len(c.rows)].Cgroup == cgroup:
		// The previous read made cgroup's row here, after the same
		// lookups as this read's so far: it has none yet. (The row's
		// memory still holds the previous read's.)
		i = int32(len(c.rows))
		c.rows = append(c.rows, Row{Cgroup: cgroup})
	default:
		i = c.lookup(cgroup)
	}
	c.seq = append(c.seq, i)
	c.last = i + 1
	return i
}

// lookup finds cgroup's row by its id, adding one if needed.
func (c *Counts) lookup(cgroup uint64) int32 {
	c.diverged = true
	if c.index == nil {
		c.index = make(map[uint64]int32)
	}
	for ; c.indexed < len(c.rows); c.indexed++ {
		c.index[c.rows[c.indexed].Cgroup] = int32(c.indexed)
	}
	i, ok := c.index[cgroup]
	if !ok {
		i = int32(len(c.rows))
		c.rows = append(c.rows, Row{Cgroup: cgroup})
		c.index[cgroup] = i
		c.indexed++
	}
	return i
}

// Add adds v to counter k of cgroup.
func (c *Counts) Add(cgroup uint64, k Counter, v uint64) {
	r := &c.rows[c.row(cgroup)]
	r.Values[k] += v
	r.Set |= 1 << k
}

// AddSyscalls adds v syscalls numbered nr to cgroup: to its
// [CounterSyscalls] and to its breakdown by number ([Counts.Numbers]).
func (c *Counts) AddSyscalls(cgroup uint64, nr uint32, v uint64) {
	i := c.row(cgroup)
	r := &c.rows[i]
	r.Values[CounterSyscalls] += v
	r.Set |= 1 << CounterSyscalls
	c.nrs = append(c.nrs, NumberCount{Row: i, Nr: nr, Count: v})
}

// Len is the number of cgroups in c.
func (c *Counts) Len() int { return len(c.rows) }

// Rows returns every cgroup's row, in the order they were first added.
// The slice is c's own: valid until the next add or Reset.
func (c *Counts) Rows() []Row { return c.rows }

// Numbers returns the syscall counts by number added by
// [Counts.AddSyscalls], in the order they were added: a meter adds a
// cgroup's numbers one after another. A number may appear more than once
// for a cgroup (counted in two maps); its counts add up. The slice is c's
// own: valid until the next add or Reset.
func (c *Counts) Numbers() []NumberCount { return c.nrs }

// Get returns counter k of cgroup, and whether a meter reported it. It
// scans the table: for tests and examples, not for every cgroup.
func (c *Counts) Get(cgroup uint64, k Counter) (uint64, bool) {
	for i := range c.rows {
		if r := &c.rows[i]; r.Cgroup == cgroup {
			return r.Values[k], r.Has(k)
		}
	}
	return 0, false
}

// Map returns the counts as cgroup id -> counter name -> value, with the
// counters the meters reported.
func (c *Counts) Map() map[uint64]map[string]uint64 {
	out := make(map[uint64]map[string]uint64, len(c.rows))
	for i := range c.rows {
		r := &c.rows[i]
		m := make(map[string]uint64, r.Len())
		for k := range Counter(NumCounters) {
			if r.Has(k) {
				m[k.Name()] = r.Values[k]
			}
		}
		out[r.Cgroup] = m
	}
	return out
}

// ByNumber returns the breakdown by syscall number as cgroup id ->
// syscall number -> count.
func (c *Counts) ByNumber() map[uint64]map[uint32]uint64 {
	out := make(map[uint64]map[uint32]uint64)
	for _, n := range c.nrs {
		id := c.rows[n.Row].Cgroup
		m := out[id]
		if m == nil {
			m = make(map[uint32]uint64)
			out[id] = m
		}
		m[n.Nr] += n.Count
	}
	return out
}
