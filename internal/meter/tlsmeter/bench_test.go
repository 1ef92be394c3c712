package tlsmeter

import (
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

// benchMeter is a private meter without the egress program, plus the
// benchmark producer tls_bench_emit, which emits records through the same
// reserve/submit code, record type and ring buffer as real handshakes.
func benchMeter(tb testing.TB, ringSize uint32) (*Meter, *ebpf.Program) {
	tb.Helper()
	testutil.RequireBPF(tb)
	spec := unpinnedSpec(tb)
	if ringSize != 0 {
		spec.Maps["events"].MaxEntries = ringSize
	}
	var objs struct {
		Emit *ebpf.Program `ebpf:"tls_bench_emit"`
		maps
	}
	testutil.CheckLoad(tb, spec.LoadAndAssign(&objs, nil))
	m := &Meter{maps: objs.maps, readers: make(map[*Reader]struct{})}
	tb.Cleanup(func() { m.Close(); objs.Emit.Close() })
	return m, objs.Emit
}

// emit runs the producer once for count records and returns how many it
// reserved successfully.
func emit(tb testing.TB, prog *ebpf.Program, count uint32) uint32 {
	in := tlsmeterBenchArgs{Count: count}
	var out tlsmeterBenchArgs
	if _, err := prog.Run(&ebpf.RunOptions{Context: in, ContextOut: &out}); err != nil {
		tb.Fatalf("run producer: %v", err)
	}
	return out.Emitted
}

// BenchmarkReader measures events per second from the kernel's ring
// buffer to a decoded Event, and checks delivered + dropped == produced.
// The producer waits for room in the ring before each batch, so drops
// stay rare but are still accounted for exactly.
func BenchmarkReader(b *testing.B) {
	// The meter's own ring is 1 MiB; a larger one lets the producer run
	// further ahead of the reader in bursts.
	for _, tt := range []struct {
		name   string
		decode bool
		ring   uint32
	}{
		{"raw-ring1MiB", false, 0},
		{"event-ring1MiB", true, 0},
		{"raw-ring16MiB", false, 16 << 20},
		{"event-ring16MiB", true, 16 << 20},
	} {
		b.Run(tt.name, func(b *testing.B) {
			m, prog := benchMeter(b, tt.ring)
			r, err := m.Events()
			if err != nil {
				b.Fatal(err)
			}
			batch := min(4096, r.rd.BufferSize()/(rawEventSize+8)/2)
			room := r.rd.BufferSize() - batch*(rawEventSize+8)
			total := uint64(b.N)
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() {
				for left := total; left > 0; {
					for r.rd.AvailableBytes() > room {
						// Let the reader catch up instead of dropping.
						runtime.Gosched()
					}
					n := uint32(min(left, uint64(batch)))
					emit(b, prog, n)
					left -= uint64(n)
				}
				done <- nil
			}()
			var raw RawEvent
			var sink Event
			for {
				// Only an empty ring can mean the end: check then.
				if r.rd.AvailableBytes() == 0 {
					s, err := r.Stats()
					if err != nil {
						b.Fatal(err)
					}
					if s.Produced == total && s.Delivered+s.Dropped == total {
						break
					}
				}
				if err := r.ReadRaw(&raw); err != nil {
					b.Fatal(err)
				}
				if tt.decode {
					sink = r.Decode(&raw)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			<-done
			_ = sink
			s, err := r.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if s.Delivered+s.Dropped != s.Produced || s.Produced != total {
				b.Fatalf("delivered %d + dropped %d != produced %d (want %d)", s.Delivered, s.Dropped, s.Produced, total)
			}
			b.ReportMetric(float64(s.Delivered)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(s.Dropped), "dropped")
		})
	}
}
