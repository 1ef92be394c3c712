package trust

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
)

// pluginWasm is a small valid plugin module. Built with:
//
//	wat2wasm testdata/plugin.wat -o testdata/plugin.wasm   (wabt 1.0.32)
//
//go:embed testdata/plugin.wasm
var pluginWasm []byte

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func key(t *testing.T, b byte) sign.KeyPair {
	t.Helper()
	k, err := sign.NewKeyPairFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePub(t *testing.T, dir, name string, k sign.KeyPair) {
	t.Helper()
	b, err := k.Public().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// build embeds lic (when not nil) and signs with k.
func build(t *testing.T, k sign.KeyPair, lic *licence.Licence) []byte {
	t.Helper()
	m := pluginWasm
	if lic != nil {
		var err error
		if m, err = licence.Embed(m, *lic); err != nil {
			t.Fatal(err)
		}
	}
	m, err := sign.Sign(m, k)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func validLicence() licence.Licence {
	return licence.Licence{Publisher: "Acme Pricing", Licensee: "Tenant Bank", NotAfter: now.Add(time.Hour), Hosts: []string{"host-a", "host-b"}, MaxCalls: 1000}
}

type fixture struct {
	dir, revocations, auditPath string
	publisher, stranger         sign.KeyPair
	log                         *audit.Log
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), publisher: key(t, 1), stranger: key(t, 2)}
	keys := filepath.Join(f.dir, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	writePub(t, keys, "acme.pub", f.publisher)
	f.revocations = filepath.Join(f.dir, "revoked.txt")
	if err := os.WriteFile(f.revocations, []byte("# nothing revoked yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.auditPath = filepath.Join(f.dir, "audit.log")
	var err error
	if f.log, err = audit.Open(f.auditPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.log.Close() })
	return f
}

func (f *fixture) verifier(t *testing.T, mod func(*Config)) *Verifier {
	t.Helper()
	cfg := Config{KeysDir: filepath.Join(f.dir, "keys"), HostID: "host-a", RevocationFile: f.revocations, Audit: f.log, Now: func() time.Time { return now }}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifier_Verify_accepts(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	m := build(t, f.publisher, &licence.Licence{Publisher: "Acme Pricing", Licensee: "Tenant Bank", NotAfter: now.Add(time.Hour), Hosts: []string{"host-a"}, MaxCalls: 1000})
	id, err := v.Verify(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if id.SHA256 != plugin.SHA256Hex(m) || id.Signer != f.publisher.Public().String() || id.MaxCalls != 1000 {
		t.Fatalf("identity = %+v", id)
	}
	lic, ok := id.Licence.(licence.Licence)
	if !ok || lic.Licensee != "Tenant Bank" || !lic.NotAfter.Equal(now.Add(time.Hour)) {
		t.Fatalf("licence = %#v", id.Licence)
	}
	// A module without licence is accepted unless licences are required.
	if id, err := v.Verify(context.Background(), build(t, f.publisher, nil)); err != nil || id.MaxCalls != 0 || id.Licence != nil {
		t.Fatalf("unlicensed module: %+v, %v", id, err)
	}
}

func TestVerifier_Verify_refusals(t *testing.T) {
	f := newFixture(t)
	good := build(t, f.publisher, ptr(validLicence()))
	expired := validLicence()
	expired.NotAfter = now.Add(-time.Second)
	otherHost := validLicence()
	otherHost.Hosts = []string{"host-z"}
	tampered := bytes.Replace(good, []byte("Tenant Bank"), []byte("Tenant Bunk"), 1)
	if bytes.Equal(tampered, good) {
		t.Fatal("licensee not found in the signed module")
	}

	tests := []struct {
		name    string
		module  []byte
		revoked string // revocation file content
		cfg     func(*Config)
		want    error
		message string // part of the error text a user needs
	}{
		{name: "unsigned", module: pluginWasm, want: ErrUnsigned, message: "kmeter plugin sign"},
		{name: "wrong key", module: build(t, f.stranger, ptr(validLicence())), want: ErrUntrustedKey, message: "trusted keys"},
		{name: "licence edited after signing", module: tampered, want: ErrBadSignature, message: "modified after signing"},
		{name: "expired", module: build(t, f.publisher, &expired), want: ErrExpired, message: "ended 2026-11-25T11:59:59Z"},
		{name: "wrong host", module: build(t, f.publisher, &otherHost), want: ErrWrongHost, message: `host id "host-a"`},
		{name: "revoked key", module: good, revoked: "key " + f.publisher.Public().String() + "\n", want: ErrRevoked, message: "signer key " + f.publisher.Public().String()},
		{name: "revoked sha", module: good, revoked: "sha256 " + plugin.SHA256Hex(good) + " # leaked build\n", want: ErrRevoked, message: "module sha256 " + plugin.SHA256Hex(good)},
		{name: "revoked untrusted key", module: build(t, f.stranger, nil), revoked: "key " + f.stranger.Public().String(), want: ErrRevoked},
		{name: "no licence when required", module: build(t, f.publisher, nil), cfg: func(c *Config) { c.RequireLicence = true }, want: ErrNoLicence, message: "--licence"},
		{name: "not wasm", module: []byte("#!/bin/sh\n"), want: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content := "# none\n"
			if tt.revoked != "" {
				content = tt.revoked
			}
			if err := os.WriteFile(f.revocations, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			v := f.verifier(t, tt.cfg)
			before := f.log.Head().Seq
			id, err := v.Verify(context.Background(), tt.module)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if id != (plugin.Identity{}) {
				t.Fatalf("refused module got identity %+v", id)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("error %q does not say %q", err, tt.message)
			}
			if f.log.Head().Seq != before+1 {
				t.Fatalf("refusal not audited: head seq %d, want %d", f.log.Head().Seq, before+1)
			}
		})
	}
	if err := os.WriteFile(f.revocations, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier(t, nil).Verify(context.Background(), good); err != nil {
		t.Fatalf("good module after the refusals: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestVerifier_revocationTakesEffectWithoutRestart revokes a module while
// the Verifier lives and checks the next Verify refuses it.
func TestVerifier_revocationTakesEffectWithoutRestart(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	m := build(t, f.publisher, ptr(validLicence()))
	if _, err := v.Verify(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.revocations, []byte("sha256 "+strings.ToUpper(plugin.SHA256Hex(m))+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), m); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revocation: %v, want ErrRevoked", err)
	}
	if err := os.Remove(f.revocations); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), m); err == nil {
		t.Fatal("accepted a module while the revocation list was unreadable")
	}
}

// TestVerifier_audit checks the audit chain records every decision with
// its reason, in order.
func TestVerifier_audit(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	good := build(t, f.publisher, ptr(validLicence()))
	ctx := context.Background()
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, pluginWasm); err == nil {
		t.Fatal("unsigned accepted")
	}
	head, err := audit.VerifyFile(f.auditPath, "")
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 2 {
		t.Fatalf("audit has %d entries, want 2", head.Seq)
	}
	b, _ := os.ReadFile(f.auditPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, want := range []string{
		`"event":"accept","sha256":"` + plugin.SHA256Hex(good) + `","signer":"` + f.publisher.Public().String() + `","licensee":"Tenant Bank"`,
		`"event":"refuse","sha256":"` + plugin.SHA256Hex(pluginWasm) + `","reason":"module is not signed`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("audit line %d = %s\nwant it to contain %s", i+1, lines[i], want)
		}
	}
}

func TestNew_errors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	bad := filepath.Join(dir, "bad")
	for _, d := range []string{empty, bad} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bad, "broken.pub"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	badRev := filepath.Join(dir, "rev")
	if err := os.WriteFile(badRev, []byte("key zz\nban "+strings.Repeat("0", 64)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"no keys", Config{KeysDir: empty, HostID: "h"}, []string{"no trusted keys"}},
		{"no keys dir and no keys", Config{HostID: "h"}, []string{"no trusted keys"}},
		{"missing keys dir", Config{KeysDir: filepath.Join(dir, "nope"), HostID: "h"}, []string{"trusted keys", "no such file"}},
		{"bad key file", Config{KeysDir: bad, HostID: "h"}, []string{"broken.pub", "33 bytes"}},
		{"all problems at once", Config{KeysDir: bad, HostIDFile: filepath.Join(dir, "machine-id"), RevocationFile: badRev},
			[]string{"broken.pub", "read host id", "line 1", "line 2: unknown entry type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil {
				t.Fatal("New accepted a bad config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNew_hostIDFile(t *testing.T) {
	dir := t.TempDir()
	idFile := filepath.Join(dir, "machine-id")
	if err := os.WriteFile(idFile, []byte("0123abcd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{Keys: []sign.PublicKey{key(t, 1).Public()}, HostIDFile: idFile})
	if err != nil {
		t.Fatal(err)
	}
	if v.HostID() != "0123abcd" {
		t.Fatalf("host id = %q", v.HostID())
	}
}

// TestVerifier_everyByteFlipOfLicensedModule flips every byte of a signed,
// licensed module (licence bytes included) and requires a refusal each
// time.
func TestVerifier_everyByteFlipOfLicensedModule(t *testing.T) {
	k := key(t, 1)
	v, err := New(Config{Keys: []sign.PublicKey{k.Public()}, HostID: "host-a", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	m := build(t, k, ptr(validLicence()))
	if _, err := v.Verify(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	for pos := range m {
		flipped := bytes.Clone(m)
		flipped[pos] ^= 0x01
		if id, err := v.Verify(context.Background(), flipped); err == nil {
			t.Fatalf("byte %d flipped: accepted as %+v", pos, id)
		}
	}
}
