package window_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

func forEachBackend(t *testing.T, f func(t *testing.T, b ledgertest.Backend)) {
	for _, b := range ledgertest.Backends() {
		t.Run(b.Name, func(t *testing.T) { f(t, b) })
	}
}

func TestBiller_Tick_billsGrowth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		l := be.Open(t)
		src := newSource()
		p := &fixedPricer{microPerUnit: 3}
		b := newBiller(t, "n1", src, l, onePricer{p}, nil)
		src.add("shop", "syscalls", 1000)
		src.add("shop", "tcp_connects", 5)
		src.add("blog", "syscalls", 7)
		if r := mustTick(t, b); r.Windows != 3 || r.Quantity != 1012 {
			t.Fatalf("tick 1 = %+v, want 3 windows of 1012", r)
		}
		if r := mustTick(t, b); r.Windows != 0 {
			t.Fatalf("tick without growth = %+v, want no window", r)
		}
		src.add("shop", "syscalls", 500)
		if r := mustTick(t, b); r.Windows != 1 || r.Quantity != 500 {
			t.Fatalf("tick 3 = %+v, want 1 window of 500", r)
		}
		q, a := billed(t, l)
		want := map[string]int64{"n1/shop/syscalls": 1500, "n1/shop/tcp_connects": 5, "n1/blog/syscalls": 7}
		for k, v := range want {
			if q[k] != v || a[k] != 3*v {
				t.Errorf("%s billed %d for %d micro, want %d for %d", k, q[k], a[k], v, 3*v)
			}
		}
		if len(q) != len(want) {
			t.Errorf("billed series %v, want %v", q, want)
		}
		bs, err := l.Balances(context.Background(), "shop")
		if err != nil {
			t.Fatal(err)
		}
		if bs[0].BalanceMicro != -3*1505 {
			t.Errorf("shop balance %d, want %d", bs[0].BalanceMicro, -3*1505)
		}
		mustVerify(t, l)
	})
}

// TestBiller_crash injects a crash at each fault point and restarts: the
// billed quantity must equal the source's count exactly.
func TestBiller_crash(t *testing.T) {
	errCrash := errors.New("simulated crash")
	tests := []struct {
		name  string
		point window.FaultPoint
	}{
		{"between pricing and commit", window.AfterPrice},
		{"after commit", window.AfterCommit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
				l := be.Open(t)
				src := newSource()
				p := &fixedPricer{microPerUnit: 2}
				crash := func(fp window.FaultPoint) error {
					if fp == tt.point {
						return errCrash
					}
					return nil
				}
				src.add("shop", "syscalls", 100)
				mustTick(t, newBiller(t, "n1", src, l, onePricer{p}, nil))
				src.add("shop", "syscalls", 40)
				src.add("blog", "syscalls", 9)
				doomed := newBiller(t, "n1", src, l, onePricer{p}, crash)
				if _, err := doomed.Tick(context.Background()); !errors.Is(err, errCrash) {
					t.Fatalf("tick = %v, want the crash", err)
				}
				// The counters keep counting while the agent is down.
				src.add("shop", "syscalls", 60)
				restarted := newBiller(t, "n1", src, l, onePricer{p}, nil)
				mustTick(t, restarted)
				// The crashed biller, were it to live on, must not bill
				// twice either: it re-reads its checkpoints first.
				doomed2 := doomed
				src.add("shop", "syscalls", 1)
				if _, err := doomed2.Tick(context.Background()); !errors.Is(err, errCrash) {
					t.Fatalf("second tick of the crashing biller = %v", err)
				}
				// After a crash after commit, that window is in the ledger
				// and restarted's try at the same seq is refused; it
				// reloads and bills nothing twice.
				if _, err := restarted.Tick(context.Background()); err != nil && !errors.Is(err, ledger.ErrDuplicateWindow) {
					t.Fatalf("tick = %v, want success or ErrDuplicateWindow", err)
				}
				mustTick(t, restarted)
				q, a := billed(t, l)
				if q["n1/shop/syscalls"] != 201 || q["n1/blog/syscalls"] != 9 {
					t.Errorf("billed %v, want shop 201 and blog 9", q)
				}
				if a["n1/shop/syscalls"] != 402 || a["n1/blog/syscalls"] != 18 {
					t.Errorf("amounts %v, want shop 402 and blog 18", a)
				}
				mustVerify(t, l)
			})
		})
	}
}

