package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// Two writers with the same node id (two agents, or an agent and its
// restarted self) race window after window from the same checkpoints:
// the compare-and-swap on the node's state lets exactly one of each pair
// land, and the loser's cached state does not stop it from committing
// the next window once it is the one that fits.
func TestLedger_CommitWindows_sameNodeRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		writers := []*ledger.Ledger{ledgertest.OpenConfig(t, cfg), ledgertest.OpenConfig(t, cfg)}
		const rounds = 5
		var charged int64
		for seq := uint64(1); seq <= rounds; seq++ {
			errs := make([]error, len(writers))
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, l := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					// Writer i bills 10+i per window: the balance tells
					// whose windows landed.
					ws := []ledger.Window{
						window("n1", "shop", "syscalls", seq, (seq-1)*10, 10, 10+int64(i), 0),
						window("n1", "shop", "tcp_connects", seq, (seq-1)*10, 10, 10+int64(i), 0),
					}
					errs[i] = l.CommitWindows(ctx, ws)
				}()
			}
			close(start)
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
					charged += 2 * (10 + int64(i))
				case !errors.Is(err, ledger.ErrDuplicateWindow):
					t.Fatalf("window %d, writer %d: %v", seq, i, err)
				}
			}
			if won != 1 {
				t.Fatalf("window %d: %d writers landed it, want exactly 1 (errors %v)", seq, won, errs)
			}
		}
		// Writer 0 commits alone once more, whatever its cache holds.
		last := []ledger.Window{window("n1", "shop", "syscalls", rounds+1, rounds*10, 10, 10, 0)}
		if err := writers[0].CommitWindows(ctx, last); err != nil {
			t.Fatal(err)
		}
		charged += 10
		if got := balance(t, writers[1], "shop"); got != -charged {
			t.Errorf("balance = %d, want %d", got, -charged)
		}
		r := mustVerify(t, writers[1])
		if r.Windows != 2*rounds+1 {
			t.Errorf("verify counted %d windows, want %d", r.Windows, 2*rounds+1)
		}
	})
}

// Verify reads the packed rows themselves: a node state that no longer
// matches its windows, a commit blob that does not decode and a state
// blob that does not decode are all reported, and readers fail with an
// error instead of a panic.
func TestLedger_Verify_tamperedPacked(t *testing.T) {
	pl := ", plugin " + plugin + ", late 0): lines say quantity "
	tests := []struct {
		name   string
		tamper func(ctx context.Context, l *ledger.Ledger) error
		want   []string
	}{
		{"checkpoint moved", func(ctx context.Context, l *ledger.Ledger) error {
			return ledger.EditStateForTest(ctx, l, "n1", func(s *ledger.SeriesStateForTest) {
				if s.Tenant == "shop" {
					s.Counter++
				}
			})
		}, []string{"n1/shop/syscalls: checkpoint says window 2 at counter 16, but the last window is 2 at counter 15"}},
		{"forged corrupt commit", func(ctx context.Context, l *ledger.Ledger) error {
			return ledger.ExecArgsForTest(ctx, l, `INSERT INTO window_commits (node, commit_seq, first_entry, last_entry, windows, created_us, data)
				VALUES ('n1', 3, 1, 1, 1, 0, ?)`, []byte{1, 0x1f, 200})
		}, []string{
			"node n1: state is at commit 2 but the last window commit is 3",
			"node n1: window commit 3's entries 1..1 overlap commit 2's",
			"window commit 3 of node n1: bad seq at byte 2 of 3: the blob is truncated or corrupt",
		}},
		{"corrupt state", func(ctx context.Context, l *ledger.Ledger) error {
			return ledger.ExecArgsForTest(ctx, l, `UPDATE node_state SET data = ? WHERE node = 'n1'`, []byte{1, 0, 5, 1})
		}, []string{
			"state of node n1: series count larger than the blob at byte 3 of 4: the blob is truncated or corrupt",
			// The open lines were in the state.
			"usage line cafe/2026-11/syscalls (USD" + pl + "0 amount 0 but the journal sums to 20 and 20",
			"usage line shop/2026-11/syscalls (USD" + pl + "0 amount 0 but the journal sums to 15 and 20",
		}},
	}
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				l := b.Open(t)
				for seq := uint64(1); seq <= 2; seq++ {
					if err := l.CommitWindows(ctx, []ledger.Window{
						window("n1", "shop", "syscalls", seq, (seq-1)*10, 5+5*(2-seq), 10, 0),
						window("n1", "cafe", "syscalls", seq, (seq-1)*10, 10, 10, 0),
					}); err != nil {
						t.Fatal(err)
					}
				}
				mustVerify(t, l)
				if err := tt.tamper(ctx, l); err != nil {
					t.Fatal(err)
				}
				r, err := l.Verify(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(r.Problems, "\n") != strings.Join(tt.want, "\n") {
					t.Errorf("problems = %q\nwant %q", r.Problems, tt.want)
				}
			})
		}
	})
}

