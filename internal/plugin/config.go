package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/pricing"
)

// Defaults for [Config] fields left zero.
const (
	DefaultMemoryLimitPages = 512 // 32 MiB: enough for a Go guest's runtime
	DefaultCallTimeout      = 250 * time.Millisecond
	DefaultPoolSize         = 4
	DefaultMaxRecords       = 1 << 16
	DefaultMaxCallDepth     = 10_000
)

// maxMemoryPages keeps every guest pointer below 2^31, so kmeter_price's
// i64 result can carry a pointer in its high half and still use negative
// values for error codes.
const maxMemoryPages = 32768

// Config configures an [Engine]. The zero value of each optional field
// picks the default named beside it.
type Config struct {
	// Verifier checks every module before it is compiled. Required: use
	// internal/plugin/sign in production, [AllowUnsigned] in development.
	Verifier Verifier
	// CacheDir holds wazero's compilation cache so restarts skip
	// compiling; "" keeps compiled code in memory only.
	CacheDir string
	// MemoryLimitPages caps each instance's linear memory in 64 KiB pages
	// (default DefaultMemoryLimitPages, at most 32768). memory.grow beyond
	// it fails inside the guest.
	MemoryLimitPages uint32
	// CallTimeout bounds one call into the guest (default
	// DefaultCallTimeout). A guest still running then is stopped and the
	// batch fails.
	CallTimeout time.Duration
	// PoolSize is how many warm instances are kept per plugin version
	// (default DefaultPoolSize), so a batch never waits on instantiation
	// unless more batches than that run at once.
	PoolSize int
	// Isolate runs every batch in a never-used instance (its own zeroed
	// memory) and discards it afterwards, so no guest state can carry
	// from one batch to the next. The pool pre-instantiates them.
	Isolate bool
	// MaxRecords bounds a batch (default DefaultMaxRecords).
	MaxRecords int
	// Logger receives guest log lines and load warnings (default
	// slog.Default()).
	Logger *slog.Logger
	// Canary is the batch every module must price without error at load
	// before it can go live (default: one record of tenant
	// "kmeter-canary", meter "canary", quantity 1). A module that traps,
	// times out or returns bad output on it is refused, so the previous
	// version keeps serving.
	Canary []pricing.Record
	// OnShadow receives the comparison of each batch priced by a shadow
	// candidate (see [Engine.SetShadow]). It runs on a background
	// goroutine, one report at a time.
	OnShadow func(ShadowReport)
	// MaxCallDepth bounds how deeply guest functions may nest within one
	// call (default DefaultMaxCallDepth). A guest that goes deeper traps
	// (ErrTrap) at once instead of growing wazero's stack towards its
	// ceiling; see docs/plugin-abi.md, "Limits".
	MaxCallDepth int
	// Audit, when set, receives an entry whenever a version goes live
	// (audit.EventLoad for the first, audit.EventSwap naming the version
	// it replaced after that), whenever a shadow candidate is loaded, and
	// whenever a module that passed the Verifier is refused by the
	// engine's own checks (audit.EventReject: ABI, imports, canary). If
	// the entry cannot be written the version does not go live: no module
	// prices anything without its record. Pass the same *audit.Log as the
	// trust.Verifier's so one chain holds every decision.
	Audit AuditLog

	// noCallGuard compiles modules without the call guard; only the
	// benchmark that measures the guard's cost sets it.
	noCallGuard bool
}

// AuditLog is the audit chain the engine appends to; *audit.Log
// implements it.
type AuditLog interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Verifier == nil {
		errs = append(errs, errors.New("no Verifier: set Config.Verifier (plugin/sign in production, plugin.AllowUnsigned() for development)"))
	}
	if c.MemoryLimitPages == 0 {
		c.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if c.MemoryLimitPages > maxMemoryPages {
		errs = append(errs, fmt.Errorf("MemoryLimitPages %d above the maximum of %d (2 GiB)", c.MemoryLimitPages, maxMemoryPages))
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout %v is negative", c.CallTimeout))
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.PoolSize < 0 {
		errs = append(errs, fmt.Errorf("PoolSize %d is negative", c.PoolSize))
	}
	if c.MaxCallDepth == 0 {
		c.MaxCallDepth = DefaultMaxCallDepth
	}
	if c.MaxCallDepth < 0 {
		errs = append(errs, fmt.Errorf("MaxCallDepth %d is negative", c.MaxCallDepth))
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = DefaultMaxRecords
	}
	if c.MaxRecords < 0 || c.MaxRecords > 1<<20 {
		errs = append(errs, fmt.Errorf("MaxRecords %d outside [1, %d]", c.MaxRecords, 1<<20))
	}
	if c.Canary == nil {
		t := time.Unix(0, 0).UTC()
		c.Canary = []pricing.Record{{Tenant: "kmeter-canary", Meter: "canary", Quantity: 1, Start: t, End: t.Add(time.Minute)}}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	// A nil *audit.Log in the interface means "no audit log", not a
	// panic at the first load.
	if l, ok := c.Audit.(*audit.Log); ok && l == nil {
		c.Audit = nil
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("plugin engine config: %w", err)
	}
	return c, nil
}
