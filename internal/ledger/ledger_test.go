package ledger_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

var (
	t0     = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	plugin = strings.Repeat("ab", 32)
)

// window builds window seq of a series that grows by qty per window.
func window(node, tenant, meter string, seq, from, qty uint64, amount, vendor int64) ledger.Window {
	return ledger.Window{
		Node: node, Tenant: tenant, Meter: meter, Seq: seq, PrevSeq: seq - 1,
		FromCounter: from, ToCounter: from + qty, Quantity: qty,
		Start: t0.Add(time.Duration(seq-1) * 5 * time.Second), End: t0.Add(time.Duration(seq) * 5 * time.Second),
		Charge:       pricing.Charge{AmountMicro: amount, Currency: "USD", VendorMicro: vendor},
		PluginSHA256: plugin,
	}
}

func forEachBackend(t *testing.T, f func(t *testing.T, b ledgertest.Backend)) {
	for _, b := range ledgertest.Backends() {
		t.Run(b.Name, func(t *testing.T) { f(t, b) })
	}
}

func mustVerify(t *testing.T, l *ledger.Ledger) ledger.Report {
	t.Helper()
	r, err := l.Verify(context.Background())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !r.OK() {
		t.Fatalf("verify found problems: %q", r.Problems)
	}
	return r
}

func balance(t *testing.T, l *ledger.Ledger, tenant string) int64 {
	t.Helper()
	bs, err := l.Balances(context.Background(), tenant)
	if err != nil {
		t.Fatalf("balances of %s: %v", tenant, err)
	}
	if len(bs) != 1 || bs[0].Currency != "USD" {
		t.Fatalf("balances of %s = %+v, want one USD balance", tenant, bs)
	}
	return bs[0].BalanceMicro
}

func TestLedger_CommitWindows_exactlyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		l := b.Open(t)
		first := []ledger.Window{
			window("n1", "shop", "syscalls", 1, 0, 100, 1000, 700),
			window("n1", "blog", "syscalls", 1, 0, 7, 70, 0),
		}
		if err := l.CommitWindows(ctx, first); err != nil {
			t.Fatal(err)
		}
		// The same window again, alone or beside a new one, is refused
		// as a whole: nothing of the second batch is applied. So is a
		// window that starts from a checkpoint that has moved on.
		for _, again := range [][]ledger.Window{
			{window("n1", "blog", "syscalls", 2, 7, 5, 50, 0), first[0]},
			{first[1]},
			{window("n1", "shop", "syscalls", 9, 0, 150, 1500, 0)}, // PrevSeq 8 is not shop's checkpoint (1)
		} {
			if err := l.CommitWindows(ctx, again); !errors.Is(err, ledger.ErrDuplicateWindow) {
				t.Fatalf("recommit = %v, want ErrDuplicateWindow", err)
			}
		}
		stale := window("n1", "shop", "syscalls", 2, 0, 150, 1500, 0)
		stale.PrevSeq = 0 // a stale writer that missed window 1
		if err := l.CommitWindows(ctx, []ledger.Window{stale}); !errors.Is(err, ledger.ErrDuplicateWindow) {
			t.Fatalf("commit from a stale checkpoint = %v, want ErrDuplicateWindow", err)
		}
		if err := l.CommitWindows(ctx, []ledger.Window{first[0], first[0]}); err == nil || !strings.Contains(err.Error(), "two windows of n1/shop/syscalls") {
			t.Fatalf("one series twice in a commit: %v", err)
		}
		// Another node has its own chain for the same tenant and meter.
		if err := l.CommitWindows(ctx, []ledger.Window{window("n2", "shop", "syscalls", 1, 0, 3, 30, 21)}); err != nil {
			t.Fatal(err)
		}
		if got, want := balance(t, l, "shop"), int64(-1030); got != want {
			t.Errorf("shop balance = %d, want %d", got, want)
		}
		if got, want := balance(t, l, "blog"), int64(-70); got != want {
			t.Errorf("blog balance = %d, want %d", got, want)
		}
		r := mustVerify(t, l)
		if r.Windows != 3 || r.Series != 3 {
			t.Errorf("verify counted %d windows in %d series, want 3 in 3", r.Windows, r.Series)
		}
		if r.DebitsMicro["USD"] != 1100 || r.CreditsMicro["USD"] != 1100 {
			t.Errorf("debits/credits = %d/%d, want 1100/1100", r.DebitsMicro["USD"], r.CreditsMicro["USD"])
		}
		cps, err := l.Checkpoints(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if len(cps) != 2 {
			t.Fatalf("checkpoints of n1 = %+v, want 2", cps)
		}
		for _, c := range cps {
			want := map[string]uint64{"shop": 100, "blog": 7}[c.Tenant]
			if c.Seq != 1 || c.Counter != want || !c.End.Equal(t0.Add(5*time.Second)) {
				t.Errorf("checkpoint %+v, want seq 1 counter %d end %v", c, want, t0.Add(5*time.Second))
			}
		}
	})
}

