// Package syscalls is the kmeter meter that counts every syscall entry per
// cgroup and per syscall number, in the kernel.
//
// The BPF program (bpf/syscalls.bpf.c) runs on each syscall entry and
// increments one counter of the current task's cgroup; nothing goes to user
// space per event. Per-cgroup totals are sums computed here, at read time.
//
// Where the counters live:
//   - cgroup storage (kernel 6.2+, preferred): each cgroup holds an array of
//     counters indexed by syscall number in BPF cgroup local storage, so the
//     hot path finds them without hashing, and a bitmap of the numbers the
//     cgroup used. Reading runs a cgroup iterator that writes each live
//     cgroup's used counters as records into an array this process maps
//     and reads in place, and a program on tp_btf/cgroup_rmdir keeps the
//     final counts of removed cgroups in a hash map.
//   - a per-CPU hash keyed by {cgroup id, syscall number} (the fallback on
//     kernels without cgroup storage).
//
// Either attaches to tp_btf/sys_enter where the kernel supports it, and to
// the classic tracepoint raw_syscalls/sys_enter (which needs tracefs)
// otherwise. Maps and links are pinned under <PinDir>/syscalls, so the
// counters keep counting while the agent restarts; remove that directory
// (or call [Meter.Unpin]) to stop counting and drop the counts.
//
// Syscall numbers are those of the task's ABI: on x86-64, 32-bit tasks
// count with their own (ia32) numbers under the same keys. With cgroup
// storage, numbers from [NumberSlots] up (x32 calls, which set bit 30)
// are counted together under [OtherNumber].
package syscalls

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the meter's name and the directory under PinDir holding its pins.
const Name = "syscalls"

// MaxEntries is the number of {cgroup, syscall} keys each counter hash
// holds. Keep in sync with SYSCALLS_MAX_ENTRIES in bpf/syscalls.bpf.c.
const MaxEntries = 262144

// NumberSlots is how many syscall numbers (0 to NumberSlots-1) get a
// counter of their own with cgroup storage. Keep in sync with
// SYS_NR_SLOTS in bpf/syscalls.bpf.c.
const NumberSlots = 472

// OtherNumber is the number under which [Meter.ReadInto] counts, with
// cgroup storage, the syscalls numbered NumberSlots or more. Keep in
// sync with SYS_NR_OTHER in bpf/syscalls.bpf.c.
const OtherNumber = 0xffffffff

// StorageValue returns a cgroup's storage value (struct sys_nrs in
// bpf/syscalls.bpf.c) holding counts[nr] for each syscall number nr, as
// the counting program leaves it: every number with a count has its
// touched bit, without which a read skips it. Benchmarks fill pinned
// storage with it, as if the cgroup had made those syscalls.
func StorageValue(counts []uint64) ([]byte, error) {
	if len(counts) > NumberSlots {
		return nil, fmt.Errorf("storage value: %d syscall numbers, cgroup storage has counters for 0 to %d", len(counts), NumberSlots-1)
	}
	var v syscallsSysNrs
	for nr, n := range counts {
		if n != 0 {
			v.ByNr[nr] = n
			v.Touched[nr/64] |= 1 << (nr % 64)
		}
	}
	return binary.Append(nil, binary.NativeEndian, &v)
}

// The hooks, in order of preference.
const (
	HookTPBTF      = "tp_btf/sys_enter"
	HookTracepoint = "tracepoint/raw_syscalls/sys_enter"
)

// Where the hot path keeps its counters, as reported in
// [meter.Status.Storage].
const (
	StoreCgroup = "cgrp_storage"
	StoreHash   = "percpu_hash"
)

// Storage chooses where the hot path counts.
type Storage int

const (
	// StorageAuto uses cgroup storage where the kernel has it, and the
	// per-CPU hash otherwise.
	StorageAuto Storage = iota
	// StorageCgroup uses cgroup storage or fails.
	StorageCgroup
	// StorageHash counts in the per-CPU hash even where cgroup storage
	// works (tests and benchmarks use it to run the fallback). Counts
	// already in cgroup storage are still read, so switching loses none.
	StorageHash
)

// Options tune [OpenWith]. The zero value is what agents use.
type Options struct {
	// Hook restricts the hook choice; tests use it to run both paths.
	Hook meter.HookMode
	// Storage restricts where the hot path counts.
	Storage Storage
}

