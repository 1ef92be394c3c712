package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// checkLines asserts that tenant's lines of period, read from the
// usage_lines rollup, equal both want and the lines summed from the
// journal.
func checkLines(t *testing.T, l *ledger.Ledger, tenant, period string, want []ledger.UsageLine) {
	t.Helper()
	ctx := context.Background()
	got, err := l.UsageLines(ctx, tenant, period)
	if err != nil {
		t.Fatal(err)
	}
	journal, err := ledger.JournalLinesForTest(ctx, l, tenant, period)
	if err != nil {
		t.Fatal(err)
	}
	if !equalLines(got, want) || !equalLines(journal, want) {
		t.Errorf("%s %s: rollup = %+v\njournal = %+v\nwant %+v", tenant, period, got, journal, want)
	}
}

func TestLedger_UsageLines_rollupEqualsJournal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		now := time.Date(2026, 12, 1, 0, 10, 0, 0, time.UTC)
		cfg := b.Config(t)
		cfg.Now = func() time.Time { return now }
		l := ledgertest.OpenConfig(t, cfg)
		// Window 1 (entries 1 and 2: shop, cafe) ends in November.
		if err := l.CommitWindows(ctx, []ledger.Window{
			window("n1", "shop", "syscalls", 1, 0, 10, 100, 70),
			window("n1", "shop", "tcp_connects", 1, 0, 5, 50, 0),
			window("n1", "cafe", "syscalls", 1, 0, 7, 70, 0),
		}); err != nil {
			t.Fatal(err)
		}
		if err := l.ClosePeriod(ctx, "2026-11"); err != nil {
			t.Fatal(err)
		}
		// Window 2 ends in November too, after the close: late, booked
		// in December (entries 3 and 4).
		if err := l.CommitWindows(ctx, []ledger.Window{
			window("n1", "shop", "syscalls", 2, 10, 4, 40, 0),
			window("n1", "cafe", "syscalls", 2, 7, 1, 10, 0),
		}); err != nil {
			t.Fatal(err)
		}
		// Window 3 ends in December (entry 5).
		w := window("n1", "shop", "tcp_connects", 3, 5, 3, 30, 0)
		w.PrevSeq = 1
		w.Start, w.End = now, now.Add(5*time.Second)
		if err := l.CommitWindows(ctx, []ledger.Window{w}); err != nil {
			t.Fatal(err)
		}
		// Entry 1 (shop's November windows) is reversed in December.
		if _, err := l.Reverse(ctx, 1, "test"); err != nil {
			t.Fatal(err)
		}
		checkLines(t, l, "shop", "2026-11", []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10, AmountMicro: 100},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5, AmountMicro: 50},
		})
		checkLines(t, l, "shop", "2026-12", []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: -10, AmountMicro: -100},
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Late: true, Quantity: 4, AmountMicro: 40},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 3 - 5, AmountMicro: 30 - 50},
		})
		checkLines(t, l, "cafe", "2026-12", []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Late: true, Quantity: 1, AmountMicro: 10},
		})
		mustVerify(t, l)
	})
}

func TestLedger_Verify_tamperedRollup(t *testing.T) {
	pl := ", plugin " + plugin + ", late 0): lines say quantity "
	tests := []struct {
		name, stmt, want string
	}{
		// The open lines are in the node's state (schema version 4);
		// the stmt "state" edits it through EditStateForTest.
		{"open line changed", "state",
			"usage line shop/2026-12/syscalls (USD" + pl + "3 amount 29 but the journal sums to 3 and 30"},
		{"closed line changed", `UPDATE usage_lines SET quantity = quantity + 1 WHERE meter = 'tcp_connects'`,
			"usage line shop/2026-11/tcp_connects (USD" + pl + "6 amount 50 but the journal sums to 5 and 50"},
		{"closed line deleted", `DELETE FROM usage_lines WHERE meter = 'syscalls'`,
			"usage line shop/2026-11/syscalls (USD" + pl + "0 amount 0 but the journal sums to 10 and 100"},
		{"line added", `INSERT INTO usage_lines VALUES ('shop', '2026-10', 'syscalls', 'USD', '', 0, 1, 1)`,
			"usage line shop/2026-10/syscalls (USD, plugin , late 0): lines say quantity 1 amount 1 but the journal sums to 0 and 0"},
	}
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				l := b.Open(t)
				// November's lines are closed by December's windows.
				if err := l.CommitWindows(ctx, []ledger.Window{
					window("n1", "shop", "syscalls", 1, 0, 10, 100, 0),
					window("n1", "shop", "tcp_connects", 1, 0, 5, 50, 0),
				}); err != nil {
					t.Fatal(err)
				}
				dec := []ledger.Window{
					window("n1", "shop", "syscalls", 2, 10, 3, 30, 0),
					window("n1", "shop", "tcp_connects", 2, 5, 2, 20, 0),
				}
				for i := range dec {
					dec[i].End = dec[i].End.Add(time.Hour)
				}
				if err := l.CommitWindows(ctx, dec); err != nil {
					t.Fatal(err)
				}
				mustVerify(t, l)
				exec := ledger.ExecForTest(ctx, l, tt.stmt)
				if tt.stmt == "state" {
					exec = ledger.EditStateForTest(ctx, l, "n1", func(s *ledger.SeriesStateForTest) {
						if s.Meter == "syscalls" {
							s.LineAmount--
						}
					})
				}
				if exec != nil {
					t.Fatal(exec)
				}
				r, err := l.Verify(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(r.Problems, "\n") != tt.want {
					t.Errorf("problems = %q\nwant %q", r.Problems, tt.want)
				}
			})
		}
	})
}

