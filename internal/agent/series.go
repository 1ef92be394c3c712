package agent

import (
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmeter/kmeter/internal/exposition"
)

// The families written from the latest snapshot, by [usageFamilies].
const (
	lastReadName = namespace + "_last_read_timestamp_seconds"
	tenantsName  = namespace + "_tenants"
	usageName    = namespace + "_usage_total"
	byNrName     = namespace + "_syscalls_by_number_total"
)

// usageFamilies writes the series of the latest snapshot straight into a
// scrape's response. At 10,000 tenants that is about 90,000 series; going
// through a prometheus.Registry built, hashed and sorted a dto.Metric for
// each of them, 215 ms and 34 MB per scrape.
type usageFamilies struct {
	a       *Agent
	scratch sync.Pool // *seriesScratch

	// checked are the tenant names last found valid UTF-8 (a name that
	// is not cannot be a label value). Reads share their names slice
	// while the tenants stay the same, so most scrapes check none.
	mu      sync.Mutex
	checked []string
}

// seriesScratch is what one scrape needs to write the series in order,
// kept between scrapes so that a scrape allocates nothing per series.
type seriesScratch struct {
	nrNames map[uint32]string // "39" for 39: syscall numbers are few
}

// UsageFamilies returns the source of the series derived from the latest
// read, for exposition.NewHandler:
//
//	kmeter_usage_total{meter,tenant}
//	kmeter_syscalls_by_number_total{nr,tenant}
//	kmeter_tenants
//	kmeter_last_read_timestamp_seconds
//
// All four come from the same snapshot. A scrape only reads the published
// snapshot, which is never modified, so it neither waits for nor delays a
// read of the kernel maps. Series are written sorted by tenant, then meter
// or syscall number. Before the first read none is written.
func (a *Agent) UsageFamilies() exposition.Source {
	u := &usageFamilies{a: a}
	u.scratch.New = func() any { return &seriesScratch{nrNames: map[uint32]string{}} }
	return u
}

// Names implements exposition.Source.
func (u *usageFamilies) Names() []string {
	return []string{lastReadName, tenantsName, usageName, byNrName}
}

// Scrape implements exposition.Source. A tenant name that is not valid
// UTF-8 cannot be a label value: the scrape fails, as it did when these
// series went through the registry.
func (u *usageFamilies) Scrape() (func(*exposition.Writer), error) {
	s := u.a.Latest()
	if s == nil {
		return func(*exposition.Writer) {}, nil
	}
	if err := u.check(s.Tenants.names); err != nil {
		return nil, err
	}
	if err := u.check(s.SyscallsByNumber.names); err != nil {
		return nil, err
	}
	return func(w *exposition.Writer) {
		sc := u.scratch.Get().(*seriesScratch)
		defer u.scratch.Put(sc)
		sc.write(w, s)
	}, nil
}

// check fails on a name that is not valid UTF-8, unless names is the
// slice checked last.
func (u *usageFamilies) check(names []string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(names) == len(u.checked) && (len(names) == 0 || &names[0] == &u.checked[0]) {
		return nil
	}
	for _, t := range names {
		if !utf8.ValidString(t) {
			return fmt.Errorf("tenant %q: label value is not valid UTF-8", t)
		}
	}
	u.checked = names
	return nil
}

// write writes the families of s: tenants in ascending order, then
// counters by name or syscalls by number.
func (sc *seriesScratch) write(w *exposition.Writer, s *Snapshot) {
	w.Family(lastReadName, "When the kernel counters were last read.", prometheus.GaugeValue)
	w.Sample(float64(s.Time.UnixNano()) / 1e9)
	w.Family(tenantsName, "Tenants with usage in the latest read.", prometheus.GaugeValue)
	w.Sample(float64(s.Tenants.Len()))

	w.Family(usageName, "Cumulative kernel usage per tenant and meter, counted in the kernel.", prometheus.CounterValue, "meter", "tenant")
	s.Tenants.Walk(func(t, m string, v uint64) { w.Sample(float64(v), m, t) })

	w.Family(byNrName, "Cumulative syscalls per tenant and syscall number.", prometheus.CounterValue, "nr", "tenant")
	for t, cs := range s.SyscallsByNumber.All() {
		for _, c := range cs {
			w.Sample(float64(c.Count), sc.nrName(c.Nr), t)
		}
	}
}

// nrName returns nr in decimal, made once per syscall number.
func (sc *seriesScratch) nrName(nr uint32) string {
	n, ok := sc.nrNames[nr]
	if !ok {
		n = strconv.FormatUint(uint64(nr), 10)
		sc.nrNames[nr] = n
	}
	return n
}