func TestLedger_CommitWindows_invalid(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	ok := window("n1", "shop", "syscalls", 1, 0, 10, 100, 0)
	tests := []struct {
		name string
		edit func(w *ledger.Window)
		want string
	}{
		{"negative amount", func(w *ledger.Window) { w.Charge.AmountMicro = -1 }, "reversal entries"},
		{"vendor above amount", func(w *ledger.Window) { w.Charge.VendorMicro = 101 }, "vendor share"},
		{"bad currency", func(w *ledger.Window) { w.Charge.Currency = "usd" }, "ISO 4217"},
		{"quantity mismatch", func(w *ledger.Window) { w.Quantity = 9 }, "does not match counters"},
		{"backwards without rebase", func(w *ledger.Window) { w.FromCounter = 20 }, "without a rebase"},
		{"seq not above prev", func(w *ledger.Window) { w.Seq, w.PrevSeq = 3, 3 }, "seq 3 must be above the previous window's 3"},
		{"no tenant", func(w *ledger.Window) { w.Tenant = "" }, "must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ok
			tt.edit(&w)
			err := l.CommitWindows(context.Background(), []ledger.Window{w})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if r := mustVerify(t, l); r.Entries != 0 {
		t.Errorf("invalid windows left %d entries", r.Entries)
	}
}

func TestLedger_immutable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		cfg := b.Config(t)
		l := ledgertest.OpenConfig(t, cfg)
		ctx := context.Background()
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 100, 0)}); err != nil {
			t.Fatal(err)
		}
		// A usage entry's postings are packed with its windows; a
		// top-up's are rows.
		if _, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 1, Currency: "USD", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			"UPDATE entries SET amount_micro = 1",
			"DELETE FROM entries",
			"UPDATE postings SET amount_micro = 1",
			"DELETE FROM postings",
			// Windows are packed into window commits (schema version 4);
			// the node's state holds the checkpoints: it is replaced by
			// every commit, but never deleted.
			"UPDATE window_commits SET windows = 7",
			"UPDATE window_commits SET data = node_state.data FROM node_state",
			"DELETE FROM series",
			"DELETE FROM window_commits",
			"DELETE FROM node_state",
		} {
			err := ledger.ExecForTest(ctx, l, stmt)
			if err == nil || !strings.Contains(err.Error(), "immutable") {
				t.Errorf("%s: err = %v, want the immutability trigger to refuse", stmt, err)
			}
		}
		mustVerify(t, l)
	})
}

func TestLedger_TopUp_idempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		l := b.Open(t)
		top := ledger.TopUp{Tenant: "shop", AmountMicro: 5_000_000, Currency: "USD", Memo: "card", Key: "k1"}
		first, err := l.TopUp(ctx, top)
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || first.BalanceMicro != 5_000_000 {
			t.Fatalf("first top-up = %+v", first)
		}
		again, err := l.TopUp(ctx, top)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Replayed || again.EntryID != first.EntryID || again.BalanceMicro != first.BalanceMicro || !again.Created.Equal(first.Created) {
			t.Fatalf("replay = %+v, want the original %+v", again, first)
		}
		other := top
		other.AmountMicro = 6_000_000
		if _, err := l.TopUp(ctx, other); !errors.Is(err, ledger.ErrKeyReused) {
			t.Fatalf("reused key: err = %v, want ErrKeyReused", err)
		}
		if got := balance(t, l, "shop"); got != 5_000_000 {
			t.Fatalf("balance = %d, want 5000000 (applied once)", got)
		}
		if _, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: -1, Currency: "US", Key: "k2"}); err == nil ||
			!strings.Contains(err.Error(), "must be positive") || !strings.Contains(err.Error(), "ISO 4217") {
			t.Fatalf("bad top-up: err = %v, want both problems named", err)
		}
		mustVerify(t, l)
	})
}

