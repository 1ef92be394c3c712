package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ExecForTest runs a raw statement, to prove the triggers refuse edits.
func ExecForTest(ctx context.Context, l *Ledger, stmt string) error {
	_, err := l.db.ExecContext(ctx, stmt)
	return err
}

// ExecArgsForTest runs a raw statement with ? placeholders and args: to
// forge rows that CommitWindows would never write.
func ExecArgsForTest(ctx context.Context, l *Ledger, stmt string, args ...any) error {
	_, err := l.db.ExecContext(ctx, l.d.rebind(stmt), args...)
	return err
}

// PackWindowForTest is the blob of a commit of one window w of series
// sid, billed to usage entry entry of w's tenant in period.
func PackWindowForTest(w Window, sid, entry int64, period string) ([]byte, error) {
	return encodeCommit(nil, []packedWindow{{sid: sid, seq: w.Seq, prev: w.PrevSeq, from: w.FromCounter, to: w.ToCounter,
		qty: w.Quantity, rebased: w.Rebased, startUS: w.Start.UnixMicro(), endUS: w.End.UnixMicro(),
		amount: w.Charge.AmountMicro, vendor: w.Charge.VendorMicro, entry: entry}},
		[]commitEntry{{id: entry, tenant: w.Tenant, key: lineKey{period, w.Charge.Currency, w.PluginSHA256, false}}})
}

// SeriesStateForTest is one series' checkpoint and open line in its
// node's state, for EditStateForTest.
type SeriesStateForTest struct {
	Tenant, Meter            string
	Seq, Counter             uint64
	LineQuantity, LineAmount int64
}

// EditStateForTest rewrites node's state row (mutable by design) with
// edit applied to each series: a tampered state for ledger verify to find.
func EditStateForTest(ctx context.Context, l *Ledger, node string, edit func(s *SeriesStateForTest)) error {
	var data []byte
	if err := l.db.QueryRowContext(ctx, l.d.rebind(`SELECT data FROM node_state WHERE node = ?`), node).Scan(&data); err != nil {
		return err
	}
	ss, cs, err := decodeState(node, data, l.lineID)
	if err != nil {
		return err
	}
	names, err := l.seriesNames(ctx, l.db, `WHERE node = ?`, node)
	if err != nil {
		return err
	}
	for i := range ss {
		s := &ss[i]
		e := SeriesStateForTest{Tenant: names[s.sid].tenant, Meter: names[s.sid].meter, Seq: s.seq, Counter: s.counter,
			LineQuantity: s.qty, LineAmount: s.amountSum}
		edit(&e)
		s.seq, s.counter, s.qty, s.amountSum = e.Seq, e.Counter, e.LineQuantity, e.LineAmount
	}
	if data, err = encodeState(nil, ss, cs, l.lineKeyTable()); err != nil {
		return err
	}
	_, err = l.db.ExecContext(ctx, l.d.rebind(`UPDATE node_state SET data = ? WHERE node = ?`), data, node)
	return err
}

// EditChargesForTest rewrites the tenant charges in node's state with
// edit applied to each (tenant, currency, amount).
func EditChargesForTest(ctx context.Context, l *Ledger, node string, edit func(tenant, currency string, amount *int64)) error {
	var data []byte
	if err := l.db.QueryRowContext(ctx, l.d.rebind(`SELECT data FROM node_state WHERE node = ?`), node).Scan(&data); err != nil {
		return err
	}
	ss, cs, err := decodeState(node, data, l.lineID)
	if err != nil {
		return err
	}
	for i := range cs {
		edit(cs[i].tenant, cs[i].currency, &cs[i].amount)
	}
	if data, err = encodeState(nil, ss, cs, l.lineKeyTable()); err != nil {
		return err
	}
	_, err = l.db.ExecContext(ctx, l.d.rebind(`UPDATE node_state SET data = ? WHERE node = ?`), data, node)
	return err
}

// OpenVersionForTest opens cfg with its schema brought only to version,
// to build a ledger as an earlier kmeter left it.
func OpenVersionForTest(ctx context.Context, cfg Config, version int) (*Ledger, error) {
	return open(ctx, cfg, version)
}

