package plugin

import "errors"

// Errors a failed load or batch wraps; match them with errors.Is.
var (
	// ErrRefused means a module was refused at load: bad signature, wrong
	// ABI version, missing export, forbidden import. The live plugin is
	// unchanged.
	ErrRefused = errors.New("plugin refused")
	// ErrNoPlugin means no plugin is loaded yet.
	ErrNoPlugin = errors.New("no pricing plugin loaded")
	// ErrTrap means the guest trapped (unreachable, out-of-bounds access,
	// stack exhaustion, exit).
	ErrTrap = errors.New("plugin trapped")
	// ErrTimeout means the guest ran past Config.CallTimeout or the
	// caller's context ended.
	ErrTimeout = errors.New("plugin call timed out")
	// ErrBadOutput means the guest returned an error code or charges that
	// break the ABI.
	ErrBadOutput = errors.New("plugin returned bad output")
	// ErrClosed means the engine was closed.
	ErrClosed = errors.New("plugin engine closed")
	// ErrLicenceExhausted means the live plugin has made every call its
	// licence allows for this load (licence max_calls). The batch was not
	// priced and nothing was charged; the caller still holds the usage.
	// Every later batch fails the same way until a module with a renewed
	// licence is loaded.
	ErrLicenceExhausted = errors.New("plugin licence calls exhausted")
)
