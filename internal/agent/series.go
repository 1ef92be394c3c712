package agent

import (
	"fmt"
	"maps"
	"slices"
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

	// The sorted tenant names of the last snapshot scraped, for each
	// family, reused while the set of tenants stays the same: it changes
	// rarely, and sorting 10,000 names was a fifth of a scrape. The
	// slices are never modified once stored, so a scrape may keep
	// writing from one while another scrape replaces it.
	mu         sync.Mutex
	usageOrder []string
	nrOrder    []string
}

// seriesScratch is what one scrape needs to write the series in order,
// kept between scrapes so that a scrape allocates nothing per series.
type seriesScratch struct {
	meters  []string
	nrs     []uint32
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
	usage, nr, err := u.order(s)
	if err != nil {
		return nil, err
	}
	return func(w *exposition.Writer) {
		sc := u.scratch.Get().(*seriesScratch)
		defer u.scratch.Put(sc)
		sc.write(w, s, usage, nr)
	}, nil
}

// order returns the tenants of s sorted, for each family, remembering
// them for the next scrape.
func (u *usageFamilies) order(s *Snapshot) (usage, nr []string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if usage, err = sortedTenants(u.usageOrder, s.Tenants); err != nil {
		return nil, nil, err
	}
	u.usageOrder = usage
	if nr, err = sortedTenants(u.nrOrder, s.SyscallsByNumber); err != nil {
		return nil, nil, err
	}
	u.nrOrder = nr
	return usage, nr, nil
}

// sortedTenants returns the keys of byTenant sorted, which is last when
// it holds the same names: as many, and each of them a key. The names
// in last were checked when it was made; new ones are checked here, as
// a name that is not valid UTF-8 cannot be a label value.
func sortedTenants[V any](last []string, byTenant map[string]V) ([]string, error) {
	if len(last) == len(byTenant) {
		same := true
		for _, t := range last {
			if _, ok := byTenant[t]; !ok {
				same = false
				break
			}
		}
		if same {
			return last, nil
		}
	}
	for t := range byTenant {
		if !utf8.ValidString(t) {
			return nil, fmt.Errorf("tenant %q: label value is not valid UTF-8", t)
		}
	}
	return slices.Sorted(maps.Keys(byTenant)), nil
}

// write writes the families of s, its tenants in the order given by
// usage (for s.Tenants) and nr (for s.SyscallsByNumber).
func (sc *seriesScratch) write(w *exposition.Writer, s *Snapshot, usage, nr []string) {
	w.Family(lastReadName, "When the kernel counters were last read.", prometheus.GaugeValue)
	w.Sample(float64(s.Time.UnixNano()) / 1e9)
	w.Family(tenantsName, "Tenants with usage in the latest read.", prometheus.GaugeValue)
	w.Sample(float64(len(s.Tenants)))

	w.Family(usageName, "Cumulative kernel usage per tenant and meter, counted in the kernel.", prometheus.CounterValue, "meter", "tenant")
	for _, t := range usage {
		byMeter := s.Tenants[t]
		if !sameKeys(sc.meters, byMeter) {
			sc.meters = slices.AppendSeq(sc.meters[:0], maps.Keys(byMeter))
			slices.Sort(sc.meters)
		}
		for _, m := range sc.meters {
			w.Sample(float64(byMeter[m]), m, t)
		}
	}

	w.Family(byNrName, "Cumulative syscalls per tenant and syscall number.", prometheus.CounterValue, "nr", "tenant")
	for _, t := range nr {
		byNr := s.SyscallsByNumber[t]
		if !sameKeys(sc.nrs, byNr) {
			sc.nrs = slices.AppendSeq(sc.nrs[:0], maps.Keys(byNr))
			slices.Sort(sc.nrs)
		}
		for _, nr := range sc.nrs {
			w.Sample(float64(byNr[nr]), sc.nrName(nr), t)
		}
	}
	clear(sc.meters) // hold no names between scrapes
	sc.meters, sc.nrs = sc.meters[:0], sc.nrs[:0]
}

// sameKeys reports whether the distinct keys sorted are exactly the keys
// of m: most tenants have the same meters as the tenant before them, and
// a few lookups cost less than listing and sorting the keys again.
func sameKeys[K comparable, V any](sorted []K, m map[K]V) bool {
	if len(sorted) != len(m) {
		return false
	}
	for _, k := range sorted {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
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
