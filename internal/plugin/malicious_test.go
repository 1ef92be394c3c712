package plugin

import (
	"context"
	"embed"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/pricing"
)

// The fixtures are WebAssembly text in testdata/*.wat, compiled with wabt:
//
//go:generate sh -c "for f in testdata/*.wat; do wat2wasm $DOLLAR{f} -o $DOLLAR{f%.wat}.wasm; done"
//go:embed testdata/*.wasm
var fixtures embed.FS

func fixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := fixtures.ReadFile("testdata/" + name + ".wasm")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// trigger is a batch that makes the runtime fixtures misbehave (record
// 0's quantity >= 1000); the load canary (quantity 1) does not.
func trigger() []pricing.Record { return []pricing.Record{rec("evil", "calls", 1000)} }

// TestEngine_maliciousAtRuntime loads each misbehaving plugin into its own
// engine beside an engine serving the good C flat plugin, makes it
// misbehave, and checks that the batch fails with the right error within
// its deadline, that the failure is counted, that the bad engine still
// prices ordinary batches afterwards, and that the good engine never
// noticed.
func TestEngine_maliciousAtRuntime(t *testing.T) {
	good := newEngine(t, nil)
	mustLoad(t, good, examplePlugin(t, "c-flat"))
	const timeout = 100 * time.Millisecond
	tests := []struct {
		fixture string
		want    error
		count   func(Stats) uint64
		// bound is how long the failing call may take, in CallTimeouts.
		bound time.Duration
	}{
		{"loop", ErrTimeout, func(s Stats) uint64 { return s.Timeouts }, 20},
		// Unbounded recursion stops at MaxCallDepth, not at wazero's own
		// stack ceiling (docs/plugin-abi.md, "Limits").
		{"recursion", ErrTrap, func(s Stats) uint64 { return s.Traps }, 20},
		{"membomb", ErrTrap, func(s Stats) uint64 { return s.Traps }, 20},
		{"trap", ErrTrap, func(s Stats) uint64 { return s.Traps }, 20},
		{"huge", ErrBadOutput, func(s Stats) uint64 { return s.BadOutputs }, 20},
		{"negative", ErrBadOutput, func(s Stats) uint64 { return s.BadOutputs }, 20},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			bad := newEngine(t, func(c *Config) { c.CallTimeout = timeout; c.MemoryLimitPages = 16 })
			mustLoad(t, bad, fixture(t, tt.fixture))
			ctx := context.Background()
			start := time.Now()
			res, err := bad.Price(ctx, trigger())
			took := time.Since(start)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Price = %v, want %v", err, tt.want)
			}
			if res.Charges != nil || res.PluginSHA256 != "" {
				t.Fatalf("failed batch returned charges %+v", res)
			}
			// Generous bound: the point is that the call ended by itself.
			if took > tt.bound*timeout {
				t.Fatalf("failing batch took %v, deadline %v", took, timeout)
			}
			if n := tt.count(bad.Stats()); n != 1 {
				t.Fatalf("failure counter = %d, want 1 (%+v)", n, bad.Stats())
			}
			// The broken instance was discarded: ordinary batches work.
			res, err = bad.Price(ctx, []pricing.Record{rec("a", "calls", 1)})
			if err != nil || len(res.Charges) != 1 {
				t.Fatalf("bad plugin after failure: %v, %+v", err, res)
			}
			res, err = good.Price(ctx, []pricing.Record{rec("a", "calls", 21)})
			if err != nil || res.Charges[0].AmountMicro != 42 {
				t.Fatalf("good plugin beside it: %v, %+v", err, res)
			}
		})
	}
	if s := good.Stats(); s.Traps+s.Timeouts+s.BadOutputs+s.OtherFailures != 0 {
		t.Fatalf("good engine saw failures: %+v", s)
	}
}

