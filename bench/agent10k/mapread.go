package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// runMapRead times what the agent does to read one counter map against
// the batch API it could use: a per-CPU hash of n {cgroup, kind} keys is
// read with MapIterator (BPF_MAP_GET_NEXT_KEY + BPF_MAP_LOOKUP_ELEM per
// key, as meter.SumPerCPU does) and with Map.BatchLookup
// (BPF_MAP_LOOKUP_BATCH, chunk keys per call), rounds times each,
// alternating. Both sums are checked equal.
func runMapRead(out io.Writer, n, chunk, rounds int) error {
	cpus := mustPossibleCPUs()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 16, ValueSize: 8, MaxEntries: uint32(n)})
	if err != nil {
		return fmt.Errorf("create per-cpu hash: %w", err)
	}
	defer m.Close()
	keys := make([]counterKey, n)
	vals := make([]uint64, n*cpus)
	var want uint64
	for i := range keys {
		keys[i] = counterKey{CgroupID: uint64(1000 + i/2), Kind: uint32(i % 2)}
		for c := range cpus {
			vals[i*cpus+c] = uint64(i + c)
			want += uint64(i + c)
		}
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("fill map: %w", err)
	}
	iterate := func() (uint64, error) {
		var (
			k   counterKey
			v   []uint64
			sum uint64
		)
		it := m.Iterate()
		for it.Next(&k, &v) {
			for _, x := range v {
				sum += x
			}
		}
		return sum, it.Err()
	}
	ks := make([]counterKey, chunk)
	vs := make([]uint64, chunk*cpus)
	batch := func() (uint64, error) {
		var (
			cursor ebpf.MapBatchCursor
			sum    uint64
		)
		for {
			got, err := m.BatchLookup(&cursor, ks, vs, nil)
			for _, x := range vs[:got*cpus] {
				sum += x
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return sum, nil
			}
			if err != nil {
				return 0, err
			}
		}
	}
	var ti, tb []time.Duration
	for range rounds {
		for _, f := range []struct {
			read func() (uint64, error)
			ts   *[]time.Duration
		}{{iterate, &ti}, {batch, &tb}} {
			start := time.Now()
			sum, err := f.read()
			if err != nil {
				return err
			}
			*f.ts = append(*f.ts, time.Since(start))
			if sum != want {
				return fmt.Errorf("read sum %d, want %d", sum, want)
			}
		}
	}
	slices.Sort(ti)
	slices.Sort(tb)
	fmt.Fprintf(out, "per-CPU hash, %d keys, %d CPUs, %d rounds (median / fastest):\n", n, cpus, rounds)
	fmt.Fprintf(out, "  MapIterator (agent today)     %v / %v\n", ti[len(ti)/2], ti[0])
	fmt.Fprintf(out, "  BatchLookup, %d keys per call %v / %v\n", chunk, tb[len(tb)/2], tb[0])
	return nil
}
