package agent

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/tenant"
)

// fakeMeter reports fixed counters for a list of cgroups, as a kernel
// meter would after reading its map: each cgroup's counters grow by one
// per read. With byNumber it is the syscalls meter, whose counts come
// broken down by syscall number.
type fakeMeter struct {
	ids      []uint64
	counters []meter.Counter
	byNumber int // syscall numbers per cgroup; 0: not a syscalls meter
	reads    uint64
}

func (f *fakeMeter) Close() error { return nil }

func (f *fakeMeter) Status() meter.Status {
	names := make([]string, len(f.counters))
	for i, k := range f.counters {
		names[i] = k.Name()
	}
	return meter.Status{Meter: "fake", Counters: names}
}

func (f *fakeMeter) ReadInto(c *meter.Counts) error {
	f.reads++
	for i, id := range f.ids {
		if f.byNumber > 0 {
			for nr := range f.byNumber {
				c.AddSyscalls(id, uint32(nr), f.reads*uint64(i+nr+1))
			}
			continue
		}
		for j, k := range f.counters {
			c.Add(id, k, f.reads*uint64(i+j+1))
		}
	}
	return nil
}

// scriptMeter adds what add gives for read number n (1, 2, ...).
type scriptMeter struct {
	add   func(c *meter.Counts, n uint64)
	reads uint64
}

func (f *scriptMeter) Close() error         { return nil }
func (f *scriptMeter) Status() meter.Status { return meter.Status{Meter: "script"} }

func (f *scriptMeter) ReadInto(c *meter.Counts) error {
	f.reads++
	f.add(c, f.reads)
	return nil
}

// Read adds each tenant's cgroups up, keeps counters no meter reported
// absent, and gives every snapshot maps of its own: the counts of three
// reads, whose meters add in a different order each time, are exact.
func TestRead_perTenant(t *testing.T) {
	root := t.TempDir()
	id := map[string]uint64{}
	for _, p := range []string{"shop", "shop/a", "shop/b", "solo"} {
		if err := os.Mkdir(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		id[p] = st.Ino
	}
	res, err := tenant.NewResolver(root, []config.Tenant{{Name: "shop", Cgroups: []string{"/shop"}}})
	if err != nil {
		t.Fatal(err)
	}
	a, b, solo := id["shop/a"], id["shop/b"], id["solo"]
	// Odd reads add in one order, even reads in the reverse one.
	order := func(n uint64, ids ...uint64) []uint64 {
		if n%2 == 0 {
			slices.Reverse(ids)
		}
		return ids
	}
	ag := &Agent{
		cfg:        Config{Resolver: res, Interval: 5 * time.Second},
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		unresolved: map[uint64]bool{},
		meters: []meter.Meter{
			&scriptMeter{add: func(c *meter.Counts, n uint64) {
				for _, cg := range order(n, a, b, solo) {
					switch cg {
					case a:
						c.AddSyscalls(a, 0, 10*n)
						c.AddSyscalls(a, 1, 5*n)
					case b:
						c.AddSyscalls(b, 1, 7*n)
					case solo:
						c.AddSyscalls(solo, 0, n)
					}
				}
			}},
			&scriptMeter{add: func(c *meter.Counts, n uint64) {
				for _, cg := range order(n, b, a) {
					c.Add(cg, meter.CounterTCPConnects, map[uint64]uint64{a: 2, b: 3}[cg]*n)
				}
			}},
			&scriptMeter{add: func(c *meter.Counts, n uint64) { c.Add(solo, meter.CounterTLSClientHandshakes, 0) }},
		},
	}
	var snaps []*Snapshot
	for range 3 {
		s, err := ag.Read()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, s)
	}
	soloName := res.Tenant(solo)
	for i, s := range snaps {
		n := uint64(i + 1)
		want := map[string]map[string]uint64{
			"shop":   {meter.Syscalls: 22 * n, meter.TCPConnects: 5 * n},
			soloName: {meter.Syscalls: n, meter.TLSClientHandshakes: 0},
		}
		wantNr := map[string]map[uint32]uint64{"shop": {0: 10 * n, 1: 12 * n}, soloName: {0: n}}
		if got := s.Tenants.Map(); !maps.EqualFunc(got, want, maps.Equal) {
			t.Errorf("read %d: tenants %v, want %v", n, got, want)
		}
		if got := s.SyscallsByNumber.Map(); !maps.EqualFunc(got, wantNr, maps.Equal) {
			t.Errorf("read %d: syscalls by number %v, want %v", n, got, wantNr)
		}
	}
}

// BenchmarkRead measures what Agent.Read does besides reading the
// kernel maps: 10,000 cgroups, one tenant each, the seven counters of
// the four meters and two syscall numbers per cgroup (bench/agent10k's
// load), aggregated per tenant into a snapshot. Directories of a temp
// dir stand in for the cgroups: their inode numbers are the ids.
func BenchmarkRead(b *testing.B) {
	const n = 10_000
	root := b.TempDir()
	ids := make([]uint64, n)
	for i := range ids {
		p := filepath.Join(root, fmt.Sprintf("t%05d", i))
		if err := os.Mkdir(p, 0o755); err != nil {
			b.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			b.Fatal(err)
		}
		ids[i] = st.Ino
	}
	res, err := tenant.NewResolver(root, nil)
	if err != nil {
		b.Fatal(err)
	}
	a := &Agent{
		cfg:        Config{Resolver: res, Interval: 5 * time.Second},
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		unresolved: map[uint64]bool{},
		meters: []meter.Meter{
			&fakeMeter{ids: ids, counters: []meter.Counter{meter.CounterSyscalls}, byNumber: 2},
			&fakeMeter{ids: ids, counters: []meter.Counter{meter.CounterTCPConnects, meter.CounterTCPAccepts}},
			&fakeMeter{ids: ids, counters: []meter.Counter{meter.CounterNetTxBytes, meter.CounterNetRxBytes}},
			&fakeMeter{ids: ids, counters: []meter.Counter{meter.CounterTLSClientHandshakes, meter.CounterTLSServerHandshakes}},
		},
	}
	if _, err := a.Read(); err != nil { // names the cgroups
		b.Fatal(err)
	}
	b.ReportAllocs()
	// cpu is the process's CPU time, GC workers included: steadier than
	// ns/op on a host shared with other work.
	start := processCPU(b)
	for b.Loop() {
		s, err := a.Read()
		if err != nil {
			b.Fatal(err)
		}
		if c, _ := s.Tenants.Lookup("/t00042"); s.Tenants.Len() != n || c.Len() != len(meter.Names) || len(s.SyscallsByNumber.Of("/t00042")) != 2 {
			b.Fatalf("snapshot of %d tenants, /t00042 = %v", s.Tenants.Len(), c.Map())
		}
	}
	b.ReportMetric(float64((processCPU(b)-start).Microseconds())/1e3/float64(b.N), "cpu-ms/op")
}

// processCPU is the CPU time the process used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
