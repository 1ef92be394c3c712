package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// lineRow is one usage line's key, as usage_lines stores it.
type lineRow struct {
	tenant, period, meter, currency, plugin string
	late                                    int64
}

// lineCheck holds a line's journal sums (j) and the sums the closed and
// open lines hold (r); they are equal in a sound ledger.
type lineCheck struct{ jq, ja, rq, ra int64 }

// chainEnd is where a series' chain of windows has got to.
type chainEnd struct{ seq, to int64 }

// verifier is the state of the parts of [Ledger.Verify] that read
// packed rows, node by node: chains, node states, packed windows and their
// entries, and the usage lines (closed and open) against the journal.
type verifier struct {
	l         *Ledger
	r         *Report
	names     map[int64]seriesName
	byNode    map[string][]int64  // series ids per node, ascending
	reversals map[int64][2]string // reversed entry -> reversal's tenant and period
	lines     map[lineRow]*lineCheck
	// packed sums the postings of packed usage entries per account.
	packed map[balanceKey]int64
	// charged sums the tenant charges in the node states per account:
	// they are not in the tenants' balances rows.
	charged map[balanceKey]int64
	// packedIDs are the usage entries of window commits; reversedPacked
	// the reversals that name one by their key (they have no row to
	// reference).
	packedIDs      map[int64]bool
	reversedPacked map[int64]int64 // reversed id -> reversal id
}

func (v *verifier) line(k lineRow) *lineCheck {
	c := v.lines[k]
	if c == nil {
		c = &lineCheck{}
		v.lines[k] = c
	}
	return c
}

func (v *verifier) key(sid int64) string {
	if n, ok := v.names[sid]; ok {
		return n.node + "/" + n.tenant + "/" + n.meter
	}
	return fmt.Sprintf("series %d", sid)
}

// step checks one window of series sid against the end of its chain.
func (v *verifier) step(chains map[int64]*chainEnd, sid, seq, prev, from, to, qty int64, rebased bool) {
	c := chains[sid]
	if c == nil {
		c = &chainEnd{}
		chains[sid] = c
	}
	key := v.key(sid)
	if prev != c.seq {
		v.r.problem("%s: window %d follows window %d but links to %d (gap in the checkpoint chain)", key, seq, c.seq, prev)
	}
	if from != c.to {
		v.r.problem("%s: window %d starts at counter %d but the checkpoint was %d", key, seq, from, c.to)
	}
	want := to - from
	if rebased {
		want = 0
	}
	if qty != want {
		v.r.problem("%s: window %d bills %d for counters %d -> %d", key, seq, qty, from, to)
	}
	c.seq, c.to = seq, to
}

