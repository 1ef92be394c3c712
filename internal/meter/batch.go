package meter

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// PerCPUBuffers are the key and value buffers of batch reads of a
// per-CPU map with keys K and values V. A meter keeps them across reads:
// made again for every read (4096 keys and values per CPU, three maps)
// they were a tenth of a read's CPU, allocation and clearing. The zero
// value is ready; it is not safe for concurrent use.
type PerCPUBuffers[K, V any] struct {
	keys []K
	vals []V
}

// get returns the buffers for batches of n keys on ncpu CPUs.
func (b *PerCPUBuffers[K, V]) get(n, ncpu int) ([]K, []V) {
	if len(b.keys) != n || len(b.vals) != n*ncpu {
		b.keys, b.vals = make([]K, n), make([]V, n*ncpu)
	}
	return b.keys, b.vals
}

// perCPUBatch is how many keys one batch read of a per-CPU map returns.
const perCPUBatch = 4096

// EachPerCPU calls fn with every key of the per-CPU map m and its values,
// one per possible CPU, for maps whose values are structs rather than a
// single counter (use [SumPerCPU] for those). vals is only valid during
// the call. Like SumPerCPU it reads 4096 keys per syscall: key-by-key
// iteration of a 10,000-cgroup map was half of the agent's CPU. Kernels
// without batch operations are read key by key. buf, if not nil, holds
// the batch buffers across calls.
func EachPerCPU[K, V any](m *ebpf.Map, buf *PerCPUBuffers[K, V], fn func(key K, vals []V)) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("read per-cpu map %s: %w", m, err)
	}
	if buf == nil {
		buf = new(PerCPUBuffers[K, V])
	}
	keys, vals := buf.get(perCPUBatch, ncpu)
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
