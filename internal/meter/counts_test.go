package meter

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// Counter values are positions in Names: a meter adding by Counter and a
// reader naming by Names must agree.
func TestCounter_names(t *testing.T) {
	if len(Names) != NumCounters {
		t.Fatalf("%d names, NumCounters = %d", len(Names), NumCounters)
	}
	for i, name := range Names {
		k, ok := CounterOf(name)
		if !ok || int(k) != i || k.Name() != name || k.String() != name {
			t.Errorf("CounterOf(%q) = %d, %v (name %q); want %d", name, k, ok, k.Name(), i)
		}
	}
	if _, ok := CounterOf("cpu_seconds"); ok {
		t.Error("CounterOf found a counter that does not exist")
	}
	if got := Counter(NumCounters).String(); got != "Counter(7)" {
		t.Errorf("String of an unknown counter = %q", got)
	}
}

type add struct {
	cgroup uint64
	k      Counter
	nr     uint32 // with syscalls
	v      uint64
}

func fill(c *Counts, adds []add) {
	for _, a := range adds {
		if a.k == CounterSyscalls {
			c.AddSyscalls(a.cgroup, a.nr, a.v)
		} else {
			c.Add(a.cgroup, a.k, a.v)
		}
	}
}

func TestCounts(t *testing.T) {
	tests := []struct {
		name     string
		adds     []add
		want     map[uint64]map[string]uint64
		byNumber map[uint64]map[uint32]uint64
	}{
		{name: "empty", want: map[uint64]map[string]uint64{}, byNumber: map[uint64]map[uint32]uint64{}},
		{
			name: "counters of a cgroup add up, in any order",
			adds: []add{
				{cgroup: 7, k: CounterNetTxBytes, v: 100}, {cgroup: 9, k: CounterNetTxBytes, v: 1},
				{cgroup: 7, k: CounterNetTxBytes, v: 23}, {cgroup: 7, k: CounterNetRxBytes, v: 5},
			},
			want:     map[uint64]map[string]uint64{7: {NetTxBytes: 123, NetRxBytes: 5}, 9: {NetTxBytes: 1}},
			byNumber: map[uint64]map[uint32]uint64{},
		},
		{
			name:     "a count of zero is reported, not absent",
			adds:     []add{{cgroup: 3, k: CounterTLSClientHandshakes}, {cgroup: 3, k: CounterTLSServerHandshakes, v: 2}},
			want:     map[uint64]map[string]uint64{3: {TLSClientHandshakes: 0, TLSServerHandshakes: 2}},
			byNumber: map[uint64]map[uint32]uint64{},
		},
		{
			name: "syscalls give the total and the breakdown, a number counted twice adds up",
			adds: []add{
				{cgroup: 1, k: CounterSyscalls, nr: 0, v: 10}, {cgroup: 1, k: CounterSyscalls, nr: 39, v: 2},
				{cgroup: 2, k: CounterSyscalls, nr: 39, v: 4}, {cgroup: 1, k: CounterTCPConnects, v: 1},
				{cgroup: 1, k: CounterSyscalls, nr: 39, v: 1},
			},
			want:     map[uint64]map[string]uint64{1: {Syscalls: 13, TCPConnects: 1}, 2: {Syscalls: 4}},
			byNumber: map[uint64]map[uint32]uint64{1: {0: 10, 39: 3}, 2: {39: 4}},
		},
	}
	var reused Counts // one table for every case: Reset leaves nothing behind
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fresh Counts
			reused.Reset()
			for _, c := range []*Counts{&fresh, &reused} {
				fill(c, tt.adds)
				if got := c.Map(); !maps.EqualFunc(got, tt.want, maps.Equal) {
					t.Errorf("Map() = %v, want %v", got, tt.want)
				}
				if got := c.ByNumber(); !maps.EqualFunc(got, tt.byNumber, maps.Equal) {
					t.Errorf("ByNumber() = %v, want %v", got, tt.byNumber)
				}
				if c.Len() != len(tt.want) {
					t.Errorf("Len() = %d, want %d", c.Len(), len(tt.want))
				}
				for id, byName := range tt.want {
					for _, k := range []Counter{CounterSyscalls, CounterNetTxBytes, CounterTLSClientHandshakes} {
						v, ok := c.Get(id, k)
						w, wok := byName[k.Name()]
						if v != w || ok != wok {
							t.Errorf("Get(%d, %s) = %d, %v; want %d, %v", id, k, v, ok, w, wok)
						}
					}
				}
			}
		})
	}
}