// verifyPacked is the part of Verify that reads packed rows (schema
// version 4) beside the legacy usage rows: every series' chain of windows
// (legacy rows first, then packed commits in order) runs 1, 2, 3, ...
// and ends at its checkpoint in the node's state; each packed window names
// a usage entry of its node in its window, and the entry's amount is the
// sum of its windows; and closed plus open usage lines equal what the
// journal sums to.
func (l *Ledger) verifyPacked(ctx context.Context, r *Report) error {
	v := &verifier{l: l, r: r, reversals: map[int64][2]string{}, lines: map[lineRow]*lineCheck{}, packed: map[balanceKey]int64{}, charged: map[balanceKey]int64{},
		packedIDs: map[int64]bool{}, reversedPacked: map[int64]int64{}}
	var err error
	if v.names, err = l.seriesNames(ctx, l.db, ``); err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	r.Series = int64(len(v.names))
	v.byNode = map[string][]int64{}
	for sid, n := range v.names {
		v.byNode[n.node] = append(v.byNode[n.node], sid)
	}
	for _, ids := range v.byNode {
		slices.Sort(ids)
	}
	// A reversal of a packed entry has no reverses (no row to reference):
	// its key "reversal:ID" names the entry.
	if err := v.query(ctx, `SELECT id, reverses, idem_key, tenant, period FROM entries WHERE kind = 'reversal'`, func(rows *sql.Rows) error {
		var id int64
		var reverses sql.NullInt64
		var key sql.NullString
		var t, p string
		if err := rows.Scan(&id, &reverses, &key, &t, &p); err != nil {
			return err
		}
		rev := reverses.Int64
		if !reverses.Valid {
			n, err := strconv.ParseInt(strings.TrimPrefix(key.String, "reversal:"), 10, 64)
			if err != nil || !strings.HasPrefix(key.String, "reversal:") {
				v.r.problem("reversal %d names no entry (key %q)", id, key.String)
				return nil
			}
			rev = n
			v.reversedPacked[rev] = id
		}
		v.reversals[rev] = [2]string{t, p}
		return nil
	}); err != nil {
		return err
	}
	addLines := func(query string, journal bool) error {
		return v.query(ctx, query, func(rows *sql.Rows) error {
			var k lineRow
			var q, a int64
			if err := rows.Scan(&k.tenant, &k.period, &k.meter, &k.currency, &k.plugin, &k.late, &q, &a); err != nil {
				return err
			}
			c := v.line(k)
			if journal {
				c.jq, c.ja = c.jq+q, c.ja+a
			} else {
				c.rq, c.ra = c.rq+q, c.ra+a
			}
			return nil
		})
	}
	// The legacy windows' part of the journal, and the closed lines.
	if err := addLines(`SELECT tenant, period, meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro)
		FROM usage_lines_journal GROUP BY tenant, period, meter, currency, plugin_sha256, late`, true); err != nil {
		return err
	}
	if err := addLines(`SELECT tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines`, false); err != nil {
		return err
	}
	var nodes []string
	if err := v.query(ctx, `SELECT node FROM series UNION SELECT node FROM node_state UNION SELECT node FROM window_commits`, func(rows *sql.Rows) error {
		var n string
		if err := rows.Scan(&n); err != nil {
			return err
		}
		nodes = append(nodes, n)
		return nil
	}); err != nil {
		return err
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		if err := v.node(ctx, node); err != nil {
			return err
		}
	}
	ids := make([]int64, 0, len(v.reversedPacked))
	for id := range v.reversedPacked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if !v.packedIDs[id] {
			v.r.problem("reversal %d reverses entry %d, which is in no window commit", v.reversedPacked[id], id)
		}
	}
	if err := v.balances(ctx); err != nil {
		return err
	}
	keys := make([]lineRow, 0, len(v.lines))
	for k, c := range v.lines {
		if c.jq != c.rq || c.ja != c.ra {
			keys = append(keys, k)
		}
	}
	// In order: the report keeps the first maxProblems.
	slices.SortFunc(keys, func(a, b lineRow) int {
		return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.period, b.period), strings.Compare(a.meter, b.meter),
			strings.Compare(a.currency, b.currency), strings.Compare(a.plugin, b.plugin), cmp.Compare(a.late, b.late))
	})
	for _, k := range keys {
		c := v.lines[k]
		r.problem("usage line %s/%s/%s (%s, plugin %s, late %d): lines say quantity %d amount %d but the journal sums to %d and %d",
			k.tenant, k.period, k.meter, k.currency, k.plugin, k.late, c.rq, c.ra, c.jq, c.ja)
	}
	return nil
}

func (v *verifier) query(ctx context.Context, query string, scan func(*sql.Rows) error, args ...any) error {
	rows, err := v.l.db.QueryContext(ctx, v.l.d.rebind(query), args...)
	if err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("verify ledger: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify ledger: %w", err)
	}
	return nil
}

