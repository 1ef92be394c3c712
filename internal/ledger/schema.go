package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migration is one versioned schema step. Steps are append-only: a
// released step is never edited, a change is a new step.
type migration struct {
	version  int
	sqlite   []string
	postgres []string
}

// tables is the part of version 1 both databases share; types are spelled
// so that SQLite (type affinity) and PostgreSQL read them the same way.
// Booleans are SMALLINT 0/1 so that scans are identical on both.
var tables = []string{
	`CREATE TABLE tenants (
		name TEXT PRIMARY KEY,
		account_type TEXT NOT NULL DEFAULT 'prepaid' CHECK (account_type IN ('prepaid', 'postpaid')),
		low_balance_micro BIGINT NOT NULL DEFAULT 0,
		created_us BIGINT NOT NULL
	)`,
	// entries is the journal. A usage entry is one billed window of one
	// (node, tenant, meter); its (node, tenant, meter, seq) is the
	// idempotency key, unique for ever, and to_counter is the checkpoint.
	`CREATE TABLE entries (
		id BIGINT PRIMARY KEY,
		kind TEXT NOT NULL CHECK (kind IN ('usage', 'topup', 'reversal')),
		tenant TEXT NOT NULL,
		currency TEXT NOT NULL,
		amount_micro BIGINT NOT NULL,
		period TEXT NOT NULL,
		late SMALLINT NOT NULL DEFAULT 0,
		created_us BIGINT NOT NULL,
		node TEXT,
		meter TEXT,
		seq BIGINT,
		quantity BIGINT,
		from_counter BIGINT,
		to_counter BIGINT,
		rebased SMALLINT NOT NULL DEFAULT 0,
		start_us BIGINT,
		end_us BIGINT,
		plugin_sha256 TEXT,
		idem_key TEXT UNIQUE,
		body_sha256 TEXT,
		balance_after_micro BIGINT,
		memo TEXT,
		reverses BIGINT UNIQUE REFERENCES entries (id)
	)`,
	`CREATE UNIQUE INDEX entries_window ON entries (node, tenant, meter, seq) WHERE kind = 'usage'`,
	`CREATE INDEX entries_tenant_period ON entries (tenant, period)`,
	// postings: credit positive, debit negative; each entry's postings
	// sum to zero.
	`CREATE TABLE postings (
		entry_id BIGINT NOT NULL REFERENCES entries (id),
		account TEXT NOT NULL,
		currency TEXT NOT NULL,
		amount_micro BIGINT NOT NULL
	)`,
	`CREATE INDEX postings_entry ON postings (entry_id)`,
	// balances is derived from postings (ledger verify recomputes it); it
	// is kept so that reads and scrapes do not sum the whole journal.
	`CREATE TABLE balances (
		account TEXT NOT NULL,
		currency TEXT NOT NULL,
		balance_micro BIGINT NOT NULL,
		charged_micro BIGINT NOT NULL,
		PRIMARY KEY (account, currency)
	)`,
	`CREATE TABLE periods (
		period TEXT PRIMARY KEY,
		closed_us BIGINT NOT NULL
	)`,
}

var migrations = []migration{
	{
		version: 1,
		sqlite: append(append([]string{}, tables...),
			`CREATE TRIGGER entries_immutable_update BEFORE UPDATE ON entries
			BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER entries_immutable_delete BEFORE DELETE ON entries
			BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER postings_immutable_update BEFORE UPDATE ON postings
			BEGIN SELECT RAISE(ABORT, 'ledger postings are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER postings_immutable_delete BEFORE DELETE ON postings
			BEGIN SELECT RAISE(ABORT, 'ledger postings are immutable: add a reversal entry instead'); END`,
		),
		postgres: append(append([]string{`CREATE SEQUENCE entries_id_seq`}, tables...),
			`CREATE FUNCTION kmeter_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				RAISE EXCEPTION 'ledger % are immutable: add a reversal entry instead', TG_TABLE_NAME;
			END $$`,
			`CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
		),
	},
}

// SchemaVersion is the newest schema version this build knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate brings the schema to [SchemaVersion] in one transaction per
// step. Agents on many nodes may start at once against one PostgreSQL
// ledger; an advisory lock makes them take turns.
func migrate(ctx context.Context, db *sql.DB, d dialect) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback()
	if d == postgres {
		// Keep the key stable: every kmeter version must use the same one.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(5713020401)`); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		applied_us BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > SchemaVersion() {
		return fmt.Errorf("ledger schema version %d is newer than this kmeter knows (%d): upgrade kmeter", current, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		stmts := m.sqlite
		if d == postgres {
			stmts = m.postgres
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("migrate ledger schema to version %d: %w", m.version, err)
			}
		}
		if _, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO schema_migrations (version, applied_us) VALUES (?, ?)`),
			m.version, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("record schema version %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}
