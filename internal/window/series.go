package window

import (
	"slices"
	"strings"
)

// series is the biller's table: one row per (tenant, meter) read or
// loaded from the ledger, holding the series' checkpoint and its latest
// reading. Rows are found through their tenant and a chain of the
// tenant's few meters, so the index has one entry per tenant (10,000)
// rather than one per series (70,000), and a reading is put into the
// table without a map of its own.
type series struct {
	rows    []row
	tenants map[string]int32 // tenant -> the head of its chain of rows
	// meters are the distinct meter names (a node has a handful); a row
	// keeps the index of its own, not the 16-byte string.
	meters     []string
	meterIndex map[string]int32
	// sorted is true while the rows are in billing order (tenant, then
	// meter): no row was added since the last sort.
	sorted bool
	// tick numbers the readings; a row whose tick is not the current
	// one is not in the latest reading.
	tick uint32
	// The last tenant looked up: a reading lists a tenant's series one
	// after the other, so most lookups need no hashing.
	last     string
	lastHead int32
	haveLast bool
}

// row is one series: 64 bytes, so that at 70,000 series the table is
// about 4.5 MB (it was 96 bytes with the meter's string and a
// time.Time).
type row struct {
	tenant string
	// The checkpoint as committed: window number, counter and end (Unix
	// nanoseconds: the ledger keeps microseconds, plugins get
	// nanoseconds, and a time.Time is three times the size).
	seq, counter uint64
	end          int64
	// count is the reading of tick.
	count uint64
	tick  uint32
	// meter is the index of the series' meter in the table's meters.
	meter int32
	// next is the tenant's next row, -1 after its last.
	next int32
	// route is 1 + the index of the series' pricer in the biller's
	// routes; 0 until the biller asked for it (or when it was refused).
	route int32
}

// meter returns the name of r's meter.
func (t *series) meter(r *row) string { return t.meters[r.meter] }

// meterID returns the index of meter in t.meters, adding it when new.
func (t *series) meterID(meter string) int32 {
	if i, ok := t.meterIndex[meter]; ok {
		return i
	}
	if t.meterIndex == nil {
		t.meterIndex = map[string]int32{}
	}
	i := int32(len(t.meters))
	t.meters = append(t.meters, meter)
	t.meterIndex[meter] = i
	return i
}

// row returns the row of (tenant, meter), adding it when it is new.
// The pointer is valid until the next call.
func (t *series) row(tenant, meter string) *row {
	head := int32(-1)
	if t.haveLast && tenant == t.last {
		head = t.lastHead
	} else if h, ok := t.tenants[tenant]; ok {
		head = h
	}
	for i := head; i >= 0; i = t.rows[i].next {
		if t.meters[t.rows[i].meter] == meter {
			t.last, t.lastHead, t.haveLast = tenant, head, true
			return &t.rows[i]
		}
	}
	if t.tenants == nil {
		t.tenants = map[string]int32{}
	}
	i := int32(len(t.rows))
	t.rows = append(t.rows, row{tenant: tenant, meter: t.meterID(meter), next: head})
	t.tenants[tenant] = i
	t.last, t.lastHead, t.haveLast = tenant, i, true
	t.sorted = false
	return &t.rows[i]
}

// putTenants puts a reading of per-tenant counts (tenant -> meter ->
// count) into the table. It goes through the table in its order and
// looks each tenant's map up once and each of the tenant's rows up in
// it; the reading is walked as well only when it has a series the table
// lacks. At 70,000 series, walking every map and finding each (tenant,
// meter) row took half of a tick without the commit.
func (t *series) putTenants(m map[string]map[string]uint64) {
	t.sort() // a tenant's rows adjacent, its chain in index order
	tenants, complete := 0, true
	for i := 0; i < len(t.rows); i++ {
		byMeter, ok := m[t.rows[i].tenant]
		found := 0
		for ; ; i++ {
			r := &t.rows[i]
			if v, in := byMeter[t.meters[r.meter]]; in {
				r.count, r.tick = v, t.tick
				found++
			}
			if r.next < 0 {
				break
			}
		}
		if ok {
			tenants++
			complete = complete && found == len(byMeter)
		}
	}
	if complete && tenants == len(m) {
		return
	}
	for tenant, byMeter := range m {
		for meter, v := range byMeter {
			r := t.row(tenant, meter)
			r.count, r.tick = v, t.tick
		}
	}
}

// resetCheckpoints forgets every checkpoint, before they are loaded
// again from the ledger. Rows stay, so their indexes stay valid.
func (t *series) resetCheckpoints() {
	for i := range t.rows {
		r := &t.rows[i]
		r.seq, r.counter, r.end = 0, 0, 0
	}
}

// sort puts the rows in billing order (tenant, then meter) in the table
// itself, when a row was added since the last sort, so that a tick walks
// them in index order: at 70,000 series (7 MB of rows) visiting them in
// insertion order, which is the source's order, missed the CPU caches on
// most rows. Row indexes change; none is kept across a sort.
func (t *series) sort() {
	if t.sorted {
		return
	}
	slices.SortFunc(t.rows, func(a, b row) int {
		if c := strings.Compare(a.tenant, b.tenant); c != 0 {
			return c
		}
		return strings.Compare(t.meters[a.meter], t.meters[b.meter])
	})
	// Each tenant's rows are now adjacent: its chain runs through them in
	// order and the index points at the first.
	clear(t.tenants)
	for i := range t.rows {
		r := &t.rows[i]
		r.next = -1
		if i+1 < len(t.rows) && t.rows[i+1].tenant == r.tenant {
			r.next = int32(i + 1)
		}
		if i == 0 || t.rows[i-1].tenant != r.tenant {
			t.tenants[r.tenant] = int32(i)
		}
	}
	t.haveLast = false
	t.sorted = true
}
