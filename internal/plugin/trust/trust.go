// Package trust decides which plugin modules the agent may load. Its
// [Verifier] implements plugin.Verifier: before the engine compiles a
// module, it checks the module is signed by a trusted publisher key, that
// neither the key nor the module is revoked, and that the embedded licence
// is valid for this host today. Every decision is appended to the audit
// log.
package trust

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
)

// Reasons a module is refused, matched with errors.Is. Several are the
// sentinels of internal/plugin/sign and internal/plugin/licence, so either
// name matches.
var (
	ErrMalformed    = sign.ErrMalformed     // not a well-formed module or signature section
	ErrUnsigned     = sign.ErrUnsigned      // no signature section
	ErrBadSignature = sign.ErrBadSignature  // altered after signing
	ErrUntrustedKey = sign.ErrUntrustedKey  // signed, but not by a trusted key
	ErrExpired      = licence.ErrExpired    // licence not-after has passed
	ErrWrongHost    = licence.ErrWrongHost  // licence does not list this host
	ErrBadLicence   = licence.ErrInvalid    // licence section malformed
	ErrRevoked      = errors.New("revoked") // signer key or module sha256 is on the revocation list
	ErrNoLicence    = errors.New("module has no licence")
)

// Config configures a [Verifier]. The zero value is not usable: at least
// one trusted key is required.
type Config struct {
	// KeysDir holds trusted publisher keys, one serialized public key
	// (`kmeter plugin keygen` NAME.pub, or wasmsign2's) per *.pub file.
	KeysDir string
	// Keys are trusted in addition to those in KeysDir.
	Keys []sign.PublicKey
	// HostID identifies this host in licences. When empty it is read
	// from HostIDFile.
	HostID string
	// HostIDFile defaults to /etc/machine-id.
	HostIDFile string
	// RevocationFile, when set, is re-read on every Verify so that a
	// revocation takes effect on the next load without a restart. If it
	// cannot be read, modules are refused.
	RevocationFile string
	// RequireLicence refuses modules that carry no licence.
	RequireLicence bool
	// Audit, when set, receives an accept or refuse entry for every
	// Verify. If the entry cannot be written, an accepted module is
	// refused: no module runs without its record.
	Audit *audit.Log
	// Now is the clock licences are checked against; nil means time.Now.
	Now func() time.Time
}

// Verifier checks modules against a trust policy. It is safe for
// concurrent use.
type Verifier struct {
	keys           []sign.PublicKey
	host           string
	revocationFile string
	requireLicence bool
	audit          *audit.Log
	now            func() time.Time
}

var _ plugin.Verifier = (*Verifier)(nil)

// New validates cfg and loads the trusted keys and host id.
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{
		keys:           append([]sign.PublicKey(nil), cfg.Keys...),
		host:           strings.TrimSpace(cfg.HostID),
		revocationFile: cfg.RevocationFile,
		requireLicence: cfg.RequireLicence,
		audit:          cfg.Audit,
		now:            cfg.Now,
	}
	if v.now == nil {
		v.now = time.Now
	}
	var errs []error
	var keysErr error
	if cfg.KeysDir != "" {
		var keys []sign.PublicKey
		keys, keysErr = readKeysDir(cfg.KeysDir)
		errs = append(errs, keysErr)
		v.keys = append(v.keys, keys...)
	}
	if len(v.keys) == 0 && keysErr == nil {
		errs = append(errs, fmt.Errorf("no trusted keys: put publisher .pub files in the keys directory (%q) or pass keys", cfg.KeysDir))
	}
	if v.host == "" {
		path := cfg.HostIDFile
		if path == "" {
			path = licence.DefaultHostIDFile
		}
		id, err := licence.ReadHostID(path)
		errs = append(errs, err)
		v.host = id
	}
	if cfg.RevocationFile != "" {
		_, err := ReadRevocations(cfg.RevocationFile)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("plugin trust policy: %w", err)
	}
	return v, nil
}

func readKeysDir(dir string) ([]sign.PublicKey, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	sort.Strings(names)
	var keys []sign.PublicKey
	var errs []error
	for _, n := range names {
		k, err := sign.ReadPublicKeyFile(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

// HostID returns the host id licences are checked against.
func (v *Verifier) HostID() string { return v.host }

// Verify implements plugin.Verifier. It returns the module's identity or
// an error matching one of the Err* sentinels, with a message that says
// what to do about it.
func (v *Verifier) Verify(ctx context.Context, module []byte) (plugin.Identity, error) {
	id := plugin.Identity{SHA256: plugin.SHA256Hex(module)}
	lic, err := v.check(ctx, module, &id)
	entry := audit.Entry{Event: audit.EventAccept, SHA256: id.SHA256, Signer: id.Signer, Licensee: lic.Licensee}
	if err != nil {
		entry.Event, entry.Reason = audit.EventRefuse, err.Error()
	}
	if v.audit != nil {
		if _, aerr := v.audit.Append(ctx, entry); aerr != nil {
			return plugin.Identity{}, errors.Join(err, fmt.Errorf("record plugin decision: %w", aerr))
		}
	}
	if err != nil {
		return plugin.Identity{}, fmt.Errorf("refuse module sha256 %.12s: %w", id.SHA256, err)
	}
	return id, nil
}

func (v *Verifier) check(ctx context.Context, module []byte, id *plugin.Identity) (licence.Licence, error) {
	if err := ctx.Err(); err != nil {
		return licence.Licence{}, err
	}
	rev := &Revocations{}
	if v.revocationFile != "" {
		var err error
		if rev, err = ReadRevocations(v.revocationFile); err != nil {
			return licence.Licence{}, err
		}
	}
	if rev.ModuleRevoked(id.SHA256) {
		return licence.Licence{}, fmt.Errorf("%w: module sha256 %s is on the revocation list", ErrRevoked, id.SHA256)
	}
	// Revoked keys take part in verification so that a module signed by
	// one is refused as revoked, not as merely untrusted.
	res, err := sign.Verify(module, append(append([]sign.PublicKey(nil), v.keys...), rev.keys...))
	if err != nil {
		return licence.Licence{}, err
	}
	id.Signer = res.Signer.String()
	if rev.KeyRevoked(res.Signer) {
		return licence.Licence{}, fmt.Errorf("%w: signer key %s is on the revocation list", ErrRevoked, id.Signer)
	}
	lic, ok, err := licence.Extract(module)
	if err != nil {
		return licence.Licence{}, err
	}
	if !ok {
		if v.requireLicence {
			return licence.Licence{}, fmt.Errorf("%w: this agent requires a licence; sign the module with `kmeter plugin sign --licence FILE`", ErrNoLicence)
		}
		return licence.Licence{}, nil
	}
	if err := lic.Check(v.host, v.now()); err != nil {
		return lic, err
	}
	id.Licence, id.MaxCalls = lic, lic.MaxCalls
	return lic, nil
}
