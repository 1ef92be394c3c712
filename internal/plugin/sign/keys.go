package sign

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// Key serialization identifiers (Signatures.md, "Signature algorithms and
// key serialization").
const (
	publicKeyID = 0x01 // Ed25519 public key: 0x01 ‖ 32 bytes
	keyPairID   = 0x81 // Ed25519 key pair: 0x81 ‖ secret (32) ‖ public (32)
)

// ErrBadKey reports a key file that is not a serialized Ed25519 key.
var ErrBadKey = errors.New("bad key")

// PublicKey is an Ed25519 public key that verifies module signatures.
type PublicKey struct {
	key ed25519.PublicKey
}

// KeyPair is an Ed25519 key pair that signs modules. Keep it secret.
type KeyPair struct {
	priv ed25519.PrivateKey
}

// GenerateKey makes a new key pair from rand (crypto/rand.Reader when
// nil).
func GenerateKey(rand io.Reader) (KeyPair, error) {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return KeyPair{priv: priv}, nil
}

// NewKeyPairFromSeed derives a key pair from a 32-byte RFC 8032 seed
// (the "secret key" of the serialized form).
func NewKeyPairFromSeed(seed []byte) (KeyPair, error) {
	if len(seed) != ed25519.SeedSize {
		return KeyPair{}, fmt.Errorf("%w: seed is %d bytes, want %d", ErrBadKey, len(seed), ed25519.SeedSize)
	}
	return KeyPair{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// Public returns the public half of k.
func (k KeyPair) Public() PublicKey {
	return PublicKey{key: k.priv.Public().(ed25519.PublicKey)}
}

// MarshalBinary serializes k as 0x81 ‖ secret key ‖ public key (65
// bytes), the key pair format of the specification and wasmsign2.
func (k KeyPair) MarshalBinary() ([]byte, error) {
	if len(k.priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: empty key pair", ErrBadKey)
	}
	return append([]byte{keyPairID}, k.priv...), nil
}

// ParseKeyPair decodes a serialized key pair and checks that its public
// half matches its secret half.
func ParseKeyPair(b []byte) (KeyPair, error) {
	if len(b) != 1+ed25519.PrivateKeySize || b[0] != keyPairID {
		return KeyPair{}, fmt.Errorf("%w: want 65 bytes starting with 0x81 (an Ed25519 key pair from `kmeter plugin keygen` or wasmsign2), got %d bytes", ErrBadKey, len(b))
	}
	kp, err := NewKeyPairFromSeed(b[1:33])
	if err != nil {
		return KeyPair{}, err
	}
	if !kp.Public().key.Equal(ed25519.PublicKey(b[33:])) {
		return KeyPair{}, fmt.Errorf("%w: the public half does not belong to the secret half", ErrBadKey)
	}
	return kp, nil
}

// NewPublicKey wraps a raw 32-byte Ed25519 public key.
func NewPublicKey(raw []byte) (PublicKey, error) {
	if len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("%w: ed25519 public key is %d bytes, want %d", ErrBadKey, len(raw), ed25519.PublicKeySize)
	}
	return PublicKey{key: append(ed25519.PublicKey(nil), raw...)}, nil
}

// ParsePublicKey decodes a serialized public key (0x01 ‖ 32 bytes).
func ParsePublicKey(b []byte) (PublicKey, error) {
	if len(b) != 1+ed25519.PublicKeySize || b[0] != publicKeyID {
		return PublicKey{}, fmt.Errorf("%w: want 33 bytes starting with 0x01 (an Ed25519 public key from `kmeter plugin keygen` or wasmsign2), got %d bytes", ErrBadKey, len(b))
	}
	return NewPublicKey(b[1:])
}

// MarshalBinary serializes p as 0x01 ‖ public key (33 bytes).
func (p PublicKey) MarshalBinary() ([]byte, error) {
	if len(p.key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: empty public key", ErrBadKey)
	}
	return append([]byte{publicKeyID}, p.key...), nil
}

// Raw returns the 32 raw key bytes.
func (p PublicKey) Raw() []byte { return append([]byte(nil), p.key...) }

// String returns the key as 64 hex digits; this is how signers are named
// in audit entries and revocation lists.
func (p PublicKey) String() string { return hex.EncodeToString(p.key) }

// Equal reports whether p and q are the same key.
func (p PublicKey) Equal(q PublicKey) bool { return p.key.Equal(q.key) }

// KeyID is the 12-byte key identifier wasmsign2 derives from a public key
// and stores beside each signature: HMAC-SHA256(key=public key,
// message="key_id")[:12].
func (p PublicKey) KeyID() []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte("key_id"))
	return m.Sum(nil)[:12]
}

// ReadPublicKeyFile reads a serialized public key file.
func ReadPublicKeyFile(path string) (PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PublicKey{}, fmt.Errorf("read public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// ReadKeyPairFile reads a serialized key pair file.
func ReadKeyPairFile(path string) (KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("read key pair: %w", err)
	}
	k, err := ParseKeyPair(b)
	if err != nil {
		return KeyPair{}, fmt.Errorf("key pair %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFiles writes k to base+".key" (mode 0600) and its public key to
// base+".pub" (mode 0644), both in the serialized binary form. Existing
// files are never overwritten: losing a signing key cannot be undone.
func WriteKeyFiles(base string, k KeyPair) (keyPath, pubPath string, err error) {
	kb, err := k.MarshalBinary()
	if err != nil {
		return "", "", err
	}
	pb, err := k.Public().MarshalBinary()
	if err != nil {
		return "", "", err
	}
	keyPath, pubPath = base+".key", base+".pub"
	if err := writeNew(keyPath, kb, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pb, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, pubPath, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("write %s: it already exists; choose another name or remove it first", path)
		}
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
