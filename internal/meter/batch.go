package meter

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// EachPerCPU calls fn with every key of the per-CPU map m and its values,
// one per possible CPU, for maps whose values are structs rather than a
// single counter (use [SumPerCPU] for those). vals is only valid during
// the call. Like SumPerCPU it reads 4096 keys per syscall: key-by-key
// iteration of a 10,000-cgroup map was half of the agent's CPU. Kernels
// without batch operations are read key by key.
func EachPerCPU[K, V any](m *ebpf.Map, fn func(key K, vals []V)) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("read per-cpu map %s: %w", m, err)
	}
	const batch = 4096
	keys := make([]K, batch)
	vals := make([]V, batch*ncpu)
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			return iterateEachPerCPU(m, fn)
		}
		for i := range n {
			fn(keys[i], vals[i*ncpu:(i+1)*ncpu])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil // the end
		}
		if err != nil {
			return fmt.Errorf("read per-cpu map %s: %w", m, err)
		}
	}
}

func iterateEachPerCPU[K, V any](m *ebpf.Map, fn func(key K, vals []V)) error {
	var (
		key  K
		vals []V
	)
	it := m.Iterate()
	for it.Next(&key, &vals) {
		fn(key, vals)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read per-cpu map %s: %w", m, err)
	}
	return nil
}
