package meter

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

type pair struct{ A, B uint64 }

// EachPerCPU must see every key exactly once across several batches,
// with each CPU's struct value.
func TestEachPerCPU_batches(t *testing.T) {
	testutil.RequireBPF(t)
	const n = 9_000 // more than two batches
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 8, ValueSize: 16, MaxEntries: n})
	testutil.CheckLoad(t, err)
	defer m.Close()
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for k := uint64(0); k < n; k++ {
		vals := make([]pair, ncpu)
		for c := range vals {
			vals[c] = pair{A: k*10 + uint64(c) + 1, B: k*7 + uint64(c)}
		}
		if err := m.Put(k, vals); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]pair{}
	err = EachPerCPU(m, nil, func(k uint64, vals []pair) {
		if len(vals) != ncpu {
			t.Errorf("key %d: %d values, want one per CPU (%d)", k, len(vals), ncpu)
		}
		s := seen[k]
		for _, v := range vals {
			s.A += v.A
			s.B += v.B
		}
		seen[k] = s
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("saw %d keys, want %d", len(seen), n)
	}
	for k, got := range seen {
		var want pair
		for c := uint64(0); c < uint64(ncpu); c++ {
			want.A += k*10 + c + 1
			want.B += k*7 + c
		}
		if got != want {
			t.Fatalf("key %d: sums %+v, want %+v", k, got, want)
		}
	}
}
