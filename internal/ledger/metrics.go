package ledger

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports tenant balances and charges, read from the ledger at
// scrape time, so every agent of a fleet shows the fleet's totals.
type Collector struct {
	l       *Ledger
	timeout time.Duration
	balance *prometheus.Desc
	charged *prometheus.Desc
	low     *prometheus.Desc
	up      *prometheus.Desc
}

// Collector returns a prometheus.Collector of kmeter_balance_micro,
// kmeter_charges_micro_total and kmeter_balance_low per tenant and
// currency, and kmeter_ledger_scrape_success.
func (l *Ledger) Collector() *Collector {
	labels := []string{"tenant", "currency"}
	return &Collector{
		l:       l,
		timeout: 5 * time.Second,
		balance: prometheus.NewDesc("kmeter_balance_micro", "Tenant balance (top-ups minus charges) in micro-units.", labels, nil),
		charged: prometheus.NewDesc("kmeter_charges_micro_total", "Charges booked to the tenant in micro-units, net of reversals.", labels, nil),
		low:     prometheus.NewDesc("kmeter_balance_low", "1 when a prepaid balance is below its low-balance threshold.", labels, nil),
		up:      prometheus.NewDesc("kmeter_ledger_scrape_success", "1 when the ledger could be read for this scrape.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.balance
	ch <- c.charged
	ch <- c.low
	ch <- c.up
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	bs, err := c.l.allBalances(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, b := range bs {
		ch <- prometheus.MustNewConstMetric(c.balance, prometheus.GaugeValue, float64(b.BalanceMicro), b.Tenant, b.Currency)
		ch <- prometheus.MustNewConstMetric(c.charged, prometheus.CounterValue, float64(b.ChargedMicro), b.Tenant, b.Currency)
		low := 0.0
		if b.Low {
			low = 1
		}
		ch <- prometheus.MustNewConstMetric(c.low, prometheus.GaugeValue, low, b.Tenant, b.Currency)
	}
}
