package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// sourceFunc is a [ledger.WindowSource] that makes window i when asked,
// as a biller's table of series does: no []Window behind it.
type sourceFunc struct {
	n int
	f func(i int) ledger.Window
}

func (s sourceFunc) Len() int                   { return s.n }
func (s sourceFunc) Window(i int) ledger.Window { return s.f(i) }

// seriesModel is what a test expects of a node's series: the checkpoint
// each (tenant, meter) is at.
type seriesModel map[[2]string]ledger.Checkpoint

// windows returns window seq of each of pairs, in the pairs' order, from
// the model's checkpoints; apply moves the model on once committed.
func (m seriesModel) windows(seq uint64, pairs [][2]string) []ledger.Window {
	ws := make([]ledger.Window, len(pairs))
	for i, p := range pairs {
		cp := m[p]
		qty := uint64(10 + i)
		w := window("n1", p[0], p[1], seq, cp.Counter, qty, int64(qty), 3)
		w.PrevSeq = cp.Seq
		ws[i] = w
	}
	return ws
}

func (m seriesModel) apply(ws []ledger.Window) {
	for _, w := range ws {
		m[[2]string{w.Tenant, w.Meter}] = ledger.Checkpoint{Tenant: w.Tenant, Meter: w.Meter, Seq: w.Seq, Counter: w.ToCounter, End: w.End}
	}
}

// check compares l's checkpoints of n1 with the model, and its cached
// state with the stored one.
func (m seriesModel) check(t *testing.T, l *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	cps, err := l.Checkpoints(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	got := seriesModel{}
	for _, c := range cps {
		c.End = c.End.UTC()
		got[[2]string{c.Tenant, c.Meter}] = c
	}
	if len(got) != len(m) {
		t.Fatalf("%d checkpoints, want %d: %v", len(got), len(m), cps)
	}
	for k, want := range m {
		if g := got[k]; g.Seq != want.Seq || g.Counter != want.Counter || !g.End.Equal(want.End) {
			t.Fatalf("checkpoint of %s/%s = %+v, want %+v", k[0], k[1], g, want)
		}
	}
	if _, seq, cached, ok := ledger.CachedStateForTest(l, "n1"); ok {
		storedSeq, stored, err := ledger.StoredStateForTest(ctx, l, "n1")
		if err != nil {
			t.Fatal(err)
		}
		// Another writer's commit leaves the cache behind (it is then
		// not used); otherwise it must be the stored row.
		if seq > storedSeq || seq == storedSeq && !bytes.Equal(cached, stored) {
			t.Fatalf("cached state (commit %d, %d bytes) is not the stored one (commit %d, %d bytes)", seq, len(cached), storedSeq, len(stored))
		}
	}
}

func pairs(tenants, meters []string) [][2]string {
	var ps [][2]string
	for _, tn := range tenants {
		for _, m := range meters {
			ps = append(ps, [2]string{tn, m})
		}
	}
	return ps
}

// Series appear and vanish between commits, in (tenant, meter) order and
// out of it, through slices and through a WindowSource: every window
// lands on its own series (the checkpoints say so), a restarted ledger
// (no cached ids) goes on with the same series, and a window is still
// billed once.
func TestLedger_Commit_seriesComeAndGo(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		cfg := b.Config(t)
		l := ledgertest.OpenConfig(t, cfg)
		ctx := context.Background()
		m := seriesModel{}
		sorted := pairs([]string{"b", "d", "f"}, []string{"x", "y"})
		shuffled := [][2]string{{"f", "y"}, {"a", "x"}, {"d", "z"}, {"b", "x"}, {"c", "y"}, {"f", "x"}} // a, c and d/z new; b/y, d/x, d/y rest
		reversed := slices.Clone(pairs([]string{"a", "b", "c", "d", "e", "f"}, []string{"x", "y", "z"}))
		slices.Reverse(reversed)
		steps := []struct {
			name   string
			pairs  [][2]string
			source bool
		}{
			{"first, sorted", sorted, false},
			{"new ones out of order", shuffled, false},
			{"every series and more, reversed, by source", reversed, true},
			{"half of them, sorted, by source", pairs([]string{"a", "c", "e"}, []string{"x", "z"}), true},
			{"the other half and a first tenant", append([][2]string{{"0", "x"}}, pairs([]string{"b", "d", "f"}, []string{"y", "z"})...), false},
			{"again what already moved", shuffled, true},
		}
		var last []ledger.Window
		for i, st := range steps {
			ws := m.windows(uint64(i+1), st.pairs)
			var err error
			if st.source {
				err = l.Commit(ctx, sourceFunc{len(ws), func(i int) ledger.Window { return ws[i] }})
			} else {
				err = l.CommitWindows(ctx, ws)
			}
			if err != nil {
				t.Fatalf("commit %d (%s): %v", i+1, st.name, err)
			}
			m.apply(ws)
			m.check(t, l)
			last = ws
		}
		// Exactly once: the last commit again, and one of its windows
		// among windows that would be fine.
		if err := l.CommitWindows(ctx, last); !errors.Is(err, ledger.ErrDuplicateWindow) {
			t.Fatalf("the last commit again: err = %v, want ErrDuplicateWindow", err)
		}
		again := m.windows(uint64(len(steps)+1), [][2]string{{"a", "y"}, {"b", "x"}, {"e", "x"}})
		again[1] = last[3] // b/x's last window
		again[1].Seq, again[1].PrevSeq = uint64(len(steps)+1), last[3].PrevSeq
		if err := l.CommitWindows(ctx, again); !errors.Is(err, ledger.ErrDuplicateWindow) {
			t.Fatalf("a window from a used checkpoint: err = %v, want ErrDuplicateWindow", err)
		}
		m.check(t, l)
		// A restarted agent: a new ledger with no cached series or state.
		l2 := ledgertest.OpenConfig(t, cfg)
		m.check(t, l2)
		ws := m.windows(uint64(len(steps)+1), pairs([]string{"0", "a", "b", "g"}, []string{"x", "y"}))
		if err := l2.CommitWindows(ctx, ws); err != nil {
			t.Fatalf("commit after restart: %v", err)
		}
		m.apply(ws)
		m.check(t, l2)
		rep := mustVerify(t, l2)
		var windows int64
		for _, st := range steps {
			windows += int64(len(st.pairs))
		}
		if rep.Windows != windows+int64(len(ws)) {
			t.Fatalf("verify counted %d windows, want %d", rep.Windows, windows+int64(len(ws)))
		}
	})
}

