package ledger

import (
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// TopUp credits a tenant's prepaid balance.
type TopUp struct {
	Tenant      string `json:"tenant"`
	AmountMicro int64  `json:"amount_micro"`
	Currency    string `json:"currency"`
	Memo        string `json:"memo,omitempty"`
	// Key is the idempotency key: the same key with the same top-up is
	// applied once; with a different top-up it is [ErrKeyReused].
	Key string `json:"-"`
}

func (t TopUp) validate() error {
	var errs []error
	if t.Tenant == "" {
		errs = append(errs, errors.New("tenant is empty"))
	}
	if t.AmountMicro <= 0 {
		errs = append(errs, fmt.Errorf("amount_micro %d must be positive (1 USD = 1000000)", t.AmountMicro))
	}
	if err := checkCurrency(t.Currency); err != nil {
		errs = append(errs, err)
	}
	if t.Key == "" || len(t.Key) > 200 {
		errs = append(errs, errors.New("idempotency key must be 1 to 200 characters"))
	}
	return errors.Join(errs...)
}

// bodySHA256 fingerprints what the top-up does, to tell a replay from a
// reused key.
func (t TopUp) bodySHA256() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s", t.Tenant, t.AmountMicro, t.Currency, t.Memo)
	return hex.EncodeToString(h.Sum(nil))
}

// TopUpResult is the outcome of a top-up; a replay returns the original.
type TopUpResult struct {
	EntryID     int64     `json:"entry_id"`
	Tenant      string    `json:"tenant"`
	AmountMicro int64     `json:"amount_micro"`
	Currency    string    `json:"currency"`
	Memo        string    `json:"memo,omitempty"`
	Created     time.Time `json:"created"`
	// BalanceMicro is the tenant's balance right after this top-up.
	BalanceMicro int64 `json:"balance_micro"`
	// Replayed is true when the key was seen before and nothing new was
	// applied.
	Replayed bool `json:"replayed"`
}

// TopUp applies t once per idempotency key.
func (l *Ledger) TopUp(ctx context.Context, t TopUp) (TopUpResult, error) {
	if err := t.validate(); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: %w: %w", ErrInvalid, err)
	}
	res, err := l.topUp(ctx, t)
	if err != nil && l.d.isUnique(err) {
		// A concurrent request with the same key won the race (only
		// possible on PostgreSQL); now it is a replay or a conflict.
		res, err = l.topUp(ctx, t)
	}
	return res, err
}

func (l *Ledger) topUp(ctx context.Context, t TopUp) (TopUpResult, error) {
	key := "topup:" + t.Key
	body := t.bodySHA256()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: begin: %w", err)
	}
	defer tx.Rollback()
	var (
		r       TopUpResult
		oldBody string
		created int64
		memo    sql.NullString
	)
	err = tx.QueryRowContext(ctx, l.d.rebind(`SELECT id, tenant, amount_micro, currency, memo, created_us, balance_after_micro, body_sha256
		FROM entries WHERE idem_key = ?`), key).Scan(&r.EntryID, &r.Tenant, &r.AmountMicro, &r.Currency, &memo, &created, &r.BalanceMicro, &oldBody)
	switch {
	case err == nil:
		if oldBody != body {
			return TopUpResult{}, fmt.Errorf("top-up %q: %w", t.Key, ErrKeyReused)
		}
		r.Memo, r.Created, r.Replayed = memo.String, time.UnixMicro(created).UTC(), true
		return r, nil
	case !errors.Is(err, sql.ErrNoRows):
		return TopUpResult{}, fmt.Errorf("top-up: look up key: %w", err)
	}
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: %w", err)
	}
	ids, err := l.d.allocIDs(ctx, tx, 1)
	if err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: %w", err)
	}
	if err := l.ensureTenants(ctx, tx, []string{t.Tenant}); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: %w", err)
	}
	now := l.now()
	period, _ := openPeriod(PeriodOf(now), closed)
	if err := l.applyBalances(ctx, tx, map[balanceKey]balanceDelta{
		{TenantAccount(t.Tenant), t.Currency}: {balance: t.AmountMicro},
		{FundingAccount, t.Currency}:          {balance: -t.AmountMicro},
	}); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: %w", err)
	}
	var after int64
	if err := tx.QueryRowContext(ctx, l.d.rebind(`SELECT balance_micro FROM balances WHERE account = ? AND currency = ?`),
		TenantAccount(t.Tenant), t.Currency).Scan(&after); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: read balance: %w", err)
	}
	// Less the tenant's charges kept in the node states (see charge).
	charges, err := l.tenantCharges(ctx, tx, t.Tenant)
	if err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: read balance: %w", err)
	}
	after -= charges[t.Currency]
	if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us,
		idem_key, body_sha256, balance_after_micro, memo) VALUES (?, 'topup', ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		ids[0], t.Tenant, t.Currency, t.AmountMicro, period, now.UnixMicro(), key, body, after, t.Memo); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: insert entry: %w", err)
	}
	if err := l.d.insertRows(ctx, tx, `INSERT INTO postings (entry_id, account, currency, amount_micro)`, 4, [][]any{
		{ids[0], TenantAccount(t.Tenant), t.Currency, t.AmountMicro},
		{ids[0], FundingAccount, t.Currency, -t.AmountMicro},
	}, ""); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: insert postings: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return TopUpResult{}, fmt.Errorf("top-up: commit: %w", err)
	}
	return TopUpResult{EntryID: ids[0], Tenant: t.Tenant, AmountMicro: t.AmountMicro, Currency: t.Currency,
		Memo: t.Memo, Created: time.UnixMicro(now.UnixMicro()).UTC(), BalanceMicro: after}, nil
}

