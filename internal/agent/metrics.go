package agent

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/meter"
)

const namespace = "kmeter"

// BySyscallNumber is implemented by meters that break syscalls down by
// number.
type BySyscallNumber interface {
	ReadByNumber() (map[uint64]map[uint32]uint64, error)
}

// StatsReporter is implemented by meters that report how full their maps are.
type StatsReporter interface {
	Stats() (meter.MapStats, error)
}

// collector exports the latest snapshot and the agent's health. It builds
// metrics at scrape time from the latest read, so a scrape never waits on
// the kernel; the per-tenant series reuse their label pairs (seriesCache).
type collector struct {
	a      *Agent
	series *seriesCache

	usage, meterUp, readErrors, lastRead, tenants, syscallsByNr *prometheus.Desc
	mapEntries, mapMax, mapOverflow                             *prometheus.Desc
}

// Collector returns the agent's prometheus.Collector:
// kmeter_usage_total{tenant,meter} and agent health.
func (a *Agent) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &collector{
		a:            a,
		series:       newSeriesCache(),
		usage:        d("usage_total", "Cumulative kernel usage per tenant and meter, counted in the kernel.", "tenant", "meter"),
		meterUp:      d("meter_up", "1 when the meter's hook is attached, 0 when its counters are unavailable.", "meter", "hook", "fallback"),
		readErrors:   d("read_errors_total", "Reads of the kernel maps that failed."),
		lastRead:     d("last_read_timestamp_seconds", "When the kernel counters were last read."),
		tenants:      d("tenants", "Tenants with usage in the latest read."),
		syscallsByNr: d("syscalls_by_number_total", "Cumulative syscalls per tenant and syscall number.", "tenant", "nr"),
		mapEntries:   d("map_entries", "Keys in use in a meter's counter map.", "meter"),
		mapMax:       d("map_max_entries", "Capacity of a meter's counter map.", "meter"),
		mapOverflow:  d("map_overflow_total", "Usage counted while a meter's map was full, so attributed to no tenant; should stay 0.", "meter", "counter"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.usage, c.meterUp, c.readErrors, c.lastRead, c.tenants, c.syscallsByNr, c.mapEntries, c.mapMax, c.mapOverflow} {
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
	s := c.a.Latest()
	if s == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lastRead, prometheus.GaugeValue, float64(s.Time.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(c.tenants, prometheus.GaugeValue, float64(len(s.Tenants)))
	c.series.collect(ch, s, c.usage, c.syscallsByNr)
}
