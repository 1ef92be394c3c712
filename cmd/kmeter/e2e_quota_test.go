package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/limitapi"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/testutil"
)

const e2eToken = "e2e-secret-token"

// quotaSlack is added to the interval-based deadlines of the money loop:
// on a busy 2-core CI machine (agents of other tests walking thousands of
// cgroups) one agent read has been seen to take 500ms.
const quotaSlack = time.Second

// call makes an HTTP request to the agent and returns the status and body.
// token and key (Idempotency-Key) are sent when not empty.
func (a *testAgent) call(t *testing.T, method, path, token, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// topUp credits tenant through POST /v1/topups and checks the answer.
func (a *testAgent) topUp(t *testing.T, tenant string, micro int64, key string, wantStatus int) ledger.TopUpResult {
	t.Helper()
	code, body := a.call(t, "POST", "/v1/topups", e2eToken, key, fmt.Sprintf(`{"tenant":%q,"amount_micro":%d,"currency":"USD"}`, tenant, micro))
	if code != wantStatus {
		t.Fatalf("POST /v1/topups %d micro (key %s): %d %s, want %d", micro, key, code, body, wantStatus)
	}
	var res ledger.TopUpResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("top-up answer: %v\n%s", err, body)
	}
	return res
}

// balance reads tenant's USD balance from GET /v1/balances/{tenant}.
func (a *testAgent) balance(t *testing.T, tenant string) int64 {
	t.Helper()
	code, body := a.call(t, "GET", "/v1/balances/"+tenant, "", "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/balances/%s: %d %s", tenant, code, body)
	}
	var r struct{ Balances []ledger.Balance }
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	for _, b := range r.Balances {
		if b.Currency == "USD" {
			return b.BalanceMicro
		}
	}
	return 0
}

// policy returns the tenant's enforcement policy from the limits API
// ("" when it has neither limit nor policy).
func (a *testAgent) policy(t *testing.T, tenant string) enforce.PolicyKind {
	t.Helper()
	code, body := a.call(t, "GET", "/v1/limits/"+tenant, e2eToken, "", "")
	switch code {
	case http.StatusNotFound:
		return enforce.PolicyNone
	case http.StatusOK:
		var lt limitapi.Tenant
		if err := json.Unmarshal([]byte(body), &lt); err != nil {
			t.Fatal(err)
		}
		return lt.Policy.Kind
	}
	t.Fatalf("GET /v1/limits/%s: %d %s", tenant, code, body)
	return ""
}

