// Package ledger is kmeter's immutable double-entry ledger of usage,
// charges and top-ups. Money is int64 micro-units of a currency.
//
// Every entry's postings sum to zero: a usage charge debits the tenant's
// account and credits the platform and, for its share, the plugin's
// vendor; a top-up credits the tenant and debits the funding account.
// Entries and postings are never updated or deleted (triggers refuse it);
// a correction is a reversal entry. A window commit is two rows (schema
// version 4): its windows and usage entries packed into window_commits,
// and the node's checkpoints, open invoice lines and tenant charges into
// node_state; the entries' postings follow from them.
//
// Two stores share one schema and one set of queries: SQLite
// (modernc.org/sqlite, no cgo; WAL, synchronous=FULL) for one node, and
// PostgreSQL for fleets where many agents write to one ledger. Usage
// windows are exactly-once per (node, tenant, meter, seq) on both.
package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// DBFile is the SQLite file name inside the data directory.
const DBFile = "kmeter.db"

// Account names used in postings.
const (
	// PlatformAccount is credited with the platform's share of charges.
	PlatformAccount = "platform"
	// FundingAccount is debited by top-ups: money that came from outside.
	FundingAccount = "funding"
	tenantPrefix   = "tenant:"
	vendorPrefix   = "vendor:"
)

// TenantAccount is the account of tenant t.
func TenantAccount(t string) string { return tenantPrefix + t }

// VendorAccount is the revenue account of the vendor of the plugin with
// the given sha256: the plugin's identity is what the ledger can prove.
func VendorAccount(pluginSHA256 string) string { return vendorPrefix + pluginSHA256 }

// Errors callers match with errors.Is.
var (
	// ErrDuplicateWindow means a window with the same (node, tenant,
	// meter, seq) is already in the ledger: another writer (or an earlier
	// life of this agent) billed it. Reload checkpoints and go on.
	ErrDuplicateWindow = errors.New("usage window already committed")
	// ErrKeyReused means an idempotency key was used before with another
	// request body.
	ErrKeyReused = errors.New("idempotency key already used with a different request")
	// ErrUnknownTenant means the ledger has never seen the tenant.
	ErrUnknownTenant = errors.New("unknown tenant")
	// ErrInvalid means a request was malformed; the error says how.
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound means a ledger entry does not exist.
	ErrNotFound = errors.New("no such ledger entry")
)

// Config says which store to open. Exactly one of Path and PostgresURL is
// set; [ConfigFrom] builds it from the CLI flags.
type Config struct {
	// Path is the SQLite database file; its directory is created.
	Path string
	// PostgresURL is a postgres:// or postgresql:// connection URL.
	PostgresURL string
	// Now is the clock for entry times and periods; default time.Now.
	Now func() time.Time
}

