package ledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
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

// entryNotPacked holds for an entry e (of entries) that is a row of its
// own, not one of the usage entries a window commit of its node packs
// (their ids are the commit's first_entry..last_entry).
const entryNotPacked = `COALESCE((SELECT c.first_entry FROM window_commits c WHERE c.node = e.node AND c.last_entry >= e.id
	ORDER BY c.last_entry LIMIT 1), e.id + 1) > e.id`

// Verify checks the whole ledger: every entry's postings sum to zero,
// debits equal credits per currency, each usage entry's amount is what
// its postings debit, the stored balances equal the sum of postings, and
// every (node, tenant, meter) chain of checkpoints runs 1, 2, 3, ... with
// each window starting where the previous one ended (or rebased), across
// legacy usage rows and packed window commits, and ends at the series'
// checkpoint in its node's state; closed and open usage lines equal what
// the journal sums to.
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
			WHERE e.kind = 'usage' AND e.amount_micro <> COALESCE(u.total, 0)
				AND ` + entryNotPacked + `
			ORDER BY e.id`, func(s func(...any) error) error {
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
			// Compared once the packed postings are added (verifyPacked).
			r.DebitsMicro[cur], r.CreditsMicro[cur] = d, c
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
			WHERE e.kind <> 'usage' OR ` + entryNotPacked + `
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
		// Reverse finds an entry's windows by its window_seq.
		{`SELECT DISTINCT u.entry_id FROM usage u JOIN entries e ON e.id = u.entry_id
			WHERE e.kind <> 'usage' OR e.window_seq IS NULL OR e.window_seq <> u.seq ORDER BY u.entry_id`,
			orphan("usage of entry %d is not in that entry's window (window_seq)")},
	}
	for _, st := range steps {
		if err := q(st.query, st.scan); err != nil {
			return r, err
		}
	}
	if err := l.verifyPacked(ctx, &r); err != nil {
		return r, err
	}
	sort.Strings(r.Problems)
	return r, nil
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
	// The closed lines and the open lines in the node states are kept in
	// each commit's transaction and checked against the journal by ledger
	// verify (see usage_lines and node_state in schema.go). One snapshot:
	// a commit moves a line from one to the other.
	tx, err := l.readTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	defer tx.Rollback()
	type key struct {
		meter, currency, plugin string
		late                    bool
	}
	sums := map[key]*UsageLine{}
	add := func(k key, q, a int64) {
		u := sums[k]
		if u == nil {
			u = &UsageLine{Meter: k.meter, Currency: k.currency, PluginSHA256: k.plugin, Late: k.late}
			sums[k] = u
		}
		u.Quantity += q
		u.AmountMicro += a
	}
	rows, err := tx.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, quantity, amount_micro
		FROM usage_lines WHERE tenant = ? AND period = ?`), tenant, period)
	if err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k key
		var late int
		var q, a int64
		if err := rows.Scan(&k.meter, &k.currency, &k.plugin, &late, &q, &a); err != nil {
			return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
		}
		k.late = late == 1
		add(k, q, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	rows.Close()
	// The tenant's series, on every node that bills it.
	names, err := l.seriesNames(ctx, tx, `WHERE tenant = ?`, tenant)
	if err != nil {
		return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
	}
	nodes := map[string][]seriesState{}
	for _, n := range names {
		if _, ok := nodes[n.node]; ok {
			continue
		}
		ss, err := l.loadSeries(ctx, tx, n.node)
		if err != nil {
			return nil, fmt.Errorf("usage of %s in %s: %w", tenant, period, err)
		}
		nodes[n.node] = ss
	}
	table := l.lineKeyTable()
	for sid, n := range names {
		s, ok := findSeries(nodes[n.node], sid)
		if !ok || s.line == noLine {
			continue
		}
		if k := table[s.line]; k.period == period {
			add(key{n.meter, k.currency, k.plugin, k.late}, s.qty, s.amountSum)
		}
	}
	ls := make([]UsageLine, 0, len(sums))
	for _, u := range sums {
		ls = append(ls, *u)
	}
	slices.SortFunc(ls, func(a, b UsageLine) int {
		return cmp.Or(strings.Compare(a.Meter, b.Meter), cmp.Compare(b2i(a.Late), b2i(b.Late)),
			strings.Compare(a.Currency, b.Currency), strings.Compare(a.PluginSHA256, b.PluginSHA256))
	})
	if len(ls) == 0 {
		return nil, nil
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
	tx, err := l.readTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	defer tx.Rollback()
	names, err := l.seriesNames(ctx, tx, ``)
	if err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	sums := map[int64]*Total{}
	add := func(sid, windows, q, a int64) {
		t := sums[sid]
		if t == nil {
			n := names[sid]
			t = &Total{Node: n.node, Tenant: n.tenant, Meter: n.meter}
			sums[sid] = t
		}
		t.Windows += windows
		t.Quantity += q
		t.AmountMicro += a
	}
	// Legacy usage rows, then the packed commits.
	rows, err := tx.QueryContext(ctx, `SELECT series_id, COUNT(*), SUM(quantity), SUM(amount_micro) FROM usage GROUP BY series_id`)
	if err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sid, n, q, a int64
		if err := rows.Scan(&sid, &n, &q, &a); err != nil {
			return nil, fmt.Errorf("usage totals: %w", err)
		}
		add(sid, n, q, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	rows.Close()
	commits, err := tx.QueryContext(ctx, `SELECT node, commit_seq, data FROM window_commits ORDER BY node, commit_seq`)
	if err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	defer commits.Close()
	for commits.Next() {
		var node string
		var seq int64
		var data []byte
		if err := commits.Scan(&node, &seq, &data); err != nil {
			return nil, fmt.Errorf("usage totals: %w", err)
		}
		ws, _, err := decodeCommit(node, seq, data)
		if err != nil {
			return nil, fmt.Errorf("usage totals: %w (run ledger verify)", err)
		}
		for _, w := range ws {
			add(w.sid, 1, int64(w.qty), w.amount)
		}
	}
	if err := commits.Err(); err != nil {
		return nil, fmt.Errorf("usage totals: %w", err)
	}
	var ts []Total
	for _, t := range sums {
		ts = append(ts, *t)
	}
	slices.SortFunc(ts, func(a, b Total) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Meter, b.Meter))
	})
	return ts, nil
}