func TestLedger_Reverse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		cfg.Now = func() time.Time { return t0 }
		l := ledgertest.OpenConfig(t, cfg)
		if _, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 1000, Currency: "USD", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 300, 210)}); err != nil {
			t.Fatal(err)
		}
		if got := balance(t, l, "shop"); got != 700 {
			t.Fatalf("balance = %d, want 700", got)
		}
		// Entry 2 is the window (entry 1 is the top-up).
		id, err := l.Reverse(ctx, 2, "double billed in test")
		if err != nil {
			t.Fatal(err)
		}
		if got := balance(t, l, "shop"); got != 1000 {
			t.Errorf("balance after reversal = %d, want 1000", got)
		}
		if _, err := l.Reverse(ctx, 2, "again"); err == nil || !strings.Contains(err.Error(), "already reversed") {
			t.Errorf("second reversal: err = %v", err)
		}
		if _, err := l.Reverse(ctx, id, "undo"); err == nil || !strings.Contains(err.Error(), "itself a reversal") {
			t.Errorf("reversal of a reversal: err = %v", err)
		}
		if _, err := l.Reverse(ctx, 99, ""); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("missing entry: err = %v", err)
		}
		lines, err := l.UsageLines(ctx, "shop", "2026-11")
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != 1 || lines[0].Quantity != 0 || lines[0].AmountMicro != 0 {
			t.Errorf("usage lines after reversal = %+v, want one line netting to zero", lines)
		}
		bs, _ := l.Balances(ctx, "shop")
		if bs[0].ChargedMicro != 0 {
			t.Errorf("charged after reversal = %d, want 0", bs[0].ChargedMicro)
		}
		mustVerify(t, l)
	})
}

func TestLedger_ClosePeriod_lateUsage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		now := time.Date(2026, 12, 1, 0, 10, 0, 0, time.UTC)
		cfg := b.Config(t)
		cfg.Now = func() time.Time { return now }
		l := ledgertest.OpenConfig(t, cfg)
		if err := l.ClosePeriod(ctx, "2026-12"); err == nil || !strings.Contains(err.Error(), "has not ended") {
			t.Fatalf("closing the running period: err = %v", err)
		}
		if err := l.ClosePeriod(ctx, "2026-13"); err == nil || !strings.Contains(err.Error(), "not a month") {
			t.Fatalf("closing a bad period: err = %v", err)
		}
		// Window 1 ends in November before the close; window 2 ends in
		// November too but is committed after November was closed.
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 100, 0)}); err != nil {
			t.Fatal(err)
		}
		if err := l.ClosePeriod(ctx, "2026-11"); err != nil {
			t.Fatal(err)
		}
		if err := l.ClosePeriod(ctx, "2026-11"); err != nil {
			t.Fatalf("closing twice: %v", err)
		}
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 2, 10, 4, 40, 0)}); err != nil {
			t.Fatal(err)
		}
		nov, err := l.UsageLines(ctx, "shop", "2026-11")
		if err != nil {
			t.Fatal(err)
		}
		dec, err := l.UsageLines(ctx, "shop", "2026-12")
		if err != nil {
			t.Fatal(err)
		}
		wantNov := []ledger.UsageLine{{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10, AmountMicro: 100}}
		wantDec := []ledger.UsageLine{{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Late: true, Quantity: 4, AmountMicro: 40}}
		if !equalLines(nov, wantNov) || !equalLines(dec, wantDec) {
			t.Errorf("november = %+v\ndecember = %+v\nwant %+v and %+v", nov, dec, wantNov, wantDec)
		}
		mustVerify(t, l)
	})
}

func equalLines(a, b []ledger.UsageLine) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLedger_Verify_findsGaps(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		l := b.Open(t)
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 100, 0)}); err != nil {
			t.Fatal(err)
		}
		// CommitWindows cannot make a gap; a forged commit can: window 3
		// of series 1 linked to a window 2 that does not exist, starting
		// at 15, billed to entry 1 (window 1's) for nothing.
		forged := window("n1", "shop", "syscalls", 3, 15, 5, 0, 0)
		forged.PrevSeq = 2
		blob, err := ledger.PackWindowForTest(forged, 1, 1, "2026-11")
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.ExecArgsForTest(ctx, l, `INSERT INTO window_commits (node, commit_seq, first_entry, last_entry, windows, created_us, data)
			VALUES ('n1', 2, 1, 1, 1, 0, ?)`, blob); err != nil {
			t.Fatal(err)
		}
		r, err := l.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"n1/shop/syscalls: checkpoint says window 1 at counter 10, but the last window is 3 at counter 20",
			"n1/shop/syscalls: window 3 follows window 1 but links to 2 (gap in the checkpoint chain)",
			"n1/shop/syscalls: window 3 starts at counter 15 but the checkpoint was 10",
			// The hand-made window is not in the rollup either.
			"usage line shop/2026-11/syscalls (USD, plugin " + plugin + ", late 0): lines say quantity 10 amount 100 but the journal sums to 15 and 100",
			// The forged commit claims entry 1, commit 1's (Reverse would
			// not find window 3), and the node's state was not moved to it.
			"node n1: state is at commit 1 but the last window commit is 2",
			"node n1: window commit 2's entries 1..1 overlap commit 1's",
		}
		slices.Sort(want)
		if strings.Join(r.Problems, "\n") != strings.Join(want, "\n") {
			t.Errorf("problems = %q\nwant %q", r.Problems, want)
		}
	})
}

