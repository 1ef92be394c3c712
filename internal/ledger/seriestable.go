package ledger

import (
	"cmp"
	"slices"
	"strings"
)

// seriesTable is a node's committed series ids, in (tenant, meter)
// order: what a commit's windows are matched against, mostly by a walk
// in step with them (the biller sends them in that order). It is never
// changed once made, so a commit reads it without the ledger's mutex; new
// series make a new table.
//
// Per series it holds an id and a meter number, 12 bytes: each tenant's
// name once, shared with the windows' (a map keyed by a string per
// series was 12 MB of the agent's heap at 70,000 series, and hashing
// those keys 7.5 ms of each commit).
type seriesTable struct {
	// tenants are the node's tenants in ascending order; tenant t's
	// series are first[t]..first[t+1]-1 of meters and ids.
	tenants []string
	first   []int32
	// meters[k] indexes meterNames; a tenant's series are in ascending
	// meter name order.
	meters     []uint32
	ids        []int64
	meterNames []string
}

// seriesCursor finds windows' series in a table. Windows in (tenant,
// meter) order take a step or two each; others a binary search.
type seriesCursor struct {
	t *seriesTable
	// ti is the tenant of the last match (-1 before one).
	ti int
	// k is the last match's index in the table.
	k int
}

func (t *seriesTable) cursor() seriesCursor { return seriesCursor{t: t, ti: -1, k: -1} }

func (t *seriesTable) len() int {
	if t == nil {
		return 0
	}
	return len(t.ids)
}

// find returns the table index of (tenant, meter), if the node has it.
func (c *seriesCursor) find(tenant, meter string) (int, bool) {
	t := c.t
	if t == nil || len(t.tenants) == 0 {
		return 0, false
	}
	ti := c.ti
	switch {
	case ti >= 0 && t.tenants[ti] == tenant:
	case ti+1 < len(t.tenants) && t.tenants[ti+1] == tenant:
		ti++
	default:
		var ok bool
		if ti, ok = slices.BinarySearch(t.tenants, tenant); !ok {
			return 0, false
		}
	}
	c.ti = ti
	lo, hi := int(t.first[ti]), int(t.first[ti+1])
	// The next series of the tenant first: windows come in meter order.
	if k := c.k + 1; k >= lo && k < hi && t.meterNames[t.meters[k]] == meter {
		c.k = k
		return k, true
	}
	if hi-lo > 16 {
		k, ok := slices.BinarySearchFunc(t.meters[lo:hi], meter, func(m uint32, meter string) int {
			return strings.Compare(t.meterNames[m], meter)
		})
		if ok {
			c.k = lo + k
		}
		return lo + k, ok
	}
	for k := lo; k < hi; k++ {
		if t.meterNames[t.meters[k]] == meter {
			c.k = k
			return k, true
		}
	}
	return 0, false
}

// newSeries is a series a commit created, or found in the series table
// but not yet in the node's seriesTable.
type newSeries struct {
	tenant, meter string
	id            int64
}

// with returns t with the series add (in any order; ones t has already
// are skipped) merged in.
func (t *seriesTable) with(add []newSeries) *seriesTable {
	slices.SortFunc(add, func(a, b newSeries) int {
		return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.meter, b.meter))
	})
	add = slices.CompactFunc(add, func(a, b newSeries) bool { return a.tenant == b.tenant && a.meter == b.meter })
	if t == nil {
		t = &seriesTable{}
	}
	n := len(t.ids) + len(add)
	next := &seriesTable{meters: make([]uint32, 0, n), ids: make([]int64, 0, n), meterNames: slices.Clip(t.meterNames)}
	meterIndex := make(map[string]uint32, len(t.meterNames))
	for i, m := range t.meterNames {
		meterIndex[m] = uint32(i)
	}
	meterOf := func(m string) uint32 {
		i, ok := meterIndex[m]
		if !ok {
			i = uint32(len(next.meterNames))
			next.meterNames = append(next.meterNames, m)
			meterIndex[m] = i
		}
		return i
	}
	push := func(tenant string, meter uint32, id int64) {
		if len(next.tenants) == 0 || next.tenants[len(next.tenants)-1] != tenant {
			next.tenants = append(next.tenants, tenant)
			next.first = append(next.first, int32(len(next.ids)))
		}
		next.meters = append(next.meters, meter)
		next.ids = append(next.ids, id)
	}
	ti, j := 0, 0
	for k := range t.ids {
		for ti+1 < len(t.tenants) && int(t.first[ti+1]) <= k {
			ti++
		}
		tenant, meter := t.tenants[ti], t.meterNames[t.meters[k]]
		for j < len(add) {
			a := &add[j]
			c := cmp.Or(strings.Compare(a.tenant, tenant), strings.Compare(a.meter, meter))
			if c > 0 {
				break
			}
			if c < 0 {
				push(a.tenant, meterOf(a.meter), a.id)
			}
			j++
		}
		push(tenant, t.meters[k], t.ids[k])
	}
	for ; j < len(add); j++ {
		push(add[j].tenant, meterOf(add[j].meter), add[j].id)
	}
	next.first = append(next.first, int32(len(next.ids)))
	next.tenants, next.first = slices.Clip(next.tenants), slices.Clip(next.first)
	return next
}
