package meter

import (
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
	seen := map[uint64]uint64{}
	if err := SumPerCPU(m, func(k uint64, sum uint64) { seen[k] += sum }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("saw %d keys, want %d", len(seen), n)
	}
	for k, got := range seen {
		want := uint64(0)
		for c := 0; c < ncpu; c++ {
			want += k*10 + uint64(c) + 1
		}
		if got != want {
			t.Fatalf("key %d: sum %d, want %d", k, got, want)
		}
	}
}
