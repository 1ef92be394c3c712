package plugin

import (
	"context"
	"reflect"
	"testing"

	"github.com/kmeter/kmeter/internal/pricing"
)

func usd(amount, vendor int64) pricing.Charge {
	return pricing.Charge{AmountMicro: amount, Currency: "USD", VendorMicro: vendor}
}

// TestExamples prices a batch with each example plugin, built from
// source, and checks every charge and the sums against the plugin's
// documented rule.
func TestExamples(t *testing.T) {
	pro := map[string]string{"plan": "pro", "region": "eu"}
	withAttrs := func(r pricing.Record, a map[string]string) pricing.Record { r.Attrs = a; return r }
	split := struct {
		recs []pricing.Record
		want []pricing.Charge
	}{
		// 13 micro-USD per unit; vendor gets floor(70%).
		recs: []pricing.Record{rec("a", "calls", 1), rec("a", "calls", 10), rec("b", "calls", 7), rec("b", "calls", 0), rec("c", "calls", 1_000_003)},
		want: []pricing.Charge{usd(13, 9), usd(130, 91), usd(91, 63), usd(0, 0), usd(13_000_039, 9_100_027)},
	}
	tests := []struct {
		plugin string
		recs   []pricing.Record
		want   []pricing.Charge
	}{
		{"c-flat", // 2 micro-USD per unit
			[]pricing.Record{rec("a", "syscalls", 0), rec("a", "syscalls", 1), rec("b", "bytes", 1000), rec("b", "bytes", 123_456_789)},
			[]pricing.Charge{usd(0, 0), usd(2, 0), usd(2000, 0), usd(246_913_578, 0)}},
		{"c-tls", // 0.01 USD per 10,000 handshakes = 1 micro-USD each; other meters free
			[]pricing.Record{rec("pay", "tls_server_handshakes", 10_000), rec("pay", "tls_server_handshakes", 25_000), rec("pay", "syscalls", 500), rec("shop", "tls_server_handshakes", 1)},
			[]pricing.Charge{usd(10_000, 0), usd(25_000, 0), usd(0, 0), usd(1, 0)}},
		{"c-split", split.recs, split.want},
		{"as-split", split.recs, split.want},
		{"go-tiered", // first 1000 free (10,000 on plan pro), then 5 up to 100,000, then 3
			[]pricing.Record{rec("a", "calls", 500), rec("a", "calls", 1000), rec("a", "calls", 1001), rec("a", "calls", 100_000),
				rec("a", "calls", 100_001), withAttrs(rec("b", "calls", 20_000), pro), withAttrs(rec("b", "calls", 5_000), pro)},
			[]pricing.Charge{usd(0, 0), usd(0, 0), usd(5, 0), usd(495_000, 0), usd(495_003, 0), usd(50_000, 0), usd(0, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.plugin, func(t *testing.T) {
			mod := examplePlugin(t, tt.plugin)
			e := newEngine(t, nil)
			id := mustLoad(t, e, mod)
			if id.SHA256 != SHA256Hex(mod) {
				t.Fatalf("identity sha %s, want sha of the module %s", id.SHA256, SHA256Hex(mod))
			}
			for round := 0; round < 3; round++ { // deterministic across warm instances
				res, err := e.Price(context.Background(), tt.recs)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(res.Charges, tt.want) {
					t.Fatalf("round %d charges\n got %+v\nwant %+v", round, res.Charges, tt.want)
				}
				gotA, gotV := sum(res.Charges)
				wantA, wantV := sum(tt.want)
				if gotA != wantA || gotV != wantV {
					t.Fatalf("sums %d/%d, want %d/%d", gotA, gotV, wantA, wantV)
				}
				if res.PluginSHA256 != id.SHA256 {
					t.Fatalf("result sha %s, want %s", res.PluginSHA256, id.SHA256)
				}
			}
		})
	}
}
