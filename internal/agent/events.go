package agent

import (
	"context"
	"errors"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
)

// tlsEvents drains the TLS meter's ring buffer, so per-event records keep
// flowing while the counters are read from maps, and exports the ring's
// accounting: produced and dropped are counted by the kernel since the
// ring was pinned, delivered by this agent process.
type tlsEvents struct {
	rd      *tlsmeter.Reader
	onEvent func(tlsmeter.Event)

	produced, dropped, delivered *prometheus.Desc
}

// startTLSEvents starts draining m's events until ctx is done. onEvent may
// be nil.
func startTLSEvents(ctx context.Context, wg *sync.WaitGroup, m *tlsmeter.Meter, onEvent func(tlsmeter.Event)) (*tlsEvents, error) {
	rd, err := m.Events()
	if err != nil {
		return nil, err
	}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "tls_events", name), help, nil, nil)
	}
	e := &tlsEvents{
		rd:        rd,
		onEvent:   onEvent,
		produced:  d("produced_total", "TLS handshake records the kernel emitted since the ring buffer was pinned."),
		dropped:   d("dropped_total", "TLS handshake records lost because the ring buffer was full, since it was pinned."),
		delivered: d("delivered_total", "TLS handshake records this agent process read from the ring buffer."),
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		e.rd.Close()
	}()
	go func() {
		defer wg.Done()
		var raw tlsmeter.RawEvent
		for {
			if err := e.rd.ReadRaw(&raw); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				continue
			}
			if e.onEvent != nil {
				e.onEvent(e.rd.Decode(&raw))
			}
		}
	}()
	return e, nil
}

func (e *tlsEvents) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.produced
	ch <- e.dropped
	ch <- e.delivered
}

func (e *tlsEvents) Collect(ch chan<- prometheus.Metric) {
	st, err := e.rd.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(e.produced, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(e.produced, prometheus.CounterValue, float64(st.Produced))
	ch <- prometheus.MustNewConstMetric(e.dropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(e.delivered, prometheus.CounterValue, float64(st.Delivered))
}
