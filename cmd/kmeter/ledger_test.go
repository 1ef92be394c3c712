package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/pricing"
)

// moneyCLI runs kmeter with args and returns what it printed.
func moneyCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetErr(&strings.Builder{})
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestMoneyCommands(t *testing.T) {
	dir := t.TempDir()
	out, err := moneyCLI(t, "topup", "shop", "25.50", "--data-dir", dir, "--key", "order-1")
	if err != nil {
		t.Fatal(err)
	}
	var res ledger.TopUpResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.BalanceMicro != 25_500_000 || res.Replayed {
		t.Fatalf("topup printed %s (%v)", out, err)
	}
	// Retried with the same key: booked once.
	if out, err := moneyCLI(t, "topup", "shop", "25.50", "--data-dir", dir, "--key", "order-1"); err != nil || !strings.Contains(out, `"replayed": true`) {
		t.Fatalf("retried topup: %v %s", err, out)
	}
	if _, err := moneyCLI(t, "topup", "shop", "2", "--data-dir", dir, "--key", "order-1"); !errors.Is(err, ledger.ErrKeyReused) {
		t.Fatalf("topup with a reused key: %v", err)
	}
	l, err := ledger.Open(context.Background(), ledger.Config{Path: filepath.Join(dir, ledger.DBFile)})
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	w := ledger.Window{Node: "n1", Tenant: "shop", Meter: "syscalls", Seq: 1, ToCounter: 500, Quantity: 500, Start: end.Add(-5 * time.Second), End: end,
		Charge: pricing.Charge{AmountMicro: 500_000, Currency: "USD"}, PluginSHA256: strings.Repeat("0f", 32)}
	if err := l.CommitWindows(context.Background(), []ledger.Window{w}); err != nil {
		t.Fatal(err)
	}
	out, err = moneyCLI(t, "tenants", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "shop    prepaid  USD       25.000000  0.500000") {
		t.Errorf("tenants: %v\n%s", err, out)
	}
	out, err = moneyCLI(t, "invoice", "--tenant", "shop", "--period", "2026-11", "--format", "csv", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "shop,2026-11,USD,syscalls,500,1000,500000,") || !strings.Contains(out, "shop,2026-11,USD,total,,,500000,,") {
		t.Errorf("invoice: %v\n%s", err, out)
	}
	if out, err := moneyCLI(t, "ledger", "verify", "--data-dir", dir); err != nil || !strings.Contains(out, `"problems": []`) {
		t.Errorf("verify of a sound ledger: %v\n%s", err, out)
	}
	l.Close()
	// The ledger refuses to make a gap; a hand-made row linking window 3
	// to a missing window 2 is one.
	db, err := sql.Open("sqlite", filepath.Join(dir, ledger.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO usage (series_id, seq, prev_seq, entry_id, amount_micro, vendor_micro,
		quantity, from_counter, to_counter, rebased, start_us, end_us) VALUES (1, 3, 2, 2, 0, 0, 100, 600, 700, 0, 0, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, err = moneyCLI(t, "ledger", "verify", "--data-dir", dir)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "gap in the checkpoint chain") {
		t.Errorf("verify of a broken chain: %v\n%s", err, out)
	}
}