// Program, map and pin names; the programs' names are in
// bpf/syscalls.bpf.c.
const (
	linkName      = "sys_enter_link"
	rmdirLinkName = "cgroup_rmdir_link"
	progRmdir     = "kmeter_cgs_rmdir"
	progWalk      = "kmeter_cgs_walk"
	mapStore      = "sys_store"
	mapTotals     = "sys_totals"
	mapWalk       = "sys_walk"
)

// walkRecords is how many records one walk can write into sys_walk.
// Keep in sync with SYS_WALK_RECS in bpf/syscalls.bpf.c.
const walkRecords = MaxEntries

// Meter is the loaded and attached syscalls meter. Its methods are safe
// to call from one goroutine at a time.
type Meter struct {
	dir      string
	att      *meter.Attached
	counts   *ebpf.Map
	overflow *ebpf.Map
	// Set where the kernel has cgroup storage, whatever the hot path.
	totals *ebpf.Map
	rmdir  link.Link
	walk   *link.Iter
	// walkMap is the walk's record array and walkMem the mapping of its
	// first records, where a read finds them in place. The kernel maps
	// every page of a mapping at once (6 MiB of resident memory for all
	// of sys_walk), so only a prefix is mapped, grown when a walk writes
	// past it: the agent's RSS follows the records in use.
	walkMap *ebpf.Map
	walkMem []byte
	// walked is how many records the latest walk wrote.
	walked int
	// seen holds the cgroups of the latest walk, filled only when
	// sys_totals has counts (of removed cgroups) to tell apart from them.
	seen map[uint64]struct{}
	// unseen is what the latest walk could not copy to sys_walk.
	unseen uint64
	// keys and vals are readHash's batch buffers, kept across reads
	// (reads are serial, like unseen) so a read at 10,000 cgroups does not
	// allocate ~100 KiB of them again.
	keys []syscallsKmeterKey
	vals []uint64
	// hashBuf holds the per-CPU hash's batch buffers across reads.
	hashBuf meter.PerCPUBuffers[syscallsKmeterKey, uint64]

	status meter.Status
}

var _ meter.Meter = (*Meter)(nil)

// Open loads and attaches the syscalls meter with the default options.
// cfg.PinDir must be an existing directory on bpffs (hostfs.EnsureBPFFS
// prepares one); cfg.CgroupDir is not used.
func Open(cfg meter.Config) (*Meter, error) {
	return OpenWith(cfg, Options{})
}

// OpenWith loads and attaches the syscalls meter. When an earlier agent
// left the same program attached under cfg.PinDir, its link and counts
// are kept ([meter.Status.Reused]).
func OpenWith(cfg meter.Config, opts Options) (*Meter, error) {
	if err := meter.CheckConfig(cfg, false); err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	if opts.Storage < StorageAuto || opts.Storage > StorageHash {
		return nil, fmt.Errorf("open syscalls meter: unknown storage choice %d (use StorageAuto, StorageCgroup or StorageHash)", opts.Storage)
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	spec, err := loadSyscalls()
	if err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	m := &Meter{dir: dir, status: meter.Status{Meter: Name, Counters: []string{meter.Syscalls}}}
	storageErr := features.HaveMapType(ebpf.CgroupStorage)
	if storageErr == nil {
		storageErr = m.openStorage(spec)
	}
	if storageErr != nil {
		// Maps pinned by another kmeter version hold counts: say so
		// rather than count elsewhere and hide them.
		if opts.Storage == StorageCgroup || errors.Is(storageErr, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("open syscalls meter: cgroup storage: %w", storageErr)
		}
		withoutStorage(spec)
	}

	var errs []error
	for _, s := range []struct {
		store string
		hooks []meter.Hook
	}{{StoreCgroup, storageHooks()}, {StoreHash, hashHooks()}} {
		if s.store == StoreCgroup && (storageErr != nil || opts.Storage == StorageHash) ||
			s.store == StoreHash && opts.Storage == StorageCgroup {
			continue
		}
		att, err := meter.LoadAttach(spec, dir, linkName, opts.Hook, s.hooks)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.store, err))
			continue
		}
		m.att, m.counts, m.overflow = att, att.Maps["sys_counts"], att.Maps["sys_overflow"]
		m.status.Hook, m.status.Fallback, m.status.Reused, m.status.Storage = att.Hook, att.Fallback, att.Reused, s.store
		return m, nil
	}
	m.closeStorage()
	return nil, fmt.Errorf("attach syscalls meter: %w", errors.Join(errs...))
}

