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
package plugin