// A state row that does not decode fails the next commit and the readers
// with an error naming the node, from a ledger that has not cached it.
func TestLedger_corruptStateIsAnError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		l := ledgertest.OpenConfig(t, cfg)
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 10, 0)}); err != nil {
			t.Fatal(err)
		}
		if err := ledger.ExecArgsForTest(ctx, l, `UPDATE node_state SET data = ? WHERE node = 'n1'`, []byte{7}); err != nil {
			t.Fatal(err)
		}
		fresh := ledgertest.OpenConfig(t, cfg)
		const want = "state of node n1: unknown format version 7"
		if _, err := fresh.Checkpoints(ctx, "n1"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Checkpoints: err = %v, want %q", err, want)
		}
		if _, err := fresh.UsageLines(ctx, "shop", "2026-11"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("UsageLines: err = %v, want %q", err, want)
		}
		if err := fresh.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 2, 10, 10, 10, 0)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CommitWindows: err = %v, want %q", err, want)
		}
	})
}

// The month's first commit closes a line per series; at 64 lines and more
// PostgreSQL writes them with one array statement (fewer with rows). Both
// must close exactly the November lines and open December's.
func TestLedger_CommitWindows_manyLinesRoll(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		l := b.Open(t)
		const tenants = 40
		meters := []string{"syscalls", "tcp_connects"}
		commit := func(seq uint64, dec bool) {
			t.Helper()
			var ws []ledger.Window
			for i := range tenants {
				for j, m := range meters {
					q := uint64(1 + i + 10*j)
					w := window("n1", fmt.Sprintf("t%02d", i), m, seq, (seq-1)*q, q, int64(q)*3, int64(q))
					if dec {
						w.End = w.End.Add(time.Hour)
					}
					ws = append(ws, w)
				}
			}
			if err := l.CommitWindows(ctx, ws); err != nil {
				t.Fatal(err)
			}
		}
		commit(1, false)
		commit(2, true)
		for _, i := range []int{0, 17, tenants - 1} {
			tn := fmt.Sprintf("t%02d", i)
			line := func(m string, q int64) ledger.UsageLine {
				return ledger.UsageLine{Meter: m, Currency: "USD", PluginSHA256: plugin, Quantity: q, AmountMicro: 3 * q}
			}
			checkLines(t, l, tn, "2026-11", []ledger.UsageLine{line("syscalls", int64(1+i)), line("tcp_connects", int64(11+i))})
			checkLines(t, l, tn, "2026-12", []ledger.UsageLine{line("syscalls", int64(1+i)), line("tcp_connects", int64(11+i))})
		}
		if r := mustVerify(t, l); r.Windows != 2*tenants*int64(len(meters)) {
			t.Errorf("verify counted %d windows, want %d", r.Windows, 2*tenants*len(meters))
		}
	})
}

