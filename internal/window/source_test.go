package window_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// stableStore commits into a ledger and keeps every window it was
// handed, read twice: a ledger may ask for a window more than once.
type stableStore struct {
	*ledger.Ledger
	t       *testing.T
	commits [][]ledger.Window
}

func (s *stableStore) Commit(ctx context.Context, src ledger.WindowSource) error {
	ws := make([]ledger.Window, src.Len())
	for i := range ws {
		ws[i] = src.Window(i)
	}
	for i := range ws {
		if again := src.Window(i); again != ws[i] {
			s.t.Errorf("window %d read twice differs:\n%+v\n%+v", i, ws[i], again)
		}
	}
	s.commits = append(s.commits, ws)
	return s.Ledger.Commit(ctx, src)
}

// TestBiller_Tick_windowsAsCommitted: the windows the biller hands the
// ledger, built from its table when asked, are exactly the windows of
// the ledger's contract, field by field, across ticks with first
// windows, a re-based counter, a series held by its pricer and billed
// later, an idle series and a tenant that appears late.
func TestBiller_Tick_windowsAsCommitted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		st := &stableStore{Ledger: be.Open(t), t: t}
		src := newSource()
		shop, blog := &fixedPricer{microPerUnit: 3}, &fixedPricer{microPerUnit: 5}
		late := &fixedPricer{microPerUnit: 2}
		late.fail.Store(true)
		start := time.Date(2026, 11, 26, 10, 0, 0, 123_456_789, time.UTC) // nanoseconds kept
		now := start
		b, err := window.New(context.Background(), window.Config{NodeID: "n1", Source: src, Ledger: st, Log: quietLog(),
			Pricers: routes{"shop": shop, "blog": blog, "late": late, "cafe": shop}, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		tick := func(k int) time.Time { return start.Add(time.Duration(k) * 5 * time.Second) }
		charge := func(q uint64, perUnit int64) pricing.Charge {
			return pricing.Charge{AmountMicro: int64(q) * perUnit, Currency: "USD", VendorMicro: int64(q) * perUnit * 7 / 10}
		}
		win := func(tenant, meter string, seq, prev, from, to uint64, since, until time.Time, perUnit int64) ledger.Window {
			w := ledger.Window{Node: "n1", Tenant: tenant, Meter: meter, Seq: seq, PrevSeq: prev, FromCounter: from, ToCounter: to,
				Start: since, End: until}
			if to < from {
				w.Rebased = true
				return w
			}
			w.Quantity = to - from
			w.Charge, w.PluginSHA256 = charge(w.Quantity, perUnit), pluginSHA
			return w
		}
		steps := []struct {
			do   func()
			want []ledger.Window // in billing order: tenant, then meter
			held int
		}{
			{ // first windows start when the biller did; late's pricer fails
				do: func() {
					src.add("shop", "syscalls", 1000)
					src.add("shop", "tcp_connects", 5)
					src.add("blog", "syscalls", 7)
					src.add("late", "syscalls", 40)
				},
				want: []ledger.Window{
					win("blog", "syscalls", 1, 0, 0, 7, start, tick(1), 5),
					win("shop", "syscalls", 1, 0, 0, 1000, start, tick(1), 3),
					win("shop", "tcp_connects", 1, 0, 0, 5, start, tick(1), 3),
				},
				held: 1,
			},
			{ // growth, a re-base, an idle series, a new tenant; late still held
				do: func() {
					src.add("shop", "syscalls", 500)
					src.set("blog", "syscalls", 2)
					src.add("cafe", "net_tx_bytes", 9)
					src.add("late", "syscalls", 2)
				},
				want: []ledger.Window{
					win("blog", "syscalls", 2, 1, 7, 2, tick(1), tick(2), 5),
					win("cafe", "net_tx_bytes", 2, 0, 0, 9, start, tick(2), 3),
					win("shop", "syscalls", 2, 1, 1000, 1500, tick(1), tick(2), 3),
				},
				held: 1,
			},
			{ // late's pricer recovers: its first window has all its usage
				do: func() {
					late.fail.Store(false)
					src.add("blog", "syscalls", 3)
					src.add("shop", "tcp_connects", 1)
				},
				want: []ledger.Window{
					win("blog", "syscalls", 3, 2, 2, 5, tick(2), tick(3), 5),
					win("late", "syscalls", 3, 0, 0, 42, start, tick(3), 2),
					win("shop", "tcp_connects", 3, 1, 5, 6, tick(1), tick(3), 3),
				},
			},
		}
		for i, s := range steps {
			s.do()
			now = tick(i + 1)
			r := mustTick(t, b)
			if r.Windows != len(s.want) || r.Held != s.held {
				t.Fatalf("tick %d = %+v, want %d windows and %d held", i+1, r, len(s.want), s.held)
			}
			got := st.commits[len(st.commits)-1]
			if g, w := windowsString(got), windowsString(s.want); g != w {
				t.Errorf("tick %d committed\n%s\nwant\n%s", i+1, g, w)
			}
		}
		if len(st.commits) != len(steps) {
			t.Errorf("%d commits, want %d", len(st.commits), len(steps))
		}
		mustVerify(t, st.Ledger)
	})
}

