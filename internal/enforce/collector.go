package enforce

import (
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Enforcement counter kinds, as exported in kmeter_enforced_total{kind}.
// Keep in sync with enum counter in bpf/limiter.bpf.c.
const (
	EgressDrop    = "egress_drop"
	IngressDrop   = "ingress_drop"
	ConnectDenied = "connect_denied"
	TLSDrop       = "tls_drop"
)

// counterKinds is indexed by enum counter; C_SLICE_DROP (4) is per slice.
var counterKinds = []string{EgressDrop, IngressDrop, ConnectDenied, TLSDrop}

const counterSliceDrop = 4

// Enforced returns how often the kernel enforced a limit: tenant -> kind
// -> count, cumulative while the pinned maps live.
func (e *Enforcer) Enforced() (map[string]map[string]uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	out := map[string]map[string]uint64{}
	err := e.iterCounters(func(k limiterCounterKey, v uint64) {
		if int(k.Kind) >= len(counterKinds) {
			return
		}
		name := e.tenantName(k.Id)
		if out[name] == nil {
			out[name] = map[string]uint64{}
		}
		out[name][counterKinds[k.Kind]] += v
	})
	return out, err
}

// iterCounters sums each per-CPU counter. Callers hold e.mu.
func (e *Enforcer) iterCounters(fn func(limiterCounterKey, uint64)) error {
	var k limiterCounterKey
	var vs []uint64
	it := e.objs.Counters.Iterate()
	for it.Next(&k, &vs) {
		var sum uint64
		for _, v := range vs {
			sum += v
		}
		fn(k, sum)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read enforcement counters: %w", err)
	}
	return nil
}

// SliceCounts are one slice's meters, cumulative.
type SliceCounts struct {
	TxBytes, TxPackets, RxBytes, RxPackets uint64
	// Dropped are egress packets dropped by the slice's own limit.
	Dropped uint64
}

// SliceCounts returns the meters of every slice that saw traffic, by
// slice id.
func (e *Enforcer) SliceCounts() (map[uint32]SliceCounts, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	return e.sliceCounts()
}

func (e *Enforcer) sliceCounts() (map[uint32]SliceCounts, error) {
	out := map[uint32]SliceCounts{}
	var id uint32
	var vs []limiterSliceCounts
	it := e.objs.SliceStats.Iterate()
	for it.Next(&id, &vs) {
		var s SliceCounts
		for _, v := range vs {
			s.TxBytes += v.TxBytes
			s.TxPackets += v.TxPackets
			s.RxBytes += v.RxBytes
			s.RxPackets += v.RxPackets
		}
		out[id] = s
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read slice meters: %w", err)
	}
	err := e.iterCounters(func(k limiterCounterKey, v uint64) {
		if k.Kind == counterSliceDrop {
			s := out[uint32(k.Id)]
			s.Dropped += v
			out[uint32(k.Id)] = s
		}
	})
	return out, err
}

// Collector returns a prometheus.Collector that reads the kernel counters
// at scrape time:
//
//	kmeter_enforced_total{tenant,kind}
//	kmeter_slice_bytes_total{slice,direction}
//	kmeter_slice_packets_total{slice,direction}
//	kmeter_slice_dropped_total{slice}
func (e *Enforcer) Collector() prometheus.Collector { return collector{e} }

var (
	enforcedDesc = prometheus.NewDesc(prometheus.BuildFQName("kmeter", "", "enforced_total"),
		"Packets dropped and connections denied by in-kernel limits.", []string{"tenant", "kind"}, nil)
	sliceBytesDesc = prometheus.NewDesc(prometheus.BuildFQName("kmeter", "slice", "bytes_total"),
		"Bytes matched by a network slice.", []string{"slice", "direction"}, nil)
	slicePacketsDesc = prometheus.NewDesc(prometheus.BuildFQName("kmeter", "slice", "packets_total"),
		"Packets matched by a network slice.", []string{"slice", "direction"}, nil)
	sliceDroppedDesc = prometheus.NewDesc(prometheus.BuildFQName("kmeter", "slice", "dropped_total"),
		"Egress packets dropped by a network slice's own limit.", []string{"slice"}, nil)
)

type collector struct{ e *Enforcer }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- enforcedDesc
	ch <- sliceBytesDesc
	ch <- slicePacketsDesc
	ch <- sliceDroppedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	enforced, err := c.e.Enforced()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(enforcedDesc, err)
		return
	}
	tenants := make([]string, 0, len(enforced))
	for t := range enforced {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		for kind, v := range enforced[t] {
			ch <- prometheus.MustNewConstMetric(enforcedDesc, prometheus.CounterValue, float64(v), t, kind)
		}
	}
	sc, err := c.e.SliceCounts()
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			ch <- prometheus.NewInvalidMetric(sliceBytesDesc, err)
		}
		return
	}
	names := c.e.sliceNames()
	for id, s := range sc {
		name, ok := names[id]
		if !ok {
			name = strconv.FormatUint(uint64(id), 10)
		}
		ch <- prometheus.MustNewConstMetric(sliceBytesDesc, prometheus.CounterValue, float64(s.TxBytes), name, "tx")
		ch <- prometheus.MustNewConstMetric(sliceBytesDesc, prometheus.CounterValue, float64(s.RxBytes), name, "rx")
		ch <- prometheus.MustNewConstMetric(slicePacketsDesc, prometheus.CounterValue, float64(s.TxPackets), name, "tx")
		ch <- prometheus.MustNewConstMetric(slicePacketsDesc, prometheus.CounterValue, float64(s.RxPackets), name, "rx")
		ch <- prometheus.MustNewConstMetric(sliceDroppedDesc, prometheus.CounterValue, float64(s.Dropped), name)
	}
}