func TestLedger_rebasedWindow(t *testing.T) {
	l := ledgertest.SQLite.Open(t)
	ctx := context.Background()
	w1 := window("n1", "shop", "syscalls", 1, 0, 100, 100, 0)
	w2 := ledger.Window{Node: "n1", Tenant: "shop", Meter: "syscalls", Seq: 2, PrevSeq: 1, FromCounter: 100, ToCounter: 30, Rebased: true,
		Start: w1.End, End: w1.End.Add(time.Second)}
	w3 := window("n1", "shop", "syscalls", 3, 30, 5, 5, 0)
	bad := w2
	bad.Quantity = 30
	if err := l.CommitWindows(ctx, []ledger.Window{bad}); err == nil || !strings.Contains(err.Error(), "quantity 30 does not match") {
		t.Fatalf("a rebased window that bills: err = %v", err)
	}
	for _, w := range []ledger.Window{w1, w2, w3} {
		if err := l.CommitWindows(ctx, []ledger.Window{w}); err != nil {
			t.Fatal(err)
		}
	}
	mustVerify(t, l)
	if got := balance(t, l, "shop"); got != -105 {
		t.Errorf("balance = %d, want -105", got)
	}
}

func TestOpen_reopenAndClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		l, err := ledger.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 1, Currency: "USD", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		// Reopening runs no migration twice and keeps the data.
		l2 := ledgertest.OpenConfig(t, cfg)
		if got := balance(t, l2, "shop"); got != 1 {
			t.Fatalf("balance after reopen = %d, want 1", got)
		}
		if err := ledger.ExecForTest(ctx, l2, "INSERT INTO schema_migrations (version, applied_us) VALUES (99, 0)"); err != nil {
			t.Fatal(err)
		}
		if _, err := ledger.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "newer than this kmeter knows") {
			t.Fatalf("open newer schema: err = %v", err)
		}
	})
}

func TestConfigFrom(t *testing.T) {
	tests := []struct {
		dataDir, url string
		want         ledger.Config
		err          string
	}{
		{dataDir: "/var/lib/kmeter", want: ledger.Config{Path: "/var/lib/kmeter/kmeter.db"}},
		{dataDir: "/d", url: "postgres://u@h/db", want: ledger.Config{PostgresURL: "postgres://u@h/db"}},
		{url: "postgresql://u@h/db", want: ledger.Config{PostgresURL: "postgresql://u@h/db"}},
		{url: "mysql://u:secret@h/db", err: "is not a postgres:// URL"},
		{err: "set --data-dir"},
	}
	for _, tt := range tests {
		got, err := ledger.ConfigFrom(tt.dataDir, tt.url)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "secret") {
				t.Errorf("ConfigFrom(%q, %q) err = %v, want %q without the password", tt.dataDir, tt.url, err, tt.err)
			}
			continue
		}
		if err != nil || got.Path != tt.want.Path || got.PostgresURL != tt.want.PostgresURL {
			t.Errorf("ConfigFrom(%q, %q) = %+v, %v; want %+v", tt.dataDir, tt.url, got, err, tt.want)
		}
	}
}

func TestLedger_Tenants(t *testing.T) {
	ctx := context.Background()
	l := ledgertest.SQLite.Open(t)
	if err := l.SyncTenants(ctx, []ledger.Tenant{{Name: "shop", LowBalanceMicro: 1000}, {Name: "corp", Account: ledger.Postpaid}}); err != nil {
		t.Fatal(err)
	}
	ts, err := l.Tenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "corp" || ts[0].Account != "postpaid" || ts[1].Name != "shop" || ts[1].LowBalanceMicro != 1000 {
		t.Errorf("tenants = %+v", ts)
	}
}
