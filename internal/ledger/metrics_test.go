package ledger_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/exposition"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// scrape serves l's families through the real /metrics handler.
func scrape(t *testing.T, l *ledger.Ledger) (int, string) {
	t.Helper()
	h, err := exposition.NewHandler(prometheus.NewRegistry(), []exposition.Source{l.Families()}, exposition.HandlerOpts{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	rsp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(rsp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rsp.StatusCode, string(b)
}

func TestLedger_Families(t *testing.T) {
	eur := func(w ledger.Window) ledger.Window { w.Charge.Currency = "EUR"; return w }
	tests := []struct {
		name    string
		tenants []ledger.Tenant
		topups  []ledger.TopUp
		windows []ledger.Window
		reverse []int64 // entry ids, after the windows
		want    string
	}{
		{
			name:    "prepaid below its threshold, postpaid never low",
			tenants: []ledger.Tenant{{Name: "shop", LowBalanceMicro: 1000}, {Name: "corp", Account: ledger.Postpaid, LowBalanceMicro: 1000}},
			topups:  []ledger.TopUp{{Tenant: "shop", AmountMicro: 1500, Currency: "USD", Key: "k"}},
			windows: []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 600, 0), window("n1", "corp", "syscalls", 1, 0, 10, 200, 0)},
			want: `# HELP kmeter_ledger_scrape_success 1 when the ledger could be read for this scrape.
# TYPE kmeter_ledger_scrape_success gauge
kmeter_ledger_scrape_success 1
# HELP kmeter_balance_micro Tenant balance (top-ups minus charges) in micro-units.
# TYPE kmeter_balance_micro gauge
kmeter_balance_micro{currency="USD",tenant="corp"} -200
kmeter_balance_micro{currency="USD",tenant="shop"} 900
# HELP kmeter_charges_micro_total Charges booked to the tenant in micro-units, net of reversals.
# TYPE kmeter_charges_micro_total counter
kmeter_charges_micro_total{currency="USD",tenant="corp"} 200
kmeter_charges_micro_total{currency="USD",tenant="shop"} 600
# HELP kmeter_balance_low 1 when a prepaid balance is below its low-balance threshold.
# TYPE kmeter_balance_low gauge
kmeter_balance_low{currency="USD",tenant="corp"} 0
kmeter_balance_low{currency="USD",tenant="shop"} 1
`,
		},
		{
			// Entry 1 is the usage entry of the only tenant's first
			// window: reversed, the charge is gone from both families.
			name:    "a reversed usage entry, two currencies, awkward names",
			windows: []ledger.Window{window("n1", `a"b\c`, "syscalls", 1, 0, 10, 300, 0), eur(window("n1", `a"b\c`, "tcp_connects", 1, 0, 1, 40, 0))},
			reverse: []int64{1},
			want: `# HELP kmeter_ledger_scrape_success 1 when the ledger could be read for this scrape.
# TYPE kmeter_ledger_scrape_success gauge
kmeter_ledger_scrape_success 1
# HELP kmeter_balance_micro Tenant balance (top-ups minus charges) in micro-units.
# TYPE kmeter_balance_micro gauge
kmeter_balance_micro{currency="EUR",tenant="a\"b\\c"} -40
kmeter_balance_micro{currency="USD",tenant="a\"b\\c"} 0
# HELP kmeter_charges_micro_total Charges booked to the tenant in micro-units, net of reversals.
# TYPE kmeter_charges_micro_total counter
kmeter_charges_micro_total{currency="EUR",tenant="a\"b\\c"} 40
kmeter_charges_micro_total{currency="USD",tenant="a\"b\\c"} 0
# HELP kmeter_balance_low 1 when a prepaid balance is below its low-balance threshold.
# TYPE kmeter_balance_low gauge
kmeter_balance_low{currency="EUR",tenant="a\"b\\c"} 1
kmeter_balance_low{currency="USD",tenant="a\"b\\c"} 0
`,
		},
		{
			name: "an empty ledger",
			want: `# HELP kmeter_ledger_scrape_success 1 when the ledger could be read for this scrape.
# TYPE kmeter_ledger_scrape_success gauge
kmeter_ledger_scrape_success 1
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l := ledgertest.SQLite.Open(t)
			if err := l.SyncTenants(ctx, tt.tenants); err != nil {
				t.Fatal(err)
			}
			for _, u := range tt.topups {
				if _, err := l.TopUp(ctx, u); err != nil {
					t.Fatal(err)
				}
			}
			if len(tt.windows) > 0 {
				if err := l.CommitWindows(ctx, tt.windows); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range tt.reverse {
				if _, err := l.Reverse(ctx, id, "test"); err != nil {
					t.Fatal(err)
				}
			}
			code, got := scrape(t, l)
			if code != http.StatusOK || got != tt.want {
				t.Errorf("scrape = %d\n%s\nwant 200\n%s", code, got, tt.want)
			}
		})
	}
}

// A ledger that cannot be read says so in kmeter_ledger_scrape_success
// and does not fail the scrape, so the agent's other metrics still arrive.
func TestLedger_Families_unreadable(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	if err := l.CommitWindows(context.Background(), []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 600, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	code, got := scrape(t, l)
	want := `# HELP kmeter_ledger_scrape_success 1 when the ledger could be read for this scrape.
# TYPE kmeter_ledger_scrape_success gauge
kmeter_ledger_scrape_success 0
`
	if code != http.StatusOK || got != want {
		t.Errorf("scrape = %d\n%s\nwant 200\n%s", code, got, want)
	}
}
