package window_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

type namedPricer struct {
	name   string
	closed int
}

func (p *namedPricer) Price(context.Context, []pricing.Record) (pricing.Result, error) {
	return pricing.Result{}, nil
}

func (p *namedPricer) Close() error { p.closed++; return nil }

func TestRouter_PricerFor_mostSpecificWins(t *testing.T) {
	made := map[string]*namedPricer{}
	factory := func(plugin string) (pricing.Pricer, error) {
		p := &namedPricer{name: plugin}
		made[plugin] = p
		return p, nil
	}
	r, err := window.NewRouter([]config.PricingRule{
		{Plugin: "default.wasm"},
		{Meter: "tls_server_handshakes", Plugin: "tls.wasm"},
		{Tenant: "shop", Plugin: "shop.wasm"},
		{Tenant: "shop", Meter: "tls_server_handshakes", Plugin: "shop-tls.wasm"},
		{Tenant: "blog", Plugin: "default.wasm"},
	}, factory)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ tenant, meter, want string }{
		{"shop", "tls_server_handshakes", "shop-tls.wasm"},
		{"shop", "syscalls", "shop.wasm"},
		{"corp", "tls_server_handshakes", "tls.wasm"},
		{"corp", "syscalls", "default.wasm"},
		{"blog", "tls_server_handshakes", "default.wasm"}, // tenant beats meter
	}
	for _, tt := range tests {
		rt, err := r.PricerFor(tt.tenant, tt.meter)
		if err != nil || rt.Name != tt.want || rt.Pricer.(*namedPricer).name != tt.want {
			t.Errorf("PricerFor(%s, %s) = %+v, %v; want %s", tt.tenant, tt.meter, rt, err, tt.want)
		}
	}
	if len(made) != 4 {
		t.Errorf("factory made %d pricers, want one per distinct plugin (4)", len(made))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for n, p := range made {
		if p.closed != 1 {
			t.Errorf("%s closed %d times, want 1", n, p.closed)
		}
	}
}

func TestRouter_errors(t *testing.T) {
	var made []*namedPricer
	factory := func(plugin string) (pricing.Pricer, error) {
		if plugin == "bad.wasm" {
			return nil, errors.New("signature does not verify")
		}
		p := &namedPricer{name: plugin}
		made = append(made, p)
		return p, nil
	}
	_, err := window.NewRouter([]config.PricingRule{
		{Tenant: "shop", Plugin: "a.wasm"},
		{Tenant: "shop", Plugin: "b.wasm"},
		{Meter: "syscalls", Plugin: "bad.wasm"},
	}, factory)
	for _, want := range []string{`pricing[1]: tenant "shop" meter "" already priced by a.wasm`, "pricing[2]: load plugin bad.wasm: signature does not verify"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
	if len(made) != 1 || made[0].closed != 1 {
		t.Errorf("pricers made before the failure were not closed: %+v", made)
	}
	r, err := window.NewRouter([]config.PricingRule{{Tenant: "shop", Plugin: "a.wasm"}}, factory)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PricerFor("blog", "syscalls"); !errors.Is(err, window.ErrNoPricer) {
		t.Errorf("unmatched series: err = %v, want ErrNoPricer", err)
	}
}
