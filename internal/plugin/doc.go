// Package plugin hosts pricing plugins: WebAssembly modules that follow
// ABI v1 (docs/plugin-abi.md) and turn batches of usage records into
// integer micro-unit charges.
//
// An [Engine] verifies a module with a [Verifier] before compiling it,
// compiles it once (with an optional on-disk compilation cache), keeps a
// pool of warm instances, and prices each batch with exactly one call into
// the guest under a deadline and a memory cap. A module can be replaced
// while batches flow; the swap happens between batches and every
// [pricing.Result] names the sha256 of the plugin that priced it.
//
// Every guest function call passes a call guard that bounds nesting
// ([Config.MaxCallDepth]) and checks the deadline, so no guest outlives
// its CallTimeout, not even by recursing. The engine enforces the
// licence's call cap ([Identity.MaxCalls], [ErrLicenceExhausted]) and,
// with [Config.Audit], records every version it makes live and every
// verified module it still refuses on the verifier's hash-chained audit
// log.
package plugin
