package window_test

import (
	"context"
	"testing"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// attrsPricer charges 1 micro per unit, 5 on plan "pro", from the record's
// attributes.
type attrsPricer struct{}

func (attrsPricer) Price(_ context.Context, recs []pricing.Record) (pricing.Result, error) {
	cs := make([]pricing.Charge, len(recs))
	for i, r := range recs {
		per := int64(1)
		if r.Attrs["plan"] == "pro" {
			per = 5
		}
		cs[i] = pricing.Charge{AmountMicro: per * int64(r.Quantity), Currency: "USD"}
	}
	return pricing.Result{Charges: cs, PluginSHA256: pluginSHA}, nil
}

func TestConfigHelpers(t *testing.T) {
	cfg, err := config.Parse([]byte(`
tenants:
  - name: shop
    cgroups: [/shop]
    attributes: {plan: pro}
    low_balance_micro: 500
  - name: corp
    cgroups: [/corp]
    account: postpaid
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := ledgertest.SQLite.Open(t)
	if err := l.SyncTenants(ctx, window.LedgerTenants(cfg.Tenants)); err != nil {
		t.Fatal(err)
	}
	ts, err := l.Tenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "corp" || ts[0].Account != "postpaid" || ts[1].Account != "prepaid" || ts[1].LowBalanceMicro != 500 {
		t.Errorf("tenants = %+v", ts)
	}
	src := newSource()
	b, err := window.New(ctx, window.Config{NodeID: "n1", Source: src, Ledger: l, Pricers: onePricer{attrsPricer{}},
		Attrs: window.AttrsFromConfig(cfg.Tenants), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	src.add("shop", "syscalls", 10)
	src.add("corp", "syscalls", 10)
	mustTick(t, b)
	_, a := billed(t, l)
	if a["n1/shop/syscalls"] != 50 || a["n1/corp/syscalls"] != 10 {
		t.Errorf("amounts %v, want shop 50 (plan pro) and corp 10", a)
	}
}
