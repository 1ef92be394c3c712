package sign

import (
	"errors"
	"fmt"
)

// Identifiers of the signature format (tool-conventions Signatures.md,
// "Algorithms and identifiers").
const (
	// SignatureSectionName is the custom section holding signature data.
	SignatureSectionName = "signature"
	// DelimiterSectionName separates independently signed parts.
	DelimiterSectionName = "signature_delimiter"

	SpecVersion     = 0x01 // version of the signature specification
	ContentTypeWasm = 0x01 // content type: WebAssembly module
	HashSHA256      = 0x01 // hash function: SHA-256
	AlgEd25519      = 0x01 // signature algorithm: Ed25519

	// signatureDomain prefixes every signed message so a signature over a
	// module can never be replayed as a signature over something else.
	signatureDomain = "wasmsig"

	// Limits wasmsign2 also enforces; they bound the work a hostile
	// signature section can cause.
	maxHashes     = 64
	maxSignatures = 256
)

// Data is the payload of a signature section.
type Data struct {
	SpecVersion byte
	ContentType byte
	HashFn      byte
	// Sets are the signed hash sets; each carries its hashes and the
	// signatures over them.
	Sets []SignedHashes
}

// SignedHashes is one set of rolling hashes (one per signed part) and
// the signatures made over their concatenation.
type SignedHashes struct {
	Hashes     [][32]byte
	Signatures []Signature
}

// Signature is one signature over a [SignedHashes] set.
type Signature struct {
	// KeyID identifies the public key (may be empty). kmeter and
	// wasmsign2 write [PublicKey.KeyID].
	KeyID []byte
	// Alg is the signature algorithm; only [AlgEd25519] is defined.
	Alg byte
	Sig []byte
}

// message is what each signature of a set signs:
// "wasmsig" ‖ spec_version ‖ content_type ‖ hash_fn ‖ h1 ‖ … ‖ hn.
func (d *Data) message(set SignedHashes) []byte {
	msg := make([]byte, 0, len(signatureDomain)+3+32*len(set.Hashes))
	msg = append(msg, signatureDomain...)
	msg = append(msg, d.SpecVersion, d.ContentType, d.HashFn)
	for _, h := range set.Hashes {
		msg = append(msg, h[:]...)
	}
	return msg
}

// Marshal encodes d. Nested records are length-prefixed (varuint32
// length, then bytes), the way wasmsign2 serializes them.
func (d *Data) Marshal() []byte {
	out := []byte{d.SpecVersion, d.ContentType, d.HashFn}
	out = appendUvarint(out, uint64(len(d.Sets)))
	for _, set := range d.Sets {
		var sb []byte
		sb = appendUvarint(sb, uint64(len(set.Hashes)))
		for _, h := range set.Hashes {
			sb = append(sb, h[:]...)
		}
		sb = appendUvarint(sb, uint64(len(set.Signatures)))
		for _, s := range set.Signatures {
			var rec []byte
			rec = appendUvarint(rec, uint64(len(s.KeyID)))
			rec = append(rec, s.KeyID...)
			rec = append(rec, s.Alg)
			rec = appendUvarint(rec, uint64(len(s.Sig)))
			rec = append(rec, s.Sig...)
			out2 := appendUvarint(nil, uint64(len(rec)))
			sb = append(sb, append(out2, rec...)...)
		}
		out = appendUvarint(out, uint64(len(sb)))
		out = append(out, sb...)
	}
	return out
}

