package sign

import (
	"fmt"
	"testing"
)

// benchModule is pluginWasm padded with a custom section to size bytes,
// standing in for a compiled plugin of that size.
func benchModule(b *testing.B, size int) []byte {
	pad := size - len(pluginWasm) - 16
	m, err := SetCustomSection(pluginWasm, "pad", make([]byte, pad))
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkVerify(b *testing.B) {
	k := testKey(1)
	keys := []PublicKey{testKey(2).Public(), testKey(3).Public(), k.Public()}
	for _, size := range []int{4 << 10, 256 << 10, 4 << 20} {
		signed, err := Sign(benchModule(b, size), k)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(signed)))
			for b.Loop() {
				if _, err := Verify(signed, keys); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSign(b *testing.B) {
	k := testKey(1)
	m := benchModule(b, 256<<10)
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		if _, err := Sign(m, k); err != nil {
			b.Fatal(err)
		}
	}
}
