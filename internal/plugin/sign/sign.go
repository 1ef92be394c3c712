package sign

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Sentinel errors of [Verify], matched with errors.Is.
var (
	// ErrUnsigned: the module's first section is not a signature section.
	ErrUnsigned = errors.New("module is not signed")
	// ErrBadSignature: the module was altered after signing, or a
	// signature made by a known key does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrUntrustedKey: the module is signed, but by no key the caller
	// trusts.
	ErrUntrustedKey = errors.New("signed by an untrusted key")
)

// Sign returns module signed with k: a new first custom section named
// "signature" carrying one signed hash, the SHA-256 of every section
// after it, and an Ed25519 signature by k with k's key id. A signature
// section already present first in module is replaced, not extended; any
// "signature" section elsewhere is dropped, as wasmsign2 does.
func Sign(module []byte, k KeyPair) ([]byte, error) {
	secs, err := Sections(module)
	if err != nil {
		return nil, fmt.Errorf("sign module: %w", err)
	}
	body := make([]byte, 0, len(module))
	for _, s := range secs {
		if s.ID == CustomSectionID && s.Name == SignatureSectionName {
			continue
		}
		body = append(body, s.Raw...)
	}
	d := &Data{SpecVersion: SpecVersion, ContentType: ContentTypeWasm, HashFn: HashSHA256}
	set := SignedHashes{Hashes: [][32]byte{sha256.Sum256(body)}}
	pub := k.Public()
	set.Signatures = []Signature{{
		KeyID: pub.KeyID(),
		Alg:   AlgEd25519,
		Sig:   ed25519.Sign(k.priv, d.message(set)),
	}}
	d.Sets = []SignedHashes{set}
	sec := EncodeCustomSection(SignatureSectionName, d.Marshal())
	out := make([]byte, 0, len(header)+len(sec)+len(body))
	out = append(out, header...)
	out = append(out, sec...)
	return append(out, body...), nil
}

// Result describes a verified module.
type Result struct {
	// Signer is the trusted key whose signature verified.
	Signer PublicKey
	// ContentHash is the SHA-256 of the signed sections (everything after
	// the signature section).
	ContentHash [32]byte
}

// Verify checks that module carries a valid signature by one of keys over
// its whole content (every section after the signature section). Partial
// signatures (a hash set not covering the whole module) are refused, as
// the specification requires by default.
//
// Errors: [ErrMalformed], [ErrUnsigned], [ErrBadSignature] (content or a
// signature by a known key does not match), [ErrUntrustedKey] (no
// signature made by any of keys).
func Verify(module []byte, keys []PublicKey) (Result, error) {
	secs, err := Sections(module)
	if err != nil {
		return Result{}, err
	}
	if len(secs) == 0 || secs[0].ID != CustomSectionID || secs[0].Name != SignatureSectionName {
		return Result{}, fmt.Errorf("%w: its first section is not a %q custom section; sign it with `kmeter plugin sign`", ErrUnsigned, SignatureSectionName)
	}
	d, err := ParseData(secs[0].Payload)
	if err != nil {
		return Result{}, fmt.Errorf("signature section: %w", err)
	}
	body := module[secs[0].Offset+len(secs[0].Raw):]
	h := sha256.Sum256(body)

	keyKnown := false
	for _, set := range d.Sets {
		if len(set.Hashes) == 0 || set.Hashes[len(set.Hashes)-1] != h {
			continue
		}
		msg := d.message(set)
		for _, s := range set.Signatures {
			if s.Alg != AlgEd25519 || len(s.Sig) != ed25519.SignatureSize {
				continue
			}
			for _, k := range keys {
				if len(s.KeyID) > 0 && string(s.KeyID) != string(k.KeyID()) {
					continue
				}
				if ed25519.Verify(k.key, msg, s.Sig) {
					return Result{Signer: k, ContentHash: h}, nil
				}
				if len(s.KeyID) > 0 {
					keyKnown = true
				}
			}
		}
	}
	if !coversHash(d, h) {
		return Result{}, fmt.Errorf("%w: the module content (sha256 %x) does not match any signed hash; it was modified after signing", ErrBadSignature, h)
	}
	if keyKnown {
		return Result{}, fmt.Errorf("%w: the signature by a trusted key does not verify", ErrBadSignature)
	}
	return Result{}, fmt.Errorf("%w: no signature verifies with any of the %d trusted keys; add the signer's .pub to the trusted keys", ErrUntrustedKey, len(keys))
}

func coversHash(d *Data, h [32]byte) bool {
	for _, set := range d.Sets {
		if len(set.Hashes) > 0 && set.Hashes[len(set.Hashes)-1] == h {
			return true
		}
	}
	return false
}

// Signers lists the key ids of every signature in module, for display;
// it verifies nothing.
func Signers(module []byte) ([][]byte, error) {
	secs, err := Sections(module)
	if err != nil {
		return nil, err
	}
	if len(secs) == 0 || secs[0].ID != CustomSectionID || secs[0].Name != SignatureSectionName {
		return nil, ErrUnsigned
	}
	d, err := ParseData(secs[0].Payload)
	if err != nil {
		return nil, fmt.Errorf("signature section: %w", err)
	}
	var ids [][]byte
	for _, set := range d.Sets {
		for _, s := range set.Signatures {
			ids = append(ids, s.KeyID)
		}
	}
	return ids, nil
}
