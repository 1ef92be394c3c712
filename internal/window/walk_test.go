package window_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/window"
)

// listWalker hands its series over in the order of its list, tenants
// interleaved; Read fails, so a biller that builds the map instead of
// walking fails the test.
type listWalker struct {
	mu     sync.Mutex
	series []window.Key
	counts map[window.Key]uint64
}

func (w *listWalker) Read(context.Context) (map[window.Key]uint64, error) {
	return nil, errors.New("Read called on a Walker")
}

func (w *listWalker) Walk(_ context.Context, fn func(tenant, meter string, count uint64)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range w.series {
		fn(k.Tenant, k.Meter, w.counts[k])
	}
	return nil
}

// recordingStore keeps a copy of every window committed through it.
type recordingStore struct {
	*ledger.Ledger
	commits [][]ledger.Window
}

func (s *recordingStore) Commit(ctx context.Context, src ledger.WindowSource) error {
	ws := make([]ledger.Window, src.Len())
	for i := range ws {
		ws[i] = src.Window(i)
	}
	s.commits = append(s.commits, ws)
	return s.Ledger.Commit(ctx, src)
}

// TestBiller_walkerBillsLikeTheMap: a Walker source produces the very
// windows, in the same order, that the same readings produce as a map,
// while series appear, vanish and come back and tenants are interleaved.
func TestBiller_walkerBillsLikeTheMap(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	k := func(tenant, meter string) window.Key { return window.Key{Tenant: tenant, Meter: meter} }
	steps := []struct {
		series []window.Key
		add    uint64
		want   uint64 // quantity billed by the tick
	}{
		{[]window.Key{k("shop", "syscalls"), k("blog", "syscalls"), k("shop", "tcp_connects")}, 10, 30},
		// a new meter of a known tenant, a new tenant, tenants interleaved
		{[]window.Key{k("blog", "net_tx_bytes"), k("shop", "syscalls"), k("zoo", "syscalls"), k("blog", "syscalls"), k("shop", "tcp_connects")}, 5, 25},
		// blog/syscalls vanishes from the reading: not billed meanwhile
		{[]window.Key{k("zoo", "syscalls"), k("shop", "syscalls"), k("blog", "net_tx_bytes"), k("shop", "tcp_connects")}, 2, 8},
		// and comes back with the growth of both ticks
		{[]window.Key{k("blog", "syscalls"), k("shop", "tcp_connects"), k("zoo", "syscalls"), k("shop", "syscalls"), k("blog", "net_tx_bytes")}, 1, 4 + 3},
		// a tenant before all others appears, zoo and a meter of blog
		// vanish (the sorted walk's cursor skips them)
		{[]window.Key{k("shop", "tcp_connects"), k("aaa", "tcp_accepts"), k("blog", "syscalls"), k("shop", "syscalls")}, 1, 4},
		// zoo comes back, aaa goes, a new meter sorts before the others
		{[]window.Key{k("zoo", "syscalls"), k("shop", "net_rx_bytes"), k("shop", "syscalls"), k("blog", "syscalls")}, 2, 2 + 2 + 2 + 2},
	}
	walk := &listWalker{counts: map[window.Key]uint64{}}
	counts := map[window.Key]uint64{}
	asMap := window.SourceFunc(func(context.Context) (map[window.Key]uint64, error) { return maps.Clone(counts), nil })
	walked, mapped := &recordingStore{Ledger: l}, &recordingStore{Ledger: l}
	p := onePricer{&fixedPricer{microPerUnit: 3}}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now } // both billers see the same times
	// The intervals differ, as billers' do (Tick never waits for the
	// interval).
	newB := func(node string, src window.Source, st window.Store, every time.Duration) *window.Biller {
		b, err := window.New(context.Background(), window.Config{NodeID: node, Source: src, Ledger: st, Pricers: p, Now: clock,
			Interval: every, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bw, bm := newB("walk", walk, walked, time.Minute), newB("map", asMap, mapped, 5*time.Second)
	var perTenant map[string]map[string]uint64
	// A SortedWalk is walked in billing order (the agent's snapshots),
	// and gives the same windows when its series come out of order.
	sortedStore, unsortedStore := &recordingStore{Ledger: l}, &recordingStore{Ledger: l}
	bs := newB("sorted", window.SortedWalk(func(_ context.Context, fn func(tenant, meter string, count uint64)) error {
		for _, tn := range slices.Sorted(maps.Keys(perTenant)) {
			for _, m := range slices.Sorted(maps.Keys(perTenant[tn])) {
				fn(tn, m, perTenant[tn][m])
			}
		}
		return nil
	}), sortedStore, 5*time.Second)
	bu := newB("unsorted", window.SortedWalk(walk.Walk), unsortedStore, 5*time.Second)
	all := map[window.Key]uint64{} // every series' count, read or not
	for i, s := range steps {
		for _, key := range s.series {
			all[key] += s.add
		}
		if i == 3 {
			all[k("blog", "syscalls")] += 2 // counted while it was not read
		}
		clear(counts)
		for _, key := range s.series {
			counts[key] = all[key]
		}
		walk.series, walk.counts = s.series, maps.Clone(counts)
		perTenant = map[string]map[string]uint64{}
		for key, v := range counts {
			if perTenant[key.Tenant] == nil {
				perTenant[key.Tenant] = map[string]uint64{}
			}
			perTenant[key.Tenant][key.Meter] = v
		}
		now = now.Add(5 * time.Second)
		rw, rm, rs, ru := mustTick(t, bw), mustTick(t, bm), mustTick(t, bs), mustTick(t, bu)
		if rw.Quantity != s.want || rw != rm || rs != rm || ru != rm {
			t.Fatalf("step %d: walked tick %+v, map tick %+v, sorted tick %+v, unsorted tick %+v, want quantity %d",
				i, rw, rm, rs, ru, s.want)
		}
	}
	if len(walked.commits) != len(steps) || len(mapped.commits) != len(steps) || len(sortedStore.commits) != len(steps) || len(unsortedStore.commits) != len(steps) {
		t.Fatalf("%d, %d, %d and %d commits, want %d each", len(walked.commits), len(mapped.commits), len(sortedStore.commits), len(unsortedStore.commits), len(steps))
	}
	for i := range mapped.commits {
		b := mapped.commits[i]
		for name, a := range map[string][]ledger.Window{"walked": walked.commits[i],
			"sorted": sortedStore.commits[i], "unsorted": unsortedStore.commits[i]} {
			for j := range a {
				a[j].Node = "map" // the only field that differs
			}
			if !slices.EqualFunc(a, b, func(x, y ledger.Window) bool { return fmt.Sprint(x) == fmt.Sprint(y) }) {
				t.Errorf("commit %d:\n%s %v\nmap    %v", i, name, a, b)
			}
		}
	}
	q, amt := billed(t, l)
	for key, v := range all {
		for _, node := range []string{"walk", "map", "sorted", "unsorted"} {
			name := node + "/" + key.String()
			if q[name] != int64(v) || amt[name] != 3*int64(v) {
				t.Errorf("%s billed %d for %d micro, want %d for %d", name, q[name], amt[name], v, 3*v)
			}
		}
	}
	mustVerify(t, l)
}
