package exposition_test

import (
	"fmt"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/exposition"
)

// balances is a Source: one gauge per tenant, written straight from a map.
type balances map[string]float64

func (b balances) Names() []string { return []string{"shop_balance"} }

func (b balances) Scrape() (func(*exposition.Writer), error) {
	return func(w *exposition.Writer) {
		w.Family("shop_balance", "Balance per tenant.", prometheus.GaugeValue, "tenant")
		for _, t := range []string{"acme", `quote"d`} {
			w.Sample(b[t], t)
		}
	}, nil
}

func ExampleNewHandler() {
	reg := prometheus.NewRegistry()
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "shop_up", Help: "1 when the shop is open."})
	up.Set(1)
	reg.MustRegister(up)

	h, err := exposition.NewHandler(reg, []exposition.Source{balances{"acme": 12.5, `quote"d`: -3}}, exposition.HandlerOpts{})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Print(rec.Body.String())
	// Output:
	// 200 text/plain; version=0.0.4; charset=utf-8
	// # HELP shop_up 1 when the shop is open.
	// # TYPE shop_up gauge
	// shop_up 1
	// # HELP shop_balance Balance per tenant.
	// # TYPE shop_balance gauge
	// shop_balance{tenant="acme"} 12.5
	// shop_balance{tenant="quote\"d"} -3
}
