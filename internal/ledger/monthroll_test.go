package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// lineSums adds windows up into the invoice lines they must make, by
// tenant, period (of the window's end) and meter: the reference,
// computed from the inputs alone.
type lineSums map[[3]string][2]int64

func (s lineSums) add(w ledger.Window, sign int64) {
	k := [3]string{w.Tenant, ledger.PeriodOf(w.End), w.Meter}
	v := s[k]
	s[k] = [2]int64{v[0] + sign*int64(w.Quantity), v[1] + sign*w.Charge.AmountMicro}
}

// lines returns tenant's lines of period in UsageLines' order (by meter;
// none of these windows is late).
func (s lineSums) lines(tenant, period string, meters []string) []ledger.UsageLine {
	var ls []ledger.UsageLine
	for _, m := range meters {
		if v, ok := s[[3]string{tenant, period, m}]; ok {
			ls = append(ls, ledger.UsageLine{Meter: m, Currency: "USD", PluginSHA256: plugin, Quantity: v[0], AmountMicro: v[1]})
		}
	}
	return ls
}

// TestLedger_CommitWindows_monthsFirstCommit commits two November
// windows, then the first December commit, in which every series but
// one rolls its open usage line (closes November's, opens December's),
// then a second December commit (the one series left rolls there). The
// invoices of both months must be exact after each step - with the
// open-line cache warm, and after a reopen, when the commit reads the
// open lines from the store.
func TestLedger_CommitWindows_monthsFirstCommit(t *testing.T) {
	tenants := []string{"a", "b", "c"}
	meters := []string{"m1", "m2"}
	tests := []struct {
		name   string
		reopen bool
	}{
		{"cached open lines", false},
		{"after reopen", true},
	}
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				cfg := b.Config(t)
				l := ledgertest.OpenConfig(t, cfg)
				want := lineSums{}
				counter := map[[2]string]uint64{}
				last := map[[2]string]uint64{}
				// Window seq of every series but skip; seq 1 and 2 end in
				// November (t0 is 23:59 on 30 November), seq 3 and 4 in
				// December.
				commit := func(seq uint64, skip [2]string) {
					t.Helper()
					var ws []ledger.Window
					for ti, tn := range tenants {
						for mi, m := range meters {
							k := [2]string{tn, m}
							if k == skip {
								continue
							}
							q := uint64(1 + 10*ti + 3*mi + int(seq))
							w := window("n1", tn, m, seq, counter[k], q, int64(q)*7, int64(q)*2)
							w.PrevSeq = last[k]
							if seq >= 3 {
								w.Start, w.End = t0.Add(time.Duration(seq)*time.Minute), t0.Add(time.Duration(seq)*time.Minute+5*time.Second)
							}
							counter[k] += q
							last[k] = seq
							want.add(w, 1)
							ws = append(ws, w)
						}
					}
					if err := l.CommitWindows(ctx, ws); err != nil {
						t.Fatalf("commit window %d: %v", seq, err)
					}
				}
				check := func(step string) {
					t.Helper()
					for _, tn := range tenants {
						for _, p := range []string{"2026-11", "2026-12"} {
							t.Run(step+"/"+tn+"/"+p, func(t *testing.T) { checkLines(t, l, tn, p, want.lines(tn, p, meters)) })
						}
					}
					mustVerify(t, l)
				}
				commit(1, [2]string{})
				commit(2, [2]string{})
				check("november")
				if tt.reopen {
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					l = ledgertest.OpenConfig(t, cfg)
				}
				commit(3, [2]string{"c", "m2"}) // the month's first commit: five lines roll
				check("first december commit")
				commit(4, [2]string{}) // c/m2 rolls here
				check("second december commit")
			})
		}
	})
}

// TestLedger_Reverse_concurrentWithMonthsFirstCommit reverses a
// November usage entry while the month's first December commit rolls
// every series' usage line, both at once. Each either lands or fails
// with an error naming what it was doing, and then lands on retry;
// afterwards invoices, balances and verify are exact. On PostgreSQL
// the two transactions really overlap (SQLite takes turns).
func TestLedger_Reverse_concurrentWithMonthsFirstCommit(t *testing.T) {
	const tenants, rounds = 10, 4
	meters := []string{"m1", "m2"}
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		for round := range rounds {
			ctx := context.Background()
			cfg := b.Config(t)
			cfg.Now = func() time.Time { return t0.Add(time.Hour) } // 1 December: reversals book there
			l := ledgertest.OpenConfig(t, cfg)
			want := lineSums{}
			charged := map[string]int64{}
			// Window 1 ends in November, window 2 in December; each
			// series grows by a different quantity each window.
			qty := func(ti, mi int, seq uint64) uint64 { return uint64(1+10*ti+3*mi) + seq }
			var nov, dec []ledger.Window
			for ti := range tenants {
				for mi, m := range meters {
					tn := fmt.Sprintf("t%d", ti)
					q1, q2 := qty(ti, mi, 1), qty(ti, mi, 2)
					nov = append(nov, window("n1", tn, m, 1, 0, q1, int64(q1)*5, int64(q1)))
					w := window("n1", tn, m, 2, q1, q2, int64(q2)*5, int64(q2))
					w.Start, w.End = t0.Add(time.Minute), t0.Add(time.Minute+5*time.Second)
					dec = append(dec, w)
				}
			}
			if err := l.CommitWindows(ctx, nov); err != nil {
				t.Fatal(err)
			}
			for _, w := range nov {
				want.add(w, 1)
				charged[w.Tenant] += w.Charge.AmountMicro
			}
			// Entries are numbered by first window: tenant i's November
			// entry is i+1. Reverse a different tenant each round.
			victim := round % tenants
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, 2)
			retry := func(i int, what string, f func() error) {
				defer wg.Done()
				<-start
				if err := f(); err != nil {
					if !strings.HasPrefix(err.Error(), what) {
						errs[i] = fmt.Errorf("first attempt failed with an unclear error: %w", err)
						return
					}
					t.Logf("round %d: %v; retrying", round, err)
					errs[i] = f()
				}
			}
			wg.Add(2)
			go retry(0, "commit windows", func() error { return l.CommitWindows(ctx, dec) })
			go retry(1, "reverse entry", func() error {
				_, err := l.Reverse(ctx, int64(victim+1), "concurrent")
				return err
			})
			close(start)
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			for _, w := range dec {
				want.add(w, 1)
				charged[w.Tenant] += w.Charge.AmountMicro
			}
			// The reversal books the negated November windows in
			// December, on the same (not late) lines as December's usage.
			for _, w := range nov {
				if w.Tenant == fmt.Sprintf("t%d", victim) {
					w.End = dec[0].End
					want.add(w, -1)
					charged[w.Tenant] -= w.Charge.AmountMicro
				}
			}
			for ti := range tenants {
				tn := fmt.Sprintf("t%d", ti)
				checkLines(t, l, tn, "2026-11", want.lines(tn, "2026-11", meters))
				checkLines(t, l, tn, "2026-12", want.lines(tn, "2026-12", meters))
				if got := balance(t, l, tn); got != -charged[tn] {
					t.Errorf("round %d: balance of %s = %d, want %d", round, tn, got, -charged[tn])
				}
			}
			mustVerify(t, l)
		}
	})
}
