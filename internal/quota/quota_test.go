package quota

import (
	"context"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/ledger"
)

type fakeLedger struct {
	balance map[string]int64
	bytes   map[string]int64
}

func (f *fakeLedger) Balances(_ context.Context, t string) ([]ledger.Balance, error) {
	b, ok := f.balance[t]
	if !ok {
		return nil, nil
	}
	return []ledger.Balance{{Tenant: t, Currency: "USD", BalanceMicro: b}}, nil
}

func (f *fakeLedger) UsageLines(_ context.Context, t, _ string) ([]ledger.UsageLine, error) {
	return []ledger.UsageLine{{Meter: "net_tx_bytes", Quantity: f.bytes[t]}, {Meter: "syscalls", Quantity: 1 << 40}}, nil
}

type fakeEnforcer struct {
	set map[string]enforce.Policy
	n   int
}

func (f *fakeEnforcer) SetTenantPolicy(t string, p enforce.Policy) error {
	f.set[t] = p
	f.n++
	return nil
}

func TestLoop_Apply(t *testing.T) {
	l := &fakeLedger{balance: map[string]int64{"shop": 0, "blog": 5}, bytes: map[string]int64{"video": 2000}}
	e := &fakeEnforcer{set: map[string]enforce.Policy{}}
	q, err := New(l, e, []config.Tenant{
		{Name: "shop", Cgroups: []string{"/shop"}, OnEmpty: "block_connections"},
		{Name: "blog", Cgroups: []string{"/blog"}, OnEmpty: "block_connections"},
		{Name: "video", Cgroups: []string{"/video"}, Account: "postpaid", MonthlyQuotaBytes: 1000},
		{Name: "free", Cgroups: []string{"/free"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	q.now = func() time.Time { return time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC) }
	if q.Tenants() != 3 {
		t.Fatalf("watching %d tenants, want 3 (free has no policy)", q.Tenants())
	}
	if err := q.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]enforce.PolicyKind{"shop": enforce.PolicyBlockConnections, "blog": enforce.PolicyNone, "video": enforce.PolicyBlockConnections} {
		if got := e.set[tenant].Kind; got != want {
			t.Errorf("%s: policy %v, want %v", tenant, got, want)
		}
	}
	if _, ok := e.set["free"]; ok {
		t.Error("free got a policy")
	}
	// Nothing changed: no kernel writes.
	n := e.n
	if err := q.Apply(context.Background()); err != nil || e.n != n {
		t.Fatalf("unchanged state rewrote policies (%d writes), err %v", e.n-n, err)
	}
	// A top-up lifts the block at the next Apply.
	l.balance["shop"] = 1_000_000
	if err := q.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.set["shop"].Kind; got != enforce.PolicyNone {
		t.Errorf("after top-up: shop policy %v, want none", got)
	}
}
