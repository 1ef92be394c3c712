package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin"
)

// pluginCLI runs kmeter in-process and returns stdout and the exit code
// main would use.
func pluginCLI(t *testing.T, args ...string) (string, int, error) {
	t.Helper()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		return out.String(), exitCode(err), err
	}
	return out.String(), 0, nil
}

func writeLicence(t *testing.T, path string, notAfter time.Time, hosts ...string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"publisher": "Acme", "licensee": "Bank", "not_after": notAfter, "hosts": hosts, "max_calls": 500})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPluginCLI_keygenSignVerifyInspect(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	// wat2wasm testdata/plugin.wat -o testdata/plugin.wasm   (wabt 1.0.32)
	in := "testdata/plugin.wasm"
	hostID := "host-under-test"

	out, code, err := pluginCLI(t, "plugin", "keygen", "--out", p("acme"))
	if code != 0 {
		t.Fatalf("keygen: %v", err)
	}
	if !strings.Contains(out, "acme.key") || !strings.Contains(out, "acme.pub") {
		t.Fatalf("keygen output = %q", out)
	}
	for name, size := range map[string]int64{"acme.key": 65, "acme.pub": 33} {
		st, err := os.Stat(p(name))
		if err != nil || st.Size() != size {
			t.Fatalf("%s: %v, size %d, want %d", name, err, st.Size(), size)
		}
	}
	if st, _ := os.Stat(p("acme.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("acme.key mode %v, want 0600", st.Mode().Perm())
	}
	if _, code, err := pluginCLI(t, "plugin", "keygen", "--out", p("acme")); code == 0 || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("keygen over existing key: code %d, %v", code, err)
	}
	if _, code, _ := pluginCLI(t, "plugin", "keygen", "--out", p("other")); code != 0 {
		t.Fatal("second keygen failed")
	}

	writeLicence(t, p("licence.json"), time.Now().Add(24*time.Hour), hostID)
	writeLicence(t, p("expired.json"), time.Now().Add(-time.Hour), hostID)
	if _, code, err := pluginCLI(t, "plugin", "sign", "--key", p("acme.key"), "--licence", p("licence.json"), "--out", p("signed.wasm"), in); code != 0 {
		t.Fatalf("sign: %v", err)
	}
	if _, code, err := pluginCLI(t, "plugin", "sign", "--key", p("acme.key"), "--licence", p("expired.json"), "--out", p("expired.wasm"), in); code != 0 {
		t.Fatalf("sign expired: %v", err)
	}
	signed, _ := os.ReadFile(p("signed.wasm"))
	tampered := bytes.Replace(signed, []byte(`"max_calls":500`), []byte(`"max_calls":900`), 1)
	if bytes.Equal(tampered, signed) {
		t.Fatal("licence not found in signed module")
	}
	os.WriteFile(p("tampered.wasm"), tampered, 0o644)
	os.WriteFile(p("revoked.txt"), []byte("sha256 "+plugin.SHA256Hex(signed)+"\n"), 0o644)

	tests := []struct {
		name string
		args []string
		code int
		want string // in stdout when valid, in the error otherwise
	}{
		{"valid", []string{"--pub", p("acme.pub"), p("signed.wasm")}, 0, "valid\nsha256:  " + plugin.SHA256Hex(signed)},
		{"valid among keys", []string{"--pub", p("other.pub"), "--pub", p("acme.pub"), p("signed.wasm")}, 0, `licensee "Bank"`},
		{"wrong key", []string{"--pub", p("other.pub"), p("signed.wasm")}, 1, "untrusted key"},
		{"unsigned", []string{"--pub", p("acme.pub"), in}, 1, "not signed"},
		{"tampered", []string{"--pub", p("acme.pub"), p("tampered.wasm")}, 1, "modified after signing"},
		{"expired", []string{"--pub", p("acme.pub"), p("expired.wasm")}, 1, "licence expired"},
		{"revoked", []string{"--pub", p("acme.pub"), "--revocations", p("revoked.txt"), p("signed.wasm")}, 1, "revoked"},
		{"missing pub", []string{p("signed.wasm")}, 2, "--pub"},
		{"bad pub", []string{"--pub", p("acme.key"), p("signed.wasm")}, 2, "33 bytes"},
		{"missing module", []string{"--pub", p("acme.pub"), p("nope.wasm")}, 2, "no such file"},
	}
	for _, tt := range tests {
		t.Run("verify "+tt.name, func(t *testing.T) {
			args := append([]string{"plugin", "verify", "--host-id", hostID}, tt.args...)
			out, code, err := pluginCLI(t, args...)
			if code != tt.code {
				t.Fatalf("exit code %d (%v), want %d", code, err, tt.code)
			}
			text := out
			if err != nil {
				text = err.Error()
			}
			if !strings.Contains(text, tt.want) {
				t.Fatalf("output %q does not contain %q", text, tt.want)
			}
		})
	}
	// The licence is bound to another host id than this one.
	if _, code, err := pluginCLI(t, "plugin", "verify", "--pub", p("acme.pub"), "--host-id", "elsewhere", p("signed.wasm")); code != 1 || !strings.Contains(err.Error(), "not valid on this host") {
		t.Fatalf("wrong host: code %d, %v", code, err)
	}

	out, code, err = pluginCLI(t, "plugin", "inspect", p("signed.wasm"))
	if code != 0 {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{
		"sha256:  " + plugin.SHA256Hex(signed),
		"signed:  yes, key id ",
		`licence: publisher "Acme", licensee "Bank"`,
		"hosts " + hostID + ", max calls 500",
		"abi:     1 (global kmeter_abi_version)",
		"imports: 1\n  func   kmeter.log\n",
		"exports: 3\n  memory memory\n  global kmeter_abi_version\n  func   price\n",
		"custom sections: signature, kmeter.licence",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = pluginCLI(t, "plugin", "inspect", in)
	if !strings.Contains(out, "signed:  no") || !strings.Contains(out, "licence: none") {
		t.Errorf("inspect of unsigned module:\n%s", out)
	}
	if _, code, _ := pluginCLI(t, "plugin", "inspect", p("acme.pub")); code == 0 {
		t.Error("inspect accepted a key file as a module")
	}
}

func TestPluginCLI_signErrors(t *testing.T) {
	dir := t.TempDir()
	_, code, err := pluginCLI(t, "plugin", "sign", "testdata/plugin.wasm")
	if code == 0 || !strings.Contains(err.Error(), "--key") || !strings.Contains(err.Error(), "--out") {
		t.Fatalf("sign without flags: %v", err)
	}
	pluginCLI(t, "plugin", "keygen", "--out", filepath.Join(dir, "k"))
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"publisher":"a"}`), 0o644)
	_, code, err = pluginCLI(t, "plugin", "sign", "--key", filepath.Join(dir, "k.key"), "--licence", filepath.Join(dir, "bad.json"), "--out", filepath.Join(dir, "o.wasm"), "testdata/plugin.wasm")
	if code == 0 || !strings.Contains(err.Error(), "licensee is empty") {
		t.Fatalf("sign with bad licence: %v", err)
	}
}

func TestAuditCLI_verify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{audit.EventAccept, audit.EventLoad, audit.EventSwap} {
		if _, err := l.Append(context.Background(), audit.Entry{Event: ev}); err != nil {
			t.Fatal(err)
		}
	}
	head := l.Head()
	l.Close()

	out, code, err := pluginCLI(t, "audit", "verify", "--log", path)
	if code != 0 || !strings.Contains(out, "ok, 3 entries, head "+head.Hash) {
		t.Fatalf("verify: code %d, %v, %q", code, err, out)
	}
	b, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(b, []byte(`"event":"load"`), []byte(`"event":"lead"`), 1), 0o600)
	_, code, err = pluginCLI(t, "audit", "verify", "--log", path)
	if code != 1 || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("edited log: code %d, %v", code, err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	os.WriteFile(path, bytes.Join(lines[:2], nil), 0o600)
	_, code, err = pluginCLI(t, "audit", "verify", "--log", path, "--anchor", head.Hash)
	if code != 1 || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("truncated log with anchor: code %d, %v", code, err)
	}
	if _, code, _ = pluginCLI(t, "audit", "verify", "--log", filepath.Join(t.TempDir(), "none")); code != 2 {
		t.Fatalf("missing log: code %d, want 2", code)
	}
}
