package agent

// The registry path that exported the per-tenant series before
// [Agent.UsageFamilies] wrote them directly: a prometheus.Collector over the
// latest snapshot whose series reuse their label pairs (seriesCache). It
// is kept, unchanged, as the oracle the streamed families are compared
// with and as the baseline of BenchmarkScrape.

import (
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// registryUsage is the former agent collector's part that exported the
// latest snapshot.
type registryUsage struct {
	a      *Agent
	series *seriesCache

	usage, lastRead, tenants, syscallsByNr *prometheus.Desc
}

func newRegistryUsage(a *Agent) *registryUsage {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &registryUsage{
		a:            a,
		series:       newSeriesCache(),
		usage:        d("usage_total", "Cumulative kernel usage per tenant and meter, counted in the kernel.", "tenant", "meter"),
		lastRead:     d("last_read_timestamp_seconds", "When the kernel counters were last read."),
		tenants:      d("tenants", "Tenants with usage in the latest read."),
		syscallsByNr: d("syscalls_by_number_total", "Cumulative syscalls per tenant and syscall number.", "tenant", "nr"),
	}
}

func (c *registryUsage) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.usage, c.lastRead, c.tenants, c.syscallsByNr} {
		ch <- d
	}
}

func (c *registryUsage) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Latest()
	if s == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lastRead, prometheus.GaugeValue, float64(s.Time.UnixNano())/1e9)
	ch <- prometheus.MustNewConstMetric(c.tenants, prometheus.GaugeValue, float64(s.Tenants.Len()))
	c.series.collect(ch, s, c.usage, c.syscallsByNr)
}

// seriesCache keeps the label pairs of the per-tenant series between
// scrapes. At 10,000 tenants a scrape exports about 90,000 such series;
// building each one's labels anew (as prometheus.MustNewConstMetric does)
// made a scrape allocate tens of MB, which lifted the agent's RSS long after
// the scrape. Label pairs never change for a series, so only its value is
// written per scrape.
type seriesCache struct {
	mu      sync.Mutex
	gen     uint64
	tenants map[string]*tenantLabels
	meters  map[string]*dto.LabelPair // meter="..." pairs, shared by all tenants
	nrs     map[uint32]*dto.LabelPair // nr="..." pairs, shared by all tenants
}

// tenantLabels holds one tenant's label pairs. Labels are sorted by name, as
// the exposition formats expect: meter < tenant, nr < tenant.
type tenantLabels struct {
	gen   uint64 // last scrape that saw the tenant
	valid bool   // the name is valid UTF-8, so it can be a label value
	usage map[string][]*dto.LabelPair
	byNr  map[uint32][]*dto.LabelPair
	pair  *dto.LabelPair
}

// seriesMetric is one exported series of one scrape. A scrape's series live
// in one slice, so sending one to the registry allocates nothing per series.
type seriesMetric struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter dto.Counter
}

// Desc implements prometheus.Metric.
func (s *seriesMetric) Desc() *prometheus.Desc { return s.desc }

// Write implements prometheus.Metric. The label pairs are shared between
// scrapes; the registry and the encoders only read them.
func (s *seriesMetric) Write(m *dto.Metric) error {
	m.Label = s.labels
	s.counter.Value = &s.value
	m.Counter = &s.counter
	return nil
}

func newSeriesCache() *seriesCache {
	return &seriesCache{tenants: map[string]*tenantLabels{}, meters: map[string]*dto.LabelPair{}, nrs: map[uint32]*dto.LabelPair{}}
}

// labelPair returns a pair that is never modified after it is made.
func labelPair(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: &name, Value: &value}
}

// collect sends every usage and syscalls-by-number series of s to ch. It
// forgets tenants missing from s, so the cache follows the set of tenants.
func (sc *seriesCache) collect(ch chan<- prometheus.Metric, s *Snapshot, usage, byNr *prometheus.Desc) {
	// The maps snapshots held when this path was in use.
	tenants, byNumber := s.Tenants.Map(), s.SyscallsByNumber.Map()
	n := 0
	for _, m := range tenants {
		n += len(m)
	}
	for _, m := range byNumber {
		n += len(m)
	}
	out := make([]seriesMetric, 0, n)
	var invalid []string

	sc.mu.Lock()
	sc.gen++
	for t, byMeter := range tenants {
		tl := sc.tenant(t)
		if !tl.valid {
			invalid = append(invalid, t)
			continue
		}
		if len(tl.usage) > len(byMeter) {
			for m := range tl.usage {
				if _, ok := byMeter[m]; !ok {
					delete(tl.usage, m)
				}
			}
		}
		for m, v := range byMeter {
			l, ok := tl.usage[m]
			if !ok {
				mp, ok := sc.meters[m]
				if !ok {
					mp = labelPair("meter", m)
					sc.meters[m] = mp
				}
				l = []*dto.LabelPair{mp, tl.pair}
				tl.usage[m] = l
			}
			out = append(out, seriesMetric{desc: usage, labels: l, value: float64(v)})
		}
	}
	for t, nrs := range byNumber {
		tl := sc.tenant(t)
		if !tl.valid {
			invalid = append(invalid, t)
			continue
		}
		if len(tl.byNr) > len(nrs) {
			for nr := range tl.byNr {
				if _, ok := nrs[nr]; !ok {
					delete(tl.byNr, nr)
				}
			}
		}
		for nr, v := range nrs {
			l, ok := tl.byNr[nr]
			if !ok {
				np, ok := sc.nrs[nr]
				if !ok {
					np = labelPair("nr", strconv.FormatUint(uint64(nr), 10))
					sc.nrs[nr] = np
				}
				l = []*dto.LabelPair{np, tl.pair}
				tl.byNr[nr] = l
			}
			out = append(out, seriesMetric{desc: byNr, labels: l, value: float64(v)})
		}
	}
	for t, tl := range sc.tenants {
		if tl.gen != sc.gen {
			delete(sc.tenants, t)
		}
	}
	sc.mu.Unlock()

	for i := range out {
		ch <- &out[i]
	}
	for _, t := range invalid {
		ch <- prometheus.NewInvalidMetric(usage, fmt.Errorf("tenant %q: label value is not valid UTF-8", t))
	}
}

// tenant returns t's cached labels, made on first use. Call with sc.mu held.
func (sc *seriesCache) tenant(t string) *tenantLabels {
	tl, ok := sc.tenants[t]
	if !ok {
		tl = &tenantLabels{valid: utf8.ValidString(t), usage: map[string][]*dto.LabelPair{}, byNr: map[uint32][]*dto.LabelPair{}, pair: labelPair("tenant", t)}
		sc.tenants[t] = tl
	}
	tl.gen = sc.gen
	return tl
}
