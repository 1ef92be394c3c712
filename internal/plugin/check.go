package plugin

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Export names of ABI v1. Keep in sync with docs/plugin-abi.md and the SDKs.
const (
	exportVersion = "kmeter_abi_version"
	exportAlloc   = "kmeter_alloc"
	exportPrice   = "kmeter_price"
	exportEvent   = "kmeter_on_event"
	exportInit    = "_initialize"
	exportMemory  = "memory"
)

type sig struct{ params, results []api.ValueType }

const i32, i64 = api.ValueTypeI32, api.ValueTypeI64

// abiExports returns the exports ABI v1 requires and those it allows,
// with their signatures.
func abiExports() (required, optional map[string]sig) {
	return map[string]sig{
			exportVersion: {nil, []api.ValueType{i32}},
			exportAlloc:   {[]api.ValueType{i32}, []api.ValueType{i32}},
			exportPrice:   {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
		}, map[string]sig{
			exportEvent: {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
			exportInit:  {nil, nil},
		}
}

// scanSections walks the module's top-level sections and refuses a start
// section: it would run guest code at instantiation, before the host has
// checked kmeter_abi_version.
func scanSections(b []byte) error {
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		return fmt.Errorf("%w: not a WebAssembly module (no \\0asm header)", ErrRefused)
	}
	if b[4] != 1 || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return fmt.Errorf("%w: WebAssembly binary version %v, want 1 (core modules only, not components)", ErrRefused, b[4:8])
	}
	for p := 8; p < len(b); {
		id := b[p]
		p++
		size, n := uleb32(b[p:])
		if n == 0 || uint64(p)+uint64(n)+uint64(size) > uint64(len(b)) {
			return fmt.Errorf("%w: truncated section %d", ErrRefused, id)
		}
		p += n + int(size)
		if id == 8 {
			return fmt.Errorf("%w: module has a start function, which would run before the ABI version check: remove it (build with -Wl,--no-entry or as a reactor)", ErrRefused)
		}
	}
	return nil
}

func uleb32(b []byte) (uint32, int) {
	var v uint32
	for i := 0; i < 5 && i < len(b); i++ {
		v |= uint32(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

// checkModule verifies the compiled module's exports and imports against
// ABI v1 and the host's allow-list, naming the first problem found.
func checkModule(cm wazero.CompiledModule) (hasEvent, hasInit, usesHost bool, err error) {
	requiredExports, optionalExports := abiExports()
	hostImports := hostImportTable()
	exps := cm.ExportedFunctions()
	if _, ok := exps[exportVersion]; !ok {
		return false, false, false, fmt.Errorf("%w: missing export %s: not a kmeter ABI v1 plugin (see docs/plugin-abi.md)", ErrRefused, exportVersion)
	}
	for _, name := range sortedKeys(requiredExports) {
		d, ok := exps[name]
		if !ok {
			return false, false, false, fmt.Errorf("%w: missing export %s (ABI v1 requires %s)", ErrRefused, name, strings.Join(sortedKeys(requiredExports), ", "))
		}
		if err := checkSig(name, d, requiredExports[name]); err != nil {
			return false, false, false, err
		}
	}
	for name, s := range optionalExports {
		if d, ok := exps[name]; ok {
			if err := checkSig(name, d, s); err != nil {
				return false, false, false, err
			}
		}
	}
	_, hasEvent = exps[exportEvent]
	_, hasInit = exps[exportInit]
	if _, ok := cm.ExportedMemories()[exportMemory]; !ok {
		return false, false, false, fmt.Errorf("%w: missing exported memory %q", ErrRefused, exportMemory)
	}
	if len(cm.ImportedMemories()) > 0 {
		return false, false, false, fmt.Errorf("%w: module imports a memory; ABI v1 plugins must define and export their own", ErrRefused)
	}
	for _, d := range cm.ImportedFunctions() {
		mod, name, _ := d.Import()
		allowed, ok := hostImports[mod]
		if !ok {
			return false, false, false, fmt.Errorf("%w: imports %s.%s: only modules kmeter and wasi_snapshot_preview1 (safe subset) are provided", ErrRefused, mod, name)
		}
		s, ok := allowed[name]
		if !ok {
			return false, false, false, fmt.Errorf("%w: imports %s.%s, which the host does not provide: plugins get no file system, network or process access (allowed: %s)", ErrRefused, mod, name, strings.Join(sortedKeys(allowed), ", "))
		}
		if !slices.Equal(d.ParamTypes(), s.params) || !slices.Equal(d.ResultTypes(), s.results) {
			return false, false, false, fmt.Errorf("%w: import %s.%s has the wrong signature", ErrRefused, mod, name)
		}
		if mod == hostModule {
			usesHost = true
		}
		if mod == wasiModule && name == "clock_time_get" {
			usesHost = true
		}
	}
	return hasEvent, hasInit, usesHost, nil
}

func checkSig(name string, d api.FunctionDefinition, s sig) error {
	if !slices.Equal(d.ParamTypes(), s.params) || !slices.Equal(d.ResultTypes(), s.results) {
		return fmt.Errorf("%w: export %s has signature %v -> %v, want %v -> %v", ErrRefused, name,
			typeNames(d.ParamTypes()), typeNames(d.ResultTypes()), typeNames(s.params), typeNames(s.results))
	}
	return nil
}

func typeNames(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
