package plugin

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the engine's counters since it was created.
type Stats struct {
	Batches       uint64 // batches priced successfully
	Records       uint64 // records in those batches
	Traps         uint64 // batches failed by a guest trap
	Timeouts      uint64 // batches failed by CallTimeout or a cancelled context
	BadOutputs    uint64 // batches failed by an error code or invalid charges
	OtherFailures uint64 // batches failed for another reason (bad input, instantiation)
	PoolMisses    uint64 // batches that had to instantiate because the pool was empty
	Loads         uint64 // plugins made live
	LoadFailures  uint64 // modules refused or failed at load
	ShadowBatches uint64 // batches compared against a shadow candidate
	ShadowDiffs   uint64 // of those, batches where any charge differed or the shadow failed
	ShadowDropped uint64 // batches not compared because the shadow was busy
	PriceSeconds  float64

	// LicenceRefusals counts batches refused because the plugin's licence
	// max_calls was used up (ErrLicenceExhausted); they are not in the
	// other failure counters.
	LicenceRefusals uint64
}

type stats struct {
	batches, records, traps, timeouts, badOutputs, other, poolMisses atomic.Uint64
	loads, loadFailures, shadowBatches, shadowDiffs, shadowDropped   atomic.Uint64
	priceNanos, licenceRefusals                                      atomic.Uint64
}

func newStats() *stats { return &stats{} }

func (s *stats) ok(records int, d time.Duration) {
	s.batches.Add(1)
	s.records.Add(uint64(records))
	s.priceNanos.Add(uint64(d))
}

func (s *stats) failed(err error) {
	switch {
	case errors.Is(err, ErrLicenceExhausted):
		s.licenceRefusals.Add(1)
	case errors.Is(err, ErrTimeout):
		s.timeouts.Add(1)
	case errors.Is(err, ErrTrap):
		s.traps.Add(1)
	case errors.Is(err, ErrBadOutput):
		s.badOutputs.Add(1)
	default:
		s.other.Add(1)
	}
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	s := e.stats
	return Stats{
		Batches: s.batches.Load(), Records: s.records.Load(),
		Traps: s.traps.Load(), Timeouts: s.timeouts.Load(), BadOutputs: s.badOutputs.Load(), OtherFailures: s.other.Load(),
		PoolMisses: s.poolMisses.Load(), Loads: s.loads.Load(), LoadFailures: s.loadFailures.Load(),
		ShadowBatches: s.shadowBatches.Load(), ShadowDiffs: s.shadowDiffs.Load(), ShadowDropped: s.shadowDropped.Load(),
		PriceSeconds:    float64(s.priceNanos.Load()) / 1e9,
		LicenceRefusals: s.licenceRefusals.Load(),
	}
}

var (
	descBatches  = prometheus.NewDesc("kmeter_plugin_batches_total", "Batches priced successfully by the live plugin.", nil, nil)
	descRecords  = prometheus.NewDesc("kmeter_plugin_records_total", "Usage records priced successfully.", nil, nil)
	descFailures = prometheus.NewDesc("kmeter_plugin_batch_failures_total", "Batches that failed and were handed back to the caller, by reason.", []string{"reason"}, nil)
	descMisses   = prometheus.NewDesc("kmeter_plugin_pool_misses_total", "Batches that waited for a new instance because the warm pool was empty.", nil, nil)
	descLoads    = prometheus.NewDesc("kmeter_plugin_loads_total", "Plugin loads by result.", []string{"result"}, nil)
	descShadow   = prometheus.NewDesc("kmeter_plugin_shadow_batches_total", "Batches compared with a shadow candidate, by outcome.", []string{"outcome"}, nil)
	descSeconds  = prometheus.NewDesc("kmeter_plugin_price_seconds_total", "Time spent pricing successful batches.", nil, nil)
	descLive     = prometheus.NewDesc("kmeter_plugin_live_info", "The live plugin's sha256 (value is always 1).", []string{"sha256", "signer"}, nil)
)

// Describe implements prometheus.Collector.
func (e *Engine) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBatches, descRecords, descFailures, descMisses, descLoads, descShadow, descSeconds, descLive} {
		ch <- d
	}
}

// Collect implements prometheus.Collector with const metrics built from
// [Engine.Stats] at scrape time.
func (e *Engine) Collect(ch chan<- prometheus.Metric) {
	s := e.Stats()
	c := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	c(descBatches, s.Batches)
	c(descRecords, s.Records)
	c(descFailures, s.Traps, "trap")
	c(descFailures, s.Timeouts, "timeout")
	c(descFailures, s.BadOutputs, "bad_output")
	c(descFailures, s.OtherFailures, "other")
	c(descFailures, s.LicenceRefusals, "licence_exhausted")
	c(descMisses, s.PoolMisses)
	c(descLoads, s.Loads, "ok")
	c(descLoads, s.LoadFailures, "refused")
	c(descShadow, s.ShadowBatches-s.ShadowDiffs, "same")
	c(descShadow, s.ShadowDiffs, "different")
	c(descShadow, s.ShadowDropped, "dropped")
	ch <- prometheus.MustNewConstMetric(descSeconds, prometheus.CounterValue, s.PriceSeconds)
	if id, ok := e.Live(); ok {
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, 1, id.SHA256, id.Signer)
	}
}

var _ prometheus.Collector = (*Engine)(nil)