// TestMigrate_rollupFromVersion1 writes a history into a ledger of schema
// version 1 (no rollup), with late usage and a reversal, and opens it with
// this build: the migration must fill usage_lines so that invoices are
// what version 1 computed from the journal.
func TestMigrate_rollupFromVersion1(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		cfg := b.Config(t)
		old, err := ledger.OpenVersionForTest(ctx, cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		p := "'" + plugin + "'"
		// Entry 1: November usage; entry 2: November usage committed
		// after the close (late, in December); entry 3: December usage;
		// entry 4 reverses entry 1 in December.
		for _, s := range []string{
			`INSERT INTO tenants (name, created_us) VALUES ('shop', 0)`,
			`INSERT INTO periods (period, closed_us) VALUES ('2026-11', 0)`,
			`INSERT INTO series (id, node, tenant, meter, last_seq, last_counter, last_end_us) VALUES
				(1, 'n1', 'shop', 'syscalls', 2, 14, 0), (2, 'n1', 'shop', 'tcp_connects', 3, 8, 0)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, late, created_us, node, plugin_sha256) VALUES
				(1, 'usage', 'shop', 'USD', 150, '2026-11', 0, 0, 'n1', ` + p + `),
				(2, 'usage', 'shop', 'USD', 40, '2026-12', 1, 0, 'n1', ` + p + `),
				(3, 'usage', 'shop', 'USD', 30, '2026-12', 0, 0, 'n1', ` + p + `)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us, idem_key, reverses) VALUES
				(4, 'reversal', 'shop', 'USD', -150, '2026-12', 0, 'reversal:1', 1)`,
			`INSERT INTO usage (series_id, seq, prev_seq, entry_id, amount_micro, vendor_micro, quantity, from_counter, to_counter, rebased, start_us, end_us) VALUES
				(1, 1, 0, 1, 100, 0, 10, 0, 10, 0, 0, 0), (2, 1, 0, 1, 50, 0, 5, 0, 5, 0, 0, 0),
				(1, 2, 1, 2, 40, 0, 4, 10, 14, 0, 0, 0), (2, 3, 1, 3, 30, 0, 3, 5, 8, 0, 0, 0)`,
			`INSERT INTO postings (entry_id, account, currency, amount_micro) VALUES
				(1, 'tenant:shop', 'USD', -150), (1, 'platform', 'USD', 150),
				(2, 'tenant:shop', 'USD', -40), (2, 'platform', 'USD', 40),
				(3, 'tenant:shop', 'USD', -30), (3, 'platform', 'USD', 30),
				(4, 'tenant:shop', 'USD', 150), (4, 'platform', 'USD', -150)`,
			`INSERT INTO balances (account, currency, balance_micro, charged_micro) VALUES
				('tenant:shop', 'USD', -70, 70), ('platform', 'USD', 70, 0)`,
		} {
			if err := ledger.ExecForTest(ctx, old, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		nov, err := ledger.JournalLinesForTest(ctx, old, "shop", "2026-11")
		if err != nil {
			t.Fatal(err)
		}
		dec, err := ledger.JournalLinesForTest(ctx, old, "shop", "2026-12")
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		l := ledgertest.OpenConfig(t, cfg) // migrates to the newest version
		wantNov := []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10, AmountMicro: 100},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5, AmountMicro: 50},
		}
		wantDec := []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: -10, AmountMicro: -100},
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Late: true, Quantity: 4, AmountMicro: 40},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: -2, AmountMicro: -20},
		}
		if !equalLines(nov, wantNov) || !equalLines(dec, wantDec) {
			t.Fatalf("version 1 journal lines: november %+v, december %+v", nov, dec)
		}
		checkLines(t, l, "shop", "2026-11", wantNov)
		checkLines(t, l, "shop", "2026-12", wantDec)
		mustVerify(t, l)
		// The (tenant, period) index of the journal is gone.
		if err := ledger.ExecForTest(ctx, l, `DROP INDEX entries_tenant_period`); err == nil {
			t.Error("entries_tenant_period still exists after the migration")
		}
	})
}
