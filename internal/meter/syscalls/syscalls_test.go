package syscalls

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/testutil"
)

const nrGetppid = syscall.SYS_GETPPID // 110 on x86-64

func TestMain(m *testing.M) {
	testutil.RunHelper(map[string]func([]string) error{
		"getppid":         helperGetppid,
		"getppid-threads": helperGetppidThreads,
	})
	os.Exit(m.Run())
}

// helperGetppid makes exactly args[0] getppid syscalls from one OS thread.
func helperGetppid(args []string) error {
	k, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	for range k {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	return nil
}

// helperGetppidThreads makes args[0] getppid syscalls from each of
// args[1] OS threads, thread i pinned to CPU i modulo the CPU count, all
// at once: threads of one cgroup adding to the same counters.
func helperGetppidThreads(args []string) error {
	k, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	var start, done sync.WaitGroup
	start.Add(n)
	errs := make([]error, n)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(i % runtime.NumCPU())
			errs[i] = unix.SchedSetaffinity(0, &set)
			start.Done()
			start.Wait()
			for range k {
				syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
			}
		}()
	}
	done.Wait()
	return errors.Join(errs...)
}

func runGetppid(t *testing.T, cg testutil.Cgroup, k int) {
	t.Helper()
	if err := cg.SelfCommand(t, "getppid", strconv.Itoa(k)).Run(); err != nil {
		t.Fatalf("getppid helper: %v", err)
	}
}

func openMeter(t *testing.T, pinDir string, hook meter.HookMode) *Meter {
	t.Helper()
	return openWith(t, pinDir, Options{Hook: hook})
}

