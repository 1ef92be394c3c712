package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/api"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

const secret = "s3cret-token"

type server struct {
	*httptest.Server
	l *ledger.Ledger
}

func newServer(t *testing.T, be ledgertest.Backend, protectReads bool) server {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := httpauth.FromFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := be.Config(t)
	cfg.Now = func() time.Time { return time.Date(2026, 11, 15, 0, 0, 0, 0, time.UTC) }
	l := ledgertest.OpenConfig(t, cfg)
	a, err := api.New(api.Config{Ledger: l, Token: tok, ProtectReads: protectReads})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux)
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return server{s, l}
}

// do sends a request and returns the status and body.
func (s server) do(t *testing.T, method, path, token, key, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (s server) balance(t *testing.T, tenant string) int64 {
	t.Helper()
	code, body, _ := s.do(t, "GET", "/v1/balances/"+tenant, "", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET balance = %d %s", code, body)
	}
	var out struct {
		Balances []ledger.Balance `json:"balances"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, b := range out.Balances {
		sum += b.BalanceMicro
	}
	return sum
}

func TestTopUp_statusCodes(t *testing.T) {
	s := newServer(t, ledgertest.SQLite, false)
	body := `{"tenant":"shop","amount_micro":5000000,"currency":"USD"}`
	tests := []struct {
		name, token, key, body string
		code                   int
		msg                    string
	}{
		{"no token", "", "k1", body, 401, "missing or wrong bearer token"},
		{"wrong token", "nope", "k1", body, 401, "missing or wrong bearer token"},
		{"no key", secret, "", body, 400, "missing Idempotency-Key"},
		{"malformed json", secret, "k1", `{"tenant":"shop",`, 400, "malformed JSON body"},
		{"unknown field", secret, "k1", `{"tenant":"shop","amount":5}`, 400, `unknown field \"amount\"`},
		{"trailing data", secret, "k1", body + `{}`, 400, "data after the top-up object"},
		{"negative amount", secret, "k1", `{"tenant":"shop","amount_micro":-5,"currency":"USD"}`, 400, "must be positive"},
		{"bad currency", secret, "k1", `{"tenant":"shop","amount_micro":5,"currency":"dollar"}`, 400, "ISO 4217"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, got, _ := s.do(t, "POST", "/v1/topups", tt.token, tt.key, tt.body)
			if code != tt.code || !strings.Contains(got, tt.msg) {
				t.Errorf("POST = %d %s, want %d mentioning %q", code, got, tt.code, tt.msg)
			}
		})
	}
	// None of those was applied.
	if code, _, _ := s.do(t, "GET", "/v1/balances/shop", "", "", ""); code != http.StatusNotFound {
		t.Errorf("balance of a tenant never topped up: %d, want 404", code)
	}
}

func TestTopUp_idempotent(t *testing.T) {
	for _, be := range ledgertest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			s := newServer(t, be, false)
			body := `{"tenant":"shop","amount_micro":5000000,"currency":"USD","memo":"invoice 7"}`
			code, first, _ := s.do(t, "POST", "/v1/topups", secret, "key-1", body)
			if code != http.StatusCreated {
				t.Fatalf("first POST = %d %s", code, first)
			}
			// Ten concurrent retries of the same request: applied once.
			var wg sync.WaitGroup
			results := make([]string, 10)
			codes := make([]int, 10)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var hdr http.Header
					codes[i], results[i], hdr = s.do(t, "POST", "/v1/topups", secret, "key-1", body)
					if hdr.Get("Idempotent-Replayed") != "true" {
						t.Errorf("replay %d without Idempotent-Replayed header", i)
					}
				}()
			}
			wg.Wait()
			var orig ledger.TopUpResult
			if err := json.Unmarshal([]byte(first), &orig); err != nil {
				t.Fatal(err)
			}
			for i := range results {
				var r ledger.TopUpResult
				if err := json.Unmarshal([]byte(results[i]), &r); err != nil {
					t.Fatal(err)
				}
				if codes[i] != http.StatusOK || !r.Replayed || r.EntryID != orig.EntryID || r.BalanceMicro != 5_000_000 {
					t.Errorf("replay %d = %d %s, want 200 with the original result", i, codes[i], results[i])
				}
			}
			if code, got, _ := s.do(t, "POST", "/v1/topups", secret, "key-1", strings.Replace(body, "5000000", "6000000", 1)); code != http.StatusConflict {
				t.Errorf("reused key with another body = %d %s, want 409", code, got)
			}
			if got := s.balance(t, "shop"); got != 5_000_000 {
				t.Errorf("balance = %d, want 5000000 (applied once)", got)
			}
			if code, got, _ := s.do(t, "POST", "/v1/topups", secret, "key-2", body); code != http.StatusCreated {
				t.Fatalf("second top-up = %d %s", code, got)
			}
			if got := s.balance(t, "shop"); got != 10_000_000 {
				t.Errorf("balance = %d, want 10000000", got)
			}
		})
	}
}

