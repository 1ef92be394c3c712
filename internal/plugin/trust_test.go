package plugin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
	"github.com/kmeter/kmeter/internal/plugin/trust"
	"github.com/kmeter/kmeter/internal/pricing"
)

// These tests run the engine behind the production verifier
// (internal/plugin/trust) with modules signed in the test by a test key.

var (
	testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	t0      = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
)

func publisherKey(t *testing.T) sign.KeyPair {
	t.Helper()
	k, err := sign.NewKeyPairFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signed embeds lic (when not nil) in module and signs it with k.
func signed(t *testing.T, k sign.KeyPair, module []byte, lic *licence.Licence) []byte {
	t.Helper()
	if lic != nil {
		var err error
		if module, err = licence.Embed(module, *lic); err != nil {
			t.Fatal(err)
		}
	}
	m, err := sign.Sign(module, k)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testLicence(maxCalls uint64) *licence.Licence {
	return &licence.Licence{Publisher: "Acme Pricing", Licensee: "Tenant Bank", NotAfter: testNow.Add(24 * time.Hour), MaxCalls: maxCalls}
}

// newTrustedEngine returns an engine whose verifier trusts only k; log
// (may be nil) is the audit chain of both.
func newTrustedEngine(t *testing.T, k sign.KeyPair, log *audit.Log) *plugin.Engine {
	t.Helper()
	v, err := trust.New(trust.Config{Keys: []sign.PublicKey{k.Public()}, HostID: "host-a", Audit: log, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	cfg := plugin.Config{Verifier: v, Logger: plugin.QuietLogger(), CallTimeout: 200 * time.Millisecond, MemoryLimitPages: 16}
	if log != nil {
		cfg.Audit = log
	}
	e, err := plugin.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func rec(tenant, meter string, q uint64) pricing.Record {
	return pricing.Record{Tenant: tenant, Meter: meter, Quantity: q, Start: t0, End: t0.Add(time.Minute)}
}

// TestEngine_licenceMaxCalls loads a module whose licence allows
// max_calls calls: exactly that many batches are priced, every later
// batch or event fails with ErrLicenceExhausted and no charges, the
// refusals are counted, and loading the module again starts a new count.
func TestEngine_licenceMaxCalls(t *testing.T) {
	k := publisherKey(t)
	for _, maxCalls := range []uint64{1, 3} {
		t.Run(fmt.Sprintf("max_calls=%d", maxCalls), func(t *testing.T) {
			e := newTrustedEngine(t, k, nil)
			mod := signed(t, k, plugin.ExamplePlugin(t, "c-flat"), testLicence(maxCalls))
			id, err := e.Load(context.Background(), mod)
			if err != nil {
				t.Fatal(err)
			}
			if id.MaxCalls != maxCalls {
				t.Fatalf("identity MaxCalls %d, want %d from the licence", id.MaxCalls, maxCalls)
			}
			batch := []pricing.Record{rec("a", "calls", 5), rec("b", "calls", 7)}
			var total int64
			for i := range maxCalls {
				res, err := e.Price(context.Background(), batch)
				if err != nil {
					t.Fatalf("batch %d of %d allowed: %v", i+1, maxCalls, err)
				}
				for _, c := range res.Charges {
					total += c.AmountMicro
				}
			}
			if want := int64(maxCalls) * (10 + 14); total != want { // c-flat: 2 micro-USD per unit
				t.Fatalf("allowed batches charged %d, want %d", total, want)
			}
			res, err := e.Price(context.Background(), batch)
			if !errors.Is(err, plugin.ErrLicenceExhausted) || !errors.Is(err, licence.ErrCallsExhausted) {
				t.Fatalf("batch %d = %v, want ErrLicenceExhausted", maxCalls+1, err)
			}
			for _, want := range []string{`"Tenant Bank"`, `"Acme Pricing"`, "renew the licence"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %s", err, want)
				}
			}
			if res.Charges != nil || res.PluginSHA256 != "" {
				t.Fatalf("refused batch returned %+v", res)
			}
			if _, _, err := e.PriceEvent(context.Background(), rec("a", "calls", 1)); !errors.Is(err, plugin.ErrLicenceExhausted) {
				t.Fatalf("PriceEvent after exhaustion = %v, want ErrLicenceExhausted", err)
			}
			s := e.Stats()
			if s.Batches != maxCalls || s.LicenceRefusals != 2 || s.Traps+s.Timeouts+s.BadOutputs+s.OtherFailures != 0 {
				t.Fatalf("stats %+v: want %d batches, 2 licence refusals, no other failures", s, maxCalls)
			}
			want := `
# HELP kmeter_plugin_batch_failures_total Batches that failed and were handed back to the caller, by reason.
# TYPE kmeter_plugin_batch_failures_total counter
kmeter_plugin_batch_failures_total{reason="bad_output"} 0
kmeter_plugin_batch_failures_total{reason="licence_exhausted"} 2
kmeter_plugin_batch_failures_total{reason="other"} 0
kmeter_plugin_batch_failures_total{reason="timeout"} 0
kmeter_plugin_batch_failures_total{reason="trap"} 0
`
			if err := testutil.CollectAndCompare(e, strings.NewReader(want), "kmeter_plugin_batch_failures_total"); err != nil {
				t.Fatal(err)
			}
			// The cap is per load: loading the module again starts over.
			if _, err := e.Load(context.Background(), mod); err != nil {
				t.Fatal(err)
			}
			if res, err := e.Price(context.Background(), batch); err != nil || res.Charges[0].AmountMicro != 10 {
				t.Fatalf("first batch after reload: %+v, %v", res, err)
			}
		})
	}
}

// TestEngine_auditChain loads, swaps (by Load and by Watch), refuses and
// shadows modules with one audit log shared by the verifier and the engine, then
// checks the chain verifies and holds exactly these decisions in order.
func TestEngine_auditChain(t *testing.T) {
	k := publisherKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	e := newTrustedEngine(t, k, log)
	ctx := context.Background()

	v1 := signed(t, k, plugin.ExamplePlugin(t, "c-flat"), testLicence(0))
	v2 := signed(t, k, plugin.ExamplePlugin(t, "c-flat-v2"), nil)
	badABI := signed(t, k, plugin.Fixture(t, "badversion"), nil)
	unsigned := plugin.ExamplePlugin(t, "c-split")
	sha1, sha2, shaBad, shaUnsigned := plugin.SHA256Hex(v1), plugin.SHA256Hex(v2), plugin.SHA256Hex(badABI), plugin.SHA256Hex(unsigned)

	if _, err := e.Load(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Load(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Load(ctx, badABI); !errors.Is(err, plugin.ErrRefused) {
		t.Fatalf("Load(bad ABI) = %v, want ErrRefused", err)
	}
	if _, err := e.Load(ctx, unsigned); !errors.Is(err, plugin.ErrRefused) {
		t.Fatalf("Load(unsigned) = %v, want ErrRefused", err)
	}
	// Watch swaps back to v1 from a file.
	file := filepath.Join(t.TempDir(), "plugin.wasm")
	if err := os.WriteFile(file, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.Watch(wctx, file, 10*time.Millisecond); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if id, _ := e.Live(); id.SHA256 == sha1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Watch did not swap to the file's module")
		}
	}
	cancel()
	<-done
	// A shadow candidate never bills but runs guest code: on the record.
	if _, err := e.SetShadow(ctx, v2); err != nil {
		t.Fatal(err)
	}

	head, err := audit.VerifyFile(path, "")
	if err != nil {
		t.Fatalf("audit chain does not verify: %v", err)
	}
	signer := k.Public().String()
	want := []audit.Entry{
		{Event: audit.EventAccept, SHA256: sha1, Signer: signer, Licensee: "Tenant Bank"},
		{Event: audit.EventLoad, SHA256: sha1, Signer: signer, Licensee: "Tenant Bank"},
		{Event: audit.EventAccept, SHA256: sha2, Signer: signer},
		{Event: audit.EventSwap, SHA256: sha2, Signer: signer, Replaces: sha1},
		{Event: audit.EventAccept, SHA256: shaBad, Signer: signer},
		{Event: audit.EventReject, SHA256: shaBad, Signer: signer, Reason: "kmeter_abi_version returned 2"},
		{Event: audit.EventRefuse, SHA256: shaUnsigned, Reason: "module is not signed"},
		{Event: audit.EventAccept, SHA256: sha1, Signer: signer, Licensee: "Tenant Bank"},
		{Event: audit.EventSwap, Plugin: file, SHA256: sha1, Signer: signer, Licensee: "Tenant Bank", Replaces: sha2},
		{Event: audit.EventAccept, SHA256: sha2, Signer: signer},
		{Event: audit.EventLoad, SHA256: sha2, Signer: signer, Reason: "shadow candidate"},
	}
	got := readEntries(t, path)
	if len(got) != len(want) || head.Seq != uint64(len(want)) {
		t.Fatalf("%d entries (head seq %d), want %d:\n%+v", len(got), head.Seq, len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Event != w.Event || g.Plugin != w.Plugin || g.SHA256 != w.SHA256 || g.Signer != w.Signer || g.Licensee != w.Licensee || g.Replaces != w.Replaces ||
			!strings.Contains(g.Reason, w.Reason) || (w.Reason == "") != (g.Reason == "") {
			t.Errorf("entry %d = %+v\nwant %+v", i+1, g, w)
		}
	}
}

func readEntries(t *testing.T, path string) []audit.Entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []audit.Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestEngine_auditFailureKeepsPrevious checks that a version whose load
// cannot be recorded never goes live.
func TestEngine_auditFailureKeepsPrevious(t *testing.T) {
	log, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := plugin.New(context.Background(), plugin.Config{Verifier: plugin.AllowUnsigned(), Logger: plugin.QuietLogger(), Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	v1, v2 := plugin.ExamplePlugin(t, "c-flat"), plugin.ExamplePlugin(t, "c-flat-v2")
	if _, err := e.Load(context.Background(), v1); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Load(context.Background(), v2); err == nil || !strings.Contains(err.Error(), "audit log") {
		t.Fatalf("Load with a closed audit log = %v, want an audit log error", err)
	}
	if id, _ := e.Live(); id.SHA256 != plugin.SHA256Hex(v1) {
		t.Fatalf("live plugin %s, want v1 kept", id.SHA256)
	}
	if res, err := e.Price(context.Background(), []pricing.Record{rec("a", "calls", 4)}); err != nil || res.Charges[0].AmountMicro != 8 {
		t.Fatalf("v1 after the unrecorded load: %+v, %v", res, err)
	}
	if s := e.Stats(); s.Loads != 1 || s.LoadFailures != 1 {
		t.Fatalf("loads %d, failures %d; want 1 and 1", s.Loads, s.LoadFailures)
	}
}
