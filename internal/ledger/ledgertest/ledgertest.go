// Package ledgertest opens throw-away ledgers for tests: SQLite in a temp
// dir, and PostgreSQL in a fresh schema of the server named by
// $KMETER_TEST_POSTGRES, so that one suite runs against both stores.
package ledgertest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
)

// PostgresEnv names the PostgreSQL server tests use, as a postgres:// URL
// of a role that may create schemas in its database.
const PostgresEnv = "KMETER_TEST_POSTGRES"

// Backend opens a fresh, empty ledger of one store.
type Backend struct {
	Name string
	// Config returns the config of a fresh, empty ledger; every call
	// gives a new one.
	Config func(tb testing.TB) ledger.Config
}

// Open opens a fresh ledger of b, closed when the test ends.
func (b Backend) Open(tb testing.TB) *ledger.Ledger {
	tb.Helper()
	return OpenConfig(tb, b.Config(tb))
}

// OpenConfig opens cfg, closed when the test ends.
func OpenConfig(tb testing.TB, cfg ledger.Config) *ledger.Ledger {
	tb.Helper()
	l, err := ledger.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open ledger: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// SQLite is the embedded store.
var SQLite = Backend{Name: "sqlite", Config: func(tb testing.TB) ledger.Config {
	return ledger.Config{Path: filepath.Join(tb.TempDir(), ledger.DBFile)}
}}

// Postgres is the fleet store; its Config skips the test when
// $KMETER_TEST_POSTGRES is unset, and fails it then under
// KMETER_REQUIRE_BPF=1 (CI).
var Postgres = Backend{Name: "postgres", Config: func(tb testing.TB) ledger.Config {
	return ledger.Config{PostgresURL: PostgresURL(tb)}
}}

// Backends lists both stores; run a suite as one subtest per backend.
func Backends() []Backend { return []Backend{SQLite, Postgres} }

// PostgresURL creates a schema of its own on $KMETER_TEST_POSTGRES and
// returns a URL whose connections use it; the schema is dropped when the
// test ends.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		// CI sets KMETER_REQUIRE_BPF=1 and must run every store.
		if os.Getenv("KMETER_REQUIRE_BPF") == "1" {
			tb.Fatalf("KMETER_REQUIRE_BPF=1 but %s is not set: run scripts/pg-test-setup.sh and export what it prints", PostgresEnv)
		}
		tb.Skipf("skipping PostgreSQL: %s is not set (see scripts/pg-test-setup.sh)", PostgresEnv)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		tb.Fatal(err)
	}
	schema := "kmeter_test_" + hex.EncodeToString(rnd[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatalf("open %s: %v", PostgresEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		tb.Fatalf("create schema on %s: %v", PostgresEnv, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop test schema: %v", err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