// TestEngine_Load_refused checks modules refused at load, each offered
// to an engine whose good live plugin must keep serving.
func TestEngine_Load_refused(t *testing.T) {
	tests := []struct {
		name    string
		module  func(t *testing.T) []byte
		canary  bool // load with the triggering canary
		wantMsg string
	}{
		{"wrong ABI version", func(t *testing.T) []byte { return fixture(t, "badversion") }, false, "kmeter_abi_version returned 2"},
		{"missing price export", func(t *testing.T) []byte { return fixture(t, "noprice") }, false, "missing export kmeter_price"},
		{"missing version export", func(t *testing.T) []byte { return fixture(t, "noversion") }, false, "missing export kmeter_abi_version"},
		{"imports path_open", func(t *testing.T) []byte { return fixture(t, "pathopen") }, false, "wasi_snapshot_preview1.path_open"},
		{"start function", func(t *testing.T) []byte { return fixture(t, "start") }, false, "start function"},
		{"initial memory above cap", func(t *testing.T) []byte { return fixture(t, "hugemem") }, false, "compile"},
		{"not wasm", func(t *testing.T) []byte { return []byte("#!/bin/sh\nrm -rf /\n") }, false, "not a WebAssembly module"},
		{"loops on canary", func(t *testing.T) []byte { return fixture(t, "loop") }, true, "plugin call timed out"},
		{"traps on canary", func(t *testing.T) []byte { return fixture(t, "trap") }, true, "plugin trapped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, func(c *Config) {
				c.CallTimeout = 100 * time.Millisecond
				c.MemoryLimitPages = 16
				if tt.canary {
					c.Canary = trigger()
				}
			})
			goodID := mustLoad(t, e, examplePlugin(t, "c-flat"))
			_, err := e.Load(context.Background(), tt.module(t))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Load = %v, want ErrRefused mentioning %q", err, tt.wantMsg)
			}
			if id, _ := e.Live(); id.SHA256 != goodID.SHA256 {
				t.Fatalf("live plugin changed to %s after a refused load", id.SHA256)
			}
			res, err := e.Price(context.Background(), []pricing.Record{rec("a", "calls", 5)})
			if err != nil || res.Charges[0].AmountMicro != 10 || res.PluginSHA256 != goodID.SHA256 {
				t.Fatalf("good plugin after refused load: %v, %+v", err, res)
			}
			if s := e.Stats(); s.LoadFailures != 1 || s.Loads != 1 {
				t.Fatalf("loads %d, load failures %d; want 1 and 1", s.Loads, s.LoadFailures)
			}
		})
	}
}

// TestEngine_callGuard checks the call guard with testdata/deep.wat:
// legitimate recursion below MaxCallDepth prices, deeper recursion traps
// at once with little memory, and a loop-free call tree with
// exponentially many calls stops at the deadline although wazero itself
// only checks it at loop headers.
func TestEngine_callGuard(t *testing.T) {
	const timeout = 100 * time.Millisecond
	tests := []struct {
		name     string
		maxDepth int
		quantity uint64
		want     error // nil: priced at quantity micro-USD
		wantMsg  string
	}{
		{"recursion 5000 deep under the default limit", 0, 5000, nil, ""},
		{"recursion 5000 deep over a limit of 1000", 1000, 5000, ErrTrap, "guest call depth limit exceeded (1000 nested calls)"},
		{"2^40 calls 41 deep, no loop", 0, 1_000_000, ErrTimeout, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, func(c *Config) { c.CallTimeout = timeout; c.MaxCallDepth = tt.maxDepth; c.MemoryLimitPages = 16 })
			mustLoad(t, e, fixture(t, "deep"))
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			res, err := e.Price(context.Background(), []pricing.Record{rec("a", "calls", tt.quantity)})
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if tt.want == nil {
				if err != nil || res.Charges[0].AmountMicro != int64(tt.quantity) {
					t.Fatalf("Price = %+v, %v; want %d micro-USD", res, err, tt.quantity)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Price = %v, want %v mentioning %q", err, tt.want, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error carries wazero's stack trace: %q", err)
			}
			// Generous bounds for a loaded machine; without the guard the
			// depth case allocates about 160 MB and the fan-out runs for
			// hours.
			if took > 20*timeout {
				t.Fatalf("failing call took %v, deadline %v", took, timeout)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Fatalf("failing call allocated %d MB", alloc>>20)
			}
		})
	}
}
