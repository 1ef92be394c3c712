package window_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/agent"
	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// benchMeters are the agent's seven usage counters.
var benchMeters = []string{"syscalls", "tcp_connects", "tcp_accepts", "net_tx_bytes", "net_rx_bytes",
	"tls_client_handshakes", "tls_server_handshakes"}

// snapshot builds the counts of an agent-like reading (tenant -> meter
// -> count, made into an agent.Usage per read), every counter at base+i.
func snapshot(tenants []string, base uint64) map[string]map[string]uint64 {
	m := make(map[string]map[string]uint64, len(tenants))
	for i, t := range tenants {
		byMeter := make(map[string]uint64, len(benchMeters))
		for j, meter := range benchMeters {
			byMeter[meter] = base + uint64(i+j)
		}
		m[t] = byMeter
	}
	return m
}

// tickHeapProfile names a file for BenchmarkTick's heap profiles (one
// per sub-benchmark, its name as prefix), taken
// after the ticks while the biller and the ledger are still open (the
// test binary's -memprofile is written after they are closed).
var tickHeapProfile = flag.String("tick-heapprofile", "", "write BenchmarkTick's live heap profile to this file")

// processCPU is the CPU time the process used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardStore accepts every window and keeps nothing: the biller's own
// cost without the ledger's.
type discardStore struct{}

func (discardStore) Checkpoints(context.Context, string) ([]ledger.Checkpoint, error) {
	return nil, nil
}
func (discardStore) Commit(context.Context, ledger.WindowSource) error { return nil }

// readStore reads every window of a commit as the ledger's Commit does
// (validated in a first pass, read again in a second) and keeps
// nothing: the biller's cost with the cost of handing its windows over.
type readStore struct{ sum uint64 }

func (*readStore) Checkpoints(context.Context, string) ([]ledger.Checkpoint, error) {
	return nil, nil
}

func (s *readStore) Commit(_ context.Context, src ledger.WindowSource) error {
	for i := range src.Len() {
		w := src.Window(i)
		if err := w.Validate(); err != nil {
			return err
		}
		s.sum += uint64(len(w.Tenant) + len(w.Meter))
	}
	for i := range src.Len() {
		w := src.Window(i)
		s.sum += w.Quantity + uint64(w.Charge.AmountMicro) + uint64(w.Start.UnixMicro())
	}
	return nil
}

// appendPricer is a fixedPricer that appends its charges to the
// caller's buffer, as the plugin engine does ([pricing.Appender]), so
// that a benchmark's allocations are the biller's, not the test
// pricer's.
type appendPricer struct{ *fixedPricer }

func (p appendPricer) PriceAppend(_ context.Context, recs []pricing.Record, dst []pricing.Charge) (pricing.Result, error) {
	for _, r := range recs {
		amt := int64(r.Quantity) * p.microPerUnit
		dst = append(dst, pricing.Charge{AmountMicro: amt, Currency: "USD", VendorMicro: amt * 7 / 10})
	}
	return pricing.Result{PluginSHA256: pluginSHA, Charges: dst}, nil
}

// BenchmarkTick bills windows of 10,000 tenants x 7 meters, every series
// grown since the last tick: the billed agent's tick at issue 4's scale.
// "sqlite" commits into a real SQLite ledger; "discard" measures the
// biller alone. live-MB is the heap in use after a collection with the
// biller, its store and the latest two readings reachable, as in the
// agent.
func BenchmarkTick(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchTick(b, ledgertest.SQLite.Open(b), 5*time.Second) })
	b.Run("discard", func(b *testing.B) { benchTick(b, discardStore{}, 5*time.Second) })
	// The windows read by the store as the ledger reads them.
	b.Run("read", func(b *testing.B) { benchTick(b, &readStore{}, 5*time.Second) })
	// The agent's routes: a config's pricing rules through a Router, here
	// a rule for every series and one for a single tenant.
	b.Run("discard-router", func(b *testing.B) {
		rules := []config.PricingRule{{Plugin: "flat.wasm"}, {Tenant: "t00042", Plugin: "special.wasm"}}
		r, err := window.NewRouter(rules, func(string) (pricing.Pricer, error) { return appendPricer{&fixedPricer{microPerUnit: 2}}, nil })
		if err != nil {
			b.Fatal(err)
		}
		// Attributes as a config gives them: some tenants have some.
		attrs := window.AttrsFromConfig([]config.Tenant{{Name: "t00042", Attributes: map[string]string{"plan": "gold"}}})
		benchTickWith(b, discardStore{}, r, attrs, 5*time.Second)
	})
	// Windows of a minute: before the biller handed its windows through
	// a WindowSource, it allocated a buffer of them per tick at this
	// interval rather than keep it.
	b.Run("discard-60s", func(b *testing.B) { benchTick(b, discardStore{}, time.Minute) })
}

func benchTick(b *testing.B, st window.Store, every time.Duration) {
	benchTickWith(b, st, onePricer{appendPricer{&fixedPricer{microPerUnit: 2}}}, nil, every)
}

// benchTickWith ticks with readings as the agent makes them: a flat
// agent.Usage per read, walked in billing order (window.SortedWalk).
func benchTickWith(b *testing.B, st window.Store, p window.Pricers, attrs func(string) map[string]string, every time.Duration) {
	const nTenants = 10_000
	tenants := make([]string, nTenants)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("t%05d", i)
	}
	var latest, previous atomic.Pointer[agent.Usage]
	src := window.SortedWalk(func(_ context.Context, fn func(tenant, meter string, count uint64)) error {
		latest.Load().Walk(fn)
		return nil
	})
	b2, err := window.New(context.Background(), window.Config{NodeID: "n1", Source: src, Ledger: st,
		Pricers: p, Attrs: attrs, Interval: every, Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	next := func(i int) {
		u, err := agent.NewUsage(snapshot(tenants, uint64(i+1)*100))
		if err != nil {
			b.Fatal(err)
		}
		if p := latest.Load(); p != nil {
			previous.Store(p)
		}
		latest.Store(&u)
	}
	next(0)
	mustTick(b, b2) // the first window opens every series in the ledger
	b.ReportAllocs()
	i := 1
	// cpu is the process's CPU time during the ticks, GC workers
	// included: steadier than ns/op on a host shared with other work.
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		next(i)
		i++
		start := processCPU(b)
		b.StartTimer()
		if r := mustTick(b, b2); r.Windows != nTenants*len(benchMeters) {
			b.Fatalf("tick = %+v, want %d windows", r, nTenants*len(benchMeters))
		}
		b.StopTimer()
		cpu += processCPU(b) - start
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/op")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-MB")
	if *tickHeapProfile != "" {
		f, err := os.Create(strings.ReplaceAll(b.Name(), "/", "-") + "-" + *tickHeapProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
	runtime.KeepAlive(b2)
	runtime.KeepAlive(st)
	runtime.KeepAlive(previous.Load())
}
