package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"math/bits"
	"slices"
	"sort"
	"strconv"

	"github.com/kmeter/kmeter/internal/meter"
)

// Usage is the cumulative usage per tenant of one read: the tenants in
// ascending order, each with its row of counters. It replaced a map of
// maps (tenant -> counter -> value): at 10,000 tenants that was 10,000
// small maps, 5 MB made on every read and two reads' worth alive while
// the next was built. A Usage is a few flat slices, made once and never
// changed, so the HTTP handlers, /metrics and the biller share it.
//
// It marshals to JSON exactly as the map did. The zero value holds no
// tenant.
type Usage struct {
	names []string // ascending, distinct
	rows  []Counters
}

// Counters are one tenant's counters, indexed by [meter.Counter]. A
// counter no meter reported for the tenant is absent, not zero.
type Counters struct {
	values [meter.NumCounters]uint64
	set    uint8
}

// Get returns counter k and whether a meter reported it.
func (c Counters) Get(k meter.Counter) (uint64, bool) {
	if int(k) >= meter.NumCounters || c.set&(1<<k) == 0 {
		return 0, false
	}
	return c.values[k], true
}

// Value returns the counter named name (such as "syscalls") and whether
// a meter reported it.
func (c Counters) Value(name string) (uint64, bool) {
	k, ok := meter.CounterOf(name)
	if !ok {
		return 0, false
	}
	return c.Get(k)
}

// Len is how many counters a meter reported.
func (c Counters) Len() int {
	return bits.OnesCount8(c.set)
}

// Map returns the counters reported, by name. It allocates: for tests
// and callers that want the old form, not for every tenant of a read.
func (c Counters) Map() map[string]uint64 {
	m := make(map[string]uint64, c.Len())
	for k := range meter.Counter(meter.NumCounters) {
		if v, ok := c.Get(k); ok {
			m[k.Name()] = v
		}
	}
	return m
}

// add adds r's reported counters to c.
func (c *Counters) add(r *meter.Row) {
	c.set |= r.Set
	for k := range meter.Counter(meter.NumCounters) {
		if r.Has(k) {
			c.values[k] += r.Values[k]
		}
	}
}

// byName are the counters in ascending order of their names: the order
// of /metrics, of JSON objects and of billing. It never changes once
// made.
var byName = func() []meter.Counter {
	ks := make([]meter.Counter, meter.NumCounters)
	for i := range ks {
		ks[i] = meter.Counter(i)
	}
	slices.SortFunc(ks, func(a, b meter.Counter) int { return cmp.Compare(a.Name(), b.Name()) })
	return ks
}()

// NewUsage makes a Usage from tenant -> counter name -> value, for tests
// and for decoding. A counter name that is not one of [meter.Names] is
// an error.
func NewUsage(m map[string]map[string]uint64) (Usage, error) {
	u := Usage{names: slices.Sorted(maps.Keys(m))}
	u.rows = make([]Counters, len(u.names))
	for i, t := range u.names {
		for name, v := range m[t] {
			k, ok := meter.CounterOf(name)
			if !ok {
				return Usage{}, fmt.Errorf("tenant %q: unknown counter %q (known: %v)", t, name, meter.Names)
			}
			u.rows[i].values[k] = v
			u.rows[i].set |= 1 << k
		}
	}
	return u, nil
}

// Len is the number of tenants.
func (u Usage) Len() int { return len(u.names) }

// Tenant returns the name of the i-th tenant in ascending order.
func (u Usage) Tenant(i int) string { return u.names[i] }

// At returns the counters of the i-th tenant in ascending order.
func (u Usage) At(i int) Counters { return u.rows[i] }

// Index returns the position of tenant, by binary search.
func (u Usage) Index(tenant string) (int, bool) {
	return slices.BinarySearch(u.names, tenant)
}

// Lookup returns tenant's counters, and false when it has none.
func (u Usage) Lookup(tenant string) (Counters, bool) {
	i, ok := u.Index(tenant)
	if !ok {
		return Counters{}, false
	}
	return u.rows[i], true
}