// A table reused across reads whose adds come in another order, with
// cgroups more, fewer or repeated, holds what a fresh table does: the
// previous read's order is a hint, never an answer.
func TestCounts_readsThatDiffer(t *testing.T) {
	adds := func(ids ...uint64) []add {
		var out []add
		for _, id := range ids {
			out = append(out, add{cgroup: id, k: CounterSyscalls, nr: 1, v: id}, add{cgroup: id, k: CounterSyscalls, nr: 2, v: 1})
		}
		for _, id := range slices.Backward(ids) {
			out = append(out, add{cgroup: id, k: CounterTCPConnects, v: id}, add{cgroup: id, k: CounterTCPAccepts, v: 2})
		}
		return out
	}
	reads := []struct {
		name string
		adds []add
	}{
		{"first", adds(1, 2, 3, 4, 5)},
		{"same", adds(1, 2, 3, 4, 5)},
		{"one more in the middle", adds(1, 2, 9, 3, 4, 5)},
		{"one fewer", adds(1, 3, 4, 5)},
		{"same as two reads ago", adds(1, 2, 9, 3, 4, 5)},
		{"reordered", adds(5, 4, 3, 2, 1)},
		{"a cgroup twice, apart", append(adds(1, 2, 3), adds(2, 6)...)},
		{"again", append(adds(1, 2, 3), adds(2, 6)...)},
		{"ids where the previous rows were", adds(6, 2, 3, 1)},
		{"empty", nil},
		{"after empty", adds(1, 2, 3, 4, 5)},
	}
	var reused Counts
	for _, r := range reads {
		var fresh Counts
		fill(&fresh, r.adds)
		reused.Reset()
		fill(&reused, r.adds)
		if got, want := reused.Map(), fresh.Map(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Errorf("%s: reused table %v, fresh %v", r.name, got, want)
		}
		if got, want := reused.ByNumber(), fresh.ByNumber(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Errorf("%s: reused breakdown %v, fresh %v", r.name, got, want)
		}
		if reused.Len() != fresh.Len() {
			t.Errorf("%s: reused table has %d rows, fresh %d", r.name, reused.Len(), fresh.Len())
		}
	}
	// Then reads that each change the previous one a little, as maps do
	// between reads: a key more, a key fewer, two keys swapped.
	rng := rand.New(rand.NewPCG(3, 4))
	ids := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	for read := range 500 {
		switch i := rng.IntN(len(ids)); rng.IntN(4) {
		case 0:
			ids = slices.Insert(ids, i, uint64(rng.IntN(12)))
		case 1:
			if len(ids) > 1 {
				ids = slices.Delete(ids, i, i+1)
			}
		case 2:
			j := rng.IntN(len(ids))
			ids[i], ids[j] = ids[j], ids[i]
		}
		var fresh Counts
		fill(&fresh, adds(ids...))
		reused.Reset()
		fill(&reused, adds(ids...))
		if got, want := reused.Map(), fresh.Map(); !maps.EqualFunc(got, want, maps.Equal) || reused.Len() != fresh.Len() {
			t.Fatalf("read %d of %v: reused table %v, fresh %v", read, ids, got, want)
		}
		if got, want := reused.ByNumber(), fresh.ByNumber(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Fatalf("read %d of %v: reused breakdown %v, fresh %v", read, ids, got, want)
		}
	}
}

// A read into a reset table of the size it had allocates nothing: the
// point of keeping it across reads.
func TestCounts_resetKeepsMemory(t *testing.T) {
	var c Counts
	read := func() {
		c.Reset()
		for id := range uint64(1000) {
			c.AddSyscalls(id, 0, id)
			c.AddSyscalls(id, 1, id)
			c.Add(id, CounterTCPConnects, 1)
		}
	}
	read()
	if n := testing.AllocsPerRun(10, read); n != 0 {
		t.Errorf("a read of 1000 cgroups into a reused table allocated %v times, want 0", n)
	}
	if v, _ := c.Get(999, CounterSyscalls); v != 2*999 || c.Len() != 1000 || len(c.Numbers()) != 2000 {
		t.Errorf("after reads: syscalls of 999 = %d, %d rows, %d numbers", v, c.Len(), len(c.Numbers()))
	}
}

// BenchmarkCounts_read fills a reused table as the agent's four meters do
// at 10,000 cgroups: two syscall numbers per cgroup in walk order, then
// the two counters of sockstate and netbytes and the pair of tlsmeter,
// each in a hash map's order (here a fixed shuffle).
func BenchmarkCounts_read(b *testing.B) {
	const n = 10_000
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = 1_000_000 + uint64(i)*7
	}
	shuffled := slices.Clone(ids)
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	var c Counts
	b.ReportAllocs()
	for b.Loop() {
		c.Reset()
		for _, id := range ids {
			c.AddSyscalls(id, 0, id)
			c.AddSyscalls(id, 1, id)
		}
		for _, k := range []Counter{CounterTCPConnects, CounterTCPAccepts, CounterNetTxBytes, CounterNetRxBytes} {
			for _, id := range shuffled {
				c.Add(id, k, id)
			}
		}
		for _, id := range shuffled {
			c.Add(id, CounterTLSClientHandshakes, 1)
			c.Add(id, CounterTLSServerHandshakes, 2)
		}
	}
	if c.Len() != n {
		b.Fatalf("%d rows, want %d", c.Len(), n)
	}
}
