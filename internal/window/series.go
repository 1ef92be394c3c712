package window

import (
	"context"
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
	rows []row
	// names are the tenants, by the id their rows keep; tenants maps a
	// name to its id, heads an id to the head of its chain of rows (-1:
	// none yet).
	names   []string
	tenants map[string]int32
	heads   []int32
	// meters are the distinct meter names (a node has a handful); a row
	// keeps the index of its own.
	meters     []string
	meterIndex map[string]int32
	// cps are the checkpoints rows share: all series of a commit get the
	// same window number and end. cps[0] is no checkpoint (seq 0).
	// kept is how many were in use at the last compaction.
	cps  []checkpoint
	kept int
	// sorted is true while the rows are in billing order (tenant, then
	// meter): no row was added since the last sort.
	sorted bool
	// tick numbers the readings; a row whose tick is not the current
	// one is not in the latest reading.
	tick uint32
	// The last tenant looked up: a reading lists a tenant's series one
	// after the other, so most lookups need no hashing.
	last     string
	lastID   int32
	haveLast bool
}

// checkpoint is a committed window's number and end.
type checkpoint struct {
	seq uint64
	end time.Time
}

// row is one series: 40 bytes, so that at 70,000 series the table is
// about 2.8 MB (it was 96 bytes with the tenant's and meter's strings
// and the checkpoint's seq and time.Time on every row).
type row struct {
	// counter is the checkpoint's counter; cp the index of its window
	// number and end in the table's cps.
	counter uint64
	// count is the reading of tick.
	count  uint64
	tick   uint32
	cp     uint32
	tenant int32 // index in the table's names
	meter  int32 // index in the table's meters
	// next is the tenant's next row, -1 after its last.
	next int32
	// route is 1 + the index of the series' pricer in the biller's
	// routes; 0 until the biller asked for it (or when it was refused).
	route int32
}

// tenant returns the name of r's tenant.
func (t *series) tenant(r *row) string { return t.names[r.tenant] }

// meter returns the name of r's meter.
func (t *series) meter(r *row) string { return t.meters[r.meter] }

// key returns r's series.
func (t *series) key(r *row) Key { return Key{t.names[r.tenant], t.meters[r.meter]} }

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

// tenantID returns the id of tenant, adding it when new.
func (t *series) tenantID(tenant string) int32 {
	if t.haveLast && tenant == t.last {
		return t.lastID
	}
	id, ok := t.tenants[tenant]
	if !ok {
		if t.tenants == nil {
			t.tenants = map[string]int32{}
		}
		id = int32(len(t.names))
		t.names = append(t.names, tenant)
		t.heads = append(t.heads, -1)
		t.tenants[tenant] = id
	}
	t.last, t.lastID, t.haveLast = tenant, id, true
	return id
}

// row returns the row of (tenant, meter), adding it when it is new.
// The pointer is valid until the next call.
func (t *series) row(tenant, meter string) *row {
	id := t.tenantID(tenant)
	for i := t.heads[id]; i >= 0; i = t.rows[i].next {
		if t.meters[t.rows[i].meter] == meter {
			return &t.rows[i]
		}
	}
	i := int32(len(t.rows))
	t.rows = append(t.rows, row{tenant: id, meter: t.meterID(meter), next: t.heads[id]})
	t.heads[id] = i
	t.sorted = false
	return &t.rows[i]
}

// putSorted puts a reading in billing order into the table: a cursor
// goes through the table's rows (sorted too) beside the reading, so a
// series known to the table is found with a string compare or two
// instead of a lookup. A series the cursor does not find there (new, or
// out of order) is looked up and, when new, added after the rows the
// cursor goes through.
func (t *series) putSorted(ctx context.Context, walk SortedWalk) error {
	t.sort()
	// Rows the walk adds go past n; t.rows may move meanwhile, so it is
	// read anew for every series.
	n := len(t.rows)
	i := 0 // the cursor: rows before it precede the series read
	var (
		tenant  string
		started bool
		id      int32 = -1 // tenant's id if its rows are at the cursor, else -1
	)
	return walk(ctx, func(tn, meter string, v uint64) {
		if !started || tn != tenant {
			started, tenant, id = true, tn, -1
			// Skip the tenants before tn, a tenant's rows at a time.
			for i < n {
				cur := t.rows[i].tenant
				if c := strings.Compare(t.names[cur], tn); c >= 0 {
					if c == 0 {
						id = cur
					}
					break
				}
				for i < n && t.rows[i].tenant == cur {
					i++
				}
			}
		}
		if id >= 0 {
			for i < n && t.rows[i].tenant == id {
				r := &t.rows[i]
				c := strings.Compare(t.meters[r.meter], meter)
				if c > 0 {
					break
				}
				i++
				if c == 0 {
					r.count, r.tick = v, t.tick
					return
				}
			}
		}
		r := t.row(tn, meter)
		r.count, r.tick = v, t.tick
	})
}

// resetCheckpoints forgets every checkpoint, before they are loaded
// again from the ledger. Rows stay, so their indexes stay valid.
func (t *series) resetCheckpoints() {
	for i := range t.rows {
		r := &t.rows[i]
		r.counter, r.cp = 0, 0
	}
	t.cps = append(t.cps[:0], checkpoint{})
	t.kept = 1
}

// addCheckpoint adds c to cps and returns its index.
func (t *series) addCheckpoint(c checkpoint) uint32 {
	if len(t.cps) == 0 {
		t.cps = append(t.cps, checkpoint{})
		t.kept = 1
	}
	t.cps = append(t.cps, c)
	return uint32(len(t.cps) - 1)
}

// compactCheckpoints drops the checkpoints no row uses any more, when
// their table has grown well past what was in use at the last
// compaction: each commit adds one, and series that are held or no
// longer read keep theirs. It must not run while a commit reads the
// rows.
func (t *series) compactCheckpoints(remap []uint32) []uint32 {
	if len(t.cps) <= 2*t.kept+16 {
		return remap
	}
	remap = slices.Grow(remap[:0], len(t.cps))[:len(t.cps)]
	clear(remap)
	const used = 1
	remap[0] = used
	for i := range t.rows {
		remap[t.rows[i].cp] = used
	}
	n := 0
	for i, u := range remap {
		if u == used {
			t.cps[n] = t.cps[i]
			remap[i] = uint32(n)
			n++
		}
	}
	t.cps = t.cps[:n]
	for i := range t.rows {
		r := &t.rows[i]
		r.cp = remap[r.cp]
	}
	t.kept = n
	return remap
}

// sort puts the rows in billing order (tenant, then meter) in the table
// itself, when a row was added since the last sort, so that a tick walks
// them in index order: at 70,000 series visiting them in insertion
// order, which is the source's order, missed the CPU caches on most
// rows. Row indexes change; none is kept across a sort.
func (t *series) sort() {
	if t.sorted {
		return
	}
	slices.SortFunc(t.rows, func(a, b row) int {
		if a.tenant != b.tenant {
			return strings.Compare(t.names[a.tenant], t.names[b.tenant])
		}
		return strings.Compare(t.meters[a.meter], t.meters[b.meter])
	})
	// Each tenant's rows are now adjacent: its chain runs through them in
	// order and its head is the first.
	for i := range t.rows {
		r := &t.rows[i]
		r.next = -1
		if i+1 < len(t.rows) && t.rows[i+1].tenant == r.tenant {
			r.next = int32(i + 1)
		}
		if i == 0 || t.rows[i-1].tenant != r.tenant {
			t.heads[r.tenant] = int32(i)
		}
	}
	t.sorted = true
}
