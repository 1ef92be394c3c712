package ledger

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/exposition"
)

// The families [Ledger.Families] writes.
const (
	balanceName = "kmeter_balance_micro"
	chargedName = "kmeter_charges_micro_total"
	lowName     = "kmeter_balance_low"
	upName      = "kmeter_ledger_scrape_success"
)

// families writes the ledger's per-tenant series straight into a scrape's
// response: at 10,000 billed tenants they are 30,000 series, which a
// prometheus.Registry would build, hash and sort as dto.Metrics on every
// scrape.
type families struct {
	l       *Ledger
	timeout time.Duration
}

// Families returns the source, for exposition.NewHandler, of
//
//	kmeter_balance_micro{currency,tenant}
//	kmeter_charges_micro_total{currency,tenant}
//	kmeter_balance_low{currency,tenant}
//	kmeter_ledger_scrape_success
//
// read from the ledger at scrape time, so every agent of a fleet shows the
// fleet's totals. A ledger that cannot be read does not fail the scrape:
// kmeter_ledger_scrape_success is 0 and no tenant series is written, so the
// agent's own metrics still arrive.
func (l *Ledger) Families() exposition.Source {
	return &families{l: l, timeout: 5 * time.Second}
}

// Names implements exposition.Source.
func (f *families) Names() []string { return []string{balanceName, chargedName, lowName, upName} }

// Scrape implements exposition.Source: it reads every balance now, so the
// write does not wait on the database.
func (f *families) Scrape() (func(*exposition.Writer), error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	bs, err := f.l.allBalances(ctx)
	if err != nil {
		return func(w *exposition.Writer) { writeUp(w, 0) }, nil
	}
	for _, b := range bs {
		if !utf8.ValidString(b.Tenant) {
			return nil, fmt.Errorf("ledger tenant %q: label value is not valid UTF-8", b.Tenant)
		}
	}
	return func(w *exposition.Writer) {
		writeUp(w, 1)
		w.Family(balanceName, "Tenant balance (top-ups minus charges) in micro-units.", prometheus.GaugeValue, "currency", "tenant")
		for _, b := range bs {
			w.Sample(float64(b.BalanceMicro), b.Currency, b.Tenant)
		}
		w.Family(chargedName, "Charges booked to the tenant in micro-units, net of reversals.", prometheus.CounterValue, "currency", "tenant")
		for _, b := range bs {
			w.Sample(float64(b.ChargedMicro), b.Currency, b.Tenant)
		}
		w.Family(lowName, "1 when a prepaid balance is below its low-balance threshold.", prometheus.GaugeValue, "currency", "tenant")
		for _, b := range bs {
			low := 0.0
			if b.Low {
				low = 1
			}
			w.Sample(low, b.Currency, b.Tenant)
		}
	}, nil
}

func writeUp(w *exposition.Writer, v float64) {
	w.Family(upName, "1 when the ledger could be read for this scrape.", prometheus.GaugeValue)
	w.Sample(v)
}