// openStorage attaches what reads cgroup storage: the program keeping
// removed cgroups' final counts (pinned, so it runs while no agent does)
// and the cgroup iterator that copies live counts for a read.
func (m *Meter) openStorage(spec *ebpf.CollectionSpec) error {
	coll, err := meter.LoadPinned(spec, m.dir, progRmdir, progWalk)
	if err != nil {
		return err
	}
	defer coll.Close()
	rmdir := coll.Programs[progRmdir]
	l, _, err := meter.AttachPinned(filepath.Join(m.dir, rmdirLinkName), rmdir, func() (link.Link, error) {
		return link.AttachTracing(link.TracingOptions{Program: rmdir, AttachType: ebpf.AttachTraceRawTp})
	})
	if err != nil {
		return fmt.Errorf("attach tp_btf/cgroup_rmdir: %w", err)
	}
	walkMap := coll.DetachMap(mapWalk)
	mem, err := mapWalkRecords(walkMap, walkFirstMapped)
	if err != nil {
		walkMap.Close()
		l.Close()
		return err
	}
	walk, err := attachCgroupIter(coll.Programs[progWalk])
	if err != nil {
		unix.Munmap(mem)
		walkMap.Close()
		l.Close()
		return fmt.Errorf("attach iter/cgroup: %w", err)
	}
	m.rmdir, m.walk, m.totals, m.walkMap, m.walkMem = l, walk, coll.DetachMap(mapTotals), walkMap, mem
	return nil
}

func (m *Meter) closeStorage() error {
	var errs []error
	if m.walk != nil {
		errs = append(errs, m.walk.Close())
	}
	if m.rmdir != nil {
		errs = append(errs, m.rmdir.Close())
	}
	if m.totals != nil {
		errs = append(errs, m.totals.Close())
	}
	if m.walkMem != nil {
		errs = append(errs, unix.Munmap(m.walkMem))
	}
	if m.walkMap != nil {
		errs = append(errs, m.walkMap.Close())
	}
	m.walk, m.rmdir, m.totals, m.walkMap, m.walkMem = nil, nil, nil, nil, nil
	return errors.Join(errs...)
}

// withoutStorage drops what needs cgroup storage from spec, so that the
// hash programs load on kernels without it.
func withoutStorage(spec *ebpf.CollectionSpec) {
	delete(spec.Maps, mapStore)
	delete(spec.Maps, mapTotals)
	delete(spec.Maps, mapWalk)
	for _, h := range storageHooks() {
		delete(spec.Programs, h.Program)
	}
	delete(spec.Programs, progRmdir)
	delete(spec.Programs, progWalk)
}

func storageHooks() []meter.Hook {
	return hooks("kmeter_cgs_btf", "kmeter_cgs_tp")
}

func hashHooks() []meter.Hook {
	return hooks("kmeter_sys_btf", "kmeter_sys_tp")
}

func hooks(btfProg, tpProg string) []meter.Hook {
	return []meter.Hook{
		{
			Name:    HookTPBTF,
			Program: btfProg,
			Probe:   func() error { return meter.ProbeTPBTF("sys_enter") },
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
			},
		},
		{
			Name:    HookTracepoint,
			Program: tpProg,
			Probe: func() error {
				_, err := hostfs.EnsureTracefs()
				return err
			},
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.Tracepoint("raw_syscalls", "sys_enter", p, nil)
			},
		},
	}
}

// ProbeStorage reports whether the cgroup-storage way of counting works
// here: the map type, the programs (loaded with temporary maps) and their
// hooks. kmeter doctor shows it; a non-nil error means the meter counts
// in the per-CPU hash.
func ProbeStorage() error {
	if err := features.HaveMapType(ebpf.CgroupStorage); err != nil {
		return err
	}
	spec, err := loadSyscalls()
	if err != nil {
		return err
	}
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	for name := range spec.Programs {
		if name != progRmdir && name != progWalk && name != "kmeter_cgs_btf" {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer coll.Close()
	var errs []error
	for _, name := range []string{progRmdir, "kmeter_cgs_btf"} {
		l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name], AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			errs = append(errs, fmt.Errorf("attach %s: %w", name, err))
			continue
		}
		l.Close()
	}
	it, err := attachCgroupIter(coll.Programs[progWalk])
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("attach iter/cgroup: %w", err))...)
	}
	defer it.Close()
	if _, err := readWalk(it); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Status reports the hook and the storage in use.
