package trust

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kmeter/kmeter/internal/plugin/sign"
)

// Revocations is a parsed revocation list.
//
// The file format is one entry per line, '#' starts a comment:
//
//	key 3f1c…(64 hex digits: the signer's raw Ed25519 public key)
//	sha256 9ab0…(64 hex digits: sha256 of the module file)
//
// The signer and sha256 of a module are printed by `kmeter plugin inspect`
// and recorded in every audit entry.
type Revocations struct {
	keys    []sign.PublicKey
	modules map[string]bool
}

// ParseRevocations parses a revocation list, naming every bad line.
func ParseRevocations(b []byte) (*Revocations, error) {
	r := &Revocations{modules: map[string]bool{}}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			errs = append(errs, fmt.Errorf("line %d: want `key HEX` or `sha256 HEX`, got %q", n, strings.TrimSpace(line)))
			continue
		}
		raw, err := hex.DecodeString(f[1])
		if err != nil || len(raw) != 32 {
			errs = append(errs, fmt.Errorf("line %d: %q is not 64 hex digits", n, f[1]))
			continue
		}
		switch f[0] {
		case "key":
			k, err := sign.NewPublicKey(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", n, err))
				continue
			}
			r.keys = append(r.keys, k)
		case "sha256":
			r.modules[hex.EncodeToString(raw)] = true
		default:
			errs = append(errs, fmt.Errorf("line %d: unknown entry type %q, want key or sha256", n, f[0]))
		}
	}
	if err := errors.Join(append(errs, sc.Err())...); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadRevocations reads a revocation list file.
func ReadRevocations(path string) (*Revocations, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read revocation list: %w", err)
	}
	r, err := ParseRevocations(b)
	if err != nil {
		return nil, fmt.Errorf("revocation list %s: %w", path, err)
	}
	return r, nil
}

// KeyRevoked reports whether k is revoked.
func (r *Revocations) KeyRevoked(k sign.PublicKey) bool {
	for _, rk := range r.keys {
		if rk.Equal(k) {
			return true
		}
	}
	return false
}

// ModuleRevoked reports whether the module with this hex sha256 is revoked.
func (r *Revocations) ModuleRevoked(sha256Hex string) bool {
	return r.modules[strings.ToLower(sha256Hex)]
}