// waitPolicy polls until tenant's policy is want and returns how long
// that took.
func (a *testAgent) waitPolicy(t *testing.T, tenant string, want enforce.PolicyKind, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for a.policy(t, tenant) != want {
		if time.Since(start) > timeout {
			t.Fatalf("tenant %s: policy still %q after %v, want %q", tenant, a.policy(t, tenant), timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A prepaid tenant priced per connection is blocked by the kernel when its
// money runs out and let through again by a top-up over the API: the
// money loop runs from real connect() calls through the plugin and the
// ledger back into the kernel.
func TestE2E_quotaFromMoney(t *testing.T) {
	flat, keys := signedPlugin(t, buildPlugin(t, "c-flat")) // 2 micro-USD per unit
	tlsMod := filepath.Join(filepath.Dir(flat), "tls-signed.wasm")
	if _, _, err := pluginCLI(t, "plugin", "sign", "--key", filepath.Join(filepath.Dir(flat), "acme.key"), "--out", tlsMod,
		filepath.Join(filepath.Dir(buildPlugin(t, "c-tls")), "c-tls.wasm")); err != nil {
		t.Fatalf("sign c-tls: %v", err)
	}
	shop := testutil.NewCgroup(t, "shop")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// shop pays 2 micro-USD per TCP connect; everything else is priced
	// by c/tls, which charges only TLS server handshakes (none here).
	cfg := tenantConfig("shop", shop, "    account: prepaid\n    on_empty: block_connections\n") + fmt.Sprintf(
		"pricing:\n  - {tenant: shop, meter: tcp_connects, plugin: %q}\n  - {plugin: %q}\n", flat, tlsMod)
	const interval = 200 * time.Millisecond
	a := startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--interval", interval.String(),
		"--trusted-keys", keys, "--token-file", tokenFile, "--config", writeConfig(t, cfg))
	addr := acceptAll(t)

	// An empty prepaid balance blocks new connections from the start.
	if p := a.policy(t, "shop"); p != enforce.PolicyBlockConnections {
		t.Fatalf("shop starts with policy %q, want %q (balance 0)", p, enforce.PolicyBlockConnections)
	}
	if r := runConnects(t, shop, addr, "3"); r.ok != 0 || r.eperm != 3 {
		t.Fatalf("empty balance: %d of 3 connects passed, %d got EPERM; want all EPERM", r.ok, r.eperm)
	}

	// Top-ups need the token and an Idempotency-Key; a retry is a replay.
	const budget = 20 // micro-USD: 10 connects
	body := fmt.Sprintf(`{"tenant":"shop","amount_micro":%d,"currency":"USD"}`, budget)
	if code, b := a.call(t, "POST", "/v1/topups", "", "k1", body); code != http.StatusUnauthorized {
		t.Errorf("top-up without token: %d %s, want 401", code, b)
	}
	if code, b := a.call(t, "POST", "/v1/topups", e2eToken, "", body); code != http.StatusBadRequest {
		t.Errorf("top-up without Idempotency-Key: %d %s, want 400", code, b)
	}
	if code, b := a.call(t, "POST", "/v1/topups", e2eToken, "k1", `{"tenant":"shop","amount":1}`); code != http.StatusBadRequest {
		t.Errorf("top-up with an unknown field: %d %s, want 400", code, b)
	}
	if r := a.topUp(t, "shop", budget, "k1", http.StatusCreated); r.BalanceMicro != budget {
		t.Fatalf("balance after top-up %d, want %d", r.BalanceMicro, budget)
	}
	a.topUp(t, "shop", budget, "k1", http.StatusOK) // replayed, not booked twice
	took := a.waitPolicy(t, "shop", enforce.PolicyNone, 10*time.Second)
	t.Logf("top-up lifted the block in %v (interval %v)", took, interval)
	if took > interval+quotaSlack {
		t.Errorf("top-up lifted the block after %v, want within one interval (%v) + %v", took, interval, quotaSlack)
	}

	// Spend it: connect every 5ms until the kernel says EPERM.
	r := runConnects(t, shop, addr, "2000", "5ms", "-until-eperm")
	if r.eperm != 1 || r.ok < budget/2 {
		t.Fatalf("%d connects passed before EPERM (eperm %d); the budget pays for %d", r.ok, r.eperm, budget/2)
	}
	spent := r.okTimes[budget/2-1] // the connect that used the last micro-USD
	// The kernel counts it, the next window bills it, the next read
	// applies the policy: up to three intervals after the connect.
	lag := r.okTimes[len(r.okTimes)-1].Sub(spent)
	t.Logf("%d connects passed; the last one %v after the budget ran out (interval %v)", r.ok, lag, interval)
	if lag > 3*interval+quotaSlack {
		t.Errorf("connections still allowed %v after the balance ran out, want within 3 intervals (%v) + %v", lag, 3*interval, quotaSlack)
	}
	if a.policy(t, "shop") != enforce.PolicyBlockConnections {
		t.Errorf("policy after EPERM is %q, want %q", a.policy(t, "shop"), enforce.PolicyBlockConnections)
	}

	// Exact money: every passed connect counted, billed at 2 micro-USD.
	inv := a.waitBilled(t, "shop", meter.TCPConnects, int64(r.ok), 10*time.Second)
	if q, amt := lineOf(inv, meter.TCPConnects); q != int64(r.ok) || amt != 2*int64(r.ok) {
		t.Errorf("billed %d connects for %d micro-USD, want %d and %d", q, amt, r.ok, 2*r.ok)
	}
	if k, _ := a.usage(t, "shop").Tenants.Get("shop", meter.TCPConnects); k != uint64(r.ok) {
		t.Errorf("kernel counted %d connects, the helper made %d", k, r.ok)
	}
	debt := a.balance(t, "shop")
	if want := budget - 2*int64(r.ok); debt != want {
		t.Errorf("balance %d micro-USD, want %d - 2*%d = %d", debt, budget, r.ok, want)
	}

	// A top-up that covers the debt restores connections within an interval.
	a.topUp(t, "shop", 1_000_000-debt, "k2", http.StatusCreated)
	took = a.waitPolicy(t, "shop", enforce.PolicyNone, 10*time.Second)
	t.Logf("second top-up lifted the block in %v", took)
	if took > interval+quotaSlack {
		t.Errorf("top-up lifted the block after %v, want within one interval (%v) + %v", took, interval, quotaSlack)
	}
	if r := runConnects(t, shop, addr, "3"); r.ok != 3 {
		t.Errorf("after the top-up %d of 3 connects passed (%d EPERM)", r.ok, r.eperm)
	}
}

// PUT /v1/limits/{tenant} on a running agent changes the tenant's connect
// limit in the kernel at once; the API wants the token and a valid body.
func TestE2E_limitsAPILive(t *testing.T) {
	shop := testutil.NewCgroup(t, "shop")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--interval", "200ms",
		"--token-file", tokenFile, "--config", writeConfig(t, tenantConfig("shop", shop, "")))
	addr := acceptAll(t)

	if r := runConnects(t, shop, addr, "20"); r.ok != 20 {
		t.Fatalf("without a limit %d of 20 connects passed", r.ok)
	}
	limit := `{"connect_rate":"1/s","connect_burst":5}`
	for _, tc := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", limit, http.StatusUnauthorized},
		{"wrong token", "nope", limit, http.StatusUnauthorized},
		{"not JSON", e2eToken, `connect_rate=1/s`, http.StatusBadRequest},
		{"unknown field", e2eToken, `{"connects":"1/s"}`, http.StatusBadRequest},
		{"bad rate", e2eToken, `{"connect_rate":"fast"}`, http.StatusBadRequest},
		{"no rate", e2eToken, `{}`, http.StatusBadRequest},
	} {
		if code, body := a.call(t, "PUT", "/v1/limits/shop", tc.token, "", tc.body); code != tc.want {
			t.Errorf("PUT limit, %s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	if r := runConnects(t, shop, addr, "20"); r.ok != 20 {
		t.Fatalf("after refused PUTs %d of 20 connects passed; no limit should be set", r.ok)
	}

	if code, body := a.call(t, "PUT", "/v1/limits/shop", e2eToken, "", limit); code != http.StatusOK {
		t.Fatalf("PUT limit: %d %s, want 200", code, body)
	}
	// 20 connects in well under a second: the burst of 5 passes, plus at
	// most one refill at 1/s; the rest are denied with EPERM.
	start := time.Now()
	r := runConnects(t, shop, addr, "20")
	maxOK := 5 + int(time.Since(start)/time.Second) + 1
	if r.ok < 5 || r.ok > maxOK || r.ok+r.eperm != 20 {
		t.Errorf("with connect_rate 1/s burst 5: %d passed, %d EPERM in %v; want 5..%d passed, the rest EPERM", r.ok, r.eperm, time.Since(start), maxOK)
	}
	code, body := a.call(t, "GET", "/v1/limits/shop", e2eToken, "", "")
	var lt limitapi.Tenant
	if code != http.StatusOK || json.Unmarshal([]byte(body), &lt) != nil || lt.Limit.ConnectRate == "" {
		t.Fatalf("GET limit: %d %s", code, body)
	}
	t.Logf("limit %+v, kernel enforcement counts %v", lt.Limit, lt.Enforced)
	if got := lt.Enforced["connect_denied"]; got != uint64(r.eperm) {
		t.Errorf("kernel reports %d denied connects, the helper got EPERM %d times", got, r.eperm)
	}

	if code, body := a.call(t, "DELETE", "/v1/limits/shop", e2eToken, "", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE limit: %d %s, want 204", code, body)
	}
	if r := runConnects(t, shop, addr, "20"); r.ok != 20 {
		t.Errorf("after DELETE %d of 20 connects passed (%d EPERM)", r.ok, r.eperm)
	}

	// A cgroup no tenant lists is a tenant named by its path, which the
	// client path-escapes (as `kmeter limit` does).
	other := testutil.NewCgroup(t, "other")
	path := "/v1/limits/" + url.PathEscape(other.Rel)
	if code, body := a.call(t, "PUT", path, e2eToken, "", `{"connect_rate":"1/s","connect_burst":2}`); code != http.StatusOK {
		t.Fatalf("PUT %s: %d %s, want 200", path, code, body)
	}
	if r := runConnects(t, other, addr, "6"); r.ok < 2 || r.ok > 3 || r.eperm != 6-r.ok {
		t.Errorf("cgroup tenant %s with burst 2: %d of 6 connects passed, %d EPERM", other.Rel, r.ok, r.eperm)
	}
	if r := runConnects(t, shop, addr, "20"); r.ok != 20 {
		t.Errorf("a limit on %s throttled shop: %d of 20 connects passed", other.Rel, r.ok)
	}
}

// A postpaid tenant with a monthly volume quota is blocked once the bytes
// billed this month reach it, whatever its balance.
func TestE2E_monthlyQuotaBlocks(t *testing.T) {
	signed, keys := signedPlugin(t, buildPlugin(t, "c-tls")) // bytes are free: only the volume counts
	shop := testutil.NewCgroup(t, "shop")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e2eToken), 0o600); err != nil {
		t.Fatal(err)
	}
	const quota = 20_000
	cfg := tenantConfig("shop", shop, fmt.Sprintf("    account: postpaid\n    on_empty: block_connections\n    monthly_quota_bytes: %d\n", quota))
	const interval = 200 * time.Millisecond
	a := startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--interval", interval.String(),
		"--plugin", signed, "--trusted-keys", keys, "--token-file", tokenFile, "--config", writeConfig(t, cfg))
	addr := acceptAll(t)
	if p := a.policy(t, "shop"); p != enforce.PolicyNone {
		t.Fatalf("postpaid tenant under its quota starts with policy %q", p)
	}

	r := runConnects(t, shop, addr, "3000", "5ms", "-until-eperm")
	if r.eperm != 1 {
		t.Fatalf("%d connects passed and none was denied: the %d-byte monthly quota never blocked", r.ok, quota)
	}
	if a.policy(t, "shop") != enforce.PolicyBlockConnections {
		t.Errorf("policy after EPERM is %q, want %q", a.policy(t, "shop"), enforce.PolicyBlockConnections)
	}
	inv := a.apiInvoice(t, "shop")
	tx, _ := lineOf(inv, meter.NetTxBytes)
	rx, _ := lineOf(inv, meter.NetRxBytes)
	t.Logf("blocked after %d connects; %d bytes billed this month (quota %d)", r.ok, tx+rx, quota)
	if tx+rx < quota {
		t.Errorf("blocked with %d bytes billed this month, below the quota %d", tx+rx, quota)
	}
	if inv.TotalMicro != 0 {
		t.Errorf("c/tls charged %d micro-USD for connects and bytes, want 0", inv.TotalMicro)
	}
}