func TestBiller_counterBackwards(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		l := be.Open(t)
		src := newSource()
		b := newBiller(t, "n1", src, l, onePricer{&fixedPricer{microPerUnit: 1}}, nil)
		steps := []struct {
			set      uint64
			rebased  int
			quantity uint64
		}{
			{set: 100, quantity: 100},
			{set: 30, rebased: 1, quantity: 0}, // maps re-created: re-based at 30, nothing billed
			{set: 50, quantity: 20},
			{set: 0, rebased: 1, quantity: 0}, // re-created again
			{set: 8, quantity: 8},
		}
		for i, s := range steps {
			src.set("shop", "syscalls", s.set)
			r := mustTick(t, b)
			if r.Rebased != s.rebased || r.Quantity != s.quantity {
				t.Fatalf("step %d (counter %d): %+v, want rebased %d quantity %d", i, s.set, r, s.rebased, s.quantity)
			}
		}
		q, a := billed(t, l)
		if q["n1/shop/syscalls"] != 128 || a["n1/shop/syscalls"] != 128 {
			t.Errorf("billed %v for %v, want 128 for 128", q, a)
		}
		mustVerify(t, l)
		want := `
# HELP kmeter_counter_resets_total Times a usage counter went backwards (kernel maps re-created) and was re-based.
# TYPE kmeter_counter_resets_total counter
kmeter_counter_resets_total{meter="syscalls",tenant="shop"} 2
`
		if err := testutil.CollectAndCompare(b, strings.NewReader(want), "kmeter_counter_resets_total"); err != nil {
			t.Error(err)
		}
	})
}

func TestBiller_pricingFailureHoldsUsage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		l := be.Open(t)
		src := newSource()
		p := &fixedPricer{microPerUnit: 5}
		b := newBiller(t, "n1", src, l, onePricer{p}, nil)
		src.add("shop", "syscalls", 10)
		mustTick(t, b)
		p.fail.Store(true)
		src.add("shop", "syscalls", 7)
		if r := mustTick(t, b); r.Held != 1 || r.Windows != 0 {
			t.Fatalf("tick with failing pricer = %+v, want 1 held", r)
		}
		src.add("shop", "syscalls", 3)
		mustTick(t, b)
		if got := b.Unbilled()[window.Key{Tenant: "shop", Meter: "syscalls"}]; got != 10 {
			t.Fatalf("unbilled = %d, want 10", got)
		}
		want := `
# HELP kmeter_unbilled_quantity Usage counted but not yet billed: held by a pricing failure or a failed commit.
# TYPE kmeter_unbilled_quantity gauge
kmeter_unbilled_quantity{meter="syscalls",tenant="shop"} 10
# HELP kmeter_pricing_failures_total Series held because pricing failed, by pricer (empty: no pricing rule matched).
# TYPE kmeter_pricing_failures_total counter
kmeter_pricing_failures_total{pricer="fixed.wasm"} 2
`
		if err := testutil.CollectAndCompare(b, strings.NewReader(want), "kmeter_unbilled_quantity", "kmeter_pricing_failures_total"); err != nil {
			t.Error(err)
		}
		p.fail.Store(false)
		if r := mustTick(t, b); r.Windows != 1 || r.Quantity != 10 {
			t.Fatalf("tick after recovery = %+v, want one window of the held 10", r)
		}
		mustTick(t, b)
		q, a := billed(t, l)
		if q["n1/shop/syscalls"] != 20 || a["n1/shop/syscalls"] != 100 {
			t.Errorf("billed %v for %v, want 20 for 100", q, a)
		}
		if len(b.Unbilled()) != 0 {
			t.Errorf("unbilled after recovery = %v", b.Unbilled())
		}
		mustVerify(t, l)
	})
}

