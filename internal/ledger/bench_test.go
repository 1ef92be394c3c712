package ledger_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

// BenchmarkCommitWindows commits one window of 10,000 tenants x 6 meters
// per iteration: 60,000 usage rows, 10,000 journal entries with their
// postings, and the balances, in one transaction.
func BenchmarkCommitWindows(b *testing.B) {
	const tenants, meters = 10_000, 6
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			l := be.Open(b)
			ctx := context.Background()
			names := make([]string, tenants)
			for i := range names {
				names[i] = fmt.Sprintf("tenant-%05d", i)
			}
			meterNames := []string{"syscalls", "tcp_connects", "tcp_accepts", "net_tx_bytes", "net_rx_bytes", "tls_server_handshakes"}
			ws := make([]ledger.Window, 0, tenants*meters)
			// Window 1 creates the 60,000 series (once per series in a
			// ledger's life); the benchmark times the steady state after it.
			var cpu0 time.Duration
			for seq := uint64(1); seq <= uint64(b.N)+1; seq++ {
				if seq == 2 {
					b.ResetTimer()
					cpu0 = cpuTime()
				}
				b.StopTimer()
				ws = ws[:0]
				end := t0.Add(time.Duration(seq) * 5 * time.Second)
				for _, tn := range names {
					for _, m := range meterNames {
						ws = append(ws, ledger.Window{Node: "n1", Tenant: tn, Meter: m, Seq: seq, PrevSeq: seq - 1,
							FromCounter: (seq - 1) * 10, ToCounter: seq * 10, Quantity: 10,
							Start: end.Add(-5 * time.Second), End: end,
							Charge:       pricing.Charge{AmountMicro: 10, Currency: "USD", VendorMicro: 7},
							PluginSHA256: plugin})
					}
				}
				b.StartTimer()
				if err := l.CommitWindows(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(tenants*meters), "windows/op")
			// CPU of this process per commit: on a shared machine wall time
			// also measures the neighbours. (Includes building the windows;
			// PostgreSQL's server CPU is not in it.)
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			// Peak RSS of the whole test process so far (Go heap, SQLite's
			// page cache and allocator): an upper bound for what the
			// ledger adds to an agent. Sub-benchmarks run in order, so
			// PostgreSQL's number includes SQLite's peak.
			b.ReportMetric(float64(maxRSS())/(1<<20), "peak-rss-MiB")
		})
	}
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxRSS is the peak resident set size of this process, in bytes.
func maxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss << 10 // KiB on Linux
}