// node verifies one node's chains, packed commits and state.
func (v *verifier) node(ctx context.Context, node string) error {
	chains := map[int64]*chainEnd{}
	if err := v.query(ctx, `SELECT u.series_id, u.seq, u.prev_seq, u.from_counter, u.to_counter, u.quantity, u.rebased
		FROM usage u JOIN series s ON s.id = u.series_id WHERE s.node = ? ORDER BY u.series_id, u.seq`, func(rows *sql.Rows) error {
		var sid, seq, prev, from, to, qty, rebased int64
		if err := rows.Scan(&sid, &seq, &prev, &from, &to, &qty, &rebased); err != nil {
			return err
		}
		v.step(chains, sid, seq, prev, from, to, qty, rebased == 1)
		return nil
	}, node); err != nil {
		return err
	}
	type commit struct {
		seq, first, last, windows int64
		data                      []byte
	}
	// One commit at a time: a commit of 70,000 windows is about 1 MB.
	var seqs []int64
	if err := v.query(ctx, `SELECT commit_seq FROM window_commits WHERE node = ? ORDER BY commit_seq`, func(rows *sql.Rows) error {
		var s int64
		if err := rows.Scan(&s); err != nil {
			return err
		}
		seqs = append(seqs, s)
		return nil
	}, node); err != nil {
		return err
	}
	var prevLast int64
	for i, seq := range seqs {
		want := int64(1)
		if i > 0 {
			want = seqs[i-1] + 1
		}
		if seq != want {
			v.r.problem("node %s: window commit %d follows commit %d (gap in the commit sequence)", node, seq, want-1)
		}
		var c commit
		err := v.l.db.QueryRowContext(ctx, v.l.d.rebind(`SELECT commit_seq, first_entry, last_entry, windows, data FROM window_commits
			WHERE node = ? AND commit_seq = ?`), node, seq).Scan(&c.seq, &c.first, &c.last, &c.windows, &c.data)
		if err != nil {
			return fmt.Errorf("verify ledger: read window commit %d of node %s: %w", seq, node, err)
		}
		// A node's commits run one after another: their entry ranges
		// cannot overlap, and an entry is counted in one commit only.
		if i > 0 && c.first <= prevLast {
			v.r.problem("node %s: window commit %d's entries %d..%d overlap commit %d's", node, c.seq, c.first, c.last, seqs[i-1])
		}
		v.commit(node, c.seq, c.first, c.last, c.windows, c.data, chains, prevLast)
		prevLast = max(prevLast, c.last)
	}
	var stSeq int64
	var data []byte
	err := v.l.db.QueryRowContext(ctx, v.l.d.rebind(`SELECT commit_seq, data FROM node_state WHERE node = ?`), node).Scan(&stSeq, &data)
	var series []seriesState
	var charges []charge
	stateOK := true
	switch {
	case isNoRows(err):
		if len(seqs) > 0 {
			v.r.problem("node %s: %d window commits but no node state", node, len(seqs))
		}
	case err != nil:
		return fmt.Errorf("verify ledger: read state of node %s: %w", node, err)
	default:
		if n := int64(len(seqs)); n > 0 && stSeq != seqs[n-1] {
			v.r.problem("node %s: state is at commit %d but the last window commit is %d", node, stSeq, seqs[n-1])
		}
		if series, charges, err = decodeState(node, data, v.l.lineID); err != nil {
			v.r.problem("%v", err)
			stateOK = false
		}
	}
	table := v.l.lineKeyTable()
	inState := make(map[int64]bool, len(series))
	for _, s := range series {
		inState[s.sid] = true
		n, ok := v.names[s.sid]
		if !ok || n.node != node {
			v.r.problem("node %s: state holds series %d, which is not the node's", node, s.sid)
			continue
		}
		c := chains[s.sid]
		if c == nil {
			c = &chainEnd{}
		}
		if int64(s.seq) != c.seq || int64(s.counter) != c.to {
			v.r.problem("%s: checkpoint says window %d at counter %d, but the last window is %d at counter %d", v.key(s.sid), s.seq, s.counter, c.seq, c.to)
		}
		if s.line != noLine {
			k := table[s.line]
			lc := v.line(lineRow{n.tenant, k.period, n.meter, k.currency, k.plugin, int64(b2i(k.late))})
			lc.rq, lc.ra = lc.rq+s.qty, lc.ra+s.amountSum
		}
	}
	if !stateOK {
		return nil // reported above
	}
	for _, c := range charges {
		v.charged[balanceKey{TenantAccount(c.tenant), c.currency}] += c.amount
	}
	for _, sid := range v.byNode[node] {
		if inState[sid] {
			continue
		}
		v.r.problem("series %d has no checkpoint in the state of node %s", sid, node)
		if c := chains[sid]; c != nil {
			v.r.problem("%s: checkpoint says window 0 at counter 0, but the last window is %d at counter %d", v.key(sid), c.seq, c.to)
		}
	}
	return nil
}

