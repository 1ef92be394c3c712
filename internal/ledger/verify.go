package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
)

// Report is the outcome of [Ledger.Verify]. The ledger is sound when
// Problems is empty.
type Report struct {
	Entries  int64 `json:"entries"`
	Postings int64 `json:"postings"`
	// Windows is the number of usage windows; Series the number of
	// (node, tenant, meter) checkpoint chains they form.
	Windows int64 `json:"windows"`
	Series  int64 `json:"series"`
	// DebitsMicro and CreditsMicro are per currency; they are equal in a
	// sound ledger.
	DebitsMicro  map[string]int64 `json:"debits_micro"`
	CreditsMicro map[string]int64 `json:"credits_micro"`
	Problems     []string         `json:"problems"`
}

// OK reports whether no problem was found.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems caps the report: a broken ledger is broken after ten lines.
const maxProblems = 50

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Verify checks the whole ledger: every entry's postings sum to zero,
// debits equal credits per currency, each usage entry's amount is what
// its postings debit, the stored balances equal the sum of postings, and
// every (node, tenant, meter) chain of checkpoints runs 1, 2, 3, ... with
// each window starting where the previous one ended (or rebased).
func (l *Ledger) Verify(ctx context.Context) (Report, error) {
	r := Report{DebitsMicro: map[string]int64{}, CreditsMicro: map[string]int64{}, Problems: []string{}}
	q := func(query string, scan func(scan func(...any) error) error) error {
		rows, err := l.db.QueryContext(ctx, query)
		if err != nil {
			return fmt.Errorf("verify ledger: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows.Scan); err != nil {
				return fmt.Errorf("verify ledger: %w", err)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("verify ledger: %w", err)
		}
		return nil
	}
	// orphan reports each id a query returns as a row that points at
	// nothing, with format naming it.
	orphan := func(format string) func(func(...any) error) error {
		return func(s func(...any) error) error {
			var id int64
			if err := s(&id); err != nil {
				return err
			}
			r.problem(format, id)
			return nil
		}
	}
	steps := []struct {
		query string
		scan  func(scan func(...any) error) error
	}{
		{`SELECT COUNT(*) FROM entries`, func(s func(...any) error) error { return s(&r.Entries) }},
		{`SELECT COUNT(*) FROM usage`, func(s func(...any) error) error { return s(&r.Windows) }},
		// usage has no entry_id index: its sums per entry are one sort.
		{`SELECT e.id, e.amount_micro, COALESCE(u.total, 0) FROM entries e
			LEFT JOIN (SELECT entry_id, SUM(amount_micro) AS total FROM usage GROUP BY entry_id) u ON u.entry_id = e.id
			WHERE e.kind = 'usage' AND e.amount_micro <> COALESCE(u.total, 0) ORDER BY e.id`, func(s func(...any) error) error {
			var id, amt, sum int64
			if err := s(&id, &amt, &sum); err != nil {
				return err
			}
			r.problem("usage entry %d: amount %d but its windows sum to %d", id, amt, sum)
			return nil
		}},
		{`SELECT COUNT(*) FROM postings`, func(s func(...any) error) error { return s(&r.Postings) }},
		{`SELECT currency,
			SUM(CASE WHEN amount_micro < 0 THEN -amount_micro ELSE 0 END),
			SUM(CASE WHEN amount_micro > 0 THEN amount_micro ELSE 0 END)
			FROM postings GROUP BY currency ORDER BY currency`, func(s func(...any) error) error {
			var cur string
			var d, c int64
			if err := s(&cur, &d, &c); err != nil {
				return err
			}
			r.DebitsMicro[cur], r.CreditsMicro[cur] = d, c
			if d != c {
				r.problem("%s: debits %d != credits %d", cur, d, c)
			}
			return nil
		}},
		{`SELECT entry_id, currency, SUM(amount_micro) FROM postings GROUP BY entry_id, currency
			HAVING SUM(amount_micro) <> 0 ORDER BY entry_id`, func(s func(...any) error) error {
			var id, sum int64
			var cur string
			if err := s(&id, &cur, &sum); err != nil {
				return err
			}
			r.problem("entry %d: postings in %s sum to %d, not 0", id, cur, sum)
			return nil
		}},
		{`SELECT e.id, e.amount_micro, COALESCE(SUM(p.amount_micro), 0) FROM entries e
			LEFT JOIN postings p ON p.entry_id = e.id AND p.account = 'tenant:' || e.tenant
			GROUP BY e.id, e.amount_micro
			HAVING (MIN(e.kind) = 'topup' AND COALESCE(SUM(p.amount_micro), 0) <> e.amount_micro)
				OR (MIN(e.kind) <> 'topup' AND COALESCE(SUM(p.amount_micro), 0) <> -e.amount_micro)
			ORDER BY e.id`, func(s func(...any) error) error {
			var id, amt, posted int64
			if err := s(&id, &amt, &posted); err != nil {
				return err
			}
			r.problem("entry %d: amount %d but the tenant account moved by %d", id, amt, posted)
			return nil
		}},
		{`SELECT DISTINCT p.entry_id FROM postings p LEFT JOIN entries e ON e.id = p.entry_id
			WHERE e.id IS NULL ORDER BY p.entry_id`, orphan("postings of entry %d have no entry")},
		{`SELECT DISTINCT u.series_id FROM usage u LEFT JOIN series s ON s.id = u.series_id
			WHERE s.id IS NULL ORDER BY u.series_id`, orphan("usage of series %d has no series")},
		{`SELECT DISTINCT u.entry_id FROM usage u LEFT JOIN entries e ON e.id = u.entry_id
			WHERE e.id IS NULL ORDER BY u.entry_id`, orphan("usage of entry %d has no entry")},
		{`SELECT s.id FROM series s LEFT JOIN checkpoints c ON c.series_id = s.id
			WHERE c.series_id IS NULL ORDER BY s.id`, orphan("series %d has no checkpoint row")},
		// Reverse finds an entry's windows by its window_seq.
		{`SELECT DISTINCT u.entry_id FROM usage u JOIN entries e ON e.id = u.entry_id
			WHERE e.kind <> 'usage' OR e.window_seq IS NULL OR e.window_seq <> u.seq ORDER BY u.entry_id`,
			orphan("usage of entry %d is not in that entry's window (window_seq)")},
		{`SELECT tenant, period, meter, currency, plugin_sha256, late, SUM(jq), SUM(ja), SUM(rq), SUM(ra) FROM (
				SELECT tenant, period, meter, currency, plugin_sha256, late,
					quantity AS jq, amount_micro AS ja, 0 AS rq, 0 AS ra FROM usage_lines_journal
				UNION ALL
				SELECT tenant, period, meter, currency, plugin_sha256, late, 0, 0, quantity, amount_micro FROM usage_lines_all
			) x GROUP BY tenant, period, meter, currency, plugin_sha256, late
			HAVING SUM(jq) <> SUM(rq) OR SUM(ja) <> SUM(ra)
			ORDER BY tenant, period, meter`, func(s func(...any) error) error {
			var tenant, period, meter, cur, plugin string
			var late, jq, ja, rq, ra int64
			if err := s(&tenant, &period, &meter, &cur, &plugin, &late, &jq, &ja, &rq, &ra); err != nil {
				return err
			}
			r.problem("usage line %s/%s/%s (%s, plugin %s, late %d): lines say quantity %d amount %d but the journal sums to %d and %d",
				tenant, period, meter, cur, plugin, late, rq, ra, jq, ja)
			return nil
		}},
		{`SELECT b.account, b.currency, b.balance_micro, COALESCE(p.total, 0) FROM balances b
			LEFT JOIN (SELECT account, currency, SUM(amount_micro) AS total FROM postings GROUP BY account, currency) p
			ON p.account = b.account AND p.currency = b.currency
			WHERE b.balance_micro <> COALESCE(p.total, 0) ORDER BY b.account`, func(s func(...any) error) error {
			var acct, cur string
			var bal, sum int64
			if err := s(&acct, &cur, &bal, &sum); err != nil {
				return err
			}
			r.problem("balance of %s in %s is %d but its postings sum to %d", acct, cur, bal, sum)
			return nil
		}},
	}
	for _, st := range steps {
		if err := q(st.query, st.scan); err != nil {
			return r, err
		}
	}
	if err := l.verifyChains(ctx, &r); err != nil {
		return r, err
	}
	sort.Strings(r.Problems)
	return r, nil
}

// verifyChains walks every checkpoint chain in order: each window links
// to the one before it (prev_seq) and starts at its end counter, and the
// series' checkpoint is its last window.
func (l *Ledger) verifyChains(ctx context.Context, r *Report) error {
	rows, err := l.db.QueryContext(ctx, `SELECT s.node, s.tenant, s.meter, COALESCE(c.last_seq, 0), COALESCE(c.last_counter, 0),
		u.seq, u.prev_seq, u.from_counter, u.to_counter, u.quantity, u.rebased
		FROM series s LEFT JOIN checkpoints c ON c.series_id = s.id LEFT JOIN usage u ON u.series_id = s.id
		ORDER BY s.node, s.tenant, s.meter, u.seq`)
	if err != nil {
		return fmt.Errorf("verify checkpoint chains: %w", err)
	}
	defer rows.Close()
	var (
		key                             string
		prevSeq, prevTo, lastSeq, lastC int64
	)
	end := func() {
		if key != "" && (lastSeq != prevSeq || lastC != prevTo) {
			r.problem("%s: checkpoint says window %d at counter %d, but the last window is %d at counter %d", key, lastSeq, lastC, prevSeq, prevTo)
		}
	}
	for rows.Next() {
		var node, tenant, meter string
		var ls, lc int64
		var seq, prev, from, to, qty, rebased sql.NullInt64
		if err := rows.Scan(&node, &tenant, &meter, &ls, &lc, &seq, &prev, &from, &to, &qty, &rebased); err != nil {
			return fmt.Errorf("verify checkpoint chains: %w", err)
		}
		if k := node + "/" + tenant + "/" + meter; k != key {
			end()
			r.Series++
			key, prevSeq, prevTo, lastSeq, lastC = k, 0, 0, ls, lc
		}
		if !seq.Valid {
			continue // a series with no window yet
		}
		if prev.Int64 != prevSeq {
			r.problem("%s: window %d follows window %d but links to %d (gap in the checkpoint chain)", key, seq.Int64, prevSeq, prev.Int64)
		}
		if from.Int64 != prevTo {
			r.problem("%s: window %d starts at counter %d but the checkpoint was %d", key, seq.Int64, from.Int64, prevTo)
		}
		want := to.Int64 - from.Int64
		if rebased.Int64 == 1 {
			want = 0
		}
		if qty.Int64 != want {
			r.problem("%s: window %d bills %d for counters %d -> %d", key, seq.Int64, qty.Int64, from.Int64, to.Int64)
		}
		prevSeq, prevTo = seq.Int64, to.Int64
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify checkpoint chains: %w", err)
	}
	end()
	return nil
}

// UsageLine is the usage of one meter in one period, grouped by the
// plugin that priced it, currency and whether it arrived late.
type UsageLine struct {
	Meter        string
	Currency     string
	PluginSHA256 string
	// Late is set for usage of an earlier, already closed period.
	Late        bool
	Quantity    int64
	AmountMicro int64
}

// UsageLines returns tenant's usage booked in period, less the usage of
// entries reversed in period, ordered by meter.
func (l *Ledger) UsageLines(ctx context.Context, tenant, period string) ([]UsageLine, error) {
	if err := CheckPeriod(period); err != nil {
		return nil, err
	}
	// The closed lines and the series' open lines are kept in each
	// commit's transaction and checked against the journal by ledger
	// verify (see usage_lines in schema.go).
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro) FROM (
			SELECT meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines WHERE tenant = ? AND period = ?
			UNION ALL
			SELECT s.meter, s.line_currency, s.line_plugin_sha256, s.line_late, c.line_quantity, c.line_amount_micro
			FROM series s JOIN checkpoints c ON c.series_id = s.id
			WHERE s.tenant = ? AND s.line_period = ?
		) lines
		GROUP BY meter, currency, plugin_sha256, late
		ORDER BY meter, late, currency, plugin_sha256`), tenant, period, tenant, period)
	if err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	defer rows.Close()
	var ls []UsageLine
	for rows.Next() {
		var u UsageLine
		var late int
		if err := rows.Scan(&u.Meter, &u.Currency, &u.PluginSHA256, &late, &u.Quantity, &u.AmountMicro); err != nil {
			return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
		}
		u.Late = late == 1
		ls = append(ls, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	return ls, nil
}

// Total is what one (node, tenant, meter) series has billed.
type Total struct {
	Node        string `json:"node"`
	Tenant      string `json:"tenant"`
	Meter       string `json:"meter"`
	Windows     int64  `json:"windows"`
	Quantity    int64  `json:"quantity"`
	AmountMicro int64  `json:"amount_micro"`
}

// Totals returns the billed totals of every series, ordered by node,
// tenant and meter. Reversals are not subtracted: this is what was
// metered and billed, for reconciling against the kernel's counters.
func (l *Ledger) Totals(ctx context.Context) ([]Total, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT node, tenant, meter, COUNT(*), SUM(quantity), SUM(amount_micro)
		FROM usage_v GROUP BY node, tenant, meter ORDER BY node, tenant, meter`)
	if err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	defer rows.Close()
	var ts []Total
	for rows.Next() {
		var t Total
		if err := rows.Scan(&t.Node, &t.Tenant, &t.Meter, &t.Windows, &t.Quantity, &t.AmountMicro); err != nil {
			return nil, fmt.Errorf("usage totals: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	return ts, nil
}
