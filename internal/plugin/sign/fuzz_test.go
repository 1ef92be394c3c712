package sign

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// FuzzSections checks the section splitter never panics and that the
// sections it returns tile the module exactly.
func FuzzSections(f *testing.F) {
	f.Add(pluginWasm)
	signed, _ := Sign(pluginWasm, testKey(1))
	f.Add(signed)
	f.Add([]byte{0, 'a', 's', 'm', 1, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		secs, err := Sections(b)
		if err != nil {
			return
		}
		end := 8
		for _, s := range secs {
			if s.Offset != end || !bytes.Equal(b[s.Offset:s.Offset+len(s.Raw)], s.Raw) {
				t.Fatalf("section at %d does not continue at %d", s.Offset, end)
			}
			end += len(s.Raw)
		}
		if end != len(b) {
			t.Fatalf("sections end at %d of %d", end, len(b))
		}
	})
}

// FuzzParseData checks the signature data parser never panics and that
// what it accepts re-encodes to the same bytes.
func FuzzParseData(f *testing.F) {
	signed, _ := Sign(pluginWasm, testKey(1))
	secs, _ := Sections(signed)
	f.Add(secs[0].Payload)
	f.Add([]byte{1, 1, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseData(b)
		if err != nil {
			return
		}
		if got := d.Marshal(); !bytes.Equal(got, b) {
			// Non-minimal varints are accepted but re-encode shorter.
			if _, err := ParseData(got); err != nil {
				t.Fatalf("re-encoded data does not parse: %v", err)
			}
		}
	})
}

// FuzzInspect checks module inspection never panics.
func FuzzInspect(f *testing.F) {
	f.Add(pluginWasm)
	f.Add(abiFuncWasm)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Inspect(b)
	})
}

// FuzzVerify_tamper flips bits of a signed module at a fuzzed position:
// every change must be refused, and verification must never panic.
func FuzzVerify_tamper(f *testing.F) {
	k := testKey(1)
	signed, err := Sign(pluginWasm, k)
	if err != nil {
		f.Fatal(err)
	}
	keys := []PublicKey{k.Public()}
	f.Add(uint(0), byte(1))
	f.Add(uint(20), byte(0x80))
	f.Add(uint(len(signed)-1), byte(0xff))
	f.Fuzz(func(t *testing.T, pos uint, mask byte) {
		if mask == 0 {
			return
		}
		m := bytes.Clone(signed)
		m[pos%uint(len(m))] ^= mask
		if _, err := Verify(m, keys); err == nil {
			t.Fatalf("byte %d xor 0x%02x still verifies", pos%uint(len(m)), mask)
		}
	})
}

// FuzzVerify_arbitrary feeds arbitrary bytes to Verify.
func FuzzVerify_arbitrary(f *testing.F) {
	k := testKey(1)
	signed, _ := Sign(pluginWasm, k)
	f.Add(signed)
	f.Add(pluginWasm)
	keys := []PublicKey{k.Public()}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := Verify(b, keys)
		if err != nil {
			return
		}
		// The fuzzer cannot forge Ed25519: whatever verifies must carry
		// exactly the signed sections (only the framing of the signature
		// section itself, e.g. a non-minimal size varint, may differ).
		if !bytes.HasSuffix(b, pluginWasm[8:]) || res.ContentHash != sha256.Sum256(pluginWasm[8:]) {
			t.Fatalf("a module with other content verified: %x", b)
		}
	})
}