// ParseData decodes a signature section payload. It checks the spec
// version, content type and hash function, and that the payload ends
// exactly after the last signature.
func ParseData(b []byte) (*Data, error) {
	r := reader{b: b}
	d := &Data{}
	var err error
	for _, f := range []struct {
		dst  *byte
		name string
		want byte
	}{
		{&d.SpecVersion, "specification version", SpecVersion},
		{&d.ContentType, "content type", ContentTypeWasm},
		{&d.HashFn, "hash function", HashSHA256},
	} {
		if *f.dst, err = r.byte7(); err != nil {
			return nil, fmt.Errorf("%w: signature data: %s: %v", ErrMalformed, f.name, err)
		}
		if *f.dst != f.want {
			return nil, fmt.Errorf("%w: signature data: unsupported %s 0x%02x (want 0x%02x)", ErrMalformed, f.name, *f.dst, f.want)
		}
	}
	nsets, err := r.count("signed hash sets", maxHashes)
	if err != nil {
		return nil, err
	}
	for i := 0; i < nsets; i++ {
		sb, err := r.slice()
		if err != nil {
			return nil, fmt.Errorf("%w: signed hash set %d: %v", ErrMalformed, i, err)
		}
		set, err := parseSet(sb)
		if err != nil {
			return nil, fmt.Errorf("signed hash set %d: %w", i, err)
		}
		d.Sets = append(d.Sets, set)
	}
	if !r.done() {
		return nil, fmt.Errorf("%w: signature data: %d trailing bytes after the last signature", ErrMalformed, len(r.b)-r.off)
	}
	return d, nil
}

func parseSet(b []byte) (SignedHashes, error) {
	r := reader{b: b}
	var set SignedHashes
	nh, err := r.count("hashes", maxHashes)
	if err != nil {
		return set, err
	}
	for i := 0; i < nh; i++ {
		h, err := r.take(32)
		if err != nil {
			return set, fmt.Errorf("%w: hash %d: %v", ErrMalformed, i, err)
		}
		set.Hashes = append(set.Hashes, [32]byte(h))
	}
	ns, err := r.count("signatures", maxSignatures)
	if err != nil {
		return set, err
	}
	for i := 0; i < ns; i++ {
		rb, err := r.slice()
		if err != nil {
			return set, fmt.Errorf("%w: signature %d: %v", ErrMalformed, i, err)
		}
		s, err := parseSignature(rb)
		if err != nil {
			return set, fmt.Errorf("%w: signature %d: %v", ErrMalformed, i, err)
		}
		set.Signatures = append(set.Signatures, s)
	}
	if !r.done() {
		return set, fmt.Errorf("%w: %d trailing bytes after the signatures", ErrMalformed, len(r.b)-r.off)
	}
	return set, nil
}

func parseSignature(b []byte) (Signature, error) {
	r := reader{b: b}
	var s Signature
	var err error
	if s.KeyID, err = r.slice(); err != nil {
		return s, fmt.Errorf("key id: %v", err)
	}
	if s.Alg, err = r.byte(); err != nil {
		return s, fmt.Errorf("algorithm: %v", err)
	}
	if s.Sig, err = r.slice(); err != nil {
		return s, fmt.Errorf("signature bytes: %v", err)
	}
	if !r.done() {
		return s, fmt.Errorf("%d trailing bytes", len(r.b)-r.off)
	}
	return s, nil
}

type reader struct {
	b   []byte
	off int
}

func (r *reader) done() bool { return r.off == len(r.b) }

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errors.New("unexpected end of data")
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// byte7 reads a varuint7, the encoding wasmsign2 uses for the three
// identifier bytes: a single byte below 0x80.
func (r *reader) byte7() (byte, error) {
	c, err := r.byte()
	if err == nil && c&0x80 != 0 {
		return 0, fmt.Errorf("0x%02x is not a varuint7", c)
	}
	return c, err
}

func (r *reader) uvarint() (uint32, error) {
	v, n, err := uvarint32(r.b[r.off:])
	if err != nil {
		return 0, err
	}
	r.off += n
	return v, nil
}

func (r *reader) take(n uint32) ([]byte, error) {
	if uint64(n) > uint64(len(r.b)-r.off) {
		return nil, fmt.Errorf("length %d runs past the end of the data", n)
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

func (r *reader) slice() ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

func (r *reader) count(what string, max int) (int, error) {
	n, err := r.uvarint()
	if err != nil {
		return 0, fmt.Errorf("%w: number of %s: %v", ErrMalformed, what, err)
	}
	if n > uint32(max) {
		return 0, fmt.Errorf("%w: %d %s, at most %d are allowed", ErrMalformed, n, what, max)
	}
	return int(n), nil
}