// A packed usage entry's postings are not rows: ledger verify derives them
// (tenant debit, vendor and platform credits) and counts and sums them
// with the rows, so a stored balance that drifts from them is found.
func TestLedger_Verify_packedPostings(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		l := b.Open(t)
		if _, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 1000, Currency: "USD", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		// Entry 2: shop, 300 with a vendor share of 210 (3 postings);
		// entry 3: blog, 70, no vendor share (2); entry 4: idle, 0 (none).
		if err := l.CommitWindows(ctx, []ledger.Window{
			window("n1", "shop", "syscalls", 1, 0, 10, 100, 70),
			window("n1", "shop", "tcp_connects", 1, 0, 10, 200, 140),
			window("n1", "blog", "syscalls", 1, 0, 7, 70, 0),
			window("n1", "idle", "syscalls", 1, 0, 0, 0, 0),
		}); err != nil {
			t.Fatal(err)
		}
		r := mustVerify(t, l)
		if r.Entries != 4 || r.Postings != 2+3+2 || r.DebitsMicro["USD"] != 1000+370 || r.CreditsMicro["USD"] != 1000+370 {
			t.Errorf("verify: %d entries, %d postings, debits %d, credits %d; want 4, 7, 1370, 1370",
				r.Entries, r.Postings, r.DebitsMicro["USD"], r.CreditsMicro["USD"])
		}
		// Reversing entry 2 books rows that cancel its packed postings.
		if _, err := l.Reverse(ctx, 2, "test"); err != nil {
			t.Fatal(err)
		}
		if got := balance(t, l, "shop"); got != 1000 {
			t.Errorf("shop balance after the reversal = %d, want 1000", got)
		}
		r = mustVerify(t, l)
		if r.Postings != 7+3 || r.DebitsMicro["USD"] != 1370+300 {
			t.Errorf("after the reversal: %d postings, debits %d; want 10, 1670", r.Postings, r.DebitsMicro["USD"])
		}
		if err := ledger.ExecForTest(ctx, l, `UPDATE balances SET balance_micro = balance_micro + 1 WHERE account = 'platform'`); err != nil {
			t.Fatal(err)
		}
		r, err := l.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Platform: 90 (entry 2) + 70 (entry 3) - 90 (the reversal).
		want := "balance of platform in USD is 71 but its postings sum to 70"
		if strings.Join(r.Problems, "\n") != want {
			t.Errorf("problems = %q, want %q", r.Problems, want)
		}
	})
}

// A tenant's charges are kept in the state of each node that bills it,
// not in its balances row: Balances, the top-up's balance and ledger
// verify add them up across nodes, and verify finds a charge that drifts
// from the node's packed entries.
func TestLedger_chargesInNodeState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		l := ledgertest.OpenConfig(t, cfg)
		for _, node := range []string{"n1", "n2"} {
			for seq := uint64(1); seq <= 2; seq++ {
				amount := int64(100)
				if node == "n2" {
					amount = 30
				}
				if err := l.CommitWindows(ctx, []ledger.Window{window(node, "shop", "syscalls", seq, (seq-1)*10, 10, amount, 0)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		eur := window("n2", "shop", "tcp_connects", 1, 0, 5, 7, 0)
		eur.Charge.Currency = "EUR"
		if err := l.CommitWindows(ctx, []ledger.Window{eur}); err != nil {
			t.Fatal(err)
		}
		res, err := l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 1000, Currency: "USD", Key: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if res.BalanceMicro != 1000-260 {
			t.Errorf("balance after the top-up = %d, want %d", res.BalanceMicro, 1000-260)
		}
		// A reader with no cached state sees the same.
		fresh := ledgertest.OpenConfig(t, cfg)
		bs, err := fresh.Balances(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		want := []ledger.Balance{
			{Tenant: "shop", Account: ledger.Prepaid, Currency: "EUR", BalanceMicro: -7, ChargedMicro: 7, Low: true},
			{Tenant: "shop", Account: ledger.Prepaid, Currency: "USD", BalanceMicro: 740, ChargedMicro: 260},
		}
		if !slices.Equal(bs, want) {
			t.Errorf("balances = %+v\nwant %+v", bs, want)
		}
		mustVerify(t, fresh)
		// Entry 3 is n2's first window (1 and 2 are n1's): a packed
		// entry found on another node than the first one looked at.
		if _, err := fresh.Reverse(ctx, 3, "n2 double billed"); err != nil {
			t.Fatal(err)
		}
		bs, err = fresh.Balances(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		if bs[1].BalanceMicro != 740+30 || bs[1].ChargedMicro != 260-30 {
			t.Errorf("USD after reversing n2's entry = %+v, want balance %d charged %d", bs[1], 770, 230)
		}
		mustVerify(t, fresh)
		if err := ledger.EditChargesForTest(ctx, l, "n2", func(tenant, currency string, amount *int64) {
			if currency == "USD" {
				*amount += 5
			}
		}); err != nil {
			t.Fatal(err)
		}
		r, err := fresh.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(r.Problems, "\n"), "balance of tenant:shop in USD is 765 but its postings sum to 770"; got != want {
			t.Errorf("problems = %q, want %q", got, want)
		}
	})
}