// Get returns tenant's counter named name, and whether a meter reported
// it.
func (u Usage) Get(tenant, name string) (uint64, bool) {
	c, ok := u.Lookup(tenant)
	if !ok {
		return 0, false
	}
	return c.Value(name)
}

// All yields the tenants in ascending order with their counters.
func (u Usage) All() iter.Seq2[string, Counters] {
	return func(yield func(string, Counters) bool) {
		for i, t := range u.names {
			if !yield(t, u.rows[i]) {
				return
			}
		}
	}
}

// Walk calls fn for every counter reported, in billing order: tenants
// ascending, a tenant's counters in ascending order of their names.
func (u Usage) Walk(fn func(tenant, counter string, v uint64)) {
	for i, t := range u.names {
		c := &u.rows[i]
		for _, k := range byName {
			if c.set&(1<<k) != 0 {
				fn(t, k.Name(), c.values[k])
			}
		}
	}
}

// Map returns the usage as tenant -> counter name -> value. It
// allocates a map per tenant: for tests and tools, not for every read.
func (u Usage) Map() map[string]map[string]uint64 {
	m := make(map[string]map[string]uint64, len(u.names))
	for i, t := range u.names {
		m[t] = u.rows[i].Map()
	}
	return m
}

// Only returns the usage of tenant alone (none when it has none). It
// shares u's memory.
func (u Usage) Only(tenant string) Usage {
	i, ok := u.Index(tenant)
	if !ok {
		return Usage{}
	}
	return Usage{names: u.names[i : i+1 : i+1], rows: u.rows[i : i+1 : i+1]}
}

