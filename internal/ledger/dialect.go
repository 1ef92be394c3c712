package ledger

import (
	"context"
	"database/sql"
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
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", ncols), ",") + ")"
	query := func(k int) string {
		return d.rebind(head + " VALUES " + strings.TrimSuffix(strings.Repeat(tuple+",", k), ",") + tail)
	}
	return execBatches(ctx, tx, query, ncols, rows)
}

// execBatches runs query(k) for consecutive batches of k <= maxParams/ncols
// of rows. Full batches share one prepared statement: parsing a statement
// of thousands of placeholders costs as much as running it.
func execBatches(ctx context.Context, tx *sql.Tx, query func(k int) string, ncols int, rows [][]any) error {
	per := max(1, maxParams/ncols)
	n := len(rows)
	args := make([]any, 0, min(per, n)*ncols)
	run := func(exec func(args ...any) (sql.Result, error), lo, hi int) error {
		args = args[:0]
		for _, r := range rows[lo:hi] {
			args = append(args, r...)
		}
		_, err := exec(args...)
		return err
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