// JournalLinesForTest computes tenant's usage lines of period from the
// journal alone - entries and their windows, legacy rows and packed
// commits - as UsageLines did before the usage_lines rollup (schema
// version 1): the reference the rollup must equal.
func JournalLinesForTest(ctx context.Context, l *Ledger, tenant, period string) ([]UsageLine, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, quantity, amount_micro FROM (
			SELECT u.meter, e.currency, e.plugin_sha256, e.late, u.quantity, u.amount_micro
			FROM entries e JOIN usage_v u ON u.entry_id = e.id
			WHERE e.tenant = ? AND e.period = ? AND e.kind = 'usage'
			UNION ALL
			SELECT u.meter, o.currency, o.plugin_sha256, o.late, -u.quantity, -u.amount_micro
			FROM entries r JOIN entries o ON o.id = r.reverses JOIN usage_v u ON u.entry_id = o.id
			WHERE r.tenant = ? AND r.period = ? AND r.kind = 'reversal'
		) lines`), tenant, period, tenant, period)
	legacy, err := scanLines(rows, err)
	if err != nil {
		return nil, err
	}
	var version int
	if err := l.db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil {
		return nil, err
	}
	if version < 4 {
		return sumLines(legacy), nil
	}
	// Packed windows: every commit, with the entries it holds; a
	// reversal names a packed entry by its key "reversal:ID".
	type reversal struct{ tenant, period string }
	reversedBy := map[int64]reversal{}
	rr, err := l.db.QueryContext(ctx, `SELECT COALESCE(reverses, 0), COALESCE(idem_key, ''), tenant, period FROM entries WHERE kind = 'reversal'`)
	if err != nil {
		return nil, err
	}
	defer rr.Close()
	for rr.Next() {
		var id int64
		var key string
		var r reversal
		if err := rr.Scan(&id, &key, &r.tenant, &r.period); err != nil {
			return nil, err
		}
		if id == 0 {
			if id, err = strconv.ParseInt(strings.TrimPrefix(key, "reversal:"), 10, 64); err != nil {
				return nil, err
			}
		}
		reversedBy[id] = r
	}
	if err := rr.Err(); err != nil {
		return nil, err
	}
	names, err := l.seriesNames(ctx, l.db, ``)
	if err != nil {
		return nil, err
	}
	cr, err := l.db.QueryContext(ctx, `SELECT node, commit_seq, data FROM window_commits`)
	if err != nil {
		return nil, err
	}
	defer cr.Close()
	ls := legacy
	for cr.Next() {
		var node string
		var seq int64
		var data []byte
		if err := cr.Scan(&node, &seq, &data); err != nil {
			return nil, err
		}
		ws, es, err := decodeCommit(node, seq, data)
		if err != nil {
			return nil, err
		}
		entries := map[int64]commitEntry{}
		for _, e := range es {
			entries[e.id] = e
		}
		for _, w := range ws {
			o := entries[w.entry]
			meter := names[w.sid].meter
			if o.tenant == tenant && o.key.period == period {
				ls = append(ls, UsageLine{Meter: meter, Currency: o.key.currency, PluginSHA256: o.key.plugin, Late: o.key.late,
					Quantity: int64(w.qty), AmountMicro: w.amount})
			}
			if r, ok := reversedBy[w.entry]; ok && r.tenant == tenant && r.period == period {
				ls = append(ls, UsageLine{Meter: meter, Currency: o.key.currency, PluginSHA256: o.key.plugin, Late: o.key.late,
					Quantity: -int64(w.qty), AmountMicro: -w.amount})
			}
		}
	}
	if err := cr.Err(); err != nil {
		return nil, err
	}
	return sumLines(ls), nil
}

// sumLines adds up lines with the same meter, currency, plugin and late
// flag, in UsageLines' order.
func sumLines(in []UsageLine) []UsageLine {
	type key struct {
		meter, currency, plugin string
		late                    bool
	}
	sums := map[key]*UsageLine{}
	var out []UsageLine
	for _, u := range in {
		k := key{u.Meter, u.Currency, u.PluginSHA256, u.Late}
		if s := sums[k]; s != nil {
			s.Quantity += u.Quantity
			s.AmountMicro += u.AmountMicro
			continue
		}
		c := u
		sums[k] = &c
	}
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b UsageLine) int {
		return cmp.Or(strings.Compare(a.Meter, b.Meter), cmp.Compare(b2i(a.Late), b2i(b.Late)),
			strings.Compare(a.Currency, b.Currency), strings.Compare(a.PluginSHA256, b.PluginSHA256))
	})
	return out
}

// UsageLinesV2ForTest is UsageLines as schema version 2 answered it,
// with the open lines' sums on the series rows: the invoices a ledger
// showed before migrating to version 3.
func UsageLinesV2ForTest(ctx context.Context, l *Ledger, tenant, period string) ([]UsageLine, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro) FROM (
			SELECT meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines WHERE tenant = ? AND period = ?
			UNION ALL
			SELECT meter, line_currency, line_plugin_sha256, line_late, line_quantity, line_amount_micro FROM series
			WHERE tenant = ? AND line_period = ?
		) lines
		GROUP BY meter, currency, plugin_sha256, late
		ORDER BY meter, late, currency, plugin_sha256`), tenant, period, tenant, period)
	return scanLines(rows, err)
}