// ConfigFrom builds a Config from --data-dir and --ledger: an empty ledger
// flag means SQLite in dataDir, otherwise it must be a PostgreSQL URL.
func ConfigFrom(dataDir, ledgerURL string) (Config, error) {
	if ledgerURL == "" {
		if dataDir == "" {
			return Config{}, errors.New("no ledger: set --data-dir (SQLite) or --ledger postgres://...")
		}
		return Config{Path: filepath.Join(dataDir, DBFile)}, nil
	}
	if !isPostgresURL(ledgerURL) {
		return Config{}, fmt.Errorf("--ledger %q is not a postgres:// URL (SQLite is the default: leave --ledger empty and set --data-dir)", redact(ledgerURL))
	}
	return Config{PostgresURL: ledgerURL}, nil
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// redact hides a password in a URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

func (c Config) validate() error {
	var errs []error
	switch {
	case c.Path == "" && c.PostgresURL == "":
		errs = append(errs, errors.New("set a SQLite path or a PostgreSQL URL"))
	case c.Path != "" && c.PostgresURL != "":
		errs = append(errs, errors.New("set a SQLite path or a PostgreSQL URL, not both"))
	}
	if c.PostgresURL != "" && !isPostgresURL(c.PostgresURL) {
		errs = append(errs, fmt.Errorf("%q is not a postgres:// URL", redact(c.PostgresURL)))
	}
	return errors.Join(errs...)
}

// Ledger is an open ledger. It is safe for concurrent use.
type Ledger struct {
	db  *sql.DB
	d   dialect
	now func() time.Time

	mu sync.Mutex
	// tables holds each node's committed series ids (see seriesTable).
	tables map[string]*seriesTable
	// states caches the state of the nodes this ledger commits windows
	// of, as of their last commit (see node_state in schema.go).
	states map[string]*nodeState
	// scratch is a commit's working memory and blob buffers, kept between
	// commits (a sync.Pool loses them at every GC); nil while a commit
	// uses it.
	scratch *commitScratch
	// lineKeys interns line keys: lineIDs[k] is k's index in lineKeys.
	// A node has a handful (a month's period per currency and plugin),
	// so the node states and each commit hold a small id per series,
	// not four fields. Append-only: an id never changes its key.
	lineKeys []lineKey
	lineIDs  map[lineKey]uint32
	closed   bool
}

// Open opens (creating if needed) the ledger and runs pending schema
// migrations.
func Open(ctx context.Context, cfg Config) (*Ledger, error) {
	return open(ctx, cfg, SchemaVersion())
}

// open opens cfg with its schema brought to version (tests build ledgers
// of earlier versions with it).
func open(ctx context.Context, cfg Config, version int) (*Ledger, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("ledger config: %w", err)
	}
	l := &Ledger{now: cfg.Now, tables: map[string]*seriesTable{},
		states: map[string]*nodeState{}, lineIDs: map[lineKey]uint32{}}
	if l.now == nil {
		l.now = time.Now
	}
	var err error
	if cfg.PostgresURL != "" {
		l.d = postgres
		l.db, err = sql.Open("pgx", cfg.PostgresURL)
	} else {
		l.d = sqliteDialect
		if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
			return nil, fmt.Errorf("create ledger directory: %w", err)
		}
		// WAL lets readers (API, scrapes) run beside the biller;
		// synchronous=FULL makes a committed window survive power loss;
		// immediate transactions take the write lock up front, so id
		// allocation and period checks inside a transaction are safe.
		// The page cache (per connection, outside the Go heap) is 4 MiB:
		// since schema version 4 a commit writes two blobs and touches
		// few other pages, and 16 MiB of cache (filled by those blobs'
		// pages, never read again) made a commit's peak RSS 17-20 MiB
		// larger for the same CPU (docs/benchmarks/ledger.md).
		if err := createSQLite(ctx, cfg.Path); err != nil {
			return nil, err
		}
		dsn := "file:" + cfg.Path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
			"&_pragma=busy_timeout(30000)&_pragma=foreign_keys(1)&_pragma=cache_size(-4096)&_txlock=immediate"
		l.db, err = sql.Open("sqlite", dsn)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s ledger: %w", l.d, err)
	}
	if err := l.db.PingContext(ctx); err != nil {
		l.db.Close()
		return nil, fmt.Errorf("connect to %s ledger: %w", l.d, err)
	}
	if err := migrateTo(ctx, l.db, l.d, version); err != nil {
		l.db.Close()
		return nil, err
	}
	return l, nil
}

// createSQLite creates the SQLite file at path, unless it exists, with
// 16 KiB pages: fewer b-tree levels and page splits per commit than the
// default 4 KiB (docs/benchmarks/ledger.md). The page size must be set
// before the file's first page is written, that is before WAL mode; the
// driver runs a DSN's pragmas in name order, journal_mode first, so the
// page_size pragma in the DSN took no effect.
func createSQLite(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // exists, or Open reports why it cannot be read
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return fmt.Errorf("create ledger %s: %w", path, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("create ledger %s: %w", path, err)
	}
	defer conn.Close()
	for _, p := range []string{`PRAGMA page_size = 16384`, `PRAGMA journal_mode = WAL`} {
		if _, err := conn.ExecContext(ctx, p); err != nil {
			return fmt.Errorf("create ledger %s: %s: %w", path, p, err)
		}
	}
	return nil
}

// Close closes the ledger. It is idempotent.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return nil
}

// Backend is "sqlite" or "postgres".
func (l *Ledger) Backend() string { return l.d.String() }

// checkCurrency accepts three upper-case ASCII letters. It runs once per
// window of a commit (70,000 per tick): a byte loop, where the regexp it
// replaced cost about 6 ms per tick.
func checkCurrency(c string) error {
	if len(c) != 3 || !isUpper(c[0]) || !isUpper(c[1]) || !isUpper(c[2]) {
		return fmt.Errorf("currency %q is not an ISO 4217 code such as USD", c)
	}
	return nil
}

func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }

var periodRE = regexp.MustCompile(`^[0-9]{4}-(0[1-9]|1[0-2])$`)

// PeriodOf is the billing period (calendar month, UTC) that t falls in,
// such as "2026-11".
func PeriodOf(t time.Time) string { return t.UTC().Format("2006-01") }

