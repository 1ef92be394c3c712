package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

func TestNew_configErrors(t *testing.T) {
	_, err := New(context.Background(), Config{MemoryLimitPages: 1 << 20, CallTimeout: -1, PoolSize: -1, MaxCallDepth: -1})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"no Verifier", "MemoryLimitPages", "CallTimeout", "PoolSize", "MaxCallDepth"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestEngine_Close_idempotent(t *testing.T) {
	e, err := New(context.Background(), Config{Verifier: AllowUnsigned(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mustLoad(t, e, fixture(t, "trap"))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := e.Price(context.Background(), []pricing.Record{rec("a", "m", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Price after Close = %v, want ErrClosed", err)
	}
}

func TestEngine_Price_noPlugin(t *testing.T) {
	e := newEngine(t, nil)
	if _, err := e.Price(context.Background(), nil); !errors.Is(err, ErrNoPlugin) {
		t.Fatalf("Price = %v, want ErrNoPlugin", err)
	}
}

// TestEncoder_matchesABI checks the host's direct-to-memory encoder
// against the reference decoder, with shared attribute maps, sorted
// keys and deduplicated strings.
func TestEncoder_matchesABI(t *testing.T) {
	pro := map[string]string{"region": "eu", "plan": "pro"}
	recs := []pricing.Record{
		{Tenant: "a", Meter: "m1", Quantity: 1, Start: t0, End: t0.Add(time.Second), Attrs: pro},
		{Tenant: "a", Meter: "m2", Quantity: 2, Start: t0, End: t0.Add(time.Second), Attrs: pro},
		{Tenant: "b", Meter: "m2", Quantity: 3, Start: t0, End: t0.Add(2 * time.Second)},
		{Tenant: "c", Meter: "m2", Quantity: 4, Start: t0, End: t0, Attrs: map[string]string{"z": "1", "a": ""}},
		{Tenant: "a", Meter: "m1", Quantity: 5, Start: t0, End: t0, Attrs: pro},
	}
	var enc encoder
	b, err := enc.bytes(recs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := abi.DecodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	sorted := []abi.Attr{{Key: "plan", Value: "pro"}, {Key: "region", Value: "eu"}}
	want := []abi.Record{
		{Tenant: "a", Meter: "m1", Quantity: 1, StartUnixNano: t0.UnixNano(), EndUnixNano: t0.Add(time.Second).UnixNano(), Attrs: sorted},
		{Tenant: "a", Meter: "m2", Quantity: 2, StartUnixNano: t0.UnixNano(), EndUnixNano: t0.Add(time.Second).UnixNano(), Attrs: sorted},
		{Tenant: "b", Meter: "m2", Quantity: 3, StartUnixNano: t0.UnixNano(), EndUnixNano: t0.Add(2 * time.Second).UnixNano()},
		{Tenant: "c", Meter: "m2", Quantity: 4, StartUnixNano: t0.UnixNano(), EndUnixNano: t0.UnixNano(), Attrs: []abi.Attr{{Key: "a", Value: ""}, {Key: "z", Value: "1"}}},
		{Tenant: "a", Meter: "m1", Quantity: 5, StartUnixNano: t0.UnixNano(), EndUnixNano: t0.UnixNano(), Attrs: sorted},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n got %+v\nwant %+v", got, want)
	}
	if enc.now != t0.Add(2*time.Second).UnixNano() {
		t.Fatalf("now = %d, want the latest window end", enc.now)
	}
	// A map changed in place between batches is re-read, not served
	// from the encoder's attribute cache.
	for _, change := range []func(){func() { pro["plan"] = "free" }, func() { pro["zone"] = "b" }, func() { delete(pro, "zone"); delete(pro, "region"); pro["area"] = "eu" }} {
		change()
		b, err := enc.bytes(recs[:1])
		if err != nil {
			t.Fatal(err)
		}
		got, err := abi.DecodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got[0].Attrs) != len(pro) {
			t.Fatalf("attrs %+v, map %v", got[0].Attrs, pro)
		}
		for _, a := range got[0].Attrs {
			if pro[a.Key] != a.Value {
				t.Fatalf("attrs %+v, map %v", got[0].Attrs, pro)
			}
		}
	}
	bad := []pricing.Record{{Tenant: "a", Meter: "m", Start: t0, End: t0.Add(-time.Second)}}
	if _, err := enc.bytes(bad); err == nil || !strings.Contains(err.Error(), "ends before it starts") {
		t.Fatalf("size(reversed window) = %v", err)
	}
}

// TestEngine_PriceAppend checks that charges are appended after what dst
// already holds, that a reused buffer gives the same charges, that a
// failed batch leaves dst alone, and that a shadow comparison is not
// disturbed when the caller overwrites its buffer right after the call.
func TestEngine_PriceAppend(t *testing.T) {
	v1, v2 := examplePlugin(t, "c-flat"), examplePlugin(t, "c-flat-v2")
	reports := make(chan ShadowReport, 1)
	e := newEngine(t, func(c *Config) { c.OnShadow = func(r ShadowReport) { reports <- r } })
	mustLoad(t, e, v1)
	ctx := context.Background()
	sentinel := usd(7, 1)
	recs := []pricing.Record{rec("a", "m", 10), rec("b", "m", 0), rec("a", "n", 5)}
	want := []pricing.Charge{sentinel, usd(20, 0), usd(0, 0), usd(10, 0)}
	buf := []pricing.Charge{sentinel}
	for round := 0; round < 3; round++ {
		res, err := e.PriceAppend(ctx, recs, buf[:1])
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(res.Charges, want) || res.PluginSHA256 != SHA256Hex(v1) {
			t.Fatalf("round %d: %+v, want %+v from %s", round, res, want, SHA256Hex(v1))
		}
		buf = res.Charges
	}
	bad := []pricing.Record{rec("a", "m", 1), {Tenant: "a", Meter: "m", Start: t0, End: t0.Add(-time.Second)}}
	if res, err := e.PriceAppend(ctx, bad, buf[:1]); err == nil || res.Charges != nil {
		t.Fatalf("reversed window priced: %+v, %v", res, err)
	}
	if !reflect.DeepEqual(buf, want) {
		t.Fatalf("failed batch changed the buffer: %+v", buf)
	}
	if _, err := e.SetShadow(ctx, v2); err != nil {
		t.Fatal(err)
	}
	res, err := e.PriceAppend(ctx, recs, buf[:0])
	if err != nil {
		t.Fatal(err)
	}
	clear(res.Charges) // the caller reuses its buffer at once
	if r := <-reports; r.LiveTotalMicro != 30 || r.CandidateTotalMicro != 45 || r.Differing != 2 {
		t.Fatalf("shadow report %+v: want live 30, candidate 45, 2 differing", r)
	}
}

// TestEngine_batchGrowth prices batches of changing shape on one warm
// instance, so each way the host places a batch in guest memory runs:
// records written straight into the input buffer, records that fit but
// strings that do not (a new kmeter_alloc after encoding), more records
// than the buffer holds, and small again. The C tls plugin reads every
// meter name from the string area and charges only
// tls_server_handshakes, so a string misplaced shows as a wrong charge.
func TestEngine_batchGrowth(t *testing.T) {
	e := newEngine(t, func(c *Config) { c.PoolSize = 1 })
	mustLoad(t, e, examplePlugin(t, "c-tls"))
	batch := func(n, tenantLen int) ([]pricing.Record, []pricing.Charge) {
		recs := make([]pricing.Record, n)
		want := make([]pricing.Charge, n)
		for i := range recs {
			meter := "tls_server_handshakes"
			if i%3 == 1 {
				meter = "tls_server_handshake" // a prefix: must not match
			}
			tenant := fmt.Sprintf("t%d-%s", i, strings.Repeat("x", tenantLen))
			recs[i] = rec(tenant, meter, uint64(i+1))
			want[i] = usd(0, 0)
			if i%3 != 1 {
				want[i] = usd(int64(i+1), 0)
			}
		}
		return recs, want
	}
	for _, step := range []struct {
		name         string
		n, tenantLen int
	}{
		{"small", 4, 1},
		{"same records, long strings", 4, 5000},
		{"small again", 4, 1},
		{"more records", 3000, 1},
		{"fewer, long strings", 100, 2000},
		{"small at the end", 2, 0},
	} {
		recs, want := batch(step.n, step.tenantLen)
		res, err := e.Price(context.Background(), recs)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if !reflect.DeepEqual(res.Charges, want) {
			t.Fatalf("%s: charges differ from the documented rule", step.name)
		}
	}
	if s := e.Stats(); s.Batches != 6 {
		t.Fatalf("stats %+v, want 6 batches", s)
	}
}

// TestEngine_hotReload prices batches continuously from several
// goroutines while the live plugin flips between two versions (2 and 3
// micro-USD per unit). Every batch must be priced entirely by the version
// its result names, none may fail, and the total billed must equal the
// sum over batches of quantity x that version's price: nothing lost,
// nothing priced twice or by a mix of versions.
func TestEngine_hotReload(t *testing.T) {
	v1, v2 := examplePlugin(t, "c-flat"), examplePlugin(t, "c-flat-v2")
	price := map[string]int64{SHA256Hex(v1): 2, SHA256Hex(v2): 3}
	e := newEngine(t, func(c *Config) { c.PoolSize = 2; c.CallTimeout = 10 * time.Second })
	mustLoad(t, e, v1)

	const workers = 4
	swaps := 40
	if testing.Short() {
		swaps = 10
	}
	var (
		stop                      atomic.Bool
		wg                        sync.WaitGroup
		batches, billed, expected atomic.Int64
		perVersion                sync.Map
		firstErr                  error
		errOnce                   sync.Once
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				recs := make([]pricing.Record, 1+i%7)
				var qty int64
				for j := range recs {
					recs[j] = rec("t", "calls", uint64(w*1000+i+j))
					qty += int64(w*1000 + i + j)
				}
				res, err := e.Price(context.Background(), recs)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				p, ok := price[res.PluginSHA256]
				if !ok {
					errOnce.Do(func() { firstErr = errors.New("unknown plugin sha " + res.PluginSHA256) })
					return
				}
				for j, c := range res.Charges {
					if c.AmountMicro != int64(recs[j].Quantity)*p {
						errOnce.Do(func() { firstErr = errors.New("a batch mixed plugin versions") })
						return
					}
				}
				amt, _ := sum(res.Charges)
				billed.Add(amt)
				expected.Add(qty * p)
				batches.Add(1)
				n, _ := perVersion.LoadOrStore(res.PluginSHA256, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}(w)
	}
	for i := 0; i < swaps; i++ {
		next := v2
		if i%2 == 1 {
			next = v1
		}
		mustLoad(t, e, next)
		time.Sleep(2 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if billed.Load() != expected.Load() {
		t.Fatalf("billed %d micro-USD, want %d", billed.Load(), expected.Load())
	}
	for sha := range price {
		n, ok := perVersion.Load(sha)
		if !ok || n.(*atomic.Int64).Load() == 0 {
			t.Fatalf("version %s priced no batch; the test did not exercise swapping", short(sha))
		}
	}
	if s := e.Stats(); s.Batches != uint64(batches.Load()) || s.Loads != uint64(swaps+1) {
		t.Fatalf("stats %+v, want %d batches and %d loads", s, batches.Load(), swaps+1)
	}
}

// TestEngine_Watch replaces the plugin file on disk and waits for the
// engine to price with the new version; a broken file keeps the old one.
func TestEngine_Watch(t *testing.T) {
	v1, v2 := examplePlugin(t, "c-flat"), examplePlugin(t, "c-flat-v2")
	dir := t.TempDir()
	path := filepath.Join(dir, "pricing.wasm")
	replace := func(b []byte) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	replace(v1)
	e := newEngine(t, nil)
	if _, err := e.LoadFile(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx, path, 5*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(sha string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			res, err := e.Price(context.Background(), []pricing.Record{rec("a", "m", 10)})
			if err != nil {
				t.Fatal(err)
			}
			if res.PluginSHA256 == sha {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("plugin %s never went live", short(sha))
	}
	replace(v2)
	waitFor(SHA256Hex(v2))
	replace(fixture(t, "badversion"))
	for e.Stats().LoadFailures == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if id, _ := e.Live(); id.SHA256 != SHA256Hex(v2) {
		t.Fatalf("a broken file replaced the live plugin")
	}
	replace(v1)
	waitFor(SHA256Hex(v1))
}

// TestEngine_shadow runs a candidate (3 micro-USD per unit) beside the
// live plugin (2 per unit): results and billing stay the live plugin's,
// and the report shows the difference.
func TestEngine_shadow(t *testing.T) {
	v1, v2 := examplePlugin(t, "c-flat"), examplePlugin(t, "c-flat-v2")
	reports := make(chan ShadowReport, 4)
	e := newEngine(t, func(c *Config) { c.OnShadow = func(r ShadowReport) { reports <- r } })
	mustLoad(t, e, v1)
	if _, err := e.SetShadow(context.Background(), v2); err != nil {
		t.Fatal(err)
	}
	recs := []pricing.Record{rec("a", "m", 10), rec("a", "m", 0), rec("b", "m", 5)}
	res, err := e.Price(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	if amt, _ := sum(res.Charges); amt != 30 || res.PluginSHA256 != SHA256Hex(v1) {
		t.Fatalf("live result %+v, want 30 micro-USD from the live plugin", res)
	}
	r := <-reports
	want := ShadowReport{LiveSHA256: SHA256Hex(v1), CandidateSHA256: SHA256Hex(v2), Records: 3, Differing: 2, LiveTotalMicro: 30, CandidateTotalMicro: 45}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("report %+v, want %+v", r, want)
	}
	// Same module as shadow: no difference.
	if _, err := e.SetShadow(context.Background(), v1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Price(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if r := <-reports; r.Differing != 0 || r.CandidateTotalMicro != 30 {
		t.Fatalf("identical shadow reported %+v", r)
	}
	e.ClearShadow()
	if _, err := e.Price(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reports:
		t.Fatalf("report after ClearShadow: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	if s := e.Stats(); s.Batches != 3 || s.ShadowBatches != 2 || s.ShadowDiffs != 1 {
		t.Fatalf("stats %+v: want 3 billed batches, 2 shadowed, 1 different", s)
	}
}

// TestEngine_PriceEvent prices streamed events with the C tls plugin's
// kmeter_on_event handler. The handler, unlike kmeter_price, refuses an
// event whose quantity is not 1, which shows which export ran.
func TestEngine_PriceEvent(t *testing.T) {
	e := newEngine(t, nil)
	id := mustLoad(t, e, examplePlugin(t, "c-tls"))
	e.mu.RLock()
	hasEvent := e.live.hasEvent
	e.mu.RUnlock()
	if !hasEvent {
		t.Fatal("c-tls loaded without its kmeter_on_event handler")
	}
	tests := []struct {
		name    string
		rec     pricing.Record
		want    int64 // micro-USD; ignored when wantErr
		wantErr bool
	}{
		{"one server handshake", rec("pay", "tls_server_handshakes", 1), 1, false},
		{"other meter is free", rec("pay", "syscalls", 1), 0, false},
		{"quantity above 1 is not one event", rec("pay", "tls_server_handshakes", 30_000), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sha, err := e.PriceEvent(context.Background(), tt.rec)
			if tt.wantErr {
				if !errors.Is(err, ErrBadOutput) || !strings.Contains(err.Error(), "malformed input") {
					t.Fatalf("PriceEvent = %+v, %v; want the handler's malformed-input refusal", c, err)
				}
				// kmeter_price itself prices the same record as a batch.
				res, err := e.Price(context.Background(), []pricing.Record{tt.rec})
				if err != nil || res.Charges[0].AmountMicro != int64(tt.rec.Quantity) {
					t.Fatalf("Price of the same record = %+v, %v; want %d", res, err, tt.rec.Quantity)
				}
				return
			}
			if err != nil || c != (pricing.Charge{AmountMicro: tt.want, Currency: "USD"}) || sha != id.SHA256 {
				t.Fatalf("PriceEvent = %+v, %s, %v; want %d micro-USD from %s", c, sha, err, tt.want, id.SHA256)
			}
		})
	}
	const events = 1000
	var total int64
	for range events {
		c, _, err := e.PriceEvent(context.Background(), rec("pay", "tls_server_handshakes", 1))
		if err != nil {
			t.Fatal(err)
		}
		total += c.AmountMicro
	}
	if total != events {
		t.Fatalf("%d handshake events charged %d micro-USD, want %d", events, total, events)
	}
}

// TestEngine_Isolate gives each batch a fresh instance.
func TestEngine_Isolate(t *testing.T) {
	e := newEngine(t, func(c *Config) { c.Isolate = true; c.PoolSize = 2 })
	mustLoad(t, e, examplePlugin(t, "c-split"))
	for i := 0; i < 20; i++ {
		res, err := e.Price(context.Background(), []pricing.Record{rec("a", "m", 10)})
		if err != nil || res.Charges[0] != (pricing.Charge{AmountMicro: 130, Currency: "USD", VendorMicro: 91}) {
			t.Fatalf("batch %d: %+v, %v", i, res, err)
		}
	}
}

// TestEngine_Collect checks the Prometheus exposition after one good and
// one failed batch.
func TestEngine_Collect(t *testing.T) {
	e := newEngine(t, nil)
	mustLoad(t, e, fixture(t, "trap"))
	if _, err := e.Price(context.Background(), []pricing.Record{rec("a", "m", 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Price(context.Background(), trigger()); !errors.Is(err, ErrTrap) {
		t.Fatalf("Price = %v, want ErrTrap", err)
	}
	const want = `
# HELP kmeter_plugin_batch_failures_total Batches that failed and were handed back to the caller, by reason.
# TYPE kmeter_plugin_batch_failures_total counter
kmeter_plugin_batch_failures_total{reason="bad_output"} 0
kmeter_plugin_batch_failures_total{reason="licence_exhausted"} 0
kmeter_plugin_batch_failures_total{reason="other"} 0
kmeter_plugin_batch_failures_total{reason="timeout"} 0
kmeter_plugin_batch_failures_total{reason="trap"} 1
# HELP kmeter_plugin_batches_total Batches priced successfully by the live plugin.
# TYPE kmeter_plugin_batches_total counter
kmeter_plugin_batches_total 1
`
	if err := testutil.CollectAndCompare(e, strings.NewReader(want), "kmeter_plugin_batches_total", "kmeter_plugin_batch_failures_total"); err != nil {
		t.Fatal(err)
	}
}

// TestEngine_compilationCache checks compiled code lands in CacheDir and
// a second engine (a restart) loads from it.
func TestEngine_compilationCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	mod := examplePlugin(t, "c-flat")
	for i := 0; i < 2; i++ {
		e := newEngine(t, func(c *Config) { c.CacheDir = dir })
		mustLoad(t, e, mod)
		res, err := e.Price(context.Background(), []pricing.Record{rec("a", "m", 4)})
		if err != nil || res.Charges[0].AmountMicro != 8 {
			t.Fatalf("engine %d: %+v, %v", i, res, err)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		var files int
		filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				files++
			}
			return nil
		})
		if files == 0 {
			t.Fatalf("engine %d: no compiled code in %s", i, dir)
		}
	}
}

// TestEngine_hostImports checks the kmeter host imports: now() is the
// batch's latest window end (a deterministic clock), log reaches the host
// log tagged with the plugin, and kmeter_on_event handles single events.
func TestEngine_hostImports(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	e := newEngine(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logged.Write(p)
		}), nil))
	})
	id := mustLoad(t, e, fixture(t, "hostcalls"))
	r := rec("a", "m", 1)
	r.End = t0.Add(90 * time.Second)
	for i := 0; i < 2; i++ {
		res, err := e.Price(context.Background(), []pricing.Record{r})
		if err != nil {
			t.Fatal(err)
		}
		want := pricing.Charge{AmountMicro: t0.Add(90 * time.Second).Unix(), Currency: "EUR"}
		if res.Charges[0] != want {
			t.Fatalf("charge %+v, want %+v (now() = window end)", res.Charges[0], want)
		}
	}
	c, _, err := e.PriceEvent(context.Background(), r)
	if err != nil || c.AmountMicro != 7 {
		t.Fatalf("PriceEvent = %+v, %v; want 7 from kmeter_on_event", c, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "msg=priced") || !strings.Contains(logged.String(), id.SHA256) {
		t.Fatalf("guest log line missing or untagged:\n%s", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// fakeVerifier accepts only modules whose sha256 it was given and vouches
// for them as "vendor-key".
type fakeVerifier struct{ allowed string }

func (f fakeVerifier) Verify(_ context.Context, module []byte) (Identity, error) {
	sha := SHA256Hex(module)
	if sha != f.allowed {
		return Identity{}, errors.New("signature does not verify")
	}
	return Identity{SHA256: sha, Signer: "vendor-key", Licence: "licence-42"}, nil
}

// TestEngine_Load_verifier checks the Verifier runs before compiling:
// its refusal keeps the live plugin, its identity is what the engine
// reports.
func TestEngine_Load_verifier(t *testing.T) {
	good, other := examplePlugin(t, "c-flat"), examplePlugin(t, "c-split")
	e := newEngine(t, func(c *Config) { c.Verifier = fakeVerifier{allowed: SHA256Hex(good)} })
	id := mustLoad(t, e, good)
	if id.Signer != "vendor-key" || id.Licence != "licence-42" {
		t.Fatalf("identity %+v does not come from the verifier", id)
	}
	if _, err := e.Load(context.Background(), other); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("Load(unsigned) = %v, want ErrRefused from the verifier", err)
	}
	if live, _ := e.Live(); live.SHA256 != id.SHA256 || live.Signer != "vendor-key" {
		t.Fatalf("live %+v after a refused load", live)
	}
}
