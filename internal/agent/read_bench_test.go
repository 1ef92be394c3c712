package agent

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/tenant"
)

// fakeMeter reports fixed counters for a list of cgroups, as a kernel
// meter would after reading its map: each cgroup's counters grow by one
// per read. With byNumber it is the syscalls meter, whose counts come
// broken down by syscall number.
type fakeMeter struct {
	ids      []uint64
	counters []string
	byNumber int // syscall numbers per cgroup; 0: not a syscalls meter
	reads    uint64
}

func (f *fakeMeter) Close() error         { return nil }
func (f *fakeMeter) Status() meter.Status { return meter.Status{Meter: "fake", Counters: f.counters} }

func (f *fakeMeter) ReadInto(c meter.Counts) error {
	f.reads++
	for i, id := range f.ids {
		for j, name := range f.counters {
			c.Add(id, name, f.reads*uint64(i+j+1))
		}
	}
	return nil
}

// fakeSyscalls is a fakeMeter that is also a BySyscallNumber.
type fakeSyscalls struct{ fakeMeter }

func (f *fakeSyscalls) ReadByNumberInto(c meter.Counts) (map[uint64]map[uint32]uint64, error) {
	f.reads++
	out := map[uint64]map[uint32]uint64{}
	for i, id := range f.ids {
		byNr := map[uint32]uint64{}
		var sum uint64
		for nr := range f.byNumber {
			byNr[uint32(nr)] = f.reads * uint64(i+nr+1)
			sum += f.reads * uint64(i+nr+1)
		}
		out[id] = byNr
		c.Add(id, meter.Syscalls, sum)
	}
	return out, nil
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
			&fakeSyscalls{fakeMeter{ids: ids, counters: []string{meter.Syscalls}, byNumber: 2}},
			&fakeMeter{ids: ids, counters: []string{meter.TCPConnects, meter.TCPAccepts}},
			&fakeMeter{ids: ids, counters: []string{meter.NetTxBytes, meter.NetRxBytes}},
			&fakeMeter{ids: ids, counters: []string{meter.TLSClientHandshakes, meter.TLSServerHandshakes}},
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
		if len(s.Tenants) != n || len(s.Tenants["/t00042"]) != len(meter.Names) || len(s.SyscallsByNumber["/t00042"]) != 2 {
			b.Fatalf("snapshot of %d tenants, /t00042 = %v", len(s.Tenants), s.Tenants["/t00042"])
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