// UsageLinesV3ForTest is UsageLines as schema version 3 answered it,
// with the open lines' sums in checkpoints: the invoices a ledger showed
// before migrating to version 4.
func UsageLinesV3ForTest(ctx context.Context, l *Ledger, tenant, period string) ([]UsageLine, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro) FROM (
			SELECT meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines WHERE tenant = ? AND period = ?
			UNION ALL
			SELECT s.meter, s.line_currency, s.line_plugin_sha256, s.line_late, c.line_quantity, c.line_amount_micro
			FROM series s JOIN checkpoints c ON c.series_id = s.id
			WHERE s.tenant = ? AND s.line_period = ?
		) lines
		GROUP BY meter, currency, plugin_sha256, late
		ORDER BY meter, late, currency, plugin_sha256`), tenant, period, tenant, period)
	return scanLines(rows, err)
}

// CheckpointsV3ForTest is Checkpoints as schema version 3 answered it.
func CheckpointsV3ForTest(ctx context.Context, l *Ledger, node string) ([]Checkpoint, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT s.tenant, s.meter, c.last_seq, c.last_counter, c.last_end_us
		FROM series s JOIN checkpoints c ON c.series_id = s.id WHERE s.node = ? AND c.last_seq > 0 ORDER BY s.id`), node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cps []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var seq, counter, end int64
		if err := rows.Scan(&c.Tenant, &c.Meter, &seq, &counter, &end); err != nil {
			return nil, err
		}
		c.Seq, c.Counter, c.End = uint64(seq), uint64(counter), time.UnixMicro(end)
		cps = append(cps, c)
	}
	return cps, rows.Err()
}

// BalanceRowsForTest is Balances as schemas before version 4 answered it:
// the tenant's balances rows alone.
func BalanceRowsForTest(ctx context.Context, l *Ledger, tenant string) ([]Balance, error) {
	var t Tenant
	if err := l.db.QueryRowContext(ctx, l.d.rebind(`SELECT account_type, low_balance_micro FROM tenants WHERE name = ?`), tenant).
		Scan(&t.Account, &t.LowBalanceMicro); err != nil {
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT currency, balance_micro, charged_micro FROM balances WHERE account = ? ORDER BY currency`),
		TenantAccount(tenant))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	bs := []Balance{}
	for rows.Next() {
		b := Balance{Tenant: tenant, Account: t.Account, LowBalanceMicro: t.LowBalanceMicro}
		if err := rows.Scan(&b.Currency, &b.BalanceMicro, &b.ChargedMicro); err != nil {
			return nil, err
		}
		b.Low = t.Account == Prepaid && b.BalanceMicro < t.LowBalanceMicro
		bs = append(bs, b)
	}
	return bs, rows.Err()
}

// scanLines reads (meter, currency, plugin, late, quantity, amount) rows.
func scanLines(rows *sql.Rows, err error) ([]UsageLine, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ls []UsageLine
	for rows.Next() {
		var u UsageLine
		var late int
		if err := rows.Scan(&u.Meter, &u.Currency, &u.PluginSHA256, &late, &u.Quantity, &u.AmountMicro); err != nil {
			return nil, err
		}
		u.Late = late == 1
		ls = append(ls, u)
	}
	return ls, rows.Err()
}

// CachedStateForTest returns node's state as l cached it after its last
// commit: the state itself (to compare identity), its commit_seq and a
// copy of its blob; ok is false when l caches none.
func CachedStateForTest(l *Ledger, node string) (state any, commitSeq int64, blob []byte, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.states[node]
	if st == nil {
		return nil, 0, nil, false
	}
	return st, st.commitSeq, slices.Clone(st.blob), true
}

// StoredStateForTest returns node's node_state row.
func StoredStateForTest(ctx context.Context, l *Ledger, node string) (commitSeq int64, blob []byte, err error) {
	err = l.db.QueryRowContext(ctx, l.d.rebind(`SELECT commit_seq, data FROM node_state WHERE node = ?`), node).Scan(&commitSeq, &blob)
	return commitSeq, blob, err
}

// CommitBlobsForTest returns the blobs of node's window commits, in
// commit order.
func CommitBlobsForTest(ctx context.Context, l *Ledger, node string) ([][]byte, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT data FROM window_commits WHERE node = ? ORDER BY commit_seq`), node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var blobs [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		blobs = append(blobs, b)
	}
	return blobs, rows.Err()
}

// encodeCommit appends the blob of ws, which must be in ascending series
// id order with each series once, to dst, as Commit writes it. entries
// are the commit's usage entries in ascending id order; each window's
// entry must be one of them.
func encodeCommit(dst []byte, ws []packedWindow, entries []commitEntry) ([]byte, error) {
	if len(ws) == 0 || len(entries) == 0 {
		return nil, errors.New("pack window commit: no windows")
	}
	var sh sharedValues
	for j := range ws {
		sh.add(&ws[j])
	}
	var cw commitWriter
	cw.begin(dst, &sh, len(ws), len(entries), func(k int) commitEntry { return entries[k] })
	for j := range ws {
		if err := cw.add(&ws[j]); err != nil {
			return nil, err
		}
	}
	return cw.finish()
}
