package sign

import (
	"testing"
)

func TestInspect(t *testing.T) {
	signed, err := Sign(pluginWasm, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(signed)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Imports) != 1 || info.Imports[0] != (Import{Module: "kmeter", Name: "log", Kind: KindFunc}) {
		t.Errorf("imports = %+v", info.Imports)
	}
	want := []Export{{"memory", KindMemory, 0}, {"kmeter_abi_version", KindGlobal, 0}, {"price", KindFunc, 1}}
	if len(info.Exports) != len(want) {
		t.Fatalf("exports = %+v, want %+v", info.Exports, want)
	}
	for i := range want {
		if info.Exports[i] != want[i] {
			t.Errorf("export %d = %+v, want %+v", i, info.Exports[i], want[i])
		}
	}
	if info.ABI != (ABIVersion{Present: true, Kind: KindGlobal, Value: 1, Known: true}) {
		t.Errorf("ABI = %+v, want global with value 1", info.ABI)
	}
	if len(info.CustomSections) != 1 || info.CustomSections[0] != SignatureSectionName {
		t.Errorf("custom sections = %q", info.CustomSections)
	}
}

func TestInspect_abiFunction(t *testing.T) {
	info, err := Inspect(abiFuncWasm)
	if err != nil {
		t.Fatal(err)
	}
	if info.ABI != (ABIVersion{Present: true, Kind: KindFunc}) {
		t.Errorf("ABI = %+v, want a function with unknown value", info.ABI)
	}
}

func TestInspect_negativeAndI64Globals(t *testing.T) {
	// (module (global i64 (i64.const -2)) (global (export "kmeter_abi_version") i32 (i32.const -1)))
	// written by hand: type-less module with a global and an export section.
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0,
		6, 11, 2, 0x7e, 0, 0x42, 0x7e, 0x0b, 0x7f, 0, 0x41, 0x7f, 0x0b,
		7, 22, 1, 18}
	m = append(m, "kmeter_abi_version"...)
	m = append(m, KindGlobal, 1)
	info, err := Inspect(m)
	if err != nil {
		t.Fatal(err)
	}
	if info.ABI != (ABIVersion{Present: true, Kind: KindGlobal, Value: -1, Known: true}) {
		t.Errorf("ABI = %+v, want global with value -1", info.ABI)
	}
}
