package window_test

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"testing"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/window"
)

var (
	// wat2wasm testdata/price3.wat -o testdata/price3.wasm   (wabt 1.0.32)
	//go:embed testdata/price3.wasm
	price3 []byte
	// wat2wasm testdata/price3-trap.wat -o testdata/price3-trap.wasm   (wabt 1.0.32)
	//go:embed testdata/price3-trap.wasm
	price3Trap []byte
)

// TestBiller_withPluginEngine prices with the real Wasm engine: a plugin
// that traps holds the window, a hot swap to a fixed plugin bills the held
// usage once, and the ledger records which plugin priced it.
func TestBiller_withPluginEngine(t *testing.T) {
	ctx := context.Background()
	e, err := plugin.New(ctx, plugin.Config{Verifier: plugin.AllowUnsigned(), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Load(ctx, price3Trap); err != nil {
		t.Fatal(err)
	}
	l := ledgertest.SQLite.Open(t)
	src := newSource()
	b := newBiller(t, "n1", src, l, onePricer{e}, nil)
	src.add("shop", "syscalls", 500)
	src.add("blog", "syscalls", 10)
	if r := mustTick(t, b); r.Windows != 2 || r.Quantity != 510 {
		t.Fatalf("tick 1 = %+v", r)
	}
	src.add("shop", "syscalls", 2000) // the plugin traps on >= 1000 units
	if r := mustTick(t, b); r.Held != 1 || r.Windows != 0 {
		t.Fatalf("tick with a trapping plugin = %+v, want the batch held", r)
	}
	src.add("shop", "syscalls", 1)
	mustTick(t, b)
	if got := b.Unbilled()[window.Key{Tenant: "shop", Meter: "syscalls"}]; got != 2001 {
		t.Fatalf("unbilled = %d, want 2001", got)
	}
	if _, err := e.Load(ctx, price3); err != nil { // hot swap, fixed version
		t.Fatal(err)
	}
	if r := mustTick(t, b); r.Windows != 1 || r.Quantity != 2001 {
		t.Fatalf("tick after the fix = %+v, want the held 2001", r)
	}
	q, a := billed(t, l)
	if q["n1/shop/syscalls"] != 2501 || a["n1/shop/syscalls"] != 3*2501 || q["n1/blog/syscalls"] != 10 || a["n1/blog/syscalls"] != 30 {
		t.Errorf("billed %v for %v", q, a)
	}
	mustVerify(t, l)
	// The late window was priced by the fixed plugin, the first by the
	// trapping one: each line names its plugin.
	cps, err := l.Checkpoints(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := l.UsageLines(ctx, "shop", ledger.PeriodOf(cps[0].End))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{sha(price3Trap): 500, sha(price3): 2001}
	for _, ln := range lines {
		if want[ln.PluginSHA256] != ln.Quantity {
			t.Errorf("line %+v: want quantity %d for that plugin", ln, want[ln.PluginSHA256])
		}
		delete(want, ln.PluginSHA256)
	}
	if len(want) != 0 {
		t.Errorf("no invoice line for plugins %v", want)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
