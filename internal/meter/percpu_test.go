package meter

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

// SumPerCPU must see every key exactly once across several batches, with
// the sum of every CPU's value.
func TestSumPerCPU_batches(t *testing.T) {
	testutil.RequireBPF(t)
	const n = 10_000 // more than two batches
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 8, ValueSize: 8, MaxEntries: n})
	testutil.CheckLoad(t, err)
	defer m.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for k := uint64(0); k < n; k++ {
		vals := make([]uint64, ncpu)
		for c := range vals {
			vals[c] = k*10 + uint64(c) + 1
		}
		if err := m.Put(k, vals); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, buf *PerCPUBuffers[uint64, uint64], keys uint64) {
		t.Helper()
		seen := map[uint64]uint64{}
		if err := SumPerCPU(m, buf, func(k uint64, sum uint64) { seen[k] += sum }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != int(keys) {
			t.Fatalf("saw %d keys, want %d", len(seen), keys)
		}
		for k, got := range seen {
			want := uint64(0)
			for c := 0; c < ncpu; c++ {
				want += k*10 + uint64(c) + 1
			}
			if k >= keys || got != want {
				t.Fatalf("key %d: sum %d, want %d (keys 0 to %d)", k, got, want, keys-1)
			}
		}
	}
	check(t, nil, n)
	// Buffers kept across reads: the second read, of a smaller map, sees
	// none of the first read's keys left in them.
	var buf PerCPUBuffers[uint64, uint64]
	check(t, &buf, n)
	for k := uint64(n / 2); k < n; k++ {
		if err := m.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	check(t, &buf, n/2)
}

// CountKeys counts every key across several batches, of per-CPU and plain
// hashes whose keys and values are not 8 bytes, as the key walk does.
func TestCountKeys(t *testing.T) {
	testutil.RequireBPF(t)
	tests := []struct {
		name string
		spec ebpf.MapSpec
		n    int
	}{
		{"per-cpu hash, 12-byte keys", ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 12, ValueSize: 8, MaxEntries: 10_000}, 9_001},
		{"hash, 4-byte values", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 4, MaxEntries: 10_000}, 10_000},
		{"per-cpu hash, 12-byte values", ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 8, ValueSize: 12, MaxEntries: 100}, 3},
		{"empty", ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: 100}, 0},
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ebpf.NewMap(&tt.spec)
			testutil.CheckLoad(t, err)
			defer m.Close()
			var val any = make([]byte, tt.spec.ValueSize)
			if tt.spec.Type == ebpf.PerCPUHash { // one value per CPU
				val = reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(int(tt.spec.ValueSize), reflect.TypeFor[byte]())), ncpu, ncpu).Interface()
			}
			for i := range tt.n {
				key := make([]byte, tt.spec.KeySize)
				key[0], key[1], key[2] = byte(i), byte(i>>8), byte(i>>16)
				if err := m.Put(key, val); err != nil {
					t.Fatal(err)
				}
			}
			got, err := CountKeys(m)
			if err != nil {
				t.Fatal(err)
			}
			walked, err := walkKeys(m)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.n || walked != tt.n {
				t.Fatalf("CountKeys %d, walk %d, want %d", got, walked, tt.n)
			}
		})
	}
}

// BenchmarkSumPerCPU reads a per-CPU hash of 20,000 keys (two counters of
// 10,000 cgroups, as the sockstate and netbytes meters hold them), with
// buffers made for each read and kept across reads.
func BenchmarkSumPerCPU(b *testing.B) {
	testutil.RequireBPF(b)
	const n = 20_000
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 16, ValueSize: 8, MaxEntries: n})
	testutil.CheckLoad(b, err)
	defer m.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		b.Fatal(err)
	}
	type key struct{ Cgroup, Kind uint64 }
	keys := make([]key, n)
	for i := range keys {
		keys[i] = key{Cgroup: uint64(i / 2), Kind: uint64(i % 2)}
	}
	if _, err := m.BatchUpdate(keys, make([]uint64, n*ncpu), nil); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		buf  *PerCPUBuffers[key, uint64]
	}{{"new buffers", nil}, {"kept buffers", new(PerCPUBuffers[key, uint64])}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				seen := 0
				if err := SumPerCPU(m, tc.buf, func(key, uint64) { seen++ }); err != nil {
					b.Fatal(err)
				}
				if seen != n {
					b.Fatalf("saw %d keys, want %d", seen, n)
				}
			}
		})
	}
}
