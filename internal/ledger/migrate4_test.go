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

// TestMigrate_version3To4 writes a history into a ledger of schema
// version 3 - a top-up, legacy windows of three series in November and
// December, closed lines, open lines of both months, a reversal - as a
// kmeter of that version left it, and opens it with this build. Version 4
// moves the checkpoints and open lines into node_state and writes new
// windows packed. Invoices, balances, checkpoints and verify must be the
// same after the migration; the ledger must go on from the migrated
// checkpoints (a replayed or stale window is refused and changes
// nothing), and legacy and packed entries can both be reversed.
func TestMigrate_version3To4(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		ctx := context.Background()
		now := time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)
		cfg := b.Config(t)
		cfg.Now = func() time.Time { return now }
		old, err := ledger.OpenVersionForTest(ctx, cfg, 3)
		if err != nil {
			t.Fatal(err)
		}
		p := "'" + plugin + "'"
		vendor := "'" + ledger.VendorAccount(plugin) + "'"
		// Series 1 shop/syscalls, 2 shop/tcp_connects, 3 cafe/syscalls.
		// Entry 1 tops shop up. Window 1 (November): entries 2 (shop,
		// vendor share 70) and 3 (cafe). Window 2 (December): entries 4
		// (shop) and 5 (cafe); it closed shop's and cafe's November
		// syscalls lines. shop/tcp_connects has no window 2: its open
		// line is still November's. Entry 6 reverses entry 3 in December.
		stmts := []string{
			`INSERT INTO tenants (name, created_us) VALUES ('shop', 0), ('cafe', 0)`,
			`INSERT INTO series (id, node, tenant, meter, line_period, line_currency, line_plugin_sha256, line_late) VALUES
				(1, 'n1', 'shop', 'syscalls', '2026-12', 'USD', ` + p + `, 0),
				(2, 'n1', 'shop', 'tcp_connects', '2026-11', 'USD', ` + p + `, 0),
				(3, 'n1', 'cafe', 'syscalls', '2026-12', 'USD', ` + p + `, 0)`,
			`INSERT INTO checkpoints (series_id, last_seq, last_counter, last_end_us, line_quantity, line_amount_micro) VALUES
				(1, 2, 14, 200, 4, 40), (2, 1, 5, 100, 5, 50), (3, 2, 8, 200, 1, 10)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us, idem_key, body_sha256, balance_after_micro) VALUES
				(1, 'topup', 'shop', 'USD', 1000, '2026-11', 0, 'topup:k1', 'x', 1000)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, late, created_us, node, plugin_sha256, window_seq) VALUES
				(2, 'usage', 'shop', 'USD', 150, '2026-11', 0, 0, 'n1', ` + p + `, 1),
				(3, 'usage', 'cafe', 'USD', 70, '2026-11', 0, 0, 'n1', ` + p + `, 1),
				(4, 'usage', 'shop', 'USD', 40, '2026-12', 0, 0, 'n1', ` + p + `, 2),
				(5, 'usage', 'cafe', 'USD', 10, '2026-12', 0, 0, 'n1', ` + p + `, 2)`,
			`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us, idem_key, reverses) VALUES
				(6, 'reversal', 'cafe', 'USD', -70, '2026-12', 0, 'reversal:3', 3)`,
			`INSERT INTO usage (series_id, seq, prev_seq, entry_id, amount_micro, vendor_micro, quantity, from_counter, to_counter, rebased, start_us, end_us) VALUES
				(1, 1, 0, 2, 100, 70, 10, 0, 10, 0, 0, 100), (2, 1, 0, 2, 50, 0, 5, 0, 5, 0, 0, 100), (3, 1, 0, 3, 70, 0, 7, 0, 7, 0, 0, 100),
				(1, 2, 1, 4, 40, 0, 4, 10, 14, 0, 100, 200), (3, 2, 1, 5, 10, 0, 1, 7, 8, 0, 100, 200)`,
			`INSERT INTO postings (entry_id, account, currency, amount_micro) VALUES
				(1, 'tenant:shop', 'USD', 1000), (1, 'funding', 'USD', -1000),
				(2, 'tenant:shop', 'USD', -150), (2, ` + vendor + `, 'USD', 70), (2, 'platform', 'USD', 80),
				(3, 'tenant:cafe', 'USD', -70), (3, 'platform', 'USD', 70),
				(4, 'tenant:shop', 'USD', -40), (4, 'platform', 'USD', 40),
				(5, 'tenant:cafe', 'USD', -10), (5, 'platform', 'USD', 10),
				(6, 'tenant:cafe', 'USD', 70), (6, 'platform', 'USD', -70)`,
			`INSERT INTO balances (account, currency, balance_micro, charged_micro) VALUES
				('tenant:shop', 'USD', 810, 190), ('tenant:cafe', 'USD', -10, 10), ('funding', 'USD', -1000, 0),
				(` + vendor + `, 'USD', 70, 0), ('platform', 'USD', 130, 0)`,
			`INSERT INTO usage_lines (tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro) VALUES
				('shop', '2026-11', 'syscalls', 'USD', ` + p + `, 0, 10, 100),
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
		line := func(meter string, q, a int64) ledger.UsageLine {
			return ledger.UsageLine{Meter: meter, Currency: "USD", PluginSHA256: plugin, Quantity: q, AmountMicro: a}
		}
		want := map[[2]string][]ledger.UsageLine{
			{"shop", "2026-11"}: {line("syscalls", 10, 100), line("tcp_connects", 5, 50)},
			{"shop", "2026-12"}: {line("syscalls", 4, 40)},
			{"cafe", "2026-11"}: {line("syscalls", 7, 70)},
			{"cafe", "2026-12"}: {line("syscalls", -7+1, -70+10)},
		}
		// Version 3's own invoices and the journal agree with want.
		for k, w := range want {
			got, err := ledger.UsageLinesV3ForTest(ctx, old, k[0], k[1])
			if err != nil {
				t.Fatal(err)
			}
			journal, err := ledger.JournalLinesForTest(ctx, old, k[0], k[1])
			if err != nil {
				t.Fatal(err)
			}
			if !equalLines(got, w) || !equalLines(journal, w) {
				t.Fatalf("version 3 %v: lines %+v, journal %+v, want %+v", k, got, journal, w)
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
		cpsBefore, err := ledger.CheckpointsV3ForTest(ctx, old, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if len(cpsBefore) != 3 {
			t.Fatalf("version 3 checkpoints = %+v, want 3", cpsBefore)
		}
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
		cps, err := l.Checkpoints(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		sameCheckpoints := func(a, b []ledger.Checkpoint) bool {
			return slices.EqualFunc(a, b, func(x, y ledger.Checkpoint) bool {
				return x.Tenant == y.Tenant && x.Meter == y.Meter && x.Seq == y.Seq && x.Counter == y.Counter && x.End.Equal(y.End)
			})
		}
		if !sameCheckpoints(cps, cpsBefore) {
			t.Errorf("checkpoints: %+v before the migration, %+v after", cpsBefore, cps)
		}
		r := mustVerify(t, l)
		if r.Entries != 6 || r.Windows != 5 || r.Series != 3 {
			t.Errorf("verify counted %d entries, %d windows, %d series; want 6, 5, 3", r.Entries, r.Windows, r.Series)
		}

		// Window 2 again, and a window from a stale checkpoint, are
		// refused and change nothing.
		dec := func(w ledger.Window, prev uint64) ledger.Window {
			w.PrevSeq = prev
			w.Start, w.End = now.Add(-5*time.Second), now
			return w
		}
		for name, ws := range map[string][]ledger.Window{
			"replayed window 2": {dec(window("n1", "shop", "syscalls", 2, 10, 4, 40, 0), 1)},
			"stale checkpoint": {dec(window("n1", "shop", "syscalls", 3, 14, 6, 60, 0), 2),
				dec(window("n1", "shop", "tcp_connects", 3, 5, 2, 20, 0), 0)},
		} {
			if err := l.CommitWindows(ctx, ws); !errors.Is(err, ledger.ErrDuplicateWindow) {
				t.Errorf("%s: err = %v, want ErrDuplicateWindow", name, err)
			}
		}
		if r2 := mustVerify(t, l); r2.Entries != r.Entries || r2.Windows != r.Windows {
			t.Errorf("refused commits left %d entries, %d windows; want %d, %d", r2.Entries, r2.Windows, r.Entries, r.Windows)
		}
		if got := balancesOf(l); !slices.Equal(got["shop"], balAfter["shop"]) {
			t.Errorf("refused commits changed shop's balance: %+v", got["shop"])
		}

		// Window 3 (December) continues every chain: entries 7 (shop) and
		// 8 (cafe). shop/tcp_connects closes its November line.
		w3 := []ledger.Window{
			dec(window("n1", "shop", "syscalls", 3, 14, 6, 60, 0), 2),
			dec(window("n1", "shop", "tcp_connects", 3, 5, 2, 20, 0), 1),
			dec(window("n1", "cafe", "syscalls", 3, 8, 3, 30, 0), 2),
		}
		if err := l.CommitWindows(ctx, w3); err != nil {
			t.Fatal(err)
		}
		// A packed entry (7) and a legacy one (2, November) reversed in
		// December. PostgreSQL's sequence gave the refused commits ids 7
		// and 8 (it never rolls back), so shop's entry is 9 there.
		shopEntry := int64(7)
		if b.Name == "postgres" {
			shopEntry = 9
		}
		if _, err := l.Reverse(ctx, shopEntry, "packed entry"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Reverse(ctx, 2, "legacy entry"); err != nil {
			t.Fatal(err)
		}
		checkLines(t, l, "shop", "2026-11", want[[2]string{"shop", "2026-11"}])
		checkLines(t, l, "shop", "2026-12", []ledger.UsageLine{line("syscalls", 4+6-6-10, 40+60-60-100), line("tcp_connects", 2-2-5, 20-20-50)})
		checkLines(t, l, "cafe", "2026-12", []ledger.UsageLine{line("syscalls", 1+3-7, 10+30-70)})
		if got := balance(t, l, "shop"); got != 810-80+80+150 {
			t.Errorf("shop balance = %d, want %d", got, 810-80+80+150)
		}
		if got := balance(t, l, "cafe"); got != -10-30 {
			t.Errorf("cafe balance = %d, want %d", got, -10-30)
		}
		r = mustVerify(t, l)
		if r.Entries != 10 || r.Windows != 8 || r.Series != 3 {
			t.Errorf("verify counted %d entries, %d windows, %d series; want 10, 8, 3", r.Entries, r.Windows, r.Series)
		}
		cps, err = l.Checkpoints(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cps {
			w := w3[[]int{0, 1, 2}[i]]
			if c.Tenant != w.Tenant || c.Meter != w.Meter || c.Seq != 3 || c.Counter != w.ToCounter || !c.End.Equal(now) {
				t.Errorf("checkpoint %+v, want %s/%s at window 3, counter %d", c, w.Tenant, w.Meter, w.ToCounter)
			}
		}
	})
}
