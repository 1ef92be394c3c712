package ledger_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

// TestMigrate_version2To3 writes a history into a ledger of schema
// version 2 - windows of three series, a closed period, late usage, a
// reversal, open and closed usage lines - as a kmeter of that version
// left it, and opens it with this build. Version 3 moves SQLite's usage
// rows into their (seq, series_id) key, drops usage_entry, gives entries
// their window_seq and moves the checkpoints out of series. Invoices,
// balances, checkpoints and verify must be unchanged, and the migrated
// ledger must go on: the next window moves the migrated checkpoints,
// a stale one is refused, and an entry written before the migration can
// be reversed (found through its backfilled window_seq).
func TestMigrate_version2To3(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		now := time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)
		cfg := b.Config(t)
		cfg.Now = func() time.Time { return now }
		old, err := ledger.OpenVersionForTest(ctx, cfg, 2)
		if err != nil {
			t.Fatal(err)
		}
		p := "'" + plugin + "'"
		vendor := "'" + ledger.VendorAccount(plugin) + "'"
		// Series 1 shop/syscalls, 2 shop/tcp_connects, 3 cafe/syscalls.
		// Window 1 (November): entries 1 (shop, vendor share 70) and 2
		// (cafe). November is closed. Window 2, also November, comes
		// late: entries 3 (shop) and 4 (cafe), booked in December.
		// Window 3 (December): entry 5 (shop). Entry 6 reverses entry 2
		// in December. Version 2 closed each series' November line into
		// usage_lines when its next window's line differed; the series
		// rows hold the open December lines.
		stmts := []string{
			`INSERT INTO tenants (name, created_us) VALUES ('shop', 0), ('cafe', 0)`,
			`INSERT INTO periods (period, closed_us) VALUES ('2026-11', 0)`,
			`INSERT INTO series (id, node, tenant, meter, last_seq, last_counter, last_end_us,
				line_period, line_currency, line_plugin_sha256, line_late, line_quantity, line_amount_micro) VALUES
				(1, 'n1', 'shop', 'syscalls', 2, 14, 1001, '2026-12', 'USD', ` + p + `, 1, 4, 40),
				(2, 'n1', 'shop', 'tcp_connects', 3, 8, 1002, '2026-12', 'USD', ` + p + `, 0, 3, 30),
				(3, 'n1', 'cafe', 'syscalls', 2, 8, 1003, '2026-12', 'USD', ` + p + `, 1, 1, 10)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, late, created_us, node, plugin_sha256) VALUES
				(1, 'usage', 'shop', 'USD', 150, '2026-11', 0, 0, 'n1', ` + p + `),
				(2, 'usage', 'cafe', 'USD', 70, '2026-11', 0, 0, 'n1', ` + p + `),
				(3, 'usage', 'shop', 'USD', 40, '2026-12', 1, 0, 'n1', ` + p + `),
				(4, 'usage', 'cafe', 'USD', 10, '2026-12', 1, 0, 'n1', ` + p + `),
				(5, 'usage', 'shop', 'USD', 30, '2026-12', 0, 0, 'n1', ` + p + `)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us, idem_key, reverses) VALUES
				(6, 'reversal', 'cafe', 'USD', -70, '2026-12', 0, 'reversal:2', 2)`,
			`INSERT INTO usage (series_id, seq, prev_seq, entry_id, amount_micro, vendor_micro, quantity, from_counter, to_counter, rebased, start_us, end_us) VALUES
				(1, 1, 0, 1, 100, 70, 10, 0, 10, 0, 0, 0), (2, 1, 0, 1, 50, 0, 5, 0, 5, 0, 0, 0), (3, 1, 0, 2, 70, 0, 7, 0, 7, 0, 0, 0),
				(1, 2, 1, 3, 40, 0, 4, 10, 14, 0, 0, 1001), (3, 2, 1, 4, 10, 0, 1, 7, 8, 0, 0, 1003),
				(2, 3, 1, 5, 30, 0, 3, 5, 8, 0, 0, 1002)`,
			`INSERT INTO postings (entry_id, account, currency, amount_micro) VALUES
				(1, 'tenant:shop', 'USD', -150), (1, ` + vendor + `, 'USD', 70), (1, 'platform', 'USD', 80),
				(2, 'tenant:cafe', 'USD', -70), (2, 'platform', 'USD', 70),
				(3, 'tenant:shop', 'USD', -40), (3, 'platform', 'USD', 40),
				(4, 'tenant:cafe', 'USD', -10), (4, 'platform', 'USD', 10),
				(5, 'tenant:shop', 'USD', -30), (5, 'platform', 'USD', 30),
				(6, 'tenant:cafe', 'USD', 70), (6, 'platform', 'USD', -70)`,
			`INSERT INTO balances (account, currency, balance_micro, charged_micro) VALUES
				('tenant:shop', 'USD', -220, 220), ('tenant:cafe', 'USD', -10, 10),
				(` + vendor + `, 'USD', 70, 0), ('platform', 'USD', 160, 0)`,
			`INSERT INTO usage_lines (tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro) VALUES
				('shop', '2026-11', 'syscalls', 'USD', ` + p + `, 0, 10, 100),
				('shop', '2026-11', 'tcp_connects', 'USD', ` + p + `, 0, 5, 50),
				('cafe', '2026-11', 'syscalls', 'USD', ` + p + `, 0, 7, 70),
				('cafe', '2026-12', 'syscalls', 'USD', ` + p + `, 0, -7, -70)`,
		}
		if b.Name == "postgres" {
			// Ids were written by hand; the next entry must not reuse one.
			stmts = append(stmts, `SELECT setval('entries_id_seq', 6)`)
		}
		for _, s := range stmts {
			if err := ledger.ExecForTest(ctx, old, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		line := func(meter string, late bool, q, a int64) ledger.UsageLine {
			return ledger.UsageLine{Meter: meter, Currency: "USD", PluginSHA256: plugin, Late: late, Quantity: q, AmountMicro: a}
		}
		want := map[[2]string][]ledger.UsageLine{
			{"shop", "2026-11"}: {line("syscalls", false, 10, 100), line("tcp_connects", false, 5, 50)},
			{"shop", "2026-12"}: {line("syscalls", true, 4, 40), line("tcp_connects", false, 3, 30)},
			{"cafe", "2026-11"}: {line("syscalls", false, 7, 70)},
			{"cafe", "2026-12"}: {line("syscalls", false, -7, -70), line("syscalls", true, 1, 10)},
		}
		// Version 2's own invoices (its UsageLines read the series rows'
		// open lines) and the journal agree with want before migrating.
		for k, w := range want {
			got, err := ledger.UsageLinesV2ForTest(ctx, old, k[0], k[1])
			if err != nil {
				t.Fatal(err)
			}
			journal, err := ledger.JournalLinesForTest(ctx, old, k[0], k[1])
			if err != nil {
				t.Fatal(err)
			}
			if !equalLines(got, w) || !equalLines(journal, w) {
				t.Fatalf("version 2 %v: lines %+v, journal %+v, want %+v", k, got, journal, w)
			}
		}
		// An older schema's balances are its balances rows (version 4
		// keeps packed charges in node_state, which it does not have).
		balancesOf := func(l *ledger.Ledger) map[string][]ledger.Balance {
			m := map[string][]ledger.Balance{}
			for _, tn := range []string{"shop", "cafe"} {
				read := l.Balances
				if l == old {
					read = func(ctx context.Context, tn string) ([]ledger.Balance, error) {
						return ledger.BalanceRowsForTest(ctx, old, tn)
					}
				}
				bs, err := read(ctx, tn)
				if err != nil {
					t.Fatal(err)
				}
				m[tn] = bs
			}
			return m
		}
		balBefore := balancesOf(old)
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}

		l := ledgertest.OpenConfig(t, cfg) // migrates to the newest version
		for k, w := range want {
			checkLines(t, l, k[0], k[1], w)
		}
		balAfter := balancesOf(l)
		for tn, bs := range balBefore {
			if !slices.Equal(bs, balAfter[tn]) {
				t.Errorf("balances of %s: %+v before the migration, %+v after", tn, bs, balAfter[tn])
			}
		}
		if balAfter["shop"][0].BalanceMicro != -220 || balAfter["cafe"][0].BalanceMicro != -10 {
			t.Errorf("balances after the migration = %+v", balAfter)
		}
		r := mustVerify(t, l)
		if r.Entries != 6 || r.Windows != 6 || r.Series != 3 {
			t.Errorf("verify counted %d entries, %d windows, %d series; want 6, 6, 3", r.Entries, r.Windows, r.Series)
		}
		cps, err := l.Checkpoints(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(cps, func(a, b ledger.Checkpoint) int { return int(a.End.UnixMicro() - b.End.UnixMicro()) })
		wantCps := []ledger.Checkpoint{
			{Tenant: "shop", Meter: "syscalls", Seq: 2, Counter: 14, End: time.UnixMicro(1001)},
			{Tenant: "shop", Meter: "tcp_connects", Seq: 3, Counter: 8, End: time.UnixMicro(1002)},
			{Tenant: "cafe", Meter: "syscalls", Seq: 2, Counter: 8, End: time.UnixMicro(1003)},
		}
		if len(cps) != len(wantCps) {
			t.Fatalf("checkpoints = %+v, want %+v", cps, wantCps)
		}
		for i := range cps {
			if cps[i].Tenant != wantCps[i].Tenant || cps[i].Meter != wantCps[i].Meter || cps[i].Seq != wantCps[i].Seq ||
				cps[i].Counter != wantCps[i].Counter || !cps[i].End.Equal(wantCps[i].End) {
				t.Errorf("checkpoint %d = %+v, want %+v", i, cps[i], wantCps[i])
			}
		}

		// The ledger goes on from the migrated checkpoints: window 4
		// (December, on time) of shop/syscalls and cafe/syscalls.
		dec := func(w ledger.Window) ledger.Window {
			w.Start, w.End = now.Add(-5*time.Second), now
			return w
		}
		stale := dec(window("n1", "shop", "tcp_connects", 4, 5, 1, 10, 0))
		stale.PrevSeq = 1 // the checkpoint is window 3
		if err := l.CommitWindows(ctx, []ledger.Window{stale}); !errors.Is(err, ledger.ErrDuplicateWindow) {
			t.Errorf("window from a stale migrated checkpoint: err = %v, want ErrDuplicateWindow", err)
		}
		w4 := []ledger.Window{dec(window("n1", "shop", "syscalls", 4, 14, 2, 20, 0)), dec(window("n1", "cafe", "syscalls", 4, 8, 3, 30, 0))}
		w4[0].PrevSeq, w4[1].PrevSeq = 2, 2
		if err := l.CommitWindows(ctx, w4); err != nil {
			t.Fatal(err)
		}
		// Entry 3 (shop's late window 2) was written by version 2.
		if _, err := l.Reverse(ctx, 3, "migrated entry"); err != nil {
			t.Fatal(err)
		}
		checkLines(t, l, "shop", "2026-12", []ledger.UsageLine{
			line("syscalls", false, 2, 20), line("syscalls", true, 0, 0), line("tcp_connects", false, 3, 30)})
		checkLines(t, l, "cafe", "2026-12", []ledger.UsageLine{line("syscalls", false, -7+3, -70+30), line("syscalls", true, 1, 10)})
		checkLines(t, l, "shop", "2026-11", want[[2]string{"shop", "2026-11"}])
		if got := balance(t, l, "shop"); got != -220-20+40 {
			t.Errorf("shop balance = %d, want %d", got, -220-20+40)
		}
		mustVerify(t, l)
	})
}
