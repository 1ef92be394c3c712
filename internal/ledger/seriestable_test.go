package ledger

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// A series table built in steps, new series in any order and some twice,
// finds every series it was given, by its id, whatever order it is asked
// in, and no other.
func TestSeriesTable(t *testing.T) {
	var all []newSeries
	id := int64(100)
	for _, tenant := range []string{"t03", "t01", "t10", "t07", "a", "zz"} {
		// Most tenants have the agent's few meters; one has many (the
		// binary search within a tenant), added out of meter order.
		n := 7
		if tenant == "t07" {
			n = 40
		}
		for m := range n {
			id++
			all = append(all, newSeries{tenant: tenant, meter: fmt.Sprintf("m%02d", (m*3)%n), id: id})
		}
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name  string
		steps int
	}{{"one step", 1}, {"three steps", 3}, {"one series a step", len(all)}} {
		t.Run(tc.name, func(t *testing.T) {
			add := slices.Clone(all)
			rnd.Shuffle(len(add), func(i, j int) { add[i], add[j] = add[j], add[i] })
			var tbl *seriesTable
			per := (len(add) + tc.steps - 1) / tc.steps
			for lo := 0; lo < len(add); lo += per {
				step := slices.Clone(add[lo:min(lo+per, len(add))])
				step = append(step, step[0]) // twice in one step
				if lo > 0 {
					step = append(step, add[0]) // and again later
				}
				tbl = tbl.with(step)
			}
			if tbl.len() != len(all) {
				t.Fatalf("table holds %d series, want %d", tbl.len(), len(all))
			}
			sorted := slices.Clone(all)
			slices.SortFunc(sorted, func(a, b newSeries) int {
				return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.meter, b.meter))
			})
			shuffled := slices.Clone(all)
			rnd.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			reversed := slices.Clone(sorted)
			slices.Reverse(reversed)
			for name, order := range map[string][]newSeries{"sorted": sorted, "shuffled": shuffled, "reversed": reversed} {
				c := tbl.cursor()
				for _, s := range order {
					k, ok := c.find(s.tenant, s.meter)
					if !ok || tbl.ids[k] != s.id {
						t.Fatalf("%s: %s/%s found %v at %d, want id %d", name, s.tenant, s.meter, ok, k, s.id)
					}
				}
				for _, miss := range [][2]string{{"t03", "m99"}, {"t02", "m00"}, {"", "m00"}, {"zzz", "m00"}, {"t07", "m"}} {
					if k, ok := c.find(miss[0], miss[1]); ok {
						t.Fatalf("%s: %s/%s found at %d, not in the table", name, miss[0], miss[1], k)
					}
				}
			}
		})
	}
	var empty *seriesTable
	if c := empty.cursor(); empty.len() != 0 {
		t.Fatal("empty table has series")
	} else if _, ok := c.find("a", "b"); ok {
		t.Fatal("empty table found a series")
	}
}
