package window_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/window"
)

// countingStore counts the commits that reach the ledger.
type countingStore struct {
	*ledger.Ledger
	commits atomic.Int64
}

func (s *countingStore) Commit(ctx context.Context, ws ledger.WindowSource) error {
	s.commits.Add(1)
	return s.Ledger.Commit(ctx, ws)
}

// TestBiller_Run_longerWindows: a biller with windows ten times longer
// than another's, reading the same counters, commits less often and
// bills exactly the same totals once both stop (the stop bills a final
// window).
func TestBiller_Run_longerWindows(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	p := onePricer{&fixedPricer{microPerUnit: 2}}
	const short, long = 10 * time.Millisecond, 100 * time.Millisecond
	stores := map[string]*countingStore{"short": {Ledger: l}, "long": {Ledger: l}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for node, every := range map[string]time.Duration{"short": short, "long": long} {
		b, err := window.New(ctx, window.Config{NodeID: node, Source: src, Ledger: stores[node], Pricers: p, Interval: every, Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs <- b.Run(ctx) })
	}
	start := time.Now()
	want := map[string]uint64{}
	for i := 0; time.Since(start) < 5*long; i++ {
		for j, meter := range []string{"syscalls", "tcp_connects", "net_tx_bytes"} {
			tenant := fmt.Sprintf("t%d", (i+j)%4)
			n := uint64(i%5 + j + 1)
			src.add(tenant, meter, n)
			want[tenant+"/"+meter] += n
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	}
	q, amt := billed(t, l)
	for _, node := range []string{"short", "long"} {
		for k, v := range want {
			if q[node+"/"+k] != int64(v) || amt[node+"/"+k] != 2*int64(v) {
				t.Errorf("%s/%s billed %d for %d micro, want %d for %d", node, k, q[node+"/"+k], amt[node+"/"+k], v, 2*v)
			}
		}
	}
	cs, cl := stores["short"].commits.Load(), stores["long"].commits.Load()
	// A ticker never fires more often than its interval; load only makes
	// it fire less. +2: the final window and a tick at the very end.
	if most := int64(elapsed/long) + 2; cl > most || cl >= cs {
		t.Errorf("long windows committed %d times, short ones %d times in %v; want at most %d and fewer than short", cl, cs, elapsed, most)
	}
	t.Logf("%v of usage: %d commits with %v windows, %d with %v windows", elapsed.Round(time.Millisecond), cs, short, cl, long)
	mustVerify(t, l)
}

// TestBiller_Run_afterTick: AfterTick runs after each tick's commit (the
// window is in the ledger when it is called), not before.
func TestBiller_Run_afterTick(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	src.add("shop", "syscalls", 42)
	seen := make(chan int64, 100)
	b, err := window.New(context.Background(), window.Config{NodeID: "n1", Source: src, Ledger: l,
		Pricers: onePricer{&fixedPricer{microPerUnit: 1}}, Interval: 10 * time.Millisecond, Log: quietLog(),
		AfterTick: func() {
			q, _ := billed(t, l)
			seen <- q["n1/shop/syscalls"]
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	if got := <-seen; got != 42 {
		t.Errorf("AfterTick saw %d billed, want the tick's 42 already committed", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
