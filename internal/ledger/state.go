package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
)

// nodeState is a node's node_state row, decoded: every series'
// checkpoint and open usage line (see schema version 4). It is never
// changed once made: a commit builds the next one, so a cached state can
// be shared by readers.
type nodeState struct {
	// exists is false before the node's first commit (no row yet).
	exists    bool
	commitSeq int64
	// series is in ascending series id order.
	series []seriesState
	// charges are the node's packed usage charges per tenant and
	// currency, in that order (see charge).
	charges []charge
}

// find returns the state of series sid, if the node has it.
func (s *nodeState) find(sid int64) (*seriesState, bool) {
	i, ok := slices.BinarySearchFunc(s.series, sid, func(x seriesState, id int64) int {
		switch {
		case x.sid < id:
			return -1
		case x.sid > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil, false
	}
	return &s.series[i], true
}

// queryer is a transaction or the database.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// loadState reads node's state in q. A cached copy is used while its
// commit_seq is the stored one: one small-row lookup instead of reading
// and decoding some 15 bytes per series. With lock (a window commit on
// PostgreSQL) the row is locked until q commits, so that another writer
// with the same node id waits and then sees this commit.
func (l *Ledger) loadState(ctx context.Context, q queryer, node string, lock bool) (*nodeState, error) {
	suffix := ""
	if lock && l.d == postgres {
		suffix = " FOR UPDATE"
	}
	var seq int64
	err := q.QueryRowContext(ctx, l.d.rebind(`SELECT commit_seq FROM node_state WHERE node = ?`+suffix), node).Scan(&seq)
	if isNoRows(err) {
		return &nodeState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of node %s: %w", node, err)
	}
	l.mu.Lock()
	c := l.states[node]
	l.mu.Unlock()
	if c != nil && c.commitSeq == seq {
		return c, nil
	}
	// commit_seq again with the data: a writer may have moved on since.
	var data []byte
	if err := q.QueryRowContext(ctx, l.d.rebind(`SELECT commit_seq, data FROM node_state WHERE node = ?`), node).Scan(&seq, &data); err != nil {
		return nil, fmt.Errorf("read state of node %s: %w", node, err)
	}
	ss, cs, err := decodeState(node, data, l.lineID)
	if err != nil {
		return nil, err
	}
	return &nodeState{exists: true, commitSeq: seq, series: ss, charges: cs}, nil
}

// cacheState keeps st as node's state after a commit. Only writers cache:
// a reader (an API server showing invoices of a fleet) would otherwise
// hold every node's state.
func (l *Ledger) cacheState(node string, st *nodeState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.states[node]; c == nil || c.commitSeq < st.commitSeq {
		l.states[node] = st
	}
}

// readTx begins a read-only transaction: one snapshot for reads that
// combine rows and packed state (SQLite: a deferred transaction, which
// does not wait for or block the writer in WAL mode).
func (l *Ledger) readTx(ctx context.Context) (*sql.Tx, error) {
	opts := &sql.TxOptions{ReadOnly: true}
	if l.d == postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	return l.db.BeginTx(ctx, opts)
}

// seriesName is what a series id stands for.
type seriesName struct{ node, tenant, meter string }

// seriesNames reads the names of series; where (with args) narrows them.
func (l *Ledger) seriesNames(ctx context.Context, q queryer, where string, args ...any) (map[int64]seriesName, error) {
	rows, err := q.QueryContext(ctx, l.d.rebind(`SELECT id, node, tenant, meter FROM series `+where), args...)
	if err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	defer rows.Close()
	m := map[int64]seriesName{}
	for rows.Next() {
		var id int64
		var n seriesName
		if err := rows.Scan(&id, &n.node, &n.tenant, &n.meter); err != nil {
			return nil, fmt.Errorf("read series: %w", err)
		}
		m[id] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read series: %w", err)
	}
	return m, nil
}

// fillNodeState is the data step of schema version 4: each node's
// checkpoints and open lines, until then one checkpoints and one series
// row per series, become its node_state row.
func fillNodeState(ctx context.Context, tx *sql.Tx, d dialect) error {
	rows, err := tx.QueryContext(ctx, `SELECT s.node, s.id, COALESCE(c.last_seq, 0), COALESCE(c.last_counter, 0), COALESCE(c.last_end_us, 0),
		s.line_period, s.line_currency, s.line_plugin_sha256, s.line_late, COALESCE(c.line_quantity, 0), COALESCE(c.line_amount_micro, 0)
		FROM series s LEFT JOIN checkpoints c ON c.series_id = s.id ORDER BY s.node, s.id`)
	if err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	type state struct {
		node   string
		series []seriesState
	}
	var states []state
	var keys []lineKey
	ids := map[lineKey]uint32{}
	for rows.Next() {
		var node string
		var s seriesState
		var seq, counter int64
		var k lineKey
		var late int
		if err := rows.Scan(&node, &s.sid, &seq, &counter, &s.endUS, &k.period, &k.currency, &k.plugin, &late, &s.qty, &s.amountSum); err != nil {
			return fmt.Errorf("read checkpoints: %w", err)
		}
		s.seq, s.counter, s.line = uint64(seq), uint64(counter), noLine
		if k.period != "" {
			k.late = late == 1
			id, ok := ids[k]
			if !ok {
				id = uint32(len(keys))
				keys = append(keys, k)
				ids[k] = id
			}
			s.line = id
		}
		if len(states) == 0 || states[len(states)-1].node != node {
			states = append(states, state{node: node})
		}
		st := &states[len(states)-1]
		st.series = append(st.series, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}
	rows.Close()
	for _, st := range states {
		data, err := encodeState(nil, st.series, nil, keys)
		if err != nil {
			return fmt.Errorf("node %s: %w", st.node, err)
		}
		if _, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO node_state (node, commit_seq, data) VALUES (?, 0, ?)`), st.node, data); err != nil {
			return fmt.Errorf("write state of node %s: %w", st.node, err)
		}
	}
	return nil
}

// closedLine is an open usage line a commit closes: it goes to
// usage_lines.
type closedLine struct {
	tenant, meter string
	key           lineKey
	qty, amount   int64
}

// nextState checks each window against its series' checkpoint in st and
// returns the node's state after the commit, and the open lines the
// commit closes (a new month, another plugin, late usage: once a month
// per series). bySid orders ws by series id; keys[i] is window i's line
// key id, table resolves it. charged are the commit's charges, in tenant
// and currency order, one per pair: they are added to the node's.
func nextState(st *nodeState, ws []Window, sids []int64, bySid []int32, keys []uint32, table []lineKey, charged []charge) (*nodeState, []closedLine, error) {
	old := st.series
	// Usually every window's series is in the state already: room for a
	// few new ones, not for len(ws) more (a large allocation is zeroed).
	n := len(old) + len(ws)
	if len(old) >= len(ws) {
		n = len(old) + 64
	}
	next := make([]seriesState, 0, n)
	var closing []closedLine
	i := 0
	for _, wi := range bySid {
		w := &ws[wi]
		sid := sids[wi]
		for i < len(old) && old[i].sid < sid {
			next = append(next, old[i])
			i++
		}
		s := seriesState{sid: sid, line: noLine}
		if i < len(old) && old[i].sid == sid {
			s = old[i]
			i++
		}
		if w.PrevSeq != s.seq {
			// The window's seq is above PrevSeq, so above the series'
			// last window whenever this holds: (node, tenant, meter, seq)
			// is never billed twice.
			return nil, nil, fmt.Errorf("%w: series %s/%s/%s is at window %d, not at the window's starting checkpoint %d (another writer with node id %s?)",
				ErrDuplicateWindow, w.Node, w.Tenant, w.Meter, s.seq, w.PrevSeq, w.Node)
		}
		q, a := int64(w.Quantity), w.Charge.AmountMicro
		if s.line == keys[wi] {
			s.qty += q
			s.amountSum += a
		} else {
			if s.line != noLine {
				closing = append(closing, closedLine{tenant: w.Tenant, meter: w.Meter, key: table[s.line], qty: s.qty, amount: s.amountSum})
			}
			s.line, s.qty, s.amountSum = keys[wi], q, a
		}
		s.seq, s.counter, s.endUS = w.Seq, w.ToCounter, w.End.UnixMicro()
		next = append(next, s)
	}
	next = append(next, old[i:]...)
	// The charges: a merge of two sorted lists.
	cs := make([]charge, 0, len(st.charges)+16)
	j := 0
	for _, c := range charged {
		for j < len(st.charges) && compareCharges(st.charges[j], c) < 0 {
			cs = append(cs, st.charges[j])
			j++
		}
		if j < len(st.charges) && compareCharges(st.charges[j], c) == 0 {
			if a := st.charges[j].amount; a > math.MaxInt64-c.amount {
				return nil, nil, fmt.Errorf("charges of tenant %s in %s on node %s overflow int64", c.tenant, c.currency, ws[0].Node)
			}
			c.amount += st.charges[j].amount
			j++
		}
		cs = append(cs, c)
	}
	cs = append(cs, st.charges[j:]...)
	return &nodeState{exists: true, commitSeq: st.commitSeq + 1, series: next, charges: cs}, closing, nil
}

// closeLines adds closed lines to usage_lines, in key order, so that
// concurrent writers on PostgreSQL lock rows in the same order.
func (l *Ledger) closeLines(ctx context.Context, tx *sql.Tx, ls []closedLine) error {
	if len(ls) == 0 {
		return nil
	}
	slices.SortFunc(ls, func(a, b closedLine) int {
		return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.key.period, b.key.period),
			strings.Compare(a.meter, b.meter), strings.Compare(a.key.currency, b.key.currency),
			strings.Compare(a.key.plugin, b.key.plugin), cmp.Compare(b2i(a.key.late), b2i(b.key.late)))
	})
	if l.d == postgres && len(ls) >= 64 {
		// The month's first commit closes a line per series: arrays, not
		// 60,000 rows of eight boxed values, and the few line keys once
		// (60,000 copies of a 64-character plugin hash took pgx 0.3 s to
		// encode).
		n := len(ls)
		tenant, meter := make([]string, n), make([]string, n)
		key, qty, amount := make([]int64, n), make([]int64, n), make([]int64, n)
		index := map[lineKey]int64{}
		var period, currency, plugin []string
		var late []int64
		for i, c := range ls {
			k, ok := index[c.key]
			if !ok {
				k = int64(len(period)) + 1
				index[c.key] = k
				period, currency, plugin = append(period, c.key.period), append(currency, c.key.currency), append(plugin, c.key.plugin)
				late = append(late, int64(b2i(c.key.late)))
			}
			tenant[i], meter[i], key[i], qty[i], amount[i] = c.tenant, c.meter, k, c.qty, c.amount
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO usage_lines (`+strings.Join(rollupCols, ", ")+`)
			SELECT v.tenant, k.period, v.meter, k.currency, k.plugin, k.late, v.q, v.a
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS v(tenant, meter, key, q, a)
			JOIN unnest($6::text[], $7::text[], $8::text[], $9::bigint[]) WITH ORDINALITY AS k(period, currency, plugin, late, i) ON k.i = v.key
			ORDER BY v.tenant, k.period, v.meter, k.currency, k.plugin, k.late`+rollupUpsert,
			tenant, meter, key, qty, amount, period, currency, plugin, late); err != nil {
			return fmt.Errorf("close usage lines: %w", err)
		}
		return nil
	}
	rows := make([][]any, len(ls))
	for i, c := range ls {
		rows[i] = []any{c.tenant, c.key.period, c.meter, c.key.currency, c.key.plugin, int64(b2i(c.key.late)), c.qty, c.amount}
	}
	if err := l.d.bulkInsert(ctx, tx, "usage_lines", rollupCols,
		[]string{"text", "text", "text", "text", "text", "bigint", "bigint", "bigint"}, rows, rollupUpsert); err != nil {
		return fmt.Errorf("close usage lines: %w", err)
	}
	return nil
}

// writeCommit stores the commit's windows as one window_commits row and
// replaces the node's state with next, with a compare-and-swap on the
// commit_seq st was read at. ids are the commit's entry ids, entryOf[i]
// window i's index in them, entries the entries themselves (in ids'
// order; sorted here).
func (l *Ledger) writeCommit(ctx context.Context, tx *sql.Tx, st, next *nodeState, ws []Window, sids []int64, bySid []int32, ids []int64, entryOf []int32, entries []commitEntry) error {
	node := ws[0].Node
	window := func(j int) packedWindow {
		wi := bySid[j]
		w := &ws[wi]
		return packedWindow{sid: sids[wi], seq: w.Seq, prev: w.PrevSeq, from: w.FromCounter, to: w.ToCounter, qty: w.Quantity,
			rebased: w.Rebased, startUS: w.Start.UnixMicro(), endUS: w.End.UnixMicro(), amount: w.Charge.AmountMicro,
			vendor: w.Charge.VendorMicro, entry: ids[entryOf[wi]]}
	}
	slices.SortFunc(entries, func(a, b commitEntry) int { return cmp.Compare(a.id, b.id) })
	// The blobs (about 1 MB each at 70,000 series) are built in reused
	// buffers: fresh ones cost page faults and zeroing every commit.
	l.mu.Lock()
	bufs := l.blobBufs
	l.blobBufs = nil
	l.mu.Unlock()
	if bufs == nil {
		bufs = new([2][]byte)
	}
	defer func() {
		l.mu.Lock()
		l.blobBufs = bufs
		l.mu.Unlock()
	}()
	blob, err := appendCommit(bufs[0][:0], len(ws), window, entries)
	if err != nil {
		return err
	}
	bufs[0] = blob
	state, err := encodeState(bufs[1][:0], next.series, next.charges, l.lineKeyTable())
	if err != nil {
		return err
	}
	bufs[1] = state
	if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO window_commits (node, commit_seq, first_entry, last_entry, windows, created_us, data)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), node, next.commitSeq, entries[0].id, entries[len(entries)-1].id, len(ws), l.now().UnixMicro(), blob); err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("%w: commit %d of node %s exists (another writer with node id %s?)", ErrDuplicateWindow, next.commitSeq, node, node)
		}
		return fmt.Errorf("insert window commit: %w", err)
	}
	if !st.exists {
		if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO node_state (node, commit_seq, data) VALUES (?, ?, ?)`), node, next.commitSeq, state); err != nil {
			if l.d.isUnique(err) {
				return fmt.Errorf("%w: node %s was billed meanwhile (another writer with node id %s?)", ErrDuplicateWindow, node, node)
			}
			return fmt.Errorf("write state of node %s: %w", node, err)
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, l.d.rebind(`UPDATE node_state SET commit_seq = ?, data = ? WHERE node = ? AND commit_seq = ?`),
		next.commitSeq, state, node, st.commitSeq)
	if err != nil {
		return fmt.Errorf("write state of node %s: %w", node, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("write state of node %s: %w", node, err)
	} else if n != 1 {
		return fmt.Errorf("%w: node %s moved on from commit %d (another writer with node id %s?)", ErrDuplicateWindow, node, st.commitSeq, node)
	}
	return nil
}