func TestBiller_sourceAndCommitErrors(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	b := newBiller(t, "n1", src, l, onePricer{&fixedPricer{microPerUnit: 1}}, nil)
	src.fail = errors.New("map gone")
	if _, err := b.Tick(context.Background()); err == nil || !strings.Contains(err.Error(), "read usage: map gone") {
		t.Fatalf("tick with failing source = %v", err)
	}
	src.fail = nil
	src.add("shop", "syscalls", 4)
	// Another process billed this node's window 1 behind the biller's
	// back (two agents with one node id): the commit fails, nothing is
	// billed twice, and the next tick continues from the ledger.
	other := newBiller(t, "n1", src, l, onePricer{&fixedPricer{microPerUnit: 1}}, nil)
	mustTick(t, other)
	src.add("shop", "syscalls", 6)
	if _, err := b.Tick(context.Background()); err == nil || !strings.Contains(err.Error(), "already committed") {
		t.Fatalf("tick over a committed window = %v", err)
	}
	mustTick(t, b)
	q, _ := billed(t, l)
	if q["n1/shop/syscalls"] != 10 {
		t.Errorf("billed %v, want 10", q)
	}
	mustVerify(t, l)
}

func TestNew_invalid(t *testing.T) {
	_, err := window.New(context.Background(), window.Config{Interval: -1})
	for _, want := range []string{"node id is empty", "usage source is nil", "ledger is nil", "pricers are nil", "interval -1ns is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(empty config) = %v, want it to say %q", err, want)
		}
	}
}

// TestBiller_twoNodes runs two billers with two node ids at once against
// one ledger, for the same tenants: the totals are exact.
func TestBiller_twoNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		cfg := be.Config(t)
		l1, l2 := ledgertest.OpenConfig(t, cfg), ledgertest.OpenConfig(t, cfg)
		p := &fixedPricer{microPerUnit: 3}
		const ticks = 40
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for n, l := range map[string]window.Store{"n1": l1, "n2": l2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src := newSource()
				b, err := window.New(context.Background(), window.Config{NodeID: n, Source: src, Ledger: l, Pricers: onePricer{p}, Log: quietLog()})
				if err != nil {
					errs <- err
					return
				}
				for i := range ticks {
					for _, tn := range []string{"shop", "blog", "corp"} {
						src.add(tn, "syscalls", uint64(i+1))
						src.add(tn, "tcp_connects", 1)
					}
					if _, err := b.Tick(context.Background()); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Each node: syscalls 1+2+...+40 = 820 and 40 connects per tenant.
		q, a := billed(t, l1)
		for _, n := range []string{"n1", "n2"} {
			for _, tn := range []string{"shop", "blog", "corp"} {
				if k := n + "/" + tn + "/syscalls"; q[k] != 820 || a[k] != 2460 {
					t.Errorf("%s billed %d for %d, want 820 for 2460", k, q[k], a[k])
				}
				if k := n + "/" + tn + "/tcp_connects"; q[k] != 40 {
					t.Errorf("%s billed %d, want 40", k, q[k])
				}
			}
		}
		for _, tn := range []string{"shop", "blog", "corp"} {
			bs, err := l1.Balances(context.Background(), tn)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(-2 * 3 * (820 + 40)); bs[0].BalanceMicro != want {
				t.Errorf("%s balance %d, want %d", tn, bs[0].BalanceMicro, want)
			}
		}
		mustVerify(t, l1)
	})
}

