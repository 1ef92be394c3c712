package window

import (
	"slices"
	"strings"
	"time"
)

// series is the biller's table: one row per (tenant, meter) read or
// loaded from the ledger, holding the series' checkpoint and its latest
// reading. Rows are found through their tenant and a chain of the
// tenant's few meters, so the index has one entry per tenant (10,000)
// rather than one per series (70,000), and a reading is put into the
// table without a map of its own.
type series struct {
	rows    []row
	tenants map[string]int32 // tenant -> its most recently added row
	// order lists the rows in billing order (tenant, then meter); it is
	// rebuilt only when a row was added since.
	order  []int32
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

// row is one series. At 70,000 series the table is about 6 MB.
type row struct {
	tenant, meter string
	// The checkpoint as committed: window number, counter and end.
	seq, counter uint64
	end          time.Time
	// count is the reading of tick.
	count uint64
	tick  uint32
	// next is the tenant's next row, -1 after its last.
	next int32
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
		if t.rows[i].meter == meter {
			t.last, t.lastHead, t.haveLast = tenant, head, true
			return &t.rows[i]
		}
	}
	if t.tenants == nil {
		t.tenants = map[string]int32{}
	}
	i := int32(len(t.rows))
	t.rows = append(t.rows, row{tenant: tenant, meter: meter, next: head})
	t.tenants[tenant] = i
	t.last, t.lastHead, t.haveLast = tenant, i, true
	t.sorted = false
	return &t.rows[i]
}

// resetCheckpoints forgets every checkpoint, before they are loaded
// again from the ledger. Rows stay, so their indexes stay valid.
func (t *series) resetCheckpoints() {
	for i := range t.rows {
		r := &t.rows[i]
		r.seq, r.counter, r.end = 0, 0, time.Time{}
	}
}

// sortedRows returns the rows' indexes in billing order.
func (t *series) sortedRows() []int32 {
	if t.sorted {
		return t.order
	}
	t.order = t.order[:0]
	for i := range t.rows {
		t.order = append(t.order, int32(i))
	}
	slices.SortFunc(t.order, func(a, b int32) int {
		ra, rb := &t.rows[a], &t.rows[b]
		if c := strings.Compare(ra.tenant, rb.tenant); c != 0 {
			return c
		}
		return strings.Compare(ra.meter, rb.meter)
	})
	t.sorted = true
	return t.order
}
