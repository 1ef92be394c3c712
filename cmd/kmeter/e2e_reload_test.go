package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/testutil"
)

// metricLine returns the first /metrics line that starts with name and
// contains every one of labels ("" when there is none).
func (a *testAgent) metricLine(t *testing.T, name string, labels ...string) string {
	t.Helper()
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
lines:
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		return line
	}
	return ""
}

// waitMetric polls /metrics until a line of name with labels ends in
// " value".
func (a *testAgent) waitMetric(t *testing.T, timeout time.Duration, name, value string, labels ...string) {
	t.Helper()
	var line string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if line = a.metricLine(t, name, labels...); strings.HasSuffix(line, " "+value) {
			return
		}
	}
	t.Fatalf("/metrics: %s%v not %s after %v (last: %q)", name, labels, value, timeout, line)
}

// replaceFile swaps path's content atomically, as an operator deploying a
// new plugin version should.
func replaceFile(t *testing.T, path, from string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A new signed version of a plugin deployed under a running agent prices
// the usage that follows, and the invoice names which version priced which
// units; an unsigned replacement is refused and the old version keeps
// billing.
func TestE2E_pluginHotReload(t *testing.T) {
	v1, keys := signedPlugin(t, buildPlugin(t, "c-flat")) // 2 micro-USD per unit
	dir := filepath.Dir(v1)
	built := filepath.Dir(buildPlugin(t, "c-flat"))
	sign := func(module, out string) string {
		if _, _, err := pluginCLI(t, "plugin", "sign", "--key", filepath.Join(dir, "acme.key"), "--out", out, module); err != nil {
			t.Fatalf("sign %s: %v", module, err)
		}
		return out
	}
	v2 := sign(filepath.Join(built, "c-flat-v2.wasm"), filepath.Join(dir, "v2.wasm")) // 3 micro-USD per unit
	free := sign(filepath.Join(built, "c-tls.wasm"), filepath.Join(dir, "tls.wasm"))  // 0 for tcp_connects
	live := filepath.Join(t.TempDir(), "connects.wasm")
	replaceFile(t, live, v1)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return plugin.SHA256Hex(b)
	}
	sha1, sha2 := read(v1), read(v2)

	shop := testutil.NewCgroup(t, "shop")
	cfg := tenantConfig("shop", shop, "") + fmt.Sprintf("pricing:\n  - {tenant: shop, meter: tcp_connects, plugin: %q}\n  - {plugin: %q}\n", live, free)
	a := startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--interval", "200ms",
		"--trusted-keys", keys, "--config", writeConfig(t, cfg))
	addr := acceptAll(t)
	plug := fmt.Sprintf("plugin=%q", live)
	connect := func(n int) {
		t.Helper()
		if r := runConnects(t, shop, addr, fmt.Sprint(n)); r.ok != n {
			t.Fatalf("%d of %d connects passed", r.ok, n)
		}
	}

	connect(7)
	a.waitBilled(t, "shop", meter.TCPConnects, 7, 10*time.Second)

	// Unsigned: refused (counted), v1 stays live and keeps billing.
	replaceFile(t, live, filepath.Join(built, "c-flat-v2.wasm"))
	a.waitMetric(t, 10*time.Second, "kmeter_plugin_loads_total", "1", plug, `result="refused"`)
	if l := a.metricLine(t, "kmeter_plugin_live_info", plug); !strings.Contains(l, sha1) {
		t.Fatalf("after an unsigned replacement the live plugin is %q, want v1 %s", l, sha1)
	}
	connect(3)
	a.waitBilled(t, "shop", meter.TCPConnects, 10, 10*time.Second)

	// Signed v2: live within the reload interval (2s), prices what follows.
	replaceFile(t, live, v2)
	a.waitMetric(t, 10*time.Second, "kmeter_plugin_live_info", "1", plug, sha2)
	connect(5)
	inv := a.waitBilled(t, "shop", meter.TCPConnects, 15, 10*time.Second)

	want := map[string][2]int64{sha1: {10, 20}, sha2: {5, 15}}
	got := map[string][2]int64{}
	for _, l := range inv.Lines {
		if l.Meter == meter.TCPConnects {
			g := got[l.PluginSHA256]
			got[l.PluginSHA256] = [2]int64{g[0] + l.Quantity, g[1] + l.AmountMicro}
		}
	}
	for sha, w := range want {
		if got[sha] != w {
			t.Errorf("tcp_connects priced by %.12s: quantity, amount %v, want %v", sha, got[sha], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tcp_connects lines by plugin %v, want only v1 and v2 %v", got, want)
	}
}