// windowsString prints windows one a line with their times in UTC
// nanoseconds: a time's location is not part of a window.
func windowsString(ws []ledger.Window) string {
	var sb strings.Builder
	for _, w := range ws {
		w.Start, w.End = w.Start.UTC(), w.End.UTC()
		fmt.Fprintf(&sb, "%+v\n", w)
	}
	return sb.String()
}

// TestBiller_Tick_oldCheckpointsStay: a series idle for many ticks, while
// another is billed on each, starts its next window at its own first
// checkpoint: the checkpoints the biller shares between rows and drops
// when no row uses them any more keep every row's own.
func TestBiller_Tick_oldCheckpointsStay(t *testing.T) {
	st := &stableStore{Ledger: ledgertest.SQLite.Open(t), t: t}
	src := newSource()
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	now := start
	b, err := window.New(context.Background(), window.Config{NodeID: "n1", Source: src, Ledger: st, Log: quietLog(),
		Pricers: onePricer{&fixedPricer{microPerUnit: 1}}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tick := func(k int) time.Time { return start.Add(time.Duration(k) * time.Second) }
	const ticks = 100
	for k := 1; k <= ticks; k++ {
		now = tick(k)
		src.add("busy", "syscalls", 1)
		if k == 1 || k == ticks {
			src.add("idle", "syscalls", 5)
		}
		if k == ticks/2 { // a third series, idle from tick 50 on
			src.add("late", "syscalls", 2)
		}
		mustTick(t, b)
	}
	// idle's window of the last tick starts at its first checkpoint;
	// late's checkpoint (tick 50) is still there.
	got := st.commits[len(st.commits)-1]
	win := func(tenant string, prev, from, to uint64, since time.Time) ledger.Window {
		q := to - from
		return ledger.Window{Node: "n1", Tenant: tenant, Meter: "syscalls", Seq: ticks, PrevSeq: prev, FromCounter: from,
			ToCounter: to, Quantity: q, Start: since, End: tick(ticks), PluginSHA256: pluginSHA,
			Charge: pricing.Charge{AmountMicro: int64(q), Currency: "USD", VendorMicro: int64(q) * 7 / 10}}
	}
	want := []ledger.Window{
		win("busy", ticks-1, ticks-1, ticks, tick(ticks-1)),
		win("idle", 1, 5, 10, tick(1)),
	}
	if g, w := windowsString(got), windowsString(want); g != w {
		t.Errorf("last tick committed\n%s\nwant\n%s", g, w)
	}
	src.add("late", "syscalls", 1)
	now = tick(ticks + 1)
	mustTick(t, b)
	got = st.commits[len(st.commits)-1]
	want = []ledger.Window{win("late", ticks/2, 2, 3, tick(ticks/2))}
	want[0].Seq, want[0].End = ticks+1, tick(ticks+1)
	if g, w := windowsString(got), windowsString(want); g != w {
		t.Errorf("late's window\n%s\nwant\n%s", g, w)
	}
	mustVerify(t, st.Ledger)
}