// Reverse books a reversal of entry id: the same postings with opposite
// signs, in the current open period. Reversing a usage entry takes back
// all its windows (they show as negative lines on that period's invoice);
// their checkpoints stay, so the usage is not billed again. An entry is
// reversed at most once and a reversal cannot itself be reversed.
func (l *Ledger) Reverse(ctx context.Context, id int64, memo string) (int64, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("reverse entry %d: begin: %w", id, err)
	}
	defer tx.Rollback()
	var (
		kind, tenant, currency string
		amount                 int64
	)
	err = tx.QueryRowContext(ctx, l.d.rebind(`SELECT kind, tenant, currency, amount_micro FROM entries WHERE id = ?`), id).
		Scan(&kind, &tenant, &currency, &amount)
	// A usage entry written since schema version 4 is no row: it is in
	// a window commit, with its windows and (derived) postings.
	var packed *packedEntry
	if errors.Is(err, sql.ErrNoRows) {
		if packed, err = l.findPacked(ctx, tx, id); err != nil {
			return 0, fmt.Errorf("reverse entry %d: %w", id, err)
		}
		if packed == nil {
			return 0, fmt.Errorf("reverse entry %d: %w", id, ErrNotFound)
		}
		kind, tenant, currency, amount = "usage", packed.tenant, packed.key.currency, packed.amount
	}
	if err != nil {
		return 0, fmt.Errorf("reverse entry %d: %w", id, err)
	}
	if kind == "reversal" {
		return 0, fmt.Errorf("reverse entry %d: it is itself a reversal; book a new entry instead", id)
	}
	var orig []posting
	if packed != nil {
		orig = packedPostings(tenant, currency, packed.key.plugin, amount, packed.vendor)
	} else if orig, err = postingsOf(ctx, tx, l.d, id); err != nil {
		return 0, fmt.Errorf("reverse entry %d: read postings: %w", id, err)
	}
	var postings [][]any
	deltas := map[balanceKey]balanceDelta{}
	for _, p := range orig {
		postings = append(postings, []any{nil, p.account, p.currency, -p.amount})
		d := deltas[balanceKey{p.account, p.currency}]
		d.balance -= p.amount
		if kind == "usage" && p.account == TenantAccount(tenant) {
			d.charged += p.amount // the (negative) debit
		}
		deltas[balanceKey{p.account, p.currency}] = d
	}
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return 0, fmt.Errorf("reverse entry %d: %w", id, err)
	}
	ids, err := l.d.allocIDs(ctx, tx, 1)
	if err != nil {
		return 0, fmt.Errorf("reverse entry %d: %w", id, err)
	}
	now := l.now()
	period, _ := openPeriod(PeriodOf(now), closed)
	// reverses references an entries row; a packed entry has none, and
	// the reversal's idempotency key "reversal:ID" (unique) names it.
	var reverses any = id
	if packed != nil {
		reverses = nil
	}
	if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, created_us,
		idem_key, memo, reverses) VALUES (?, 'reversal', ?, ?, ?, ?, ?, ?, ?, ?)`),
		ids[0], tenant, currency, -amount, period, now.UnixMicro(), fmt.Sprintf("reversal:%d", id), memo, reverses); err != nil {
		if l.d.isUnique(err) {
			return 0, fmt.Errorf("reverse entry %d: it was already reversed", id)
		}
		return 0, fmt.Errorf("reverse entry %d: insert: %w", id, err)
	}
	if kind == "usage" {
		// The reversal's lines: the entry's windows negated, booked in
		// the reversal's period under the entry's currency, plugin and
		// late flag (as usage_lines_journal sums them). Before the balances,
		// as in a window commit, so the two never lock rows in opposite order.
		// The windows are the entry's node's series of its tenant in its
		// window: one key lookup per series, not a scan of usage.
		if packed != nil {
			if err := l.reversePackedLines(ctx, tx, packed, tenant, period); err != nil {
				return 0, fmt.Errorf("reverse entry %d: %w", id, err)
			}
		} else if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO usage_lines (`+strings.Join(rollupCols, ", ")+`)
			SELECT CAST(? AS TEXT), CAST(? AS TEXT), s.meter, o.currency, COALESCE(o.plugin_sha256, ''), o.late,
				-SUM(u.quantity), -SUM(u.amount_micro)
			FROM entries o JOIN series s ON s.tenant = o.tenant AND s.node = o.node
				JOIN usage u ON u.seq = o.window_seq AND u.series_id = s.id
			WHERE o.id = ? AND u.entry_id = o.id
			GROUP BY s.meter, o.currency, o.plugin_sha256, o.late`+rollupUpsert), tenant, period, id); err != nil {
			return 0, fmt.Errorf("reverse entry %d: update usage lines: %w", id, err)
		}
	}
	for _, p := range postings {
		p[0] = ids[0]
	}
	if len(postings) > 0 {
		if err := l.d.insertRows(ctx, tx, `INSERT INTO postings (entry_id, account, currency, amount_micro)`, 4, postings, ""); err != nil {
			return 0, fmt.Errorf("reverse entry %d: insert postings: %w", id, err)
		}
		if err := l.applyBalances(ctx, tx, deltas); err != nil {
			return 0, fmt.Errorf("reverse entry %d: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("reverse entry %d: commit: %w", id, err)
	}
	return ids[0], nil
}

// postingsOf reads the posting rows of entry id.
func postingsOf(ctx context.Context, tx *sql.Tx, d dialect, id int64) ([]posting, error) {
	rows, err := tx.QueryContext(ctx, d.rebind(`SELECT account, currency, amount_micro FROM postings WHERE entry_id = ?`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ps []posting
	for rows.Next() {
		var p posting
		if err := rows.Scan(&p.account, &p.currency, &p.amount); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

// packedEntry is a usage entry of a window commit, as a reversal needs
// it.
type packedEntry struct {
	node      string
	commitSeq int64
	tenant    string
	// windows are the entry's windows in its commit.
	windows []packedWindow
	key     lineKey // period is the entry's, replaced by the reversal's
	amount  int64   // the sum of the windows' amounts
	vendor  int64   // the sum of the windows' vendor shares
}

// findPacked returns usage entry id if a window commit holds it, or nil.
// The entry has no row to name its node, so each node's first commit
// whose entry range ends at or above id is a candidate (one index lookup
// per node, window_commits_entries): on PostgreSQL the ranges of
// different nodes interleave (one id sequence for all).
func (l *Ledger) findPacked(ctx context.Context, tx *sql.Tx, id int64) (*packedEntry, error) {
	nodes, err := queryStrings(ctx, tx, `SELECT node FROM node_state ORDER BY node`)
	if err != nil {
		return nil, fmt.Errorf("find the window commit: %w", err)
	}
	type candidate struct {
		node string
		seq  int64
	}
	var cands []candidate
	for _, n := range nodes {
		var seq, first int64
		err := tx.QueryRowContext(ctx, l.d.rebind(`SELECT commit_seq, first_entry FROM window_commits
			WHERE node = ? AND last_entry >= ? ORDER BY last_entry LIMIT 1`), n, id).Scan(&seq, &first)
		if isNoRows(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("find the window commit: %w", err)
		}
		if first <= id {
			cands = append(cands, candidate{n, seq})
		}
	}
	for _, c := range cands {
		var data []byte
		if err := tx.QueryRowContext(ctx, l.d.rebind(`SELECT data FROM window_commits WHERE node = ? AND commit_seq = ?`), c.node, c.seq).
			Scan(&data); err != nil {
			return nil, fmt.Errorf("read window commit %d of node %s: %w", c.seq, c.node, err)
		}
		ws, es, err := decodeCommit(c.node, c.seq, data)
		if err != nil {
			return nil, err
		}
		i, ok := slices.BinarySearchFunc(es, id, func(e commitEntry, id int64) int { return cmp.Compare(e.id, id) })
		if !ok {
			continue
		}
		e := &packedEntry{node: c.node, commitSeq: c.seq, tenant: es[i].tenant, key: es[i].key}
		for _, w := range ws {
			if w.entry == id {
				e.windows = append(e.windows, w)
				e.amount += w.amount
				e.vendor += w.vendor
			}
		}
		return e, nil
	}
	return nil, nil
}

// reversePackedLines books the negated windows of packed entry e into
// usage_lines under the reversal's period, per meter.
func (l *Ledger) reversePackedLines(ctx context.Context, tx *sql.Tx, e *packedEntry, tenant, period string) error {
	names, err := l.seriesNames(ctx, tx, `WHERE node = ? AND tenant = ?`, e.node, tenant)
	if err != nil {
		return err
	}
	k := e.key
	k.period = period
	byMeter := map[string]*closedLine{}
	for _, w := range e.windows {
		n, ok := names[w.sid]
		if !ok {
			return fmt.Errorf("window commit %d of node %s: series %d is not %s's on the node (run ledger verify)", e.commitSeq, e.node, w.sid, tenant)
		}
		c := byMeter[n.meter]
		if c == nil {
			c = &closedLine{tenant: tenant, meter: n.meter, key: k}
			byMeter[n.meter] = c
		}
		c.qty -= int64(w.qty)
		c.amount -= w.amount
	}
	ls := make([]closedLine, 0, len(byMeter))
	for _, c := range byMeter {
		ls = append(ls, *c)
	}
	return l.closeLines(ctx, tx, ls)
}
