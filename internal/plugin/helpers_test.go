package plugin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/pricing"
)

// Example plugins are built from source once per test binary, per
// language, by plugins/build.sh.
var (
	buildMu   sync.Mutex
	buildDir  string
	buildErrs = map[string]error{}
	built     = map[string]bool{}
)

// langOf maps a plugin file name to its language and required tools.
func langOf(name string) (lang string, tools []string) {
	switch {
	case strings.HasPrefix(name, "c-"):
		return "c", []string{"clang", "wasm-ld"}
	case strings.HasPrefix(name, "go-"):
		return "go", []string{"go"}
	case strings.HasPrefix(name, "as-"):
		return "as", []string{"node", "npm"}
	}
	panic("unknown plugin " + name)
}

func repoRoot(tb testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// examplePlugin returns the bytes of an example plugin built from source.
// It skips when the language's toolchain is missing, unless
// KMETER_REQUIRE_BPF=1 (CI), where it fails.
func examplePlugin(tb testing.TB, name string) []byte {
	tb.Helper()
	lang, tools := langOf(name)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("KMETER_REQUIRE_BPF") == "1" {
				tb.Fatalf("KMETER_REQUIRE_BPF=1 but %s is not installed, needed to build %s", tool, name)
			}
			tb.Skipf("skipping: %s not installed, needed to build plugin %s (set KMETER_REQUIRE_BPF=1 to make this a failure)", tool, name)
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir == "" {
		d, err := os.MkdirTemp("", "kmeter-plugins-")
		if err != nil {
			tb.Fatal(err)
		}
		buildDir = d
	}
	if !built[lang] {
		built[lang] = true
		cmd := exec.Command("bash", filepath.Join(repoRoot(tb), "plugins", "build.sh"), buildDir, lang)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErrs[lang] = fmt.Errorf("plugins/build.sh %s: %v\n%s", lang, err, out)
		}
	}
	if err := buildErrs[lang]; err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(buildDir, name+".wasm"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEngine returns an engine with test defaults, closed when the test
// ends.
func newEngine(tb testing.TB, mod func(*Config)) *Engine {
	tb.Helper()
	cfg := Config{Verifier: AllowUnsigned(), Logger: quietLogger(), CallTimeout: 200 * time.Millisecond, MemoryLimitPages: DefaultMemoryLimitPages}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

func mustLoad(tb testing.TB, e *Engine, mod []byte) Identity {
	tb.Helper()
	id, err := e.Load(context.Background(), mod)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	return id
}

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func rec(tenant, meter string, q uint64) pricing.Record {
	return pricing.Record{Tenant: tenant, Meter: meter, Quantity: q, Start: t0, End: t0.Add(time.Minute)}
}

func sum(cs []pricing.Charge) (amount, vendor int64) {
	for _, c := range cs {
		amount += c.AmountMicro
		vendor += c.VendorMicro
	}
	return
}