// commit verifies one packed commit - its windows, its usage entries
// (which are no rows) and their derived postings - and adds its windows to
// the chains and the journal's lines. Entries up to claimed belong to
// earlier commits of the node.
func (v *verifier) commit(node string, seq, first, last, count int64, data []byte, chains map[int64]*chainEnd, claimed int64) {
	ws, entries, err := decodeCommit(node, seq, data)
	if err != nil {
		v.r.problem("%v", err)
		return
	}
	v.r.Windows += int64(len(ws))
	if int64(len(ws)) != count {
		v.r.problem("window commit %d of node %s: says %d windows but holds %d", seq, node, count, len(ws))
	}
	if len(entries) > 0 && (entries[0].id != first || entries[len(entries)-1].id != last) {
		v.r.problem("window commit %d of node %s: says entries %d..%d but holds %d..%d", seq, node, first, last,
			entries[0].id, entries[len(entries)-1].id)
	}
	index := make(map[int64]int, len(entries))
	for i, e := range entries {
		index[e.id] = i
	}
	type sums struct {
		amount, vendor int64
		seq            uint64
		windows        int
	}
	per := make([]sums, len(entries))
	for _, w := range ws {
		v.step(chains, w.sid, int64(w.seq), int64(w.prev), int64(w.from), int64(w.to), int64(w.qty), w.rebased)
		n, ok := v.names[w.sid]
		if !ok || n.node != node {
			v.r.problem("window commit %d of node %s: series %d is not a series of the node", seq, node, w.sid)
		}
		i := index[w.entry] // the decoder checked that it is one
		e := &entries[i]
		if n.tenant != e.tenant {
			v.r.problem("usage entry %d of tenant %s has a window of %s", e.id, e.tenant, v.key(w.sid))
		}
		p := &per[i]
		if p.windows > 0 && p.seq != w.seq {
			v.r.problem("usage of entry %d is not in that entry's window (window_seq)", e.id)
		}
		p.seq = w.seq
		p.windows++
		p.amount += w.amount
		p.vendor += w.vendor
		k := e.key
		lc := v.line(lineRow{e.tenant, k.period, n.meter, k.currency, k.plugin, int64(b2i(k.late))})
		lc.jq, lc.ja = lc.jq+int64(w.qty), lc.ja+w.amount
		if rev, ok := v.reversals[w.entry]; ok {
			lc := v.line(lineRow{rev[0], rev[1], n.meter, k.currency, k.plugin, int64(b2i(k.late))})
			lc.jq, lc.ja = lc.jq-int64(w.qty), lc.ja-w.amount
		}
	}
	for i, e := range entries {
		if e.id <= claimed {
			continue // reported as an overlap
		}
		v.r.Entries++
		v.packedIDs[e.id] = true
		if per[i].windows == 0 {
			v.r.problem("usage entry %d in window commit %d of node %s has no window", e.id, seq, node)
		}
		// Its postings, which are not rows (see packedPostings).
		for _, p := range packedPostings(e.tenant, e.key.currency, e.key.plugin, per[i].amount, per[i].vendor) {
			v.r.Postings++
			v.packed[balanceKey{p.account, p.currency}] += p.amount
			if p.amount < 0 {
				v.r.DebitsMicro[p.currency] -= p.amount
			} else {
				v.r.CreditsMicro[p.currency] += p.amount
			}
		}
	}
}

// balances checks, once the packed postings are summed, that debits equal
// credits per currency and that every stored balance is the sum of its
// account's postings, rows and packed.
func (v *verifier) balances(ctx context.Context) error {
	currencies := make([]string, 0, len(v.r.DebitsMicro))
	for c := range v.r.DebitsMicro {
		currencies = append(currencies, c)
	}
	for c := range v.r.CreditsMicro {
		if _, ok := v.r.DebitsMicro[c]; !ok {
			currencies = append(currencies, c)
		}
	}
	slices.Sort(currencies)
	for _, c := range currencies {
		if d, cr := v.r.DebitsMicro[c], v.r.CreditsMicro[c]; d != cr {
			v.r.problem("%s: debits %d != credits %d", c, d, cr)
		}
	}
	rows := map[balanceKey]int64{}
	if err := v.query(ctx, `SELECT account, currency, SUM(amount_micro) FROM postings GROUP BY account, currency`, func(r *sql.Rows) error {
		var k balanceKey
		var sum int64
		if err := r.Scan(&k.account, &k.currency, &sum); err != nil {
			return err
		}
		rows[k] = sum
		return nil
	}); err != nil {
		return err
	}
	// A tenant's balance is its row less its charges in the node states.
	balances := map[balanceKey]int64{}
	if err := v.query(ctx, `SELECT account, currency, balance_micro FROM balances`, func(r *sql.Rows) error {
		var k balanceKey
		var bal int64
		if err := r.Scan(&k.account, &k.currency, &bal); err != nil {
			return err
		}
		balances[k] = bal
		return nil
	}); err != nil {
		return err
	}
	for k, c := range v.charged {
		balances[k] -= c
	}
	keys := make([]balanceKey, 0, len(balances))
	for k := range balances {
		keys = append(keys, k)
	}
	sortBalanceKeys(keys)
	for _, k := range keys {
		if bal, sum := balances[k], rows[k]+v.packed[k]; bal != sum {
			v.r.problem("balance of %s in %s is %d but its postings sum to %d", k.account, k.currency, bal, sum)
		}
	}
	return nil
}