// A commit that fails - a window billed already, two of one series, an
// invalid one, a checkpoint another writer moved - leaves the ledger's
// cached state as it was, to the byte, and the next commit works.
func TestLedger_Commit_failureKeepsState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		cfg := b.Config(t)
		l := ledgertest.OpenConfig(t, cfg)
		ctx := context.Background()
		m := seriesModel{}
		all := pairs([]string{"t1", "t2", "t3", "t4"}, []string{"m1", "m2", "m3"})
		for seq := uint64(1); seq <= 2; seq++ {
			ws := m.windows(seq, all)
			if err := l.CommitWindows(ctx, ws); err != nil {
				t.Fatal(err)
			}
			m.apply(ws)
		}
		st0, seq0, blob0, ok := ledger.CachedStateForTest(l, "n1")
		if !ok {
			t.Fatal("no cached state after two commits")
		}
		bal0 := balance(t, l, "t2")
		stale := m.windows(3, all)
		stale[5].PrevSeq = 1 // t2/m3, at 2
		twice := m.windows(3, all)
		twice = append(twice, twice[7])
		bad := m.windows(3, all)
		bad[2].Quantity++
		for _, tc := range []struct {
			name string
			ws   []ledger.Window
			want string
		}{
			{"a stale checkpoint", stale, "is at window 2, not at the window's starting checkpoint 1"},
			{"two windows of one series", twice, "two windows of n1/t3/m2"},
			{"an invalid window", bad, "does not match counters"},
		} {
			err := l.CommitWindows(ctx, tc.ws)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: err = %v, want %q", tc.name, err, tc.want)
			}
			st, seq, blob, _ := ledger.CachedStateForTest(l, "n1")
			if st != st0 || seq != seq0 || !bytes.Equal(blob, blob0) {
				t.Fatalf("%s: cached state changed (commit %d -> %d)", tc.name, seq0, seq)
			}
			if got := balance(t, l, "t2"); got != bal0 {
				t.Fatalf("%s: balance %d, want %d", tc.name, got, bal0)
			}
		}
		// Another writer (a second agent with the node's id) commits; this
		// ledger's windows from the old checkpoints are refused.
		other := ledgertest.OpenConfig(t, cfg)
		ws := m.windows(3, all[:6])
		if err := other.CommitWindows(ctx, ws); err != nil {
			t.Fatal(err)
		}
		m.apply(ws)
		if err := l.CommitWindows(ctx, stale[:6]); !errors.Is(err, ledger.ErrDuplicateWindow) {
			t.Fatalf("windows another writer billed: err = %v, want ErrDuplicateWindow", err)
		}
		if st, _, blob, _ := ledger.CachedStateForTest(l, "n1"); st != st0 || !bytes.Equal(blob, blob0) {
			t.Fatal("the refused commit changed the cached state")
		}
		m.check(t, l)
		for seq := uint64(4); seq <= 5; seq++ {
			ws := m.windows(seq, all)
			if err := l.CommitWindows(ctx, ws); err != nil {
				t.Fatalf("commit %d after the refused ones: %v", seq, err)
			}
			m.apply(ws)
			m.check(t, l)
		}
		mustVerify(t, l)
	})
}