// TestBiller_Run_finalWindow: a graceful stop bills what was counted since
// the last tick.
func TestBiller_Run_finalWindow(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	b, err := window.New(context.Background(), window.Config{NodeID: "n1", Source: src, Ledger: l,
		Pricers: onePricer{&fixedPricer{microPerUnit: 1}}, Interval: time.Hour, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	src.add("shop", "syscalls", 42)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if q, _ := billed(t, l); q["n1/shop/syscalls"] != 42 {
		t.Errorf("billed %v after a graceful stop, want 42", q)
	}
}

// badPricer returns a negative charge, which the ledger would refuse.
type badPricer struct{}

func (badPricer) Price(_ context.Context, recs []pricing.Record) (pricing.Result, error) {
	return pricing.Result{Charges: make([]pricing.Charge, len(recs)-1)}, nil
}

type negativePricer struct{}

func (negativePricer) Price(_ context.Context, recs []pricing.Record) (pricing.Result, error) {
	cs := make([]pricing.Charge, len(recs))
	for i := range cs {
		cs[i] = pricing.Charge{AmountMicro: -1, Currency: "USD"}
	}
	return pricing.Result{Charges: cs, PluginSHA256: pluginSHA}, nil
}

// routes sends each tenant to its own pricer.
type routes map[string]pricing.Pricer

func (r routes) PricerFor(tenant, _ string) (window.Route, error) {
	return window.Route{Name: tenant + ".wasm", Pricer: r[tenant]}, nil
}

// TestBiller_badChargesHoldOnlyTheirBatch: a pricer that returns too few
// charges or a negative one holds its own series; the others are billed.
func TestBiller_badChargesHoldOnlyTheirBatch(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	good := &fixedPricer{microPerUnit: 2}
	b := newBiller(t, "n1", src, l, routes{"shop": good, "short": badPricer{}, "neg": negativePricer{}}, nil)
	for _, tn := range []string{"shop", "short", "neg"} {
		src.add(tn, "syscalls", 10)
	}
	r := mustTick(t, b)
	if r.Windows != 1 || r.Held != 2 {
		t.Fatalf("tick = %+v, want shop billed and 2 held", r)
	}
	q, _ := billed(t, l)
	if len(q) != 1 || q["n1/shop/syscalls"] != 10 {
		t.Errorf("billed %v, want only shop's 10", q)
	}
	if u := b.Unbilled(); u[window.Key{Tenant: "short", Meter: "syscalls"}] != 10 || u[window.Key{Tenant: "neg", Meter: "syscalls"}] != 10 {
		t.Errorf("unbilled = %v", u)
	}
	mustVerify(t, l)
}

// cappedPricer refuses batches over max records, as the plugin engine does
// past its MaxRecords, and remembers the largest batch it saw.
type cappedPricer struct {
	fixedPricer
	max     int
	largest atomic.Int64
}

func (p *cappedPricer) Price(ctx context.Context, recs []pricing.Record) (pricing.Result, error) {
	if int64(len(recs)) > p.largest.Load() {
		p.largest.Store(int64(len(recs)))
	}
	if len(recs) > p.max {
		return pricing.Result{}, fmt.Errorf("%d records, more than %d", len(recs), p.max)
	}
	return p.fixedPricer.Price(ctx, recs)
}

// A window with more series than one plugin call takes is priced in
// chunks of window.MaxBatch, and every series is billed in one tick.
func TestBiller_Tick_chunksLargeWindows(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	p := &cappedPricer{fixedPricer: fixedPricer{microPerUnit: 1}, max: window.MaxBatch}
	b := newBiller(t, "n1", src, l, onePricer{p}, nil)
	const n = 2*window.MaxBatch + 10
	for i := range n {
		src.add(fmt.Sprintf("t%05d", i), "syscalls", uint64(i%7+1))
	}
	r := mustTick(t, b)
	if r.Windows != n || r.Held != 0 {
		t.Fatalf("tick = %+v, want %d windows and none held", r, n)
	}
	if got := p.largest.Load(); got != window.MaxBatch {
		t.Errorf("largest batch %d records, want %d", got, window.MaxBatch)
	}
	if calls := p.calls.Load(); calls != 3 {
		t.Errorf("%d plugin calls, want 3", calls)
	}
	mustVerify(t, l)
}
