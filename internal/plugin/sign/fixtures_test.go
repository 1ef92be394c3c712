package sign

import (
	_ "embed"
)

// pluginWasm imports kmeter.log, exports memory, price and the ABI
// version as an i32 global (value 1). Built with:
//
//	wat2wasm testdata/plugin.wat -o testdata/plugin.wasm   (wabt 1.0.32)
//
//go:embed testdata/plugin.wasm
var pluginWasm []byte

// abiFuncWasm exports kmeter_abi_version as a function. Built with:
//
//	wat2wasm testdata/abifunc.wat -o testdata/abifunc.wasm   (wabt 1.0.32)
//
//go:embed testdata/abifunc.wasm
var abiFuncWasm []byte

// testKey returns a deterministic key pair so failures are reproducible.
func testKey(b byte) KeyPair {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = b + byte(i)
	}
	k, err := NewKeyPairFromSeed(seed)
	if err != nil {
		panic(err)
	}
	return k
}