// Windows committed through a WindowSource are stored exactly as the
// same windows committed as a slice: the same commit blobs and node state,
// to the byte, whatever their order.
func TestLedger_Commit_sourceSameAsSlice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		now := func() time.Time { return t0.Add(time.Hour) }
		open := func() *ledger.Ledger {
			cfg := b.Config(t)
			cfg.Now = now
			return ledgertest.OpenConfig(t, cfg)
		}
		bySlice, bySource := open(), open()
		m := seriesModel{}
		all := pairs([]string{"t1", "t2", "t3", "t4", "t5"}, []string{"m1", "m2"})
		odd := [][2]string{{"t5", "m2"}, {"t1", "m1"}, {"t3", "m1"}, {"t9", "m1"}}
		for seq, ps := range [][][2]string{all, odd, all, odd} {
			ws := m.windows(uint64(seq+1), ps)
			if err := bySlice.CommitWindows(ctx, ws); err != nil {
				t.Fatal(err)
			}
			if err := bySource.Commit(ctx, sourceFunc{len(ws), func(i int) ledger.Window { return ws[i] }}); err != nil {
				t.Fatal(err)
			}
			m.apply(ws)
		}
		for _, l := range []*ledger.Ledger{bySlice, bySource} {
			m.check(t, l)
			mustVerify(t, l)
		}
		a, err := ledger.CommitBlobsForTest(ctx, bySlice, "n1")
		if err != nil {
			t.Fatal(err)
		}
		c, err := ledger.CommitBlobsForTest(ctx, bySource, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if len(a) != 4 || !slices.EqualFunc(a, c, bytes.Equal) {
			t.Fatalf("commit blobs differ: %d by slice, %d by source", len(a), len(c))
		}
		_, sa, err := ledger.StoredStateForTest(ctx, bySlice, "n1")
		if err != nil {
			t.Fatal(err)
		}
		_, sb, err := ledger.StoredStateForTest(ctx, bySource, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sa, sb) {
			t.Fatal("node states differ")
		}
		for _, tn := range []string{"t1", "t5", "t9"} {
			if x, y := balance(t, bySlice, tn), balance(t, bySource, tn); x != y {
				t.Fatalf("balance of %s: %d by slice, %d by source", tn, x, y)
			}
		}
	})
}

// Readers of a node's series (checkpoints, invoice lines) run beside its
// commits and each sees one commit whole, though they decode the cached
// state whose blob becomes a commit's buffer once replaced.
func TestLedger_Commit_readersBesideCommits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		l := b.Open(t)
		ctx := context.Background()
		m := seriesModel{}
		// Enough series that a decode takes a while.
		tenants := []string{"t1", "t2"}
		for i := range 200 {
			tenants = append(tenants, fmt.Sprintf("u%03d", i))
		}
		all := pairs(tenants, []string{"m1", "m2", "m3", "m4"})
		const commits = 30
		done := make(chan error, 1)
		go func() {
			for seq := uint64(1); seq <= commits; seq++ {
				ws := m.windows(seq, all)
				if err := l.CommitWindows(ctx, ws); err != nil {
					done <- err
					return
				}
				m.apply(ws)
			}
			done <- nil
		}()
		reads := 0
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				if reads == 0 {
					t.Log("no read ran beside a commit")
				}
				return
			default:
			}
			cps, err := l.Checkpoints(ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cps {
				if len(cps) != len(all) || c.Seq != cps[0].Seq {
					t.Fatalf("checkpoints of two commits at once: %+v", cps)
				}
			}
			lines, err := l.UsageLines(ctx, "t2", "2026-12")
			if err != nil {
				t.Fatal(err)
			}
			// t2's windows are 14..17 units, by meter, every commit.
			for j, ln := range lines {
				if k := lines[0].Quantity / 14; ln.Quantity != k*int64(14+j) {
					t.Fatalf("lines of two commits at once: %+v", lines)
				}
			}
			reads++
		}
	})
}

// New series are read back by tenant, a query per 200 tenants, and in
// one scan of the node's series when they belong to more than 2,000
// tenants: either way each window lands on its own series.
func TestLedger_Commit_newTenantsReadBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		l := ledgertest.OpenConfig(t, b.Config(t))
		ctx := context.Background()
		m := seriesModel{}
		names := func(prefix string, n int) []string {
			out := make([]string, n)
			for i := range out {
				out[i] = fmt.Sprintf("%s%05d", prefix, i)
			}
			return out
		}
		meters := []string{"m1", "m2"}
		var all [][2]string
		for seq, added := range [][]string{
			names("a", 10),   // the node's first series
			names("b", 450),  // three lookups by tenant
			names("c", 2500), // one scan
			names("d", 1),    // one lookup among 5,922 series
		} {
			all = append(all, pairs(added, meters)...)
			ws := m.windows(uint64(seq+1), all)
			if err := l.CommitWindows(ctx, ws); err != nil {
				t.Fatalf("commit %d: %v", seq+1, err)
			}
			m.apply(ws)
			m.check(t, l)
		}
		if rep := mustVerify(t, l); rep.Windows != 2*(10+460+2960+2961) {
			t.Errorf("verify counted %d windows, want %d", rep.Windows, 2*(10+460+2960+2961))
		}
	})
}
