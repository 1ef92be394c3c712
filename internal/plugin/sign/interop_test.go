package sign

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The files in testdata/interop were written by wasmsign2's own library
// (see testdata/interop/harness/README.md for the exact build and
// commands): test.key/test.pub are a key pair, *.wasmsign2.wasm are
// modules wasmsign2 signed with it.

func readInterop(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "interop", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInterop_verifyWasmsign2Output(t *testing.T) {
	pub, err := ReadPublicKeyFile("testdata/interop/test.pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"plugin.wasmsign2.wasm", "licensed.wasmsign2.wasm"} {
		t.Run(name, func(t *testing.T) {
			res, err := Verify(readInterop(t, name), []PublicKey{pub})
			if err != nil {
				t.Fatalf("module signed by wasmsign2 does not verify: %v", err)
			}
			if !res.Signer.Equal(pub) {
				t.Fatalf("signer %s, want %s", res.Signer, pub)
			}
		})
	}
}

// TestInterop_sameBytesAsWasmsign2 signs the same input with the same key
// and requires kmeter's output to equal wasmsign2's byte for byte
// (Ed25519 is deterministic), key id included.
func TestInterop_sameBytesAsWasmsign2(t *testing.T) {
	k, err := ReadKeyPairFile("testdata/interop/test.key")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Sign(pluginWasm, k)
	if err != nil {
		t.Fatal(err)
	}
	if want := readInterop(t, "plugin.wasmsign2.wasm"); !bytes.Equal(got, want) {
		t.Fatalf("kmeter and wasmsign2 signatures differ\nkmeter    %x\nwasmsign2 %x", got, want)
	}
	// Re-signing wasmsign2's licensed module replaces its signature with
	// an identical one.
	licensed := readInterop(t, "licensed.wasmsign2.wasm")
	got, err = Sign(licensed, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, licensed) {
		t.Fatalf("re-signed licensed module differs from wasmsign2's")
	}
}

// TestInterop_wasmsign2VerifiesKmeter runs the wasmsign2 interop driver
// (KMETER_WASMSIGN2) on modules signed here; skipped when it is not built.
func TestInterop_wasmsign2VerifiesKmeter(t *testing.T) {
	ws := os.Getenv("KMETER_WASMSIGN2")
	if ws == "" {
		t.Skip("KMETER_WASMSIGN2 not set; see testdata/interop/harness/README.md")
	}
	k, err := ReadKeyPairFile("testdata/interop/test.key")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, module := range map[string][]byte{"plugin": pluginWasm, "abifunc": abiFuncWasm} {
		signed, err := Sign(module, k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".wasm")
		os.WriteFile(path, signed, 0o644)
		out, err := exec.Command(ws, "verify", "testdata/interop/test.pub", path).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("wasmsign2 refuses %s: %v: %s", name, err, out)
		}
		signed[len(signed)-1] ^= 1
		os.WriteFile(path, signed, 0o644)
		if out, err := exec.Command(ws, "verify", "testdata/interop/test.pub", path).CombinedOutput(); err == nil {
			t.Fatalf("wasmsign2 accepts tampered %s: %s", name, out)
		}
	}
}
