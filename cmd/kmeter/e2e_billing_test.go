package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/testutil"
)

// tenantConfig names tenant as the subtree of cgroup cg.
func tenantConfig(tenant string, cg testutil.Cgroup, extra string) string {
	return fmt.Sprintf("tenants:\n  - name: %s\n    cgroups: [%q]\n%s", tenant, cg.Rel, extra)
}

// Real TLS handshakes served from a tenant's cgroup are counted by the
// kernel, priced by the signed c/tls plugin (1 micro-USD each) and
// invoiced exactly: N handshakes, N micro-USD, one line naming the plugin.
func TestE2E_billingTLS(t *testing.T) {
	signed, keys := signedPlugin(t, buildPlugin(t, "c-tls"))
	mod, err := os.ReadFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	shop := testutil.NewCgroup(t, "shop")
	web := testutil.NewCgroup(t, "shop/web") // the server runs in a child: the tenant is the subtree
	client := testutil.NewCgroup(t, "client")
	data := t.TempDir()
	const interval = 200 * time.Millisecond
	a := startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", data, "--interval", interval.String(),
		"--plugin", signed, "--trusted-keys", keys, "--config", writeConfig(t, tenantConfig("shop", shop, "")))

	const n = 30
	tlsHandshakes(t, web, client, n)
	a.waitBilled(t, "shop", meter.TLSServerHandshakes, n, 10*time.Second)
	time.Sleep(3 * interval) // later windows must not add to it
	a.stop(t)

	inv := invoiceCLI(t, "shop", "--data-dir", data)
	if inv.TotalMicro != n {
		t.Errorf("invoice total %d micro-USD, want %d (1 per handshake)", inv.TotalMicro, n)
	}
	if inv.Currency != "USD" {
		t.Errorf("invoice currency %q, want USD", inv.Currency)
	}
	var found bool
	for _, l := range inv.Lines {
		if l.Meter != meter.TLSServerHandshakes {
			if l.AmountMicro != 0 {
				t.Errorf("line %+v: c/tls charges only TLS server handshakes", l)
			}
			continue
		}
		if found {
			t.Errorf("second %s line %+v: one plugin version priced them all", l.Meter, l)
		}
		found = true
		if l.Quantity != n || l.AmountMicro != n {
			t.Errorf("%s line: quantity %d amount %d, want %d and %d", l.Meter, l.Quantity, l.AmountMicro, n, n)
		}
		if want := plugin.SHA256Hex(mod); l.PluginSHA256 != want {
			t.Errorf("line priced by plugin %s, want the signed module %s", l.PluginSHA256, want)
		}
	}
	if !found {
		t.Fatalf("invoice has no %s line: %+v", meter.TLSServerHandshakes, inv)
	}
	// The client's cgroup is not part of the tenant: nothing of it is here.
	if q, _ := lineOf(inv, meter.TLSClientHandshakes); q != 0 {
		t.Errorf("tenant shop billed %d client handshakes, want 0 (the client ran elsewhere)", q)
	}
	if out, code, err := pluginCLI(t, "ledger", "verify", "--data-dir", data); code != 0 {
		t.Errorf("kmeter ledger verify: exit %d, %v\n%s", code, err, out)
	}
}

// An agent given --trusted-keys refuses to start with an unsigned plugin
// and says why, before it bills anything.
func TestE2E_unsignedPluginRefused(t *testing.T) {
	module := buildPlugin(t, "c-tls")
	_, keys := signedPlugin(t, module)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$", "run", "--listen", "127.0.0.1:0", "--interval", "200ms",
		"--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--plugin", module, "--trusted-keys", keys)
	cmd.Env = append(os.Environ(), testutil.HelperEnv+"=kmeter")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("agent with an unsigned plugin still running after 30s\n%s", stderr.String())
	}
	if err == nil {
		t.Fatalf("agent started with an unsigned plugin and --trusted-keys\n%s", stderr.String())
	}
	all := stderr.String()
	msg := strings.TrimSpace(all)
	msg = msg[strings.LastIndex(msg, "\n")+1:] // the error the command returned
	t.Logf("agent refused to start: %s", msg)
	if strings.Contains(all, "kmeter running") {
		t.Errorf("agent reported running before refusing the plugin:\n%s", all)
	}
	for _, want := range []string{module, "not signed", "kmeter plugin sign"} {
		if !strings.Contains(msg, want) {
			t.Errorf("startup error does not say %q: %s", want, msg)
		}
	}
}