// MarshalJSON writes {"tenant":{"counter":value,...},...}, byte for
// byte what encoding/json wrote for the map it replaced: keys in
// ascending order, escaped the same way.
func (u Usage) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 64+len(u.names)*160)
	b = append(b, '{')
	for i, t := range u.names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, t)
		b = append(b, '{')
		c := &u.rows[i]
		first := true
		for _, k := range byName {
			if c.set&(1<<k) == 0 {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendKey(b, k.Name())
			b = strconv.AppendUint(b, c.values[k], 10)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what [Usage.MarshalJSON] writes.
func (u *Usage) UnmarshalJSON(b []byte) error {
	var m map[string]map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	v, err := NewUsage(m)
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// SyscallCount is a tenant's cumulative count of one syscall number.
type SyscallCount struct {
	Nr    uint32
	Count uint64
}

// Syscalls is the syscalls of one read broken down by number, per
// tenant: for each tenant in ascending order, its numbers in ascending
// order, each once. Like [Usage] it is flat and never changed once
// made, and marshals to JSON as the map (tenant -> number -> count) it
// replaced did. The zero value holds no tenant.
type Syscalls struct {
	names []string // ascending, distinct; may be a Usage's
	// starts[i] is where the counts of names[i] start in counts; a
	// tenant may have none.
	starts []int32
	counts []SyscallCount
}

// NewSyscalls makes a Syscalls from tenant -> syscall number -> count,
// for tests and decoding. Tenants without numbers are left out.
func NewSyscalls(m map[string]map[uint32]uint64) Syscalls {
	var s Syscalls
	for _, t := range slices.Sorted(maps.Keys(m)) {
		if len(m[t]) == 0 {
			continue
		}
		s.starts = append(s.starts, int32(len(s.counts)))
		s.names = append(s.names, t)
		for _, nr := range slices.Sorted(maps.Keys(m[t])) {
			s.counts = append(s.counts, SyscallCount{Nr: nr, Count: m[t][nr]})
		}
	}
	if len(s.names) > 0 {
		s.starts = append(s.starts, int32(len(s.counts)))
	}
	return s
}

// IsZero reports whether s holds no count, so that a snapshot leaves
// syscalls_by_number out of its JSON as it did for an empty map.
func (s Syscalls) IsZero() bool { return len(s.counts) == 0 }

// Of returns tenant's counts in ascending order of number; nil when it
// has none. The slice is s's own: do not modify it.
func (s Syscalls) Of(tenant string) []SyscallCount {
	i, ok := slices.BinarySearch(s.names, tenant)
	if !ok {
		return nil
	}
	return s.counts[s.starts[i]:s.starts[i+1]:s.starts[i+1]]
}

// Get returns tenant's count of syscall number nr, and whether there is
// one.
func (s Syscalls) Get(tenant string, nr uint32) (uint64, bool) {
	cs := s.Of(tenant)
	i, ok := slices.BinarySearchFunc(cs, nr, func(c SyscallCount, nr uint32) int { return cmp.Compare(c.Nr, nr) })
	if !ok {
		return 0, false
	}
	return cs[i].Count, true
}

// All yields the tenants that have counts, in ascending order, with
// their counts (s's own slices: do not modify them).
func (s Syscalls) All() iter.Seq2[string, []SyscallCount] {
	return func(yield func(string, []SyscallCount) bool) {
		for i, t := range s.names {
			lo, hi := s.starts[i], s.starts[i+1]
			if lo == hi {
				continue
			}
			if !yield(t, s.counts[lo:hi:hi]) {
				return
			}
		}
	}
}

// Map returns tenant -> syscall number -> count. It allocates: for
// tests and tools.
func (s Syscalls) Map() map[string]map[uint32]uint64 {
	m := map[string]map[uint32]uint64{}
	for t, cs := range s.All() {
		byNr := make(map[uint32]uint64, len(cs))
		for _, c := range cs {
			byNr[c.Nr] = c.Count
		}
		m[t] = byNr
	}
	return m
}

// Only returns the counts of tenant alone (none when it has none). It
// shares s's memory.
func (s Syscalls) Only(tenant string) Syscalls {
	i, ok := slices.BinarySearch(s.names, tenant)
	if !ok || s.starts[i] == s.starts[i+1] {
		return Syscalls{}
	}
	return Syscalls{names: s.names[i : i+1 : i+1], starts: s.starts[i : i+2 : i+2], counts: s.counts}
}

// MarshalJSON writes {"tenant":{"nr":count,...},...} byte for byte as
// encoding/json wrote the map it replaced: tenants ascending and, as
// encoding/json sorts integer keys by their text, numbers in the order
// of their decimal strings ("110" before "39").
func (s Syscalls) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 64+len(s.counts)*24)
	b = append(b, '{')
	var order []SyscallCount
	first := true
	for t, cs := range s.All() {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendKey(b, t)
		order = append(order[:0], cs...)
		sort.Slice(order, func(i, j int) bool { return cmpDecimal(order[i].Nr, order[j].Nr) < 0 })
		b = append(b, '{')
		for j, c := range order {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = strconv.AppendUint(b, uint64(c.Nr), 10)
			b = append(b, '"', ':')
			b = strconv.AppendUint(b, c.Count, 10)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what [Syscalls.MarshalJSON] writes.
func (s *Syscalls) UnmarshalJSON(b []byte) error {
	var m map[string]map[uint32]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*s = NewSyscalls(m)
	return nil
}

// cmpDecimal compares a and b as their decimal strings compare.
func cmpDecimal(a, b uint32) int {
	da, db := digits(a), digits(b)
	x, y := uint64(a), uint64(b)
	for d := da; d < db; d++ {
		x *= 10
	}
	for d := db; d < da; d++ {
		y *= 10
	}
	if x != y {
		return cmp.Compare(x, y)
	}
	return cmp.Compare(da, db) // one is a prefix of the other
}

func digits(v uint32) int {
	n := 1
	for ; v >= 10; v /= 10 {
		n++
	}
	return n
}

// appendKey appends s as a JSON object key and its colon. Plain names
// are quoted here; others go through encoding/json (without HTML
// escaping: an encoder that wants it applies it to a Marshaler's output
// itself), so that every name is escaped exactly as before.
func appendKey(b []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			plain = false
			break
		}
	}
	if plain {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"', ':')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b = append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	return append(b, ':')
}