// CheckPeriod reports whether p is a period such as "2026-11".
func CheckPeriod(p string) error {
	if !periodRE.MatchString(p) {
		return fmt.Errorf("period %q is not a month such as 2026-11", p)
	}
	return nil
}

func periodStart(p string) time.Time {
	t, _ := time.Parse("2006-01", p)
	return t
}

func nextPeriod(p string) string { return PeriodOf(periodStart(p).AddDate(0, 1, 0)) }

// openPeriod returns the first period at or after p that is not closed,
// and whether that moved the entry (late usage).
func openPeriod(p string, closed map[string]bool) (string, bool) {
	late := false
	for closed[p] {
		p = nextPeriod(p)
		late = true
	}
	return p, late
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// closedPeriods reads closed periods inside tx. On PostgreSQL it first
// takes a SHARE lock on periods: writers do not block each other, but
// [Ledger.ClosePeriod] waits for them and they wait for it, so no entry
// lands in a period closed while it was being written.
func (l *Ledger) closedPeriods(ctx context.Context, tx *sql.Tx) (map[string]bool, error) {
	if l.d == postgres {
		if _, err := tx.ExecContext(ctx, `LOCK TABLE periods IN SHARE MODE`); err != nil {
			return nil, fmt.Errorf("lock periods: %w", err)
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT period FROM periods`)
	if err != nil {
		return nil, fmt.Errorf("read closed periods: %w", err)
	}
	defer rows.Close()
	closed := map[string]bool{}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("read closed periods: %w", err)
		}
		closed[p] = true
	}
	return closed, rows.Err()
}

// ClosePeriod closes period p: usage that arrives for it later is booked
// into the next open period and flagged late. Closing twice is allowed;
// a period that has not ended cannot be closed.
func (l *Ledger) ClosePeriod(ctx context.Context, p string) error {
	if err := CheckPeriod(p); err != nil {
		return err
	}
	if end := periodStart(nextPeriod(p)); l.now().Before(end) {
		return fmt.Errorf("period %s has not ended yet (it ends %s)", p, end.Format(time.RFC3339))
	}
	if _, err := l.db.ExecContext(ctx, l.d.rebind(`INSERT INTO periods (period, closed_us) VALUES (?, ?) ON CONFLICT (period) DO NOTHING`),
		p, l.now().UnixMicro()); err != nil {
		return fmt.Errorf("close period %s: %w", p, err)
	}
	return nil
}

// balanceKey is one row of the balances table.
type balanceKey struct{ account, currency string }

type balanceDelta struct{ balance, charged int64 }

// balanceUpsert adds an inserted balances row to the existing one.
const balanceUpsert = ` ON CONFLICT (account, currency) DO UPDATE SET
	balance_micro = balances.balance_micro + excluded.balance_micro,
	charged_micro = balances.charged_micro + excluded.charged_micro`

// applyBalances adds deltas to the balances table in key order, so that
// concurrent writers on PostgreSQL lock rows in the same order and never
// deadlock.
func (l *Ledger) applyBalances(ctx context.Context, tx *sql.Tx, deltas map[balanceKey]balanceDelta) error {
	keys := make([]balanceKey, 0, len(deltas))
	for k := range deltas {
		keys = append(keys, k)
	}
	sortBalanceKeys(keys)
	rows := make([][]any, 0, len(keys))
	for _, k := range keys {
		d := deltas[k]
		rows = append(rows, []any{k.account, k.currency, d.balance, d.charged})
	}
	err := l.d.bulkInsert(ctx, tx, "balances", []string{"account", "currency", "balance_micro", "charged_micro"},
		[]string{"text", "text", "bigint", "bigint"}, rows, balanceUpsert)
	if err != nil {
		return fmt.Errorf("update balances: %w", err)
	}
	return nil
}

// ensureTenants inserts the tenants names as prepaid accounts, unless
// they exist. A commit passes only the tenants of series new to the
// node, so that the tenants table is not written every window (the
// ledger keeps no set of known tenants: at 10,000 it was 0.4 MB of the
// agent's live heap).
func (l *Ledger) ensureTenants(ctx context.Context, tx *sql.Tx, names []string) error {
	if len(names) == 0 {
		return nil
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	now := l.now().UnixMicro()
	rows := make([][]any, len(names))
	for i, n := range names {
		rows[i] = []any{n, now}
	}
	if err := l.d.bulkInsert(ctx, tx, "tenants", []string{"name", "created_us"}, []string{"text", "bigint"}, rows,
		` ON CONFLICT (name) DO NOTHING`); err != nil {
		return fmt.Errorf("record tenants: %w", err)
	}
	return nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