func (m *Meter) Status() meter.Status { return m.status }

// ReadInto adds each cgroup's cumulative syscall count to c, both its
// total ([meter.CounterSyscalls]) and its breakdown by syscall number
// ([meter.Counts.Numbers]), in one pass over the counters.
func (m *Meter) ReadInto(c *meter.Counts) error {
	if m.att == nil {
		return meter.ErrClosed
	}
	return m.read(c.AddSyscalls)
}

// read calls fn for every counter: cgroup storage first (live cgroups
// from a walk, removed ones from sys_totals), then the per-CPU hash. A
// cgroup can be in both after a switch of storage; its counts add up.
func (m *Meter) read(fn func(cgroup uint64, nr uint32, n uint64)) error {
	if m.walk != nil {
		dropped, err := readWalk(m.walk)
		if err != nil {
			return fmt.Errorf("read syscalls meter: %w", err)
		}
		m.unseen = 0
		for _, d := range dropped {
			m.unseen += d.Dropped
		}
		recs, err := m.walkRecs()
		if err != nil {
			return fmt.Errorf("read syscalls meter: %w", err)
		}
		m.walked = len(recs)
		for i := range recs {
			fn(recs[i].CgroupId, recs[i].Nr, recs[i].Count)
		}
		if m.keys == nil {
			m.keys = make([]syscallsKmeterKey, hashBatch)
			m.vals = make([]uint64, hashBatch)
		}
		// A cgroup removed after the walk saw it alive has its final
		// counts in sys_totals too: this read keeps the walk's, the next
		// (without it in the walk) the final ones, so counts never go
		// back nor count twice.
		seenBuilt := false
		err = readHash(m.totals, m.keys, m.vals, func(k syscallsKmeterKey, n uint64) {
			if !seenBuilt {
				seenBuilt = true
				if m.seen == nil {
					m.seen = make(map[uint64]struct{})
				}
				clear(m.seen)
				// A cgroup's records are one after another: one
				// insert per cgroup, not per syscall number.
				var last uint64
				for i := range recs {
					if id := recs[i].CgroupId; id != last {
						m.seen[id] = struct{}{}
						last = id
					}
				}
			}
			if _, alive := m.seen[k.CgroupId]; !alive {
				fn(k.CgroupId, k.Kind, n)
			}
		})
		if err != nil {
			return fmt.Errorf("read syscalls meter: %w", err)
		}
	}
	return meter.SumPerCPU(m.counts, &m.hashBuf, func(k syscallsKmeterKey, n uint64) { fn(k.CgroupId, k.Kind, n) })
}

// walkFirstMapped is how many records of sys_walk are mapped at first:
// 64 KiB, enough for about 2,700 (cgroup, syscall number) pairs in use.
const walkFirstMapped = 64 << 10 / int(unsafe.Sizeof(syscallsSysRec{}))

// mapWalkRecords maps the first n records of sys_walk (rounded up to
// whole pages, at most the whole array) read-only.
func mapWalkRecords(walkMap *ebpf.Map, n int) ([]byte, error) {
	size := int(walkMap.ValueSize()) * int(walkMap.MaxEntries())
	page := os.Getpagesize()
	length := min((n*int(walkMap.ValueSize())+page-1)/page*page, size)
	mem, err := unix.Mmap(walkMap.FD(), 0, length, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes of %s: %w", length, mapWalk, err)
	}
	return mem, nil
}

// walkRecs returns the records the latest walk wrote into sys_walk, in
// place: they are valid until the next walk. The walk ends its records
// with one of cgroup id 0; when that is past the mapped prefix, the
// prefix is mapped again twice as long (the kernel does not let a
// sys_walk mapping grow in place).
func (m *Meter) walkRecs() ([]syscallsSysRec, error) {
	for {
		mapped := len(m.walkMem) / int(unsafe.Sizeof(syscallsSysRec{}))
		all := unsafe.Slice((*syscallsSysRec)(unsafe.Pointer(unsafe.SliceData(m.walkMem))), mapped)
		for i := range all {
			if all[i].CgroupId == 0 {
				return all[:i], nil
			}
		}
		if mapped >= walkRecords+1 {
			return all[:walkRecords], nil
		}
		mem, err := mapWalkRecords(m.walkMap, 2*mapped)
		if err != nil {
			return nil, err
		}
		if err := unix.Munmap(m.walkMem); err != nil {
			unix.Munmap(mem)
			return nil, fmt.Errorf("unmap %s: %w", mapWalk, err)
		}
		m.walkMem = mem
	}
}

