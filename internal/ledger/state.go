package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// nodeState is a node's node_state row: every series' checkpoint and
// open usage line (see schema version 4), kept encoded, and its tenant
// charges decoded. It is never changed once made: a commit streams the
// next one from it, so a cached state can be shared by readers of its
// charges.
type nodeState struct {
	// exists is false before the node's first commit (no row yet).
	exists    bool
	commitSeq int64
	// blob is the row's data. Once a cached state is replaced, its blob
	// is the next commit's buffer: other readers of a cached blob hold
	// the ledger's mutex and check it is still cached (see loadSeries).
	blob []byte
	// owned is set when blob was read for this state alone, not cached.
	owned bool
	// charges are the node's packed usage charges per tenant and
	// currency, in that order (see charge).
	charges []charge
}

// findSeries returns the state of series sid in ss (ascending ids), if
// it is there.
func findSeries(ss []seriesState, sid int64) (*seriesState, bool) {
	i, ok := slices.BinarySearchFunc(ss, sid, func(x seriesState, id int64) int { return cmp.Compare(x.sid, id) })
	if !ok {
		return nil, false
	}
	return &ss[i], true
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
	var sr stateReader
	err = sr.begin(data, l.lineID)
	var cs []charge
	if err == nil {
		cs, err = sr.charges()
	}
	if err != nil {
		return nil, fmt.Errorf("state of node %s: %w", node, err)
	}
	return &nodeState{exists: true, commitSeq: seq, blob: data, owned: true, charges: cs}, nil
}

// loadSeries reads the checkpoints and open lines of node's series in q,
// in ascending id order (none before the node's first commit), from the
// cached state while its commit_seq is the stored one (as loadState).
func (l *Ledger) loadSeries(ctx context.Context, q queryer, node string) ([]seriesState, error) {
	var seq int64
	err := q.QueryRowContext(ctx, l.d.rebind(`SELECT commit_seq FROM node_state WHERE node = ?`), node).Scan(&seq)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of node %s: %w", node, err)
	}
	// The cached blob is decoded under the mutex: once replaced it is the
	// next commit's buffer (see Ledger.Commit).
	l.mu.Lock()
	if c := l.states[node]; c != nil && c.commitSeq == seq {
		ss, _, err := decodeState(node, c.blob, l.lineIDLocked)
		l.mu.Unlock()
		return ss, err
	}
	l.mu.Unlock()
	var data []byte
	if err := q.QueryRowContext(ctx, l.d.rebind(`SELECT data FROM node_state WHERE node = ?`), node).Scan(&data); err != nil {
		return nil, fmt.Errorf("read state of node %s: %w", node, err)
	}
	ss, _, err := decodeState(node, data, l.lineID)
	return ss, err
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

// writeCommit stores a commit's windows (blob, n of them, billed to
// entries firstEntry..lastEntry) as one window_commits row and replaces
// the node's state st with next, with a compare-and-swap on the
// commit_seq st was read at.
func (l *Ledger) writeCommit(ctx context.Context, tx *sql.Tx, node string, st, next *nodeState, n int, firstEntry, lastEntry int64, blob []byte) error {
	if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO window_commits (node, commit_seq, first_entry, last_entry, windows, created_us, data)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), node, next.commitSeq, firstEntry, lastEntry, n, l.now().UnixMicro(), blob); err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("%w: commit %d of node %s exists (another writer with node id %s?)", ErrDuplicateWindow, next.commitSeq, node, node)
		}
		return fmt.Errorf("insert window commit: %w", err)
	}
	if !st.exists {
		if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO node_state (node, commit_seq, data) VALUES (?, ?, ?)`), node, next.commitSeq, next.blob); err != nil {
			if l.d.isUnique(err) {
				return fmt.Errorf("%w: node %s was billed meanwhile (another writer with node id %s?)", ErrDuplicateWindow, node, node)
			}
			return fmt.Errorf("write state of node %s: %w", node, err)
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, l.d.rebind(`UPDATE node_state SET commit_seq = ?, data = ? WHERE node = ? AND commit_seq = ?`),
		next.commitSeq, next.blob, node, st.commitSeq)
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
