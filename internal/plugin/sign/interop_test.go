package sign

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The files in testdata/interop were written by wasmsign2's own library
// (v0.2.6), as known-answer vectors: test.key/test.pub are a key pair,
// *.wasmsign2.wasm are modules wasmsign2 signed with it.

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
