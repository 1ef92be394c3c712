package billing

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/window"
)

func source() window.Source {
	return window.SourceFunc(func(context.Context) (map[window.Key]uint64, error) { return nil, nil })
}

func TestOpen_configErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing", Config{}, "node id is empty"},
		{"plugins without keys", Config{NodeID: "n", DataDir: t.TempDir(), Source: source(),
			Rules: []config.PricingRule{{Plugin: "p.wasm"}}}, "no --trusted-keys dir"},
		{"missing plugin", Config{NodeID: "n", DataDir: t.TempDir(), Source: source(), AllowUnsigned: true,
			Rules: []config.PricingRule{{Plugin: "/nonexistent/p.wasm"}}}, "/nonexistent/p.wasm"},
		{"bad ledger url", Config{NodeID: "n", DataDir: t.TempDir(), Source: source(), LedgerURL: "mysql://x"}, "mysql://x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), tc.cfg)
			if err == nil {
				b.Close()
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestOpen_noPricing(t *testing.T) {
	b, err := Open(context.Background(), Config{NodeID: "n", DataDir: t.TempDir(), Source: source(), Interval: time.Second,
		Tenants: []config.Tenant{{Name: "shop", Cgroups: []string{"/shop"}, Account: "postpaid"}}})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := b.Ledger().Tenants(context.Background())
	if err != nil || len(ts) != 1 || ts[0].Name != "shop" || ts[0].Account != "postpaid" {
		t.Fatalf("configured tenants not in the ledger: %+v, %v", ts, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run without pricing: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
