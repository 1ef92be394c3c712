package window

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	lagDesc = prometheus.NewDesc("kmeter_window_lag_seconds",
		"Seconds since the last window tick that succeeded (it grows while reads or commits fail).", nil, nil)
	unbilledDesc = prometheus.NewDesc("kmeter_unbilled_quantity",
		"Usage counted but not yet billed: held by a pricing failure or a failed commit.", []string{"tenant", "meter"}, nil)
	resetsDesc = prometheus.NewDesc("kmeter_counter_resets_total",
		"Times a usage counter went backwards (kernel maps re-created) and was re-based.", []string{"tenant", "meter"}, nil)
	pricingDesc = prometheus.NewDesc("kmeter_pricing_failures_total",
		"Series held because pricing failed, by pricer (empty: no pricing rule matched).", []string{"pricer"}, nil)
)

// Describe implements prometheus.Collector: kmeter_window_lag_seconds,
// kmeter_unbilled_quantity, kmeter_counter_resets_total,
// kmeter_pricing_failures_total and kmeter_ledger_write_seconds.
func (b *Biller) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- unbilledDesc
	ch <- resetsDesc
	ch <- pricingDesc
	b.write.Describe(ch)
}

// Collect implements prometheus.Collector.
func (b *Biller) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, b.cfg.Now().Sub(b.lastTick).Seconds())
	for k, v := range b.unbilled {
		ch <- prometheus.MustNewConstMetric(unbilledDesc, prometheus.GaugeValue, float64(v), k.Tenant, k.Meter)
	}
	for k, v := range b.resets {
		ch <- prometheus.MustNewConstMetric(resetsDesc, prometheus.CounterValue, float64(v), k.Tenant, k.Meter)
	}
	for r, v := range b.pricingFailures {
		ch <- prometheus.MustNewConstMetric(pricingDesc, prometheus.CounterValue, float64(v), r)
	}
	b.write.Collect(ch)
}
