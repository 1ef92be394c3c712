package ledger_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/exposition"
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
			cfg := be.Config(b)
			l := ledgertest.OpenConfig(b, cfg)
			ctx := context.Background()
			names, meterNames := benchTenants(tenants), benchMeters()
			ws := make([]ledger.Window, 0, tenants*meters)
			// Window 1 creates the 60,000 series (once per series in a
			// ledger's life); the benchmark times the steady state after it.
			var cpu0 time.Duration
			var size0 int64
			for seq := uint64(1); seq <= uint64(b.N)+1; seq++ {
				if seq == 2 {
					b.ResetTimer()
					cpu0 = cpuTime()
				}
				b.StopTimer()
				ws = appendWindows(ws[:0], names, meterNames, seq, t0.Add(time.Duration(seq)*5*time.Second))
				b.StartTimer()
				if err := l.CommitWindows(ctx, ws); err != nil {
					b.Fatal(err)
				}
				if seq == 1 {
					size0 = fileSize(b, cfg)
				}
			}
			if cfg.Path != "" {
				// What each window adds to the SQLite file (its pages
				// in the WAL included): 10,000 tenants every 5 s.
				b.ReportMetric(float64(fileSize(b, cfg)-size0)/float64(b.N), "file-B/window")
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

// BenchmarkCommitWindows_monthsFirst times the month's first commit
// alone: 10,000 tenants x 6 meters whose open usage lines all roll
// (November's are closed into usage_lines, December's opened), once a
// month per ledger. Each iteration builds a ledger with one November
// window first, untimed.
func BenchmarkCommitWindows_monthsFirst(b *testing.B) {
	const tenants = 10_000
	names, meterNames := benchTenants(tenants), benchMeters()
	windows := func(seq uint64, end time.Time) []ledger.Window {
		return appendWindows(nil, names, meterNames, seq, end)
	}
	nov, dec := windows(1, t0), windows(2, t0.Add(time.Hour)) // t0 is 23:59 on 30 November
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			var cpu time.Duration
			for range b.N {
				b.StopTimer()
				l := be.Open(b)
				if err := l.CommitWindows(ctx, nov); err != nil {
					b.Fatal(err)
				}
				// The cache of open lines is warm, as in an agent that ran
				// through the month end.
				b.StartTimer()
				c0 := cpuTime()
				if err := l.CommitWindows(ctx, dec); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
				b.StopTimer()
				lines, err := l.UsageLines(ctx, "tenant-00000", "2026-11")
				if err != nil || len(lines) != len(meterNames) || lines[0].Quantity != 10 {
					b.Fatalf("november lines after the roll = %+v, %v", lines, err)
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// fileSize is the size of cfg's SQLite ledger as a new reader sees it:
// page count times page size, so that pages still in the WAL count too.
// It is 0 for PostgreSQL.
func fileSize(b *testing.B, cfg ledger.Config) int64 {
	if cfg.Path == "" {
		return 0
	}
	db, err := sql.Open("sqlite", cfg.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var size int64
	if err := db.QueryRow(`SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	return size
}

// BenchmarkReverse reverses one tenant's usage entry (6 windows) per
// iteration, in a ledger of 1 or 20 windows of 2,000 tenants x 6 meters.
// Without an index of usage by entry, a reversal finds the entry's
// windows through its window_seq and the tenant's series: its cost must
// not grow with the ledger.
func BenchmarkReverse(b *testing.B) {
	const tenants = 2000
	names, meterNames := benchTenants(tenants), benchMeters()
	for _, be := range ledgertest.Backends() {
		for _, history := range []uint64{1, 20} {
			b.Run(fmt.Sprintf("%s/windows=%d", be.Name, history), func(b *testing.B) {
				if b.N > tenants {
					b.Fatalf("at most %d reversals (one per first-window entry); use -benchtime %dx or less", tenants, tenants)
				}
				l := be.Open(b)
				ctx := context.Background()
				var ws []ledger.Window
				for seq := uint64(1); seq <= history; seq++ {
					ws = appendWindows(ws[:0], names, meterNames, seq, t0.Add(time.Duration(seq)*5*time.Second))
					if err := l.CommitWindows(ctx, ws); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				// Entries 1..tenants are the first window's, one per tenant.
				for i := range b.N {
					if _, err := l.Reverse(ctx, int64(i+1), "bench"); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkReaders times what reads packed rows (schema version 4) in a
// ledger of 10 windows of 10,000 tenants x 6 meters: a node's checkpoints
// (the agent's start), one tenant's invoice lines, the totals and ledger
// verify, each of which decodes node states or commit blobs.
func BenchmarkReaders(b *testing.B) {
	const tenants, windows = 10_000, 10
	names, meterNames := benchTenants(tenants), benchMeters()
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			cfg := be.Config(b)
			l := ledgertest.OpenConfig(b, cfg)
			ctx := context.Background()
			var ws []ledger.Window
			for seq := uint64(1); seq <= windows; seq++ {
				ws = appendWindows(ws[:0], names, meterNames, seq, t0.Add(time.Duration(seq)*5*time.Second))
				if err := l.CommitWindows(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			// A reader that has not committed: no cached state.
			r := ledgertest.OpenConfig(b, cfg)
			scrape, err := exposition.NewHandler(prometheus.NewRegistry(), []exposition.Source{r.Families()}, exposition.HandlerOpts{})
			if err != nil {
				b.Fatal(err)
			}
			for _, rd := range []struct {
				name string
				read func() error
			}{
				{"Checkpoints", func() error {
					cps, err := r.Checkpoints(ctx, "n1")
					if err == nil && len(cps) != tenants*len(meterNames) {
						err = fmt.Errorf("%d checkpoints", len(cps))
					}
					return err
				}},
				{"UsageLines", func() error {
					ls, err := r.UsageLines(ctx, "tenant-00042", "2026-11")
					if err == nil && (len(ls) != len(meterNames) || ls[0].Quantity != 10*windows) {
						err = fmt.Errorf("lines %+v", ls)
					}
					return err
				}},
				{"Totals", func() error {
					ts, err := r.Totals(ctx)
					if err == nil && len(ts) != tenants*len(meterNames) {
						err = fmt.Errorf("%d totals", len(ts))
					}
					return err
				}},
				// A /metrics scrape of the ledger's families: every
				// tenant's balance, charges and low flag.
				{"Scrape", func() error {
					rec := httptest.NewRecorder()
					scrape.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
					if n := strings.Count(rec.Body.String(), "\nkmeter_balance_micro{"); rec.Code != 200 || n != tenants {
						return fmt.Errorf("scrape: status %d, %d balances", rec.Code, n)
					}
					return nil
				}},
				{"Verify", func() error {
					rep, err := r.Verify(ctx)
					if err == nil && (!rep.OK() || rep.Windows != tenants*int64(len(meterNames))*windows) {
						err = fmt.Errorf("report %+v", rep)
					}
					return err
				}},
			} {
				b.Run(rd.name, func(b *testing.B) {
					c0 := cpuTime()
					for range b.N {
						if err := rd.read(); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric((cpuTime()-c0).Seconds()/float64(b.N), "cpu-s/op")
				})
			}
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

// BenchmarkLedgerLiveHeap reports what an open ledger keeps on the Go
// heap for one node of 10,000 tenants x 7 meters (70,000 series, as the
// agent of issue 4 bills): its caches of series ids, node state and
// charges, and the buffers it keeps for the next commit, after b.N
// commits of one window per series. It is the live heap with the ledger
// open minus the live heap once it is closed and dropped. The windows
// come through a WindowSource that makes them when asked, as the biller's
// does, so none are kept; the tenant names the ledger shares with them
// (160 kB, the biller's in an agent) are counted.
func BenchmarkLedgerLiveHeap(b *testing.B) {
	const tenants = 10_000
	meterNames := []string{"syscalls", "tcp_connects", "tcp_accepts", "net_tx_bytes", "net_rx_bytes", "tls_server_handshakes", "tls_client_handshakes"}
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			l, err := ledger.Open(ctx, be.Config(b))
			if err != nil {
				b.Fatal(err)
			}
			src := &benchSource{tenants: benchTenants(tenants), meters: meterNames, step: 1, qty: 1000, amount: 1000, vendor: 700}
			for seq := uint64(1); seq <= uint64(b.N); seq++ {
				src.seq, src.prev, src.end = seq, seq-1, t0.Add(time.Duration(seq)*5*time.Second)
				if err := l.Commit(ctx, src); err != nil {
					b.Fatal(err)
				}
			}
			// src and l are dead from here on: the collector frees them.
			open := liveHeap()
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(open-liveHeap())/(1<<20), "live-MiB")
			b.ReportMetric(float64(tenants*len(meterNames)), "series")
		})
	}
}

// BenchmarkCommit_partial commits half of 10,000 tenants x 6 meters per
// iteration, every other tenant, the other half the next time, through a
// WindowSource: what an agent's biller sends when only some series moved,
// so that no two commits hold the same series.
func BenchmarkCommit_partial(b *testing.B) {
	const tenants = 10_000
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			l := be.Open(b)
			ctx := context.Background()
			src := &benchSource{tenants: benchTenants(tenants), meters: benchMeters(), qty: 10, amount: 10, vendor: 7}
			// Window 1 creates the series and bills all; window 2 the even
			// tenants. The benchmark times windows 3 on.
			var cpu0 time.Duration
			for seq := uint64(1); seq <= uint64(b.N)+2; seq++ {
				if seq == 3 {
					b.ResetTimer()
					cpu0 = cpuTime()
				}
				src.first, src.step = int(seq%2), 2
				if seq == 1 {
					src.first, src.step = 0, 1
				}
				// An hour before t0: no month's roll in a run of up to 700.
				src.seq, src.prev, src.end = seq, max(1, seq-2), t0.Add(time.Duration(seq)*5*time.Second-time.Hour)
				if seq == 1 {
					src.prev = 0
				}
				if err := l.Commit(ctx, src); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(src.Len()), "windows/op")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// benchSource is a commit's windows made when asked, as a biller's
// WindowSource hands them out of its own table: each meter of every
// step-th tenant from first, window seq from checkpoint prev (qty units
// per window, priced amount with vendor to the plugin's vendor).
type benchSource struct {
	tenants, meters []string
	first, step     int
	seq, prev, qty  uint64
	amount, vendor  int64
	end             time.Time
}

func (s *benchSource) Len() int {
	return (len(s.tenants) - s.first + s.step - 1) / s.step * len(s.meters)
}

func (s *benchSource) Window(i int) ledger.Window {
	return ledger.Window{Node: "n1", Tenant: s.tenants[s.first+i/len(s.meters)*s.step], Meter: s.meters[i%len(s.meters)],
		Seq: s.seq, PrevSeq: s.prev, FromCounter: s.prev * s.qty, ToCounter: s.seq * s.qty, Quantity: (s.seq - s.prev) * s.qty,
		Start: s.end.Add(-5 * time.Second), End: s.end,
		Charge: pricing.Charge{AmountMicro: s.amount, Currency: "USD", VendorMicro: s.vendor}, PluginSHA256: plugin}
}

// liveHeap is the Go heap in use after a full collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// benchTenants names n tenants.
func benchTenants(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("tenant-%05d", i)
	}
	return names
}

// benchMeters are the six meters the benchmarks bill per tenant.
func benchMeters() []string {
	return []string{"syscalls", "tcp_connects", "tcp_accepts", "net_tx_bytes", "net_rx_bytes", "tls_server_handshakes"}
}

// appendWindows appends to dst window seq, ending at end, of every
// (tenant, meter) of node n1: 10 units each, priced 10 micro-USD with 7
// to the plugin's vendor.
func appendWindows(dst []ledger.Window, tenants, meters []string, seq uint64, end time.Time) []ledger.Window {
	for _, tn := range tenants {
		for _, m := range meters {
			dst = append(dst, ledger.Window{Node: "n1", Tenant: tn, Meter: m, Seq: seq, PrevSeq: seq - 1,
				FromCounter: (seq - 1) * 10, ToCounter: seq * 10, Quantity: 10, Start: end.Add(-5 * time.Second), End: end,
				Charge: pricing.Charge{AmountMicro: 10, Currency: "USD", VendorMicro: 7}, PluginSHA256: plugin})
		}
	}
	return dst
}

// BenchmarkCommitWindows_newTenant commits the windows of 10,000 tenants
// x 6 meters plus those of one tenant seen for the first time, as on a
// host where tenants come and go: the new series' ids are read back
// (cpu-s/op includes building the windows).
func BenchmarkCommitWindows_newTenant(b *testing.B) {
	const tenants = 10_000
	for _, be := range ledgertest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			l := ledgertest.OpenConfig(b, be.Config(b))
			ctx := context.Background()
			names, meterNames := benchTenants(tenants), benchMeters()
			ws := appendWindows(nil, names, meterNames, 1, t0.Add(5*time.Second))
			if err := l.CommitWindows(ctx, ws); err != nil {
				b.Fatal(err)
			}
			cpu0 := cpuTime()
			seq := uint64(1)
			for b.Loop() {
				seq++
				end := t0.Add(time.Duration(seq) * 5 * time.Second)
				ws = appendWindows(ws[:0], names, meterNames, seq, end)
				for _, m := range meterNames {
					ws = append(ws, ledger.Window{Node: "n1", Tenant: fmt.Sprintf("new-%05d", seq), Meter: m, Seq: seq,
						ToCounter: 10, Quantity: 10, Start: end.Add(-5 * time.Second), End: end,
						Charge: pricing.Charge{AmountMicro: 10, Currency: "USD", VendorMicro: 7}, PluginSHA256: plugin})
				}
				if err := l.CommitWindows(ctx, ws); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}
