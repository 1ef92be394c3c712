package ledger

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is what differs between the two stores. Everything else -
// schema, queries, exactly-once rules - is shared, so both stores behave
// the same and one test suite runs against both.
type dialect int

const (
	sqliteDialect dialect = iota
	postgres
)

func (d dialect) String() string {
	if d == postgres {
		return "postgres"
	}
	return "sqlite"
}

// rebind turns ? placeholders into PostgreSQL's $1, $2, ... Queries never
// contain a literal ?.
func (d dialect) rebind(q string) string {
	if d != postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + len(q)/4)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// isUnique reports whether err is a unique-constraint violation.
func (d dialect) isUnique(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// allocIDs reserves n entry ids inside tx. SQLite write transactions are
// exclusive (BEGIN IMMEDIATE), so MAX(id)+1.. is safe there; PostgreSQL
// uses a sequence shared by every node.
func (d dialect) allocIDs(ctx context.Context, tx *sql.Tx, n int) ([]int64, error) {
	ids := make([]int64, 0, n)
	if d == postgres {
		rows, err := tx.QueryContext(ctx, `SELECT nextval('entries_id_seq') FROM generate_series(1, $1)`, n)
		if err != nil {
			return nil, fmt.Errorf("allocate entry ids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return nil, fmt.Errorf("allocate entry ids: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("allocate entry ids: %w", err)
		}
		return ids, nil
	}
	// Usage entries of window commits (schema version 4) have ids but no
	// rows: the largest id is in either table.
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(m) FROM (SELECT COALESCE(MAX(id), 0) AS m FROM entries
		UNION ALL SELECT COALESCE(MAX(last_entry), 0) FROM window_commits) x`).Scan(&last); err != nil {
		return nil, fmt.Errorf("allocate entry ids: %w", err)
	}
	for i := range n {
		ids = append(ids, last+1+int64(i))
	}
	return ids, nil
}

// bulkInsert inserts many rows of a table whose column SQL types are
// given. On PostgreSQL large batches go in as one INSERT ... SELECT FROM
// unnest(arrays): one statement and one round trip whatever the size.
// Values must not be nil on that path.
func (d dialect) bulkInsert(ctx context.Context, tx *sql.Tx, table string, cols, types []string, rows [][]any, tail string) error {
	head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ")"
	if d != postgres || len(rows) < 64 {
		return d.insertRows(ctx, tx, head, len(cols), rows, tail)
	}
	arrays := make([]any, len(cols))
	casts := make([]string, len(cols))
	for c, typ := range types {
		casts[c] = fmt.Sprintf("$%d::%s[]", c+1, typ)
		switch typ {
		case "bigint":
			a := make([]int64, len(rows))
			for i, r := range rows {
				switch v := r[c].(type) {
				case int64:
					a[i] = v
				case int:
					a[i] = int64(v)
				default:
					return fmt.Errorf("bulk insert into %s: column %s: %T is not an integer", table, cols[c], r[c])
				}
			}
			arrays[c] = a
		case "text":
			a := make([]string, len(rows))
			for i, r := range rows {
				v, ok := r[c].(string)
				if !ok {
					return fmt.Errorf("bulk insert into %s: column %s: %T is not a string", table, cols[c], r[c])
				}
				a[i] = v
			}
			arrays[c] = a
		default:
			return fmt.Errorf("bulk insert into %s: unsupported column type %s", table, typ)
		}
	}
	q := head + " SELECT * FROM unnest(" + strings.Join(casts, ", ") + ")" + tail
	_, err := tx.ExecContext(ctx, q, arrays...)
	return err
}

// maxParams bounds the bind parameters of one statement, below both
// SQLite's (32766) and PostgreSQL's (65535) limits.
const maxParams = 30000

// insertRows inserts rows with multi-row VALUES statements: one round
// trip per few hundred rows instead of one per row, which is what makes a
// window of 60,000 series commit in well under a second.
func (d dialect) insertRows(ctx context.Context, tx *sql.Tx, head string, ncols int, rows [][]any, tail string) error {
	for _, r := range rows {
		if len(r) != ncols {
			return fmt.Errorf("insert row with %d values into %d columns", len(r), ncols)
		}
	}
	return d.insertFunc(ctx, tx, head, ncols, len(rows), func(i int, dst []any) []any { return append(dst, rows[i]...) }, tail)
}

// rowFunc appends row i's values to dst and returns it. Rows are made as
// the statements need them, so a commit never holds all its rows as
// [][]any at once (70,000 usage rows were 25 MB of short-lived slices).
type rowFunc func(i int, dst []any) []any

// insertFunc is insertRows for n rows made by row.
func (d dialect) insertFunc(ctx context.Context, tx *sql.Tx, head string, ncols, n int, row rowFunc, tail string) error {
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", ncols), ",") + ")"
	query := func(k int) string {
		return d.rebind(head + " VALUES " + strings.TrimSuffix(strings.Repeat(tuple+",", k), ",") + tail)
	}
	return execBatches(ctx, tx, nil, query, nil, ncols, n, row, nil)
}

// result is what execBatches' check sees of a statement's result: both
// sql.Result and driver.Result have it.
type result interface{ RowsAffected() (int64, error) }

// driverConn is the connection a transaction runs on, for execBatches
// to run statements on below database/sql, with the bind buffers that all
// statements of the transaction reuse: a window commit's five bulk
// statements each made 1.7 MB of them anew.
type driverConn struct {
	*sql.Conn
	args []any
	nv   []driver.NamedValue
}

// execBatches runs query(k) for consecutive batches of k <= maxParams/ncols
// rows, the batch's values made by row; check, when set, inspects each
// batch's result. Full batches share one prepared statement: parsing a
// statement of thousands of placeholders costs as much as running it.
//
// shared are values every row has (a commit's window seq and end time):
// they are bound once per statement, as ?1 ... ?len(shared), which query
// must name before its first plain "?" (SQLite numbers a plain "?" after
// the largest number seen so far). Each bound value costs the SQLite
// driver a call and a mutex round trip: binding them per row was the
// largest part of a window commit's CPU.
//
// With conn (SQLite, the connection tx runs on) the statements run on the
// driver connection itself, inside tx, and bind from conn's reused
// []driver.NamedValue: through database/sql every execution converted and
// copied its 30,000 arguments into a new slice, 40 % of the bytes a
// 70,000-series window commit allocated.
func execBatches(ctx context.Context, tx *sql.Tx, conn *driverConn, query func(k int) string, shared []any, ncols, n int, row rowFunc, check func(res result, rows int) error) error {
	per := max(1, (maxParams-len(shared))/ncols)
	var args []any
	if conn != nil {
		args = conn.args[:0]
		defer func() { conn.args = args[:0] }()
	}
	if need := len(shared) + min(per, n)*ncols; cap(args) < need {
		args = make([]any, 0, need)
	}
	fill := func(lo, hi int) ([]any, error) {
		args = append(args[:0], shared...)
		for i := lo; i < hi; i++ {
			args = row(i, args)
		}
		if len(args) != len(shared)+(hi-lo)*ncols {
			return nil, fmt.Errorf("%d rows with %d values for %d columns", hi-lo, len(args)-len(shared), ncols)
		}
		return args, nil
	}
	if conn != nil {
		return conn.Raw(func(dc any) error {
			return execDriver(ctx, dc, conn, query, ncols, per, n, fill, check)
		})
	}
	run := func(exec func(args ...any) (sql.Result, error), lo, hi int) error {
		a, err := fill(lo, hi)
		if err != nil {
			return err
		}
		res, err := exec(a...)
		if err != nil {
			return err
		}
		if check != nil {
			return check(res, hi-lo)
		}
		return nil
	}
	full := n / per
	if full > 0 {
		stmt, err := tx.PrepareContext(ctx, query(per))
		if err != nil {
			return err
		}
		defer stmt.Close()
		exec := func(a ...any) (sql.Result, error) { return stmt.ExecContext(ctx, a...) }
		for b := range full {
			if err := run(exec, b*per, (b+1)*per); err != nil {
				return err
			}
		}
	}
	if rest := n - full*per; rest > 0 {
		q := query(rest)
		return run(func(a ...any) (sql.Result, error) { return tx.ExecContext(ctx, q, a...) }, full*per, n)
	}
	return nil
}

// execDriver is execBatches on a driver connection; buf holds the
// reused []driver.NamedValue.
func execDriver(ctx context.Context, dc any, buf *driverConn, query func(k int) string, ncols, per, n int, fill func(lo, hi int) ([]any, error), check func(res result, rows int) error) error {
	pc, ok := dc.(driver.ConnPrepareContext)
	if !ok {
		return fmt.Errorf("driver connection %T cannot prepare statements", dc)
	}
	nv := buf.nv[:0]
	defer func() { buf.nv = nv[:0] }()
	run := func(stmt driver.Stmt, lo, hi int) error {
		ec, ok := stmt.(driver.StmtExecContext)
		if !ok {
			return fmt.Errorf("driver statement %T cannot execute with a context", stmt)
		}
		a, err := fill(lo, hi)
		if err != nil {
			return err
		}
		nv = nv[:0]
		if cap(nv) < len(a) {
			// Sized at once: growing by append made 5 times its size.
			nv = make([]driver.NamedValue, 0, len(a))
		}
		for i, v := range a {
			// database/sql would turn an int into an int64; the
			// ledger passes no other non-driver type.
			if x, ok := v.(int); ok {
				v = int64(x)
			}
			nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: v})
		}
		res, err := ec.ExecContext(ctx, nv)
		if err != nil {
			return err
		}
		if check != nil {
			return check(res, hi-lo)
		}
		return nil
	}
	prepare := func(k int) (driver.Stmt, error) { return pc.PrepareContext(ctx, query(k)) }
	full := n / per
	if full > 0 {
		stmt, err := prepare(per)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for b := range full {
			if err := run(stmt, b*per, (b+1)*per); err != nil {
				return err
			}
		}
	}
	if rest := n - full*per; rest > 0 {
		stmt, err := prepare(rest)
		if err != nil {
			return err
		}
		defer stmt.Close()
		return run(stmt, full*per, n)
	}
	return nil
}