func TestReads(t *testing.T) {
	s := newServer(t, ledgertest.SQLite, true)
	ctx := context.Background()
	if err := s.l.SyncTenants(ctx, []ledger.Tenant{{Name: "shop", LowBalanceMicro: 2_000_000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.l.TopUp(ctx, ledger.TopUp{Tenant: "shop", AmountMicro: 3_000_000, Currency: "USD", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ef", 32)
	end := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	if err := s.l.CommitWindows(ctx, []ledger.Window{
		{Node: "n1", Tenant: "shop", Meter: "tls_server_handshakes", Seq: 1, ToCounter: 1_500_000, Quantity: 1_500_000,
			Start: end.Add(-5 * time.Second), End: end, Charge: pricing.Charge{AmountMicro: 1_500_000, Currency: "USD", VendorMicro: 1_050_000}, PluginSHA256: sha},
	}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := s.do(t, "GET", "/v1/tenants", "", "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/tenants without token and protected reads = %d, want 401", code)
	}
	code, body, _ := s.do(t, "GET", "/v1/tenants", secret, "", "")
	if code != 200 || !strings.Contains(body, `"name":"shop"`) || !strings.Contains(body, `"account":"prepaid"`) {
		t.Errorf("GET /v1/tenants = %d %s", code, body)
	}
	code, body, _ = s.do(t, "GET", "/v1/balances/shop", secret, "", "")
	want := `{"tenant":"shop","balances":[{"tenant":"shop","account":"prepaid","currency":"USD","balance_micro":1500000,"charged_micro":1500000,"low_balance_micro":2000000,"low":true}]}` + "\n"
	if code != 200 || body != want {
		t.Errorf("GET /v1/balances/shop = %d %s\nwant %s", code, body, want)
	}
	if code, _, _ := s.do(t, "GET", "/v1/balances/nobody", secret, "", ""); code != http.StatusNotFound {
		t.Errorf("unknown tenant balance = %d, want 404", code)
	}
	code, body, hdr := s.do(t, "GET", "/v1/invoices/shop?period=2026-11", secret, "", "")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET invoice = %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	var inv map[string]any
	if err := json.Unmarshal([]byte(body), &inv); err != nil {
		t.Fatal(err)
	}
	wantInv := map[string]any{
		"tenant": "shop", "period": "2026-11", "currency": "USD", "total_micro": float64(1_500_000),
		"lines": []any{map[string]any{"meter": "tls_server_handshakes", "quantity": float64(1_500_000), "unit_price_micro": "1",
			"amount_micro": float64(1_500_000), "plugin_sha256": sha, "late": false}},
	}
	if fmt.Sprint(inv) != fmt.Sprint(wantInv) {
		t.Errorf("invoice json = %v\nwant %v", inv, wantInv)
	}
	for _, tt := range []struct {
		path string
		code int
		msg  string
	}{
		{"/v1/invoices/shop", 400, "add ?period=YYYY-MM"},
		{"/v1/invoices/shop?period=2026-11&format=pdf", 400, `is not one of json, csv, html`},
		{"/v1/invoices/nobody?period=2026-11", 404, "unknown tenant"},
		{"/v1/invoices/shop?period=2026-11&format=csv", 200, "shop,2026-11,USD,tls_server_handshakes,1500000,1,1500000," + sha + ",false"},
		{"/v1/invoices/shop?period=2026-11&format=html", 200, "<td class=\"n\">1.500000</td>"},
	} {
		code, body, _ := s.do(t, "GET", tt.path, secret, "", "")
		if code != tt.code || !strings.Contains(body, tt.msg) {
			t.Errorf("GET %s = %d %s, want %d with %q", tt.path, code, body, tt.code, tt.msg)
		}
	}
}

func TestNew_needsLedger(t *testing.T) {
	if _, err := api.New(api.Config{}); err == nil || !strings.Contains(err.Error(), "ledger is nil") {
		t.Errorf("New without ledger = %v", err)
	}
}