// readWalk runs the cgroup iterator once, which writes the used counters
// of every live cgroup's storage into sys_walk, and returns the cgroups
// whose counters did not all fit there.
func readWalk(it *link.Iter) ([]syscallsSysDropped, error) {
	r, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("walk cgroups: %w", err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		// The kernel's cgroup iterator must finish in one read of at most
		// 32 KiB: 2048 cgroups with counters that do not fit.
		return nil, fmt.Errorf("walk cgroups: %w (sys_walk is full for thousands of cgroups)", err)
	}
	out := make([]syscallsSysDropped, len(raw)/binary.Size(syscallsSysDropped{}))
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, out); err != nil {
		return nil, fmt.Errorf("walk cgroups: parse %d bytes: %w", len(raw), err)
	}
	return out, nil
}

// hashBatch is how many entries of sys_totals one BatchLookup returns.
const hashBatch = 4096

// readHash calls fn with every key and value of the hash m, in batches
// of len(keys) (keys and vals have the same length) where the kernel
// supports them.
func readHash(m *ebpf.Map, keys []syscallsKmeterKey, vals []uint64, fn func(k syscallsKmeterKey, n uint64)) error {
	var cursor ebpf.MapBatchCursor
	for first := true; ; first = false {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		if first && errors.Is(err, ebpf.ErrNotSupported) {
			var (
				k syscallsKmeterKey
				v uint64
			)
			it := m.Iterate()
			for it.Next(&k, &v) {
				fn(k, v)
			}
			return it.Err()
		}
		for i := range n {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read map %s: %w", m, err)
		}
	}
}

// Overflow returns the number of syscalls that were not attributed to a
// cgroup: the counter hash was full, a cgroup's storage could not be
// created, a removed cgroup's counts did not fit in sys_totals, or (as of
// the latest read) a live cgroup's counts did not. Agents export it; it
// should stay 0.
func (m *Meter) Overflow() (uint64, error) {
	if m.att == nil {
		return 0, meter.ErrClosed
	}
	sums, err := meter.SumSlots(m.overflow)
	if err != nil {
		return 0, err
	}
	return sums[0] + m.unseen, nil
}

// Stats reports how full the map the hot path fills is: with cgroup
// storage, the fuller of the hash of removed cgroups' counts and the
// latest walk's records of live ones (each holds [MaxEntries]); otherwise
// the counter hash. Entries counts {cgroup, syscall number} keys;
// Overflow is keyed by [meter.Syscalls].
func (m *Meter) Stats() (meter.MapStats, error) {
	if m.att == nil {
		return meter.MapStats{}, meter.ErrClosed
	}
	full := m.counts
	if m.status.Storage == StoreCgroup {
		full = m.totals
	}
	n, err := meter.CountKeys(full)
	if err != nil {
		return meter.MapStats{}, err
	}
	if m.status.Storage == StoreCgroup {
		n = max(n, m.walked)
	}
	of, err := m.Overflow()
	if err != nil {
		return meter.MapStats{}, err
	}
	missed, err := meter.ProgramMisses(m.att.Link)
	if err != nil {
		return meter.MapStats{}, err
	}
	return meter.MapStats{
		MaxEntries:    full.MaxEntries(),
		Entries:       n,
		Overflow:      map[string]uint64{meter.Syscalls: of},
		ProgramMisses: missed,
	}, nil
}

// Close releases the meter's file descriptors. The programs keep counting
// into the pinned maps until [Meter.Unpin] or the pin dir is removed.
// Close is idempotent.
func (m *Meter) Close() error {
	if m.att == nil {
		return nil
	}
	err := errors.Join(m.att.Close(), m.closeStorage())
	m.att = nil
	if err != nil {
		return fmt.Errorf("close syscalls meter: %w", err)
	}
	return nil
}

// Unpin removes the meter's pins (links and maps), so the programs stop
// counting once the meter is closed and the counts are dropped. Call it
// when uninstalling; a restarting agent must not.
func (m *Meter) Unpin() error {
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("unpin syscalls meter: %w", err)
	}
	return nil
}
