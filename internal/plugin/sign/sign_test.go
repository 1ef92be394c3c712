package sign

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestSign_Verify_roundTrip(t *testing.T) {
	k := testKey(1)
	signed, err := Sign(pluginWasm, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(signed, pluginWasm[8:]) {
		t.Fatal("signing changed the module's own sections")
	}
	res, err := Verify(signed, []PublicKey{testKey(9).Public(), k.Public()})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.Signer.Equal(k.Public()) {
		t.Errorf("signer = %s, want %s", res.Signer, k.Public())
	}
	if res.ContentHash != sha256.Sum256(pluginWasm[8:]) {
		t.Errorf("content hash = %x, want sha256 of the original sections", res.ContentHash)
	}
}

func TestVerify_refusals(t *testing.T) {
	k := testKey(1)
	signed, err := Sign(pluginWasm, k)
	if err != nil {
		t.Fatal(err)
	}
	resigned, err := Sign(signed, testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	// A section appended after signing is outside the signed hash.
	appended := append(append([]byte(nil), signed...), EncodeCustomSection("extra", []byte("x"))...)
	// Same content hash, but the signature was made by another key with
	// this key's id: a forged signature by a trusted key.
	forged := bytes.Clone(signed)
	other, _ := Sign(pluginWasm, testKey(3))
	copy(forged[len(forged)-len(pluginWasm[8:])-64:], other[len(other)-len(pluginWasm[8:])-64:len(other)-len(pluginWasm[8:])])

	tests := []struct {
		name   string
		module []byte
		keys   []PublicKey
		want   error
	}{
		{"unsigned", pluginWasm, []PublicKey{k.Public()}, ErrUnsigned},
		{"wrong key", signed, []PublicKey{testKey(2).Public()}, ErrUntrustedKey},
		{"no keys", signed, nil, ErrUntrustedKey},
		{"resigned by other key replaces signature", resigned, []PublicKey{k.Public()}, ErrUntrustedKey},
		{"section appended after signing", appended, []PublicKey{k.Public()}, ErrBadSignature},
		{"forged signature with trusted key id", forged, []PublicKey{k.Public()}, ErrBadSignature},
		{"not wasm", []byte("hello world"), []PublicKey{k.Public()}, ErrMalformed},
		{"empty", nil, []PublicKey{k.Public()}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(tt.module, tt.keys)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerify_everyByteFlipFails flips each byte of a small signed module,
// one position at a time, and requires verification to fail every time.
func TestVerify_everyByteFlipFails(t *testing.T) {
	k := testKey(1)
	signed, err := Sign(abiFuncWasm, k)
	if err != nil {
		t.Fatal(err)
	}
	keys := []PublicKey{k.Public()}
	if _, err := Verify(signed, keys); err != nil {
		t.Fatalf("untouched module: %v", err)
	}
	for pos := range signed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			m := bytes.Clone(signed)
			m[pos] ^= mask
			if _, err := Verify(m, keys); err == nil {
				t.Errorf("byte %d xor 0x%02x: module still verifies", pos, mask)
			}
		}
	}
	t.Logf("%d positions x 3 masks refused", len(signed))
}

// TestSign_knownAnswer builds the expected signed module byte by byte from
// the layout in tool-conventions Signatures.md (with the length prefixes
// wasmsign2 writes) and compares it with Sign's output.
func TestSign_knownAnswer(t *testing.T) {
	k := testKey(1)
	pub := k.Public().Raw()
	body := abiFuncWasm[8:]
	h := sha256.Sum256(body)

	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte("key_id"))
	keyID := mac.Sum(nil)[:12]

	msg := append([]byte("wasmsig"), 0x01, 0x01, 0x01)
	msg = append(msg, h[:]...)
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(k.priv.Seed()), msg)

	var sigRec []byte
	sigRec = append(sigRec, 12)       // key_id_len
	sigRec = append(sigRec, keyID...) // key_id
	sigRec = append(sigRec, 0x01)     // signature_id: Ed25519
	sigRec = append(sigRec, 64)       // signature_len
	sigRec = append(sigRec, sig...)   // signature
	var set []byte
	set = append(set, 1)                 // hashes_count
	set = append(set, h[:]...)           // hashes
	set = append(set, 1)                 // signature_count
	set = append(set, byte(len(sigRec))) // length of the signature record
	set = append(set, sigRec...)
	var data []byte
	data = append(data, 0x01, 0x01, 0x01) // spec_version, content_type, hash_fn
	data = append(data, 1)                // signed_hashes_count
	data = append(data, byte(len(set)))   // length of the signed hash set
	data = append(data, set...)
	var sec []byte
	sec = append(sec, 9)
	sec = append(sec, "signature"...)
	sec = append(sec, data...)
	want := []byte{0x00, 'a', 's', 'm', 1, 0, 0, 0}
	want = append(want, 0x00)                                        // custom section id
	want = append(want, byte(len(sec)&0x7f|0x80), byte(len(sec)>>7)) // varuint32 size (> 127)
	want = append(want, sec...)
	want = append(want, body...)

	if len(sec) < 128 || len(sec) >= 1<<14 {
		t.Fatalf("test assumes a 2-byte section size, got %d", len(sec))
	}
	got, err := Sign(abiFuncWasm, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("signed module differs from the specified layout\n got %x\nwant %x", got, want)
	}
	if _, err := Verify(want, []PublicKey{k.Public()}); err != nil {
		t.Fatalf("hand-built module does not verify: %v", err)
	}
}

// TestVerify_noKeyID accepts a signature without key id, which the
// specification allows (key_id_len 0) and wasmsign2 writes when signing
// without naming the public key.
func TestVerify_noKeyID(t *testing.T) {
	k := testKey(1)
	body := pluginWasm[8:]
	d := &Data{SpecVersion: 1, ContentType: 1, HashFn: 1}
	set := SignedHashes{Hashes: [][32]byte{sha256.Sum256(body)}}
	set.Signatures = []Signature{{Alg: AlgEd25519, Sig: ed25519.Sign(k.priv, d.message(set))}}
	d.Sets = []SignedHashes{set}
	m := append(append(bytes.Clone(header), EncodeCustomSection(SignatureSectionName, d.Marshal())...), body...)
	if _, err := Verify(m, []PublicKey{testKey(5).Public(), k.Public()}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := Verify(m, []PublicKey{testKey(5).Public()}); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("Verify with other key: %v, want ErrUntrustedKey", err)
	}
}

// TestVerify_withDelimiter accepts a module signed over parts ending in a
// signature_delimiter (wasmsign2 --allow-extensions), and refuses it once
// an unsigned part is appended.
func TestVerify_withDelimiter(t *testing.T) {
	k := testKey(1)
	body := append(bytes.Clone(pluginWasm[8:]), EncodeCustomSection(DelimiterSectionName, bytes.Repeat([]byte{7}, 16))...)
	d := &Data{SpecVersion: 1, ContentType: 1, HashFn: 1}
	set := SignedHashes{Hashes: [][32]byte{sha256.Sum256(body)}}
	set.Signatures = []Signature{{KeyID: k.Public().KeyID(), Alg: AlgEd25519, Sig: ed25519.Sign(k.priv, d.message(set))}}
	d.Sets = []SignedHashes{set}
	m := append(append(bytes.Clone(header), EncodeCustomSection(SignatureSectionName, d.Marshal())...), body...)
	if _, err := Verify(m, []PublicKey{k.Public()}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	ext := append(bytes.Clone(m), EncodeCustomSection("later", []byte("unsigned"))...)
	if _, err := Verify(ext, []PublicKey{k.Public()}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("extended module: %v, want ErrBadSignature", err)
	}
}

func TestParseData_roundTrip(t *testing.T) {
	d := &Data{SpecVersion: 1, ContentType: 1, HashFn: 1, Sets: []SignedHashes{
		{Hashes: [][32]byte{{1}, {2}}, Signatures: []Signature{{KeyID: []byte("first"), Alg: 1, Sig: bytes.Repeat([]byte{3}, 64)}, {Alg: 1, Sig: bytes.Repeat([]byte{4}, 64)}}},
		{Hashes: [][32]byte{{5}}, Signatures: nil},
	}}
	b := d.Marshal()
	got, err := ParseData(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), b) {
		t.Fatalf("re-encoded data differs")
	}
	if len(got.Sets) != 2 || len(got.Sets[0].Hashes) != 2 || string(got.Sets[0].Signatures[0].KeyID) != "first" {
		t.Fatalf("parsed data = %+v", got)
	}
}

func TestParseData_errors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"spec version 2", []byte{2, 1, 1, 0}},
		{"component content type", []byte{1, 2, 1, 0}},
		{"unknown hash", []byte{1, 1, 2, 0}},
		{"too many sets", []byte{1, 1, 1, 65}},
		{"set length past end", []byte{1, 1, 1, 1, 10, 0}},
		{"trailing bytes", []byte{1, 1, 1, 0, 0}},
		{"truncated hash", []byte{1, 1, 1, 1, 3, 1, 0, 0}},
		{"varint overflow", []byte{1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseData(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseData(%x) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestKeys_serialization(t *testing.T) {
	k := testKey(1)
	kb, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := k.Public().MarshalBinary()
	if len(kb) != 65 || kb[0] != 0x81 || !bytes.Equal(kb[1:33], k.priv.Seed()) || !bytes.Equal(kb[33:], pb[1:]) {
		t.Fatalf("key pair = %x, want 0x81 ‖ secret ‖ public", kb)
	}
	if len(pb) != 33 || pb[0] != 0x01 {
		t.Fatalf("public key = %x, want 0x01 ‖ 32 bytes", pb)
	}
	k2, err := ParseKeyPair(kb)
	if err != nil || !k2.Public().Equal(k.Public()) {
		t.Fatalf("ParseKeyPair: %v", err)
	}
	p2, err := ParsePublicKey(pb)
	if err != nil || !p2.Equal(k.Public()) {
		t.Fatalf("ParsePublicKey: %v", err)
	}

	mismatched := bytes.Clone(kb)
	copy(mismatched[33:], testKey(2).Public().Raw())
	for name, in := range map[string][]byte{
		"public key as key pair": pb,
		"short":                  kb[:64],
		"wrong id":               append([]byte{0x01}, kb[1:]...),
		"halves do not match":    mismatched,
	} {
		if _, err := ParseKeyPair(in); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKeyPair(%s) = %v, want ErrBadKey", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"key pair as public key": kb,
		"wrong id":               append([]byte{0x81}, pb[1:]...),
		"empty":                  nil,
	} {
		if _, err := ParsePublicKey(in); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParsePublicKey(%s) = %v, want ErrBadKey", name, err)
		}
	}
}

func TestSetCustomSection(t *testing.T) {
	m, err := SetCustomSection(pluginWasm, "meta", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	m, err = SetCustomSection(m, "meta", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := Sections(m)
	if secs[0].Name != "meta" || string(secs[0].Payload) != "v2" {
		t.Fatalf("first section = %q %q, want meta v2", secs[0].Name, secs[0].Payload)
	}
	orig, _ := Sections(pluginWasm)
	if len(secs) != len(orig)+1 {
		t.Fatalf("got %d sections, want %d (replaced, not duplicated)", len(secs), len(orig)+1)
	}
	signed, _ := Sign(pluginWasm, testKey(1))
	m, _ = SetCustomSection(signed, "meta", []byte("x"))
	secs, _ = Sections(m)
	if secs[0].Name != SignatureSectionName || secs[1].Name != "meta" {
		t.Fatalf("sections = %q, %q; want signature then meta", secs[0].Name, secs[1].Name)
	}
	if _, err := SetCustomSection(pluginWasm, SignatureSectionName, nil); err == nil {
		t.Fatal("setting the signature section directly succeeded")
	}
}
