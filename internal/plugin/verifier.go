package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
)

// Verifier decides whether a module may run. The engine calls Verify with
// the exact bytes it is about to compile, before compiling them, and
// refuses the module when Verify returns an error. Implementations are
// safe for concurrent use.
//
// The production implementation lives in internal/plugin/trust: it checks
// the publisher's signature carried in the module's custom section and the
// licence, and records both on the audit chain.
type Verifier interface {
	Verify(ctx context.Context, module []byte) (Identity, error)
}

// Identity says which plugin priced a batch and who vouched for it.
type Identity struct {
	// SHA256 is the lowercase hex sha256 of the module bytes exactly as
	// loaded (custom sections included). Every [pricing.Result] carries
	// the SHA256 of the plugin that priced it.
	SHA256 string
	// Signer is the hex public key of the publisher that signed the
	// module, or "" when the module was accepted unsigned.
	Signer string
	// Licence is whatever the Verifier attached (internal/plugin/trust sets
	// its own licence type here); the engine only carries it along.
	Licence any
	// MaxCalls is the number of calls into this module its licence allows
	// per load; 0 means no cap. The engine counts one call per batch or
	// event it prices with the module (live or shadow), starting afresh at
	// each load, and fails batches beyond the cap with
	// [ErrLicenceExhausted]. The load canary is not counted: it prices no
	// usage.
	MaxCalls uint64
}

// SHA256Hex returns the lowercase hex sha256 of module, the form used in
// [Identity.SHA256].
func SHA256Hex(module []byte) string {
	sum := sha256.Sum256(module)
	return hex.EncodeToString(sum[:])
}

// AllowUnsigned returns a Verifier that accepts every module and only
// computes its sha256.
//
// DEVELOPMENT ONLY. It turns off signature and licence checks entirely:
// pirated, altered or unknown plugins will load and bill. The engine logs a
// warning on every load it accepts this way. Never use it in production;
// use the verifier from internal/plugin/trust.
func AllowUnsigned() Verifier { return unsignedVerifier{} }

type unsignedVerifier struct{}

func (unsignedVerifier) Verify(_ context.Context, module []byte) (Identity, error) {
	return Identity{SHA256: SHA256Hex(module)}, nil
}

// isUnsigned reports whether v is the development verifier, so the engine
// can warn about it.
func isUnsigned(v Verifier) bool {
	_, ok := v.(unsignedVerifier)
	return ok
}
