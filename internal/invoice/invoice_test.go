package invoice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/invoice"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

var update = flag.Bool("update", false, "rewrite testdata/ golden files")

var (
	tlsPlugin  = strings.Repeat("a1", 32)
	callPlugin = strings.Repeat("b2", 32)
)

// bill commits one window of tenant on meter ending at end.
func bill(t *testing.T, l *ledger.Ledger, tenant, meter string, seq, from, qty uint64, amount int64, plugin string, end time.Time) {
	t.Helper()
	w := ledger.Window{Node: "n1", Tenant: tenant, Meter: meter, Seq: seq, PrevSeq: seq - 1, FromCounter: from, ToCounter: from + qty, Quantity: qty,
		Start: end.Add(-5 * time.Second), End: end, Charge: pricing.Charge{AmountMicro: amount, Currency: "USD", VendorMicro: amount * 7 / 10},
		PluginSHA256: plugin}
	if err := l.CommitWindows(context.Background(), []ledger.Window{w}); err != nil {
		t.Fatal(err)
	}
}

// ledgerWithLateUsage has November usage of tenant "a&b shop", November
// closed, then a late November window that lands in December.
func ledgerWithLateUsage(t *testing.T) *ledger.Ledger {
	cfg := ledgertest.SQLite.Config(t)
	cfg.Now = func() time.Time { return time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC) }
	l := ledgertest.OpenConfig(t, cfg)
	nov := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	// 0.01 USD per 10,000 handshakes = 1 micro per handshake.
	bill(t, l, "a&b shop", "tls_server_handshakes", 1, 0, 30000, 30000, tlsPlugin, nov)
	bill(t, l, "a&b shop", "tls_server_handshakes", 2, 30000, 12345, 12345, tlsPlugin, nov.Add(5*time.Second))
	bill(t, l, "a&b shop", "syscalls", 1, 0, 3, 1, callPlugin, nov)
	bill(t, l, "other", "syscalls", 1, 0, 1000, 999, callPlugin, nov)
	if err := l.ClosePeriod(context.Background(), "2026-11"); err != nil {
		t.Fatal(err)
	}
	bill(t, l, "a&b shop", "tls_server_handshakes", 3, 42345, 655, 655, tlsPlugin, time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC))
	bill(t, l, "a&b shop", "tls_server_handshakes", 4, 43000, 1000, 1000, tlsPlugin, time.Date(2026, 12, 1, 0, 0, 4, 0, time.UTC))
	return l
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestBuild_periods(t *testing.T) {
	l := ledgerWithLateUsage(t)
	ctx := context.Background()
	nov, err := invoice.Build(ctx, l, "a&b shop", "2026-11", "")
	if err != nil {
		t.Fatal(err)
	}
	wantNov := []invoice.Line{
		{Meter: "syscalls", Quantity: 3, UnitPriceMicro: "0.333333", AmountMicro: 1, PluginSHA256: callPlugin},
		{Meter: "tls_server_handshakes", Quantity: 42345, UnitPriceMicro: "1", AmountMicro: 42345, PluginSHA256: tlsPlugin},
	}
	if !equal(nov.Lines, wantNov) || nov.TotalMicro != 42346 || nov.Currency != "USD" {
		t.Errorf("november = %+v\nwant lines %+v total 42346", nov, wantNov)
	}
	dec, err := invoice.Build(ctx, l, "a&b shop", "2026-12", "")
	if err != nil {
		t.Fatal(err)
	}
	wantDec := []invoice.Line{
		{Meter: "tls_server_handshakes", Quantity: 1000, UnitPriceMicro: "1", AmountMicro: 1000, PluginSHA256: tlsPlugin},
		{Meter: "tls_server_handshakes", Quantity: 655, UnitPriceMicro: "1", AmountMicro: 655, PluginSHA256: tlsPlugin, Late: true},
	}
	if !equal(dec.Lines, wantDec) || dec.TotalMicro != 1655 {
		t.Errorf("december = %+v\nwant lines %+v total 1655", dec, wantDec)
	}
	for _, inv := range []invoice.Invoice{nov, dec} {
		var sum int64
		for _, ln := range inv.Lines {
			sum += ln.AmountMicro
		}
		if sum != inv.TotalMicro {
			t.Errorf("%s total %d != sum of lines %d", inv.Period, inv.TotalMicro, sum)
		}
	}
	empty, err := invoice.Build(ctx, l, "a&b shop", "2026-10", "")
	if err != nil || len(empty.Lines) != 0 || empty.TotalMicro != 0 {
		t.Errorf("october = %+v, %v; want an empty invoice", empty, err)
	}
	if _, err := invoice.Build(ctx, l, "a&b shop", "11/2026", ""); err == nil || !strings.Contains(err.Error(), "not a month such as 2026-11") {
		t.Errorf("bad period: err = %v", err)
	}
}

func equal(a, b []invoice.Line) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestInvoice_Write(t *testing.T) {
	l := ledgerWithLateUsage(t)
	inv, err := invoice.Build(context.Background(), l, "a&b shop", "2026-12", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range invoice.Formats {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := inv.Write(&buf, format); err != nil {
				t.Fatal(err)
			}
			golden(t, "invoice-2026-12."+format, buf.Bytes())
		})
	}
	// The JSON field names are a contract with API clients.
	var buf bytes.Buffer
	if err := inv.Write(&buf, "json"); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if raw["tenant"] != "a&b shop" || raw["period"] != "2026-12" || raw["currency"] != "USD" || raw["total_micro"] != float64(1655) {
		t.Errorf("json invoice header = %v", raw)
	}
	line := raw["lines"].([]any)[1].(map[string]any)
	if line["meter"] != "tls_server_handshakes" || line["quantity"] != float64(655) || line["amount_micro"] != float64(655) ||
		line["plugin_sha256"] != tlsPlugin || line["late"] != true {
		t.Errorf("json line = %v", line)
	}
	if err := inv.Write(&buf, "pdf"); err == nil || !strings.Contains(err.Error(), "json, csv, html") {
		t.Errorf("unknown format: err = %v", err)
	}
}
