package window_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// fixedPricer charges microPerUnit per unit and gives the vendor 7/10
// (the marketplace's 3:7 split, rounded down for the vendor).
type fixedPricer struct {
	microPerUnit int64
	fail         atomic.Bool
	calls        atomic.Int64
}

var pluginSHA = strings.Repeat("cd", 32)

func (p *fixedPricer) Price(_ context.Context, recs []pricing.Record) (pricing.Result, error) {
	p.calls.Add(1)
	if p.fail.Load() {
		return pricing.Result{}, errors.New("plugin trapped")
	}
	res := pricing.Result{PluginSHA256: pluginSHA, Charges: make([]pricing.Charge, len(recs))}
	for i, r := range recs {
		amt := int64(r.Quantity) * p.microPerUnit
		res.Charges[i] = pricing.Charge{AmountMicro: amt, Currency: "USD", VendorMicro: amt * 7 / 10}
	}
	return res, nil
}

// onePricer routes every series to p.
type onePricer struct{ p pricing.Pricer }

func (o onePricer) PricerFor(string, string) (window.Route, error) {
	return window.Route{Name: "fixed.wasm", Pricer: o.p}, nil
}

// fakeSource is a cumulative counter set the test moves by hand.
type fakeSource struct {
	mu     sync.Mutex
	counts map[window.Key]uint64
	fail   error
}

func newSource() *fakeSource { return &fakeSource{counts: map[window.Key]uint64{}} }

func (s *fakeSource) add(tenant, meter string, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[window.Key{Tenant: tenant, Meter: meter}] += n
}

func (s *fakeSource) set(tenant, meter string, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[window.Key{Tenant: tenant, Meter: meter}] = n
}

func (s *fakeSource) Read(context.Context) (map[window.Key]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	return maps.Clone(s.counts), nil
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBiller(t testing.TB, node string, src window.Source, l window.Store, p window.Pricers, fault func(window.FaultPoint) error) *window.Biller {
	t.Helper()
	b, err := window.New(context.Background(), window.Config{NodeID: node, Source: src, Ledger: l, Pricers: p, Fault: fault, Log: quietLog()})
	if err != nil {
		t.Fatalf("new biller: %v", err)
	}
	return b
}

// billed returns the ledger's billed quantity and amount per
// "node/tenant/meter".
func billed(t testing.TB, l *ledger.Ledger) (map[string]int64, map[string]int64) {
	t.Helper()
	ts, err := l.Totals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	q, a := map[string]int64{}, map[string]int64{}
	for _, x := range ts {
		k := fmt.Sprintf("%s/%s/%s", x.Node, x.Tenant, x.Meter)
		q[k], a[k] = x.Quantity, x.AmountMicro
	}
	return q, a
}

func mustVerify(t testing.TB, l *ledger.Ledger) {
	t.Helper()
	r, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("ledger verify: %q", r.Problems)
	}
}

func mustTick(t testing.TB, b *window.Biller) window.TickResult {
	t.Helper()
	r, err := b.Tick(context.Background())
	if err != nil {
		t.Fatalf("tick: %v", err)
	}
	return r
}
