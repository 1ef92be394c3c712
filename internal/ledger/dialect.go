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
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM entries`).Scan(&last); err != nil {
		return nil, fmt.Errorf("allocate entry ids: %w", err)
	}
	for i := range n {
		ids = append(ids, last+1+int64(i))
	}
	return ids, nil
}

// maxParams bounds the bind parameters of one statement, below both
// SQLite's (32766) and PostgreSQL's (65535) limits.
const maxParams = 30000

// insertRows inserts rows with multi-row VALUES statements: one round
// trip per few hundred rows instead of one per row, which is what makes a
// window of 60,000 series commit in well under a second.
func (d dialect) insertRows(ctx context.Context, tx *sql.Tx, head string, ncols int, rows [][]any, tail string) error {
	per := max(1, maxParams/ncols)
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", ncols), ",") + ")"
	for start := 0; start < len(rows); start += per {
		end := min(start+per, len(rows))
		var b strings.Builder
		b.WriteString(head)
		b.WriteString(" VALUES ")
		args := make([]any, 0, (end-start)*ncols)
		for i, r := range rows[start:end] {
			if len(r) != ncols {
				return fmt.Errorf("insert row with %d values into %d columns", len(r), ncols)
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(tuple)
			args = append(args, r...)
		}
		b.WriteString(tail)
		if _, err := tx.ExecContext(ctx, d.rebind(b.String()), args...); err != nil {
			return err
		}
	}
	return nil
}
