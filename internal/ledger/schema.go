package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// migration is one versioned schema step. Steps are append-only: a
// released step is never edited, a change is a new step.
type migration struct {
	version  int
	sqlite   []string
	postgres []string
	// fill, when set, runs after the statements: data a statement cannot
	// compute (packed blobs). Then after runs, on either database.
	fill  func(ctx context.Context, tx *sql.Tx, d dialect) error
	after []string
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
	// entries is the journal: one entry per top-up, per reversal, and per
	// (window commit, tenant, currency, period, plugin) for usage. Its
	// postings sum to zero.
	`CREATE TABLE entries (
		id {{id}},
		kind TEXT NOT NULL CHECK (kind IN ('usage', 'topup', 'reversal')),
		tenant TEXT NOT NULL,
		currency TEXT NOT NULL,
		amount_micro BIGINT NOT NULL,
		period TEXT NOT NULL,
		late SMALLINT NOT NULL DEFAULT 0,
		created_us BIGINT NOT NULL,
		node TEXT,
		plugin_sha256 TEXT,
		idem_key TEXT,
		body_sha256 TEXT,
		balance_after_micro BIGINT,
		memo TEXT,
		reverses BIGINT REFERENCES entries (id)
	)`,
	// Partial indexes: usage entries, the bulk of the journal, carry
	// neither an idempotency key nor a reversal, so they cost no index
	// entries here.
	`CREATE UNIQUE INDEX entries_idem_key ON entries (idem_key) WHERE idem_key IS NOT NULL`,
	`CREATE UNIQUE INDEX entries_reverses ON entries (reverses) WHERE reverses IS NOT NULL`,
	`CREATE INDEX entries_tenant_period ON entries (tenant, period)`,
	// series names each (node, tenant, meter) once, so that usage rows
	// carry a small integer instead of three strings, and holds its
	// checkpoint: the last window's seq, end counter and end time. A
	// commit moves it with a compare-and-swap on last_seq, so no two
	// windows can start from the same checkpoint. The names never change.
	`CREATE TABLE series (
		id {{serial}},
		node TEXT NOT NULL,
		tenant TEXT NOT NULL,
		meter TEXT NOT NULL,
		last_seq BIGINT NOT NULL DEFAULT 0,
		last_counter BIGINT NOT NULL DEFAULT 0,
		last_end_us BIGINT NOT NULL DEFAULT 0,
		UNIQUE (node, tenant, meter)
	){{fillfactor}}`,
	// usage holds the billed windows, the line items of usage entries.
	// seq is the node's window number, the same for every series billed
	// in one commit and growing, so (seq, series_id) - that is (node,
	// tenant, meter, window) - the idempotency key, unique for ever, only
	// grows at its end, as do the rows and the entry_id index. (Keyed by
	// series first, every commit would touch a page per series.)
	// prev_seq links a window to the one before it; ledger verify walks
	// the links. Period, currency and plugin are the entry's. No foreign
	// keys, as for postings: ledger verify reports orphans.
	`CREATE TABLE usage (
		series_id BIGINT NOT NULL,
		seq BIGINT NOT NULL,
		prev_seq BIGINT NOT NULL,
		entry_id BIGINT NOT NULL,
		amount_micro BIGINT NOT NULL,
		vendor_micro BIGINT NOT NULL,
		quantity BIGINT NOT NULL,
		from_counter BIGINT NOT NULL,
		to_counter BIGINT NOT NULL,
		rebased SMALLINT NOT NULL,
		start_us BIGINT NOT NULL,
		end_us BIGINT NOT NULL
	)`,
	`CREATE UNIQUE INDEX usage_window ON usage (seq, series_id)`,
	`CREATE INDEX usage_entry ON usage (entry_id)`,
	`CREATE VIEW usage_v AS SELECT s.node, s.tenant, s.meter, u.* FROM usage u JOIN series s ON s.id = u.series_id`,
	// postings: credit positive, debit negative; each entry's postings
	// sum to zero. entry_id has no foreign key: a per-row check would
	// double the cost of a window commit, postings are only written in the
	// transaction of their entry, and ledger verify reports orphans.
	`CREATE TABLE postings (
		entry_id BIGINT NOT NULL,
		account TEXT NOT NULL,
		currency TEXT NOT NULL,
		amount_micro BIGINT NOT NULL,
		PRIMARY KEY (entry_id, account, currency)
	){{without_rowid}}`,
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

// forDialect fills the few spellings that differ: in SQLite only
// "INTEGER PRIMARY KEY" is the rowid itself, and WITHOUT ROWID stores
// postings in their primary-key b-tree alone - one b-tree insert per row
// instead of two.
func forDialect(stmts []string, d dialect) []string {
	r := strings.NewReplacer("{{id}}", "INTEGER PRIMARY KEY", "{{serial}}", "INTEGER PRIMARY KEY", "{{without_rowid}}", " WITHOUT ROWID",
		"{{fillfactor}}", "", "{{blob}}", "BLOB")
	if d == postgres {
		// Byte order (COLLATE "C"), as in SQLite: the same sort order on
		// both stores, and b-tree inserts without locale-aware compares,
		// which made a 60,000-window commit several times slower.
		r = strings.NewReplacer("{{id}}", "BIGINT PRIMARY KEY", "{{serial}}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
			"{{without_rowid}}", "", " TEXT ", ` TEXT COLLATE "C" `,
			// Room on each page for HOT updates of the checkpoint columns.
			"{{fillfactor}}", " WITH (fillfactor = 50)", "{{blob}}", "BYTEA")
	}
	out := make([]string, len(stmts))
	for i, s := range stmts {
		out[i] = r.Replace(s)
	}
	return out
}

var migrations = []migration{
	{
		version: 1,
		sqlite: append(forDialect(tables, sqliteDialect),
			`CREATE TRIGGER entries_immutable_update BEFORE UPDATE ON entries
			BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER entries_immutable_delete BEFORE DELETE ON entries
			BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER postings_immutable_update BEFORE UPDATE ON postings
			BEGIN SELECT RAISE(ABORT, 'ledger postings are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER postings_immutable_delete BEFORE DELETE ON postings
			BEGIN SELECT RAISE(ABORT, 'ledger postings are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER series_immutable_update BEFORE UPDATE OF id, node, tenant, meter ON series
			BEGIN SELECT RAISE(ABORT, 'ledger series are immutable'); END`,
			`CREATE TRIGGER series_immutable_delete BEFORE DELETE ON series
			BEGIN SELECT RAISE(ABORT, 'ledger series are immutable'); END`,
			`CREATE TRIGGER usage_immutable_update BEFORE UPDATE ON usage
			BEGIN SELECT RAISE(ABORT, 'ledger usage is immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER usage_immutable_delete BEFORE DELETE ON usage
			BEGIN SELECT RAISE(ABORT, 'ledger usage is immutable: add a reversal entry instead'); END`,
		),
		postgres: append(append([]string{`CREATE SEQUENCE entries_id_seq`}, forDialect(tables, postgres)...),
			`CREATE FUNCTION kmeter_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				RAISE EXCEPTION 'ledger % are immutable: add a reversal entry instead', TG_TABLE_NAME;
			END $$`,
			`CREATE TRIGGER entries_immutable BEFORE UPDATE OR DELETE ON entries
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER series_immutable BEFORE UPDATE OF id, node, tenant, meter OR DELETE ON series
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER usage_immutable BEFORE UPDATE OR DELETE ON usage
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER series_no_truncate BEFORE TRUNCATE ON series
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON usage
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
		),
	},
	{version: 2, sqlite: forDialect(rollup, sqliteDialect), postgres: forDialect(rollup, postgres)},
	{version: 3, sqlite: slices.Concat(forDialect(windowEntriesCommon, sqliteDialect), usageByWindowSQLite,
		forDialect(hotCheckpoints, sqliteDialect), []string{
			`CREATE TRIGGER checkpoints_immutable_update BEFORE UPDATE OF series_id ON checkpoints
			BEGIN SELECT RAISE(ABORT, 'ledger checkpoints belong to their series: series_id is immutable'); END`,
			`CREATE TRIGGER checkpoints_immutable_delete BEFORE DELETE ON checkpoints
			BEGIN SELECT RAISE(ABORT, 'ledger series are immutable'); END`,
		}),
		postgres: slices.Concat(forDialect(windowEntriesCommon, postgres), usageByWindowPostgres,
			forDialect(hotCheckpoints, postgres), []string{
				`CREATE TRIGGER checkpoints_immutable BEFORE UPDATE OF series_id OR DELETE ON checkpoints
				FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
				`CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
				FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			})},
	{version: 4,
		sqlite: append(forDialect(packed, sqliteDialect),
			`CREATE TRIGGER window_commits_immutable_update BEFORE UPDATE ON window_commits
			BEGIN SELECT RAISE(ABORT, 'ledger window commits are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER window_commits_immutable_delete BEFORE DELETE ON window_commits
			BEGIN SELECT RAISE(ABORT, 'ledger window commits are immutable: add a reversal entry instead'); END`,
			`CREATE TRIGGER node_state_immutable_delete BEFORE DELETE ON node_state
			BEGIN SELECT RAISE(ABORT, 'ledger node state is immutable: it holds the checkpoints'); END`,
		),
		postgres: append(forDialect(packed, postgres),
			`CREATE TRIGGER window_commits_immutable BEFORE UPDATE OR DELETE ON window_commits
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER window_commits_no_truncate BEFORE TRUNCATE ON window_commits
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER node_state_immutable BEFORE DELETE ON node_state
			FOR EACH ROW EXECUTE FUNCTION kmeter_immutable()`,
			`CREATE TRIGGER node_state_no_truncate BEFORE TRUNCATE ON node_state
			FOR EACH STATEMENT EXECUTE FUNCTION kmeter_immutable()`,
		),
		fill:  fillNodeState,
		after: packedDrops,
	},
}

// Version 4 packs what a window commit writes per series into two rows
// per commit (docs/ledger.md has the blob formats). At 70,000 series a
// commit wrote about 130,000 usage and checkpoint rows, and SQLite costs
// about 1 us per row bound and stepped, whatever the row holds: 200 ms of
// CPU per 5 s window, where the agent's budget is 100 ms for everything.
//
// window_commits holds each commit's windows as one immutable blob: the
// usage rows. (node, commit_seq) numbers a node's commits 1, 2, 3, ...;
// first_entry..last_entry are the ids of the commit's usage entries (a
// node's commits run one after another, so their ranges do not overlap
// within the node): Reverse finds an entry's windows through
// window_commits_entries. windows counts them, for ledger verify's report.
//
// node_state holds, per node, every series' checkpoint (last seq,
// counter, end) and open usage line (line key, quantity, amount): the
// checkpoints table and the series' line columns. A commit replaces it
// with a compare-and-swap on commit_seq: a second writer with the same
// node id fails, as the per-series compare-and-swap on checkpoints made it
// fail before. Legacy usage rows stay where they are; readers and ledger
// verify read both.
var packed = []string{
	`CREATE TABLE window_commits (
		node TEXT NOT NULL,
		commit_seq BIGINT NOT NULL,
		first_entry BIGINT NOT NULL,
		last_entry BIGINT NOT NULL,
		windows BIGINT NOT NULL,
		created_us BIGINT NOT NULL,
		data {{blob}} NOT NULL,
		PRIMARY KEY (node, commit_seq)
	)`,
	`CREATE INDEX window_commits_entries ON window_commits (node, last_entry)`,
	// A packed usage entry has no row: Reverse finds its commit by id
	// alone, and SQLite's id allocation takes MAX(last_entry).
	`CREATE INDEX window_commits_last_entry ON window_commits (last_entry)`,
	`CREATE TABLE node_state (
		node TEXT PRIMARY KEY,
		commit_seq BIGINT NOT NULL,
		data {{blob}} NOT NULL
	)`,
}

// packedDrops runs after fillNodeState: what node_state replaces.
var packedDrops = []string{
	`DROP VIEW usage_lines_all`,
	`DROP TABLE checkpoints`,
	`ALTER TABLE series DROP COLUMN line_period`,
	`ALTER TABLE series DROP COLUMN line_currency`,
	`ALTER TABLE series DROP COLUMN line_plugin_sha256`,
	`ALTER TABLE series DROP COLUMN line_late`,
}

// hotCheckpoints is the rest of version 3. Every commit rewrote every
// series row - node, tenant, meter and the open line's key with its
// 64-character plugin hash, about 130 bytes - to move five integers:
// some 2,100 pages of 4 KiB per 60,000-series commit, the largest part of
// what SQLite wrote. The five now live in checkpoints, one narrow row per
// series; series keeps what changes once a month at most.
var hotCheckpoints = []string{
	`CREATE TABLE checkpoints (
		series_id {{id}},
		last_seq BIGINT NOT NULL DEFAULT 0,
		last_counter BIGINT NOT NULL DEFAULT 0,
		last_end_us BIGINT NOT NULL DEFAULT 0,
		line_quantity BIGINT NOT NULL DEFAULT 0,
		line_amount_micro BIGINT NOT NULL DEFAULT 0
	){{fillfactor}}`,
	`INSERT INTO checkpoints (series_id, last_seq, last_counter, last_end_us, line_quantity, line_amount_micro)
		SELECT id, last_seq, last_counter, last_end_us, line_quantity, line_amount_micro FROM series ORDER BY id`,
	`DROP VIEW usage_lines_all`,
	`ALTER TABLE series DROP COLUMN last_seq`,
	`ALTER TABLE series DROP COLUMN last_counter`,
	`ALTER TABLE series DROP COLUMN last_end_us`,
	`ALTER TABLE series DROP COLUMN line_quantity`,
	`ALTER TABLE series DROP COLUMN line_amount_micro`,
	`CREATE VIEW usage_lines_all AS
		SELECT tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines
		UNION ALL
		SELECT s.tenant, s.line_period, s.meter, s.line_currency, s.line_plugin_sha256, s.line_late, c.line_quantity, c.line_amount_micro
		FROM series s JOIN checkpoints c ON c.series_id = s.id WHERE s.line_period <> ''`,
}

// Version 3 cuts the b-tree work of a window commit. Each usage row
// cost SQLite three b-tree inserts: the rowid table, the idempotency
// index usage_window (seq, series_id) and usage_entry (entry_id). Now
// SQLite stores usage in its (seq, series_id) key alone (WITHOUT
// ROWID): one insert per row, still unique for ever. Neither store keeps
// usage_entry: a usage entry records its window's seq (window_seq), so
// its rows are found inside one window - through the tenant's series, one
// key lookup each - and ledger verify checks that every usage row is in
// its entry's window.
//
// windowEntriesCommon adds and fills entries.window_seq; the
// immutability trigger is lifted for that one UPDATE (per store, below).
var windowEntriesCommon = []string{
	`ALTER TABLE entries ADD COLUMN window_seq BIGINT`,
}

// usageLinesJournal3 is usage_lines_journal of version 2, re-created
// because SQLite's usage table is re-created under it.
const usageLinesJournal3 = `CREATE VIEW usage_lines_journal AS
		SELECT e.tenant, e.period, u.meter, e.currency, COALESCE(e.plugin_sha256, '') AS plugin_sha256, e.late,
			u.quantity, u.amount_micro
		FROM entries e JOIN usage_v u ON u.entry_id = e.id
		WHERE e.kind = 'usage'
		UNION ALL
		SELECT r.tenant, r.period, u.meter, o.currency, COALESCE(o.plugin_sha256, ''), o.late, -u.quantity, -u.amount_micro
		FROM entries r JOIN entries o ON o.id = r.reverses JOIN usage_v u ON u.entry_id = o.id
		WHERE r.kind = 'reversal'`

// fillWindowSeq runs while usage_entry still exists: one lookup per entry.
const fillWindowSeq = `UPDATE entries SET window_seq = (SELECT MIN(u.seq) FROM usage u WHERE u.entry_id = entries.id)
	WHERE kind = 'usage'`

var usageByWindowSQLite = []string{
	`DROP TRIGGER entries_immutable_update`,
	fillWindowSeq,
	`CREATE TRIGGER entries_immutable_update BEFORE UPDATE ON entries
	BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: add a reversal entry instead'); END`,
	`DROP VIEW usage_lines_journal`,
	`DROP VIEW usage_v`,
	// The same columns in the same order, so that usage_v's u.* is too.
	`CREATE TABLE usage_by_window (
		series_id BIGINT NOT NULL,
		seq BIGINT NOT NULL,
		prev_seq BIGINT NOT NULL,
		entry_id BIGINT NOT NULL,
		amount_micro BIGINT NOT NULL,
		vendor_micro BIGINT NOT NULL,
		quantity BIGINT NOT NULL,
		from_counter BIGINT NOT NULL,
		to_counter BIGINT NOT NULL,
		rebased SMALLINT NOT NULL,
		start_us BIGINT NOT NULL,
		end_us BIGINT NOT NULL,
		PRIMARY KEY (seq, series_id)
	) WITHOUT ROWID`,
	`INSERT INTO usage_by_window SELECT * FROM usage ORDER BY seq, series_id`,
	// Drops usage's indexes and triggers with it.
	`DROP TABLE usage`,
	`ALTER TABLE usage_by_window RENAME TO usage`,
	`CREATE TRIGGER usage_immutable_update BEFORE UPDATE ON usage
	BEGIN SELECT RAISE(ABORT, 'ledger usage is immutable: add a reversal entry instead'); END`,
	`CREATE TRIGGER usage_immutable_delete BEFORE DELETE ON usage
	BEGIN SELECT RAISE(ABORT, 'ledger usage is immutable: add a reversal entry instead'); END`,
	`CREATE VIEW usage_v AS SELECT s.node, s.tenant, s.meter, u.* FROM usage u JOIN series s ON s.id = u.series_id`,
	usageLinesJournal3,
}

// PostgreSQL's usage stays a heap with its usage_window index: one heap
// and one index insert per row instead of one and two.
var usageByWindowPostgres = []string{
	`ALTER TABLE entries DISABLE TRIGGER entries_immutable`,
	fillWindowSeq,
	`ALTER TABLE entries ENABLE TRIGGER entries_immutable`,
	`DROP INDEX usage_entry`,
}

// rollup is version 2: invoices no longer read the journal. Its
// (tenant, period) index took one insert per tenant at a different place
// every window; once it outgrew the page cache, each commit wrote a page
// per tenant. Instead, each series row carries its open usage line: the
// quantity and amount billed since the line's (period, currency, plugin,
// late) began, added in the checkpoint's compare-and-swap, which updates
// the row anyway. When a window's line differs (a new month, another
// plugin, late usage), the commit first adds the open line to
// usage_lines, the closed lines, once per series and month, and reversals
// add their negated windows there. A tenant's invoice is its closed lines
// plus its series' open lines of the period. usage_lines_journal is what
// they must sum to, computed from the journal: the migration fills
// usage_lines from it and ledger verify compares, so both are a checked
// cache, not a second truth.
var rollup = []string{
	`CREATE TABLE usage_lines (
		tenant TEXT NOT NULL,
		period TEXT NOT NULL,
		meter TEXT NOT NULL,
		currency TEXT NOT NULL,
		plugin_sha256 TEXT NOT NULL,
		late SMALLINT NOT NULL,
		quantity BIGINT NOT NULL,
		amount_micro BIGINT NOT NULL,
		PRIMARY KEY (tenant, period, meter, currency, plugin_sha256, late)
	){{without_rowid}}`,
	// line_period is '' while a series has no open line.
	`ALTER TABLE series ADD COLUMN line_period TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE series ADD COLUMN line_currency TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE series ADD COLUMN line_plugin_sha256 TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE series ADD COLUMN line_late SMALLINT NOT NULL DEFAULT 0`,
	`ALTER TABLE series ADD COLUMN line_quantity BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE series ADD COLUMN line_amount_micro BIGINT NOT NULL DEFAULT 0`,
	// tenant never changes, so commits never touch this index.
	`CREATE INDEX series_tenant ON series (tenant)`,
	// A reversal books the negated windows of its entry in the
	// reversal's period, under the original entry's currency, plugin and
	// late flag.
	`CREATE VIEW usage_lines_journal AS
		SELECT e.tenant, e.period, u.meter, e.currency, COALESCE(e.plugin_sha256, '') AS plugin_sha256, e.late,
			u.quantity, u.amount_micro
		FROM entries e JOIN usage_v u ON u.entry_id = e.id
		WHERE e.kind = 'usage'
		UNION ALL
		SELECT r.tenant, r.period, u.meter, o.currency, COALESCE(o.plugin_sha256, ''), o.late, -u.quantity, -u.amount_micro
		FROM entries r JOIN entries o ON o.id = r.reverses JOIN usage_v u ON u.entry_id = o.id
		WHERE r.kind = 'reversal'`,
	// All lines: closed ones and the open ones on series rows.
	`CREATE VIEW usage_lines_all AS
		SELECT tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines
		UNION ALL
		SELECT tenant, line_period, meter, line_currency, line_plugin_sha256, line_late, line_quantity, line_amount_micro
		FROM series WHERE line_period <> ''`,
	// History becomes closed lines; series start without an open line.
	`INSERT INTO usage_lines (tenant, period, meter, currency, plugin_sha256, late, quantity, amount_micro)
		SELECT tenant, period, meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro)
		FROM usage_lines_journal
		GROUP BY tenant, period, meter, currency, plugin_sha256, late`,
	`DROP INDEX entries_tenant_period`,
}

// SchemaVersion is the newest schema version this build knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrateTo brings the schema to version target (normally
// [SchemaVersion]) in one transaction. Agents on many nodes may start at once against one PostgreSQL
// ledger; an advisory lock makes them take turns.
func migrateTo(ctx context.Context, db *sql.DB, d dialect, target int) error {
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
		if m.version <= current || m.version > target {
			continue
		}
		stmts := m.sqlite
		if d == postgres {
			stmts = m.postgres
		}
		exec := func(stmts []string) error {
			for _, s := range stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return err
				}
			}
			return nil
		}
		err := exec(stmts)
		if err == nil && m.fill != nil {
			err = m.fill(ctx, tx, d)
		}
		if err == nil {
			err = exec(m.after)
		}
		if err != nil {
			return fmt.Errorf("migrate ledger schema to version %d: %w", m.version, err)
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
