package meter

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// MapStats tells how full a meter's counter map is, so that health checks
// can warn before counts start to overflow.
type MapStats struct {
	// MaxEntries is the number of keys the counter map can hold.
	MaxEntries uint32 `json:"max_entries"`
	// Entries is the number of keys in use when the stats were read.
	Entries int `json:"entries"`
	// Overflow is, per counter name, what was counted while the map was
	// full and therefore not attributed to any cgroup (in the counter's
	// unit: syscalls, connections or bytes). It only grows; any non-zero
	// value means the map is too small for this host.
	Overflow map[string]uint64 `json:"overflow"`
	// ProgramMisses counts events the kernel did not run the meter's
	// program for, because another BPF program was already running on
	// that CPU (its recursion protection; on classic tracepoints also
	// while the CPU is inside a BPF map syscall). Those events are not
	// counted anywhere else; like Overflow it should stay 0.
	ProgramMisses uint64 `json:"program_misses"`
}

// ProgramMisses sums the recursion misses of the programs run by links.
func ProgramMisses(links ...link.Link) (uint64, error) {
	var n uint64
	for _, l := range links {
		li, err := l.Info()
		if err != nil {
			return 0, fmt.Errorf("inspect link: %w", err)
		}
		p, err := ebpf.NewProgramFromID(li.Program)
		if err != nil {
			return 0, fmt.Errorf("open program %d: %w", li.Program, err)
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			return 0, fmt.Errorf("program %d stats: %w", li.Program, err)
		}
		n += st.RecursionMisses
	}
	return n, nil
}

// SumPerCPU calls fn with every key of the per-CPU map m and the sum of
// its per-CPU values. Keys added while it reads may be missed; they are
// seen by the next read. It reads in batches (one syscall per 4096 keys
// instead of two per key: 28x faster for 62,000 keys) and falls back to
// key-by-key iteration on kernels without batch operations. buf, if not
// nil, holds the batch buffers across calls.
func SumPerCPU[K any](m *ebpf.Map, buf *PerCPUBuffers[K, uint64], fn func(key K, sum uint64)) error {
	return EachPerCPU(m, buf, func(key K, vals []uint64) {
		var sum uint64
		for _, v := range vals {
			sum += v
		}
		fn(key, sum)
	})
}

// SumSlots returns the per-slot sums of the per-CPU array m.
func SumSlots(m *ebpf.Map) ([]uint64, error) {
	sums := make([]uint64, m.MaxEntries())
	for i := range sums {
		var vals []uint64
		if err := m.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("read per-cpu array %s slot %d: %w", m, i, err)
		}
		for _, v := range vals {
			sums[i] += v
		}
	}
	return sums, nil
}

// CountKeys returns the number of keys in m. Like [SumPerCPU] it reads
// 4096 keys per syscall: walking the keys one syscall each cost every
// /metrics scrape 140 ms of CPU at 10,000 tenants (kmeter_map_entries).
// Kernels without batch operations are walked key by key.
func CountKeys(m *ebpf.Map) (int, error) {
	const batch = 4096
	ncpu := 1
	valueSize := int(m.ValueSize())
	if perCPU(m.Type()) {
		var err error
		if ncpu, err = ebpf.PossibleCPU(); err != nil {
			return 0, fmt.Errorf("count keys of %s: %w", m, err)
		}
		valueSize = (valueSize + 7) &^ 7 // per-CPU values are 8-byte aligned
	}
	// Keys and values are only room for the kernel to write into: slices
	// of byte arrays of the map's sizes, whatever its types.
	room := func(size, n int) any {
		return reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(size, reflect.TypeFor[byte]())), n, n).Interface()
	}
	keys, vals := room(int(m.KeySize()), batch), room(valueSize, batch*ncpu)
	var cursor ebpf.MapBatchCursor
	total := 0
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			return walkKeys(m)
		}
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil // the end
		}
		if err != nil {
			return 0, fmt.Errorf("count keys of %s: %w", m, err)
		}
	}
}

func perCPU(t ebpf.MapType) bool {
	switch t {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return true
	}
	return false
}

func walkKeys(m *ebpf.Map) (int, error) {
	var (
		n   int
		key any // nil asks for the first key
	)
	for {
		next, err := m.NextKeyBytes(key)
		if err != nil {
			return 0, fmt.Errorf("count keys of %s: %w", m, err)
		}
		if next == nil {
			return n, nil
		}
		n++
		key = next
	}
}