func openWith(t testing.TB, pinDir string, opts Options) *Meter {
	t.Helper()
	m, err := OpenWith(meter.Config{PinDir: pinDir, CgroupDir: testutil.Cgroup2Dir(t)}, opts)
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// readByNumber reads m's cumulative counts as cgroup id -> syscall
// number -> count.
func readByNumber(m *Meter) (map[uint64]map[uint32]uint64, error) {
	var c meter.Counts
	if err := m.ReadInto(&c); err != nil {
		return nil, err
	}
	return c.ByNumber(), nil
}

func getppidCount(t *testing.T, m *Meter, cg testutil.Cgroup) uint64 {
	t.Helper()
	byNr, err := readByNumber(m)
	if err != nil {
		t.Fatal(err)
	}
	return byNr[cg.ID][nrGetppid]
}

// Every way of counting: cgroup storage and the per-CPU hash, each on
// both hooks.
var ways = []struct {
	name     string
	opts     Options
	hook     string
	fallback bool
	storage  string
}{
	{"auto: cgroup storage on tp_btf", Options{}, HookTPBTF, false, StoreCgroup},
	{"cgroup storage on the classic tracepoint", Options{Hook: meter.HookFallbackOnly, Storage: StorageCgroup}, HookTracepoint, true, StoreCgroup},
	{"hash on tp_btf", Options{Hook: meter.HookPreferredOnly, Storage: StorageHash}, HookTPBTF, false, StoreHash},
	{"hash on the classic tracepoint", Options{Hook: meter.HookFallbackOnly, Storage: StorageHash}, HookTracepoint, true, StoreHash},
}

func TestMeter_countsGetppidPerCgroup(t *testing.T) {
	const k = 1000
	for _, tc := range ways {
		t.Run(tc.name, func(t *testing.T) {
			m := openWith(t, testutil.PinDir(t), tc.opts)
			st := m.Status()
			if st.Hook != tc.hook || st.Fallback != tc.fallback || st.Storage != tc.storage || st.Reused {
				t.Fatalf("status = %+v, want hook %s fallback %v storage %s, not reused", st, tc.hook, tc.fallback, tc.storage)
			}
			cg := testutil.NewCgroup(t, "a")
			other := testutil.NewCgroup(t, "b")

			before := getppidCount(t, m, cg)
			runGetppid(t, cg, k)
			byNr, err := readByNumber(m)
			if err != nil {
				t.Fatal(err)
			}
			if got := byNr[cg.ID][nrGetppid] - before; got != k {
				t.Errorf("getppid count of cgroup a = %d, want exactly %d", got, k)
			}
			if got := getppidCount(t, m, other); got != 0 {
				t.Errorf("getppid count of idle cgroup b = %d, want 0", got)
			}
			// The helper process also execs, maps memory and exits: its
			// total is every number's count, the k getppid among them.
			var sum uint64
			for _, n := range byNr[cg.ID] {
				sum += n
			}
			var c meter.Counts
			if err := m.ReadInto(&c); err != nil {
				t.Fatal(err)
			}
			if got, _ := c.Get(cg.ID, meter.CounterSyscalls); got < k || got != sum {
				t.Errorf("total syscalls of cgroup a = %d, want >= %d and = %d, the sum by number", got, k, sum)
			}
			stats, err := m.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if stats.MaxEntries != MaxEntries || stats.Entries < 1 || stats.Overflow[meter.Syscalls] != 0 {
				t.Errorf("stats = %+v, want %d max entries, some entries, no overflow", stats, MaxEntries)
			}
			// A syscall entry cannot nest on one CPU, so tp_btf never
			// skips a run. (The classic tracepoint shares one per-CPU
			// "BPF busy" flag with map syscalls, so it can, rarely.)
			if tc.hook == HookTPBTF && stats.ProgramMisses != 0 {
				t.Errorf("program misses on tp_btf = %d, want 0", stats.ProgramMisses)
			}
		})
	}
}

// Threads of one cgroup on both CPUs add to the same counters at once:
// none may be lost.
func TestMeter_threadsOnAllCPUsCountExactly(t *testing.T) {
	const k, threads = 200_000, 2
	for _, tc := range ways {
		t.Run(tc.name, func(t *testing.T) {
			m := openWith(t, testutil.PinDir(t), tc.opts)
			cg := testutil.NewCgroup(t, "a")
			if err := cg.SelfCommand(t, "getppid-threads", strconv.Itoa(k), strconv.Itoa(threads)).Run(); err != nil {
				t.Fatalf("getppid threads helper: %v", err)
			}
			if got := getppidCount(t, m, cg); got != k*threads {
				t.Errorf("counted %d getppid, want exactly %d (%d threads x %d)", got, k*threads, threads, k)
			}
		})
	}
}

// A removed cgroup's counts stay readable, also when it is removed while
// no agent runs.
func TestMeter_removedCgroupKeepsCounts(t *testing.T) {
	const k = 700
	for _, tc := range ways {
		t.Run(tc.name, func(t *testing.T) {
			pinDir := testutil.PinDir(t)
			m := openWith(t, pinDir, tc.opts)
			live := testutil.NewCgroup(t, "live")
			down := testutil.NewCgroup(t, "down")
			runGetppid(t, live, k)
			runGetppid(t, down, 2*k)
			if err := os.Remove(live.Path); err != nil {
				t.Fatal(err)
			}
			if got := getppidCount(t, m, live); got != k {
				t.Errorf("removed cgroup counted %d, want %d", got, k)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(down.Path); err != nil { // no agent now
				t.Fatal(err)
			}
			again := openWith(t, pinDir, tc.opts)
			for _, c := range []struct {
				cg   testutil.Cgroup
				want uint64
			}{{live, k}, {down, 2 * k}} {
				if got := getppidCount(t, again, c.cg); got != c.want {
					t.Errorf("after restart, removed cgroup %s counted %d, want %d", c.cg.Rel, got, c.want)
				}
			}
		})
	}
}

// Switching where the hot path counts (a kernel upgrade, a kmeter that
// only had the hash, a forced fallback) neither loses nor doubles counts.
func TestMeter_switchingStorageKeepsCounts(t *testing.T) {
	const k = 300
	pinDir := testutil.PinDir(t)
	cg := testutil.NewCgroup(t, "a")
	var want uint64
	for i, s := range []Storage{StorageHash, StorageCgroup, StorageHash, StorageAuto} {
		m := openWith(t, pinDir, Options{Storage: s})
		runGetppid(t, cg, k)
		want += k
		if got := getppidCount(t, m, cg); got != want {
			t.Errorf("step %d (%s): counted %d, want %d", i, m.Status().Storage, got, want)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// An agent restart must neither lose the syscalls made while it was down
// nor count any twice.
func TestMeter_restartKeepsCounting(t *testing.T) {
	const k, down, again = 300, 500, 700
	pinDir := testutil.PinDir(t)
	cg := testutil.NewCgroup(t, "a")

	first := openMeter(t, pinDir, meter.HookAuto)
	runGetppid(t, cg, k)
	if got := getppidCount(t, first, cg); got != k {
		t.Fatalf("first agent counted %d, want %d", got, k)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	runGetppid(t, cg, down) // no Meter open: the pinned link counts

	second := openMeter(t, pinDir, meter.HookAuto)
	if !second.Status().Reused {
		t.Errorf("second open: status %+v, want Reused", second.Status())
	}
	if got := getppidCount(t, second, cg); got != k+down {
		t.Fatalf("after restart counted %d, want %d", got, k+down)
	}

	third := openMeter(t, pinDir, meter.HookAuto)
	if !third.Status().Reused {
		t.Errorf("third open: status %+v, want Reused", third.Status())
	}
	runGetppid(t, cg, again)
	for i, m := range []*Meter{second, third} {
		if got := getppidCount(t, m, cg); got != k+down+again {
			t.Errorf("meter %d counted %d, want %d (a second program would double)", i+2, got, k+down+again)
		}
	}
}

// A full map must never lose counts silently: what cannot be stored is
// counted as overflow.
func TestMeter_fullHashCountsOverflow(t *testing.T) {
	const k = 200
	m := openWith(t, testutil.PinDir(t), Options{Storage: StorageHash})
	cg := testutil.NewCgroup(t, "a")

	possible, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]uint64, possible)
	// Fill the map until the kernel says it is full (E2BIG). Its entries
	// are allocated on demand, so under memory pressure an insert can fail
	// for a moment with another error: retry that key.
	for i, retries := uint64(0), 0; ; {
		key := syscallsKmeterKey{CgroupId: 1<<62 + i}
		err := m.counts.Update(key, vals, ebpf.UpdateNoExist)
		if err == nil || errors.Is(err, ebpf.ErrKeyExist) {
			i++
			continue
		}
		if errors.Is(err, unix.E2BIG) {
			break // full
		}
		if retries++; retries > 1000 {
			t.Fatalf("fill the counter map: %d keys in, then: %v", i, err)
		}
		time.Sleep(time.Millisecond)
	}
	before, err := m.Overflow()
	if err != nil {
		t.Fatal(err)
	}
	runGetppid(t, cg, k)
	after, err := m.Overflow()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < k {
		t.Errorf("overflow grew by %d, want >= %d", after-before, k)
	}
	if got := getppidCount(t, m, cg); got != 0 {
		t.Errorf("cgroup counted %d in a full map, want 0", got)
	}
	stats, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Other processes keep making syscalls into the full map.
	if stats.Entries != MaxEntries || stats.Overflow[meter.Syscalls] < after {
		t.Errorf("stats = %+v, want %d entries and overflow >= %d", stats, MaxEntries, after)
	}
}

// With cgroup storage the map that can fill is sys_totals, where removed
// cgroups leave their final counts: a live cgroup is still counted (a
// read finds its counts in the walk's records), and what a removed one
// cannot store there is reported as overflow.
func TestMeter_fullTotalsCountsOverflow(t *testing.T) {
	const k = 200
	m := openWith(t, testutil.PinDir(t), Options{Storage: StorageCgroup})
	cg := testutil.NewCgroup(t, "a")

	const batch = 4096
	keys := make([]syscallsKmeterKey, batch)
	vals := make([]uint64, batch)
	for i := uint64(0); ; i += batch {
		for j := range keys {
			keys[j] = syscallsKmeterKey{CgroupId: 1<<62 + i + uint64(j)}
		}
		_, err := m.totals.BatchUpdate(keys, vals, nil)
		if errors.Is(err, unix.E2BIG) {
			break // full
		}
		if err != nil {
			t.Fatalf("fill sys_totals: %d keys in, then: %v", i, err)
		}
	}
	runGetppid(t, cg, k)
	if got := getppidCount(t, m, cg); got != k {
		t.Errorf("live cgroup counted %d beside a full sys_totals, want %d", got, k)
	}
	// Overflow is not asserted to be 0 here: it is host-wide, and any
	// cgroup removed meanwhile (other test packages run in parallel) finds
	// sys_totals full. The live cgroup's exact count above is the point.
	if err := os.Remove(cg.Path); err != nil {
		t.Fatal(err)
	}
	if got := getppidCount(t, m, cg); got != 0 {
		t.Errorf("removed cgroup counted %d with a full sys_totals, want 0", got)
	}
	stats, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != MaxEntries || stats.Overflow[meter.Syscalls] < k {
		t.Errorf("stats after removing the cgroup = %+v, want %d entries and overflow >= %d", stats, MaxEntries, k)
	}
}

// A cgroup removed after a read's walk saw it has its counts both in the
// walk's records and (final) in sys_totals: the read counts them once,
// and the next read, which no longer walks it, finds the same count.
func TestMeter_removedAfterWalkCountsOnce(t *testing.T) {
	const k = 300
	m := openWith(t, testutil.PinDir(t), Options{Storage: StorageCgroup})
	cg := testutil.NewCgroup(t, "a")
	runGetppid(t, cg, k)
	if got := getppidCount(t, m, cg); got != k {
		t.Fatalf("counted %d, want %d", got, k)
	}
	// What kmeter_cgs_rmdir writes when the cgroup goes between a walk
	// and the read of sys_totals, made while the cgroup still lives.
	if err := m.totals.Put(syscallsKmeterKey{CgroupId: cg.ID, Kind: nrGetppid}, uint64(k)); err != nil {
		t.Fatal(err)
	}
	if got := getppidCount(t, m, cg); got != k {
		t.Errorf("counted %d with the final counts in sys_totals too, want %d", got, k)
	}
	if err := os.Remove(cg.Path); err != nil {
		t.Fatal(err)
	}
	if got := getppidCount(t, m, cg); got != k {
		t.Errorf("counted %d after the cgroup was removed, want %d", got, k)
	}
}

// TestMeter_walkMappingGrows: a walk that writes more records than the
// mapped prefix of sys_walk holds is read whole, exactly, through a
// longer mapping.
func TestMeter_walkMappingGrows(t *testing.T) {
	const k, cgroups = 200, 8
	m := openWith(t, testutil.PinDir(t), Options{Storage: StorageCgroup})
	// Map one page (170 records) instead of walkFirstMapped.
	mem, err := mapWalkRecords(m.walkMap, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(m.walkMem); err != nil {
		t.Fatal(err)
	}
	m.walkMem = mem
	page := len(mem)
	// Each helper execs, maps memory and exits: dozens of syscall
	// numbers per cgroup, past one page of records with the host's own.
	cgs := make([]testutil.Cgroup, cgroups)
	for i := range cgs {
		cgs[i] = testutil.NewCgroup(t, fmt.Sprintf("w%d", i))
		runGetppid(t, cgs[i], k+i)
	}
	byNr, err := readByNumber(m)
	if err != nil {
		t.Fatal(err)
	}
	for i, cg := range cgs {
		if got := byNr[cg.ID][nrGetppid]; got != uint64(k+i) {
			t.Errorf("getppid count of cgroup w%d = %d, want exactly %d", i, got, k+i)
		}
	}
	recSize := int(unsafe.Sizeof(syscallsSysRec{}))
	if m.walked <= page/recSize {
		t.Fatalf("the walk wrote %d records, not more than one page's %d: the test cannot tell a grown mapping", m.walked, page/recSize)
	}
	if len(m.walkMem)/recSize <= m.walked {
		t.Errorf("mapping of %d bytes does not hold the walk's %d records and its end", len(m.walkMem), m.walked)
	}
}

func TestMeter_Close_idempotent(t *testing.T) {
	m := openMeter(t, testutil.PinDir(t), meter.HookAuto)
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
	if err := m.ReadInto(&meter.Counts{}); !errors.Is(err, meter.ErrClosed) {
		t.Errorf("ReadInto after Close = %v, want ErrClosed", err)
	}
}

func TestMeter_Unpin_stopsCounting(t *testing.T) {
	pinDir := testutil.PinDir(t)
	m := openMeter(t, pinDir, meter.HookAuto)
	if err := m.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pinDir, Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there after Unpin: %v", err)
	}
	again := openMeter(t, pinDir, meter.HookAuto)
	if again.Status().Reused {
		t.Error("a link survived Unpin and Close")
	}
}

func TestOpen_badConfig(t *testing.T) {
	testutil.RequireBPF(t)
	for _, tc := range []struct {
		name string
		cfg  meter.Config
		want string
	}{
		{"empty pin dir", meter.Config{}, "pin dir is empty"},
		{"pin dir not on bpffs", meter.Config{PinDir: t.TempDir()}, "not on a bpffs"},
		{"missing pin dir", meter.Config{PinDir: "/sys/fs/bpf/kmeter-no-such-dir"}, "file does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Open(tc.cfg)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// An agent that switches hooks (here forced from the tracepoint to
// tp_btf) replaces the pinned link: both programs attached at once would
// count every syscall twice.
func TestMeter_switchingHookReplacesLink(t *testing.T) {
	const k, again = 400, 600
	pinDir := testutil.PinDir(t)
	cg := testutil.NewCgroup(t, "a")

	first := openMeter(t, pinDir, meter.HookFallbackOnly)
	runGetppid(t, cg, k)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := openMeter(t, pinDir, meter.HookPreferredOnly)
	if st := second.Status(); st.Hook != HookTPBTF || st.Reused {
		t.Fatalf("status = %+v, want a new tp_btf link", st)
	}
	runGetppid(t, cg, again)
	if got := getppidCount(t, second, cg); got != k+again {
		t.Errorf("counted %d, want exactly %d", got, k+again)
	}
}

// Maps pinned by another kmeter version are reported, not replaced or
// silently bypassed: they hold counts.
func TestOpen_incompatiblePinnedMap(t *testing.T) {
	testutil.RequireBPF(t)
	pinDir := testutil.PinDir(t)
	dir, err := meter.MapsDir(pinDir, Name)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 8, MaxEntries: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, mapTotals)); err != nil {
		t.Fatal(err)
	}
	m, err := Open(meter.Config{PinDir: pinDir})
	if err == nil {
		m.Close()
		t.Fatal("Open succeeded over an incompatible pinned sys_totals")
	}
	if !strings.Contains(err.Error(), "another kmeter version") {
		t.Errorf("error %q does not say the pinned maps come from another version", err)
	}
}

func TestOpenWith_unknownStorage(t *testing.T) {
	testutil.RequireBPF(t)
	m, err := OpenWith(meter.Config{PinDir: testutil.PinDir(t)}, Options{Storage: Storage(7)})
	if err == nil {
		m.Close()
		t.Fatal("OpenWith succeeded")
	}
	if !strings.Contains(err.Error(), "unknown storage choice 7") {
		t.Errorf("error %q does not name the bad storage choice", err)
	}
}

// BenchmarkMeter_ReadInto times one read of every cgroup's counts, as
// the agent makes each interval (into a table reset and reused), with
// 2000 cgroups holding 2 syscall numbers each (as bench/agent10k feeds
// them): with cgroup storage (a cgroup walk refreshing sys_totals, then a
// batched read of it) and with the per-CPU hash (a batched read).
func BenchmarkMeter_ReadInto(b *testing.B) {
	const cgroups, nrs = 2000, 2
	for _, tc := range []struct {
		name    string
		storage Storage
	}{{"cgroup storage", StorageCgroup}, {"per-CPU hash", StorageHash}} {
		b.Run(tc.name, func(b *testing.B) {
			m := openWith(b, testutil.PinDir(b), Options{Storage: tc.storage})
			ncpu, err := ebpf.PossibleCPU()
			if err != nil {
				b.Fatal(err)
			}
			var keys []syscallsKmeterKey
			counts := make([]uint64, nrs)
			for nr := range nrs {
				counts[nr] = 7
			}
			val, err := StorageValue(counts)
			if err != nil {
				b.Fatal(err)
			}
			store, err := ebpf.LoadPinnedMap(filepath.Join(m.dir, mapStore), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			for i := range cgroups {
				cg := testutil.NewCgroup(b, fmt.Sprintf("c%05d", i))
				if tc.storage == StorageHash {
					for nr := range nrs {
						keys = append(keys, syscallsKmeterKey{CgroupId: cg.ID, Kind: uint32(nr)})
					}
					continue
				}
				fd, err := unix.Open(cg.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				err = store.Update(int32(fd), val, ebpf.UpdateAny)
				unix.Close(fd)
				if err != nil {
					b.Fatal(err)
				}
			}
			if len(keys) > 0 {
				if _, err := m.counts.BatchUpdate(keys, make([]uint64, len(keys)*ncpu), nil); err != nil {
					b.Fatal(err)
				}
			}
			var c meter.Counts
			b.ReportAllocs()
			for b.Loop() {
				c.Reset()
				if err := m.ReadInto(&c); err != nil {
					b.Fatal(err)
				}
			}
			if c.Len() < cgroups || len(c.Numbers()) < cgroups*nrs {
				b.Fatalf("read %d cgroups and %d numbers, want at least %d and %d", c.Len(), len(c.Numbers()), cgroups, cgroups*nrs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/cgroups, "ns/cgroup")
		})
	}
}

// ReadInto reads both views at once: each cgroup's total in c is the
// sum of its numbers, on both storages, and a second read into the same
// (reset) Counts gives the same exact counts plus what ran since.
func TestMeter_ReadInto_totalsAndNumbers(t *testing.T) {
	const k = 150
	for _, tc := range []struct {
		name    string
		storage Storage
	}{{"cgroup storage", StorageCgroup}, {"per-CPU hash", StorageHash}} {
		t.Run(tc.name, func(t *testing.T) {
			m := openWith(t, testutil.PinDir(t), Options{Storage: tc.storage})
			cg := testutil.NewCgroup(t, "a")
			runGetppid(t, cg, k)
			var c meter.Counts
			for i, want := range []uint64{k, 3 * k} {
				if i > 0 {
					runGetppid(t, cg, 2*k)
					c.Reset()
				}
				if err := m.ReadInto(&c); err != nil {
					t.Fatal(err)
				}
				byNr := c.ByNumber()
				if got := byNr[cg.ID][nrGetppid]; got != want {
					t.Errorf("read %d: getppid counted %d, want %d", i, got, want)
				}
				var sum uint64
				for _, n := range byNr[cg.ID] {
					sum += n
				}
				if got, _ := c.Get(cg.ID, meter.CounterSyscalls); got != sum || got < want {
					t.Errorf("read %d: total %d, want the sum of the numbers %d (>= %d)", i, got, sum, want)
				}
				if c.Len() != len(byNr) {
					t.Errorf("read %d: totals for %d cgroups, numbers for %d", i, c.Len(), len(byNr))
				}
			}
		})
	}
}
