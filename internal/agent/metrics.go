package agent

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/meter"
)

const namespace = "kmeter"

// StatsReporter is implemented by meters that report how full their maps are.
type StatsReporter interface {
	Stats() (meter.MapStats, error)
}

// collector exports the agent's health and its meters' state. The
// per-tenant series of the latest read are not here: [Agent.UsageFamilies]
// writes them straight into the response.
type collector struct {
	a *Agent

	meterUp, readErrors             *prometheus.Desc
	mapEntries, mapMax, mapOverflow *prometheus.Desc
}

// Collector returns the agent's prometheus.Collector: whether each meter
// is attached, failed reads, the fill of the meters' maps and the TLS
// event reader's counters. Serve it with [Agent.UsageFamilies] (see
// exposition.NewHandler), which exports the usage itself.
func (a *Agent) Collector() prometheus.Collector {
	return &collector{
		a:           a,
		meterUp:     desc("meter_up", "1 when the meter's hook is attached, 0 when its counters are unavailable.", "meter", "hook", "fallback"),
		readErrors:  desc("read_errors_total", "Reads of the kernel maps that failed."),
		mapEntries:  desc("map_entries", "Keys in use in a meter's counter map.", "meter"),
		mapMax:      desc("map_max_entries", "Capacity of a meter's counter map.", "meter"),
		mapOverflow: desc("map_overflow_total", "Usage counted while a meter's map was full, so attributed to no tenant; should stay 0.", "meter", "counter"),
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.meterUp, c.readErrors, c.mapEntries, c.mapMax, c.mapOverflow} {
		ch <- d
	}
	if c.a.events != nil {
		c.a.events.Describe(ch)
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.a.events != nil {
		c.a.events.Collect(ch)
	}
	for _, st := range c.a.statuses {
		up := 1.0
		if st.Err != "" {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(c.meterUp, prometheus.GaugeValue, up, st.Meter, st.Hook, strconv.FormatBool(st.Fallback))
	}
	for _, m := range c.a.meters {
		sr, ok := m.(StatsReporter)
		if !ok {
			continue
		}
		name := m.Status().Meter
		st, err := sr.Stats()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.mapEntries, fmt.Errorf("map stats of %s: %w", name, err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.mapEntries, prometheus.GaugeValue, float64(st.Entries), name)
		ch <- prometheus.MustNewConstMetric(c.mapMax, prometheus.GaugeValue, float64(st.MaxEntries), name)
		for counter, v := range st.Overflow {
			ch <- prometheus.MustNewConstMetric(c.mapOverflow, prometheus.CounterValue, float64(v), name, counter)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.readErrors, prometheus.CounterValue, float64(c.a.ReadErrors()))
}
