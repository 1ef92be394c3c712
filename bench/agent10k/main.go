// Command agent10k measures the whole kmeter agent (`kmeter run`) with
// 10,000 active tenants at a 5 s interval: its resident memory and the CPU
// it uses, with billing on (signed c-flat plugin, SQLite ledger) and off.
// The target is under 100 MiB RSS and under 2% of one core.
//
//	go run ./bench/agent10k                       # as root, from the repo root; about 7 min
//	go run ./bench/agent10k -profile              # also a CPU and heap profile of the billed agent
//	go run ./bench/agent10k -profile -profile-modes metered -modes metered   # ... of the metered agent
//	go run ./bench/agent10k -modes billed -bill-interval 60s   # usage windows of 60 s, reads every 5 s
//	go run ./bench/agent10k -mapread 62000        # only: per-key map read (as today) vs BPF_MAP_LOOKUP_BATCH
//
// What it does, per mode ("billed", then "metered"):
//
//  1. creates -tenants cgroups under the cgroup2 mount (<mount>/kmeter-agent10k-<pid>/t00000...);
//     each is a tenant, named by its path;
//  2. builds kmeter (go build ./cmd/kmeter) and the c-flat plugin
//     (plugins/build.sh), signs the plugin with a fresh publisher key,
//     and starts `kmeter run` with a fresh pin dir and data dir;
//  3. makes every tenant active: twice per interval it raises all seven
//     counters of every tenant in the agent's PINNED maps (syscalls: two
//     syscall numbers per tenant, in each tenant's cgroup storage, through
//     the cgroup's fd, or in the per-CPU hash where the meter has no
//     storage; sockstate, netbytes, tlsmeter), which
//     is exactly what the kernel programs do when the tenant's processes
//     run. Real processes in 10,000 cgroups are too heavy for a 2-vCPU
//     test machine; the agent cannot tell the difference, since it only
//     reads the maps;
//  4. after -warmup windows, samples the agent's VmRSS every second and its
//     CPU time (utime+stime from /proc/PID/stat) over -measure;
//  5. stops feeding, waits for the last windows, and checks from /metrics
//     that every tenant's seven counters reached exactly the values
//     written and, when billed, that every tenant was charged exactly
//     price x usage (c-flat: 2 micro-units per unit) in the ledger.
//
// It prints RSS (median and peak over the steady state, and VmHWM), CPU
// as a percentage of one core, the agent's CPU seconds per window, the
// mean ledger commit time, and the load average of the (shared) machine.
// Cgroups, pin dirs and the agent are removed at the end, also on errors.
//
// With -profile the agent binary is built with pprof.go.overlay (a
// go build -overlay file adding a net/http/pprof listener, enabled by
// KMETER_BENCH_PPROF; nothing is added to the product's sources) and a
// CPU profile of the steady state plus a heap profile are saved in -work.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
)

// priceMicro is what plugins/c/flat charges per unit of any meter.
// Keep in sync with PRICE_MICRO in plugins/c/flat/flat.c.
const priceMicro = 2

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat;
// it is 100 on every Linux architecture kmeter supports.
const clockTicks = 100

type options struct {
	tenants    int
	interval   time.Duration
	warmup     int
	measure    time.Duration
	modes      []string
	workDir    string
	kmeterBin  string
	syscallNrs int
	profile    bool
	profModes  []string
	profileFor time.Duration
	bpfBase    string
	// scrapeEvery, when set, scrapes /metrics this often during the
	// measured period, as a Prometheus server would, so RSS and CPU include
	// the scrapes.
	scrapeEvery time.Duration
	// billInterval, when set, is passed as the agent's --bill-interval:
	// usage windows longer than the read interval.
	billInterval time.Duration
}

func main() {
	var o options
	var modes string
	flag.IntVar(&o.tenants, "tenants", 10_000, "active tenants (one cgroup each)")
	flag.DurationVar(&o.interval, "interval", 5*time.Second, "agent --interval")
	flag.IntVar(&o.warmup, "warmup", 3, "windows to let pass before measuring")
	flag.DurationVar(&o.measure, "measure", 150*time.Second, "steady-state period sampled")
	flag.StringVar(&modes, "modes", "billed,metered", "comma-separated: billed (signed c-flat plugin, SQLite ledger), metered (no plugin)")
	flag.StringVar(&o.workDir, "work", "", "directory for binaries, data dirs, logs and profiles (default: a new temp dir)")
	flag.StringVar(&o.kmeterBin, "kmeter", "", "kmeter binary to measure (default: go build ./cmd/kmeter)")
	flag.IntVar(&o.syscallNrs, "syscall-nrs", 2, "syscall numbers per tenant in the syscalls map (its capacity is syscalls.MaxEntries keys)")
	flag.BoolVar(&o.profile, "profile", false, "build the agent with a pprof listener and save CPU and heap profiles of the billed mode")
	profModes := flag.String("profile-modes", "billed", "with -profile: comma-separated modes whose agent is profiled")
	flag.DurationVar(&o.profileFor, "profile-for", 60*time.Second, "CPU profile length (taken after -measure)")
	flag.DurationVar(&o.scrapeEvery, "scrape-every", 0, "scrape /metrics this often during -measure (0: only before and after it)")
	flag.DurationVar(&o.billInterval, "bill-interval", 0, "agent --bill-interval (0: not passed, windows every -interval)")
	flag.StringVar(&o.bpfBase, "bpffs", "/sys/fs/bpf", "bpffs directory under which a private pin dir is made")
	mapRead := flag.Int("mapread", 0, "only time reading a per-CPU map of this many keys, per key (as the agent does) and batched")
	flag.Parse()
	if *mapRead > 0 {
		if err := runMapRead(os.Stdout, *mapRead, 4096, 15); err != nil {
			fmt.Fprintln(os.Stderr, "bench agent10k:", err)
			os.Exit(1)
		}
		return
	}
	o.modes = strings.Split(modes, ",")
	o.profModes = strings.Split(*profModes, ",")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench agent10k:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	for _, m := range o.modes {
		if m != "billed" && m != "metered" {
			return fmt.Errorf("-modes: unknown mode %q (use billed, metered or both)", m)
		}
	}
	if o.tenants < 1 || o.syscallNrs < 1 {
		return errors.New("-tenants and -syscall-nrs must be at least 1")
	}
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "kmeter-agent10k-")
		if err != nil {
			return err
		}
		o.workDir = d
	}
	b, err := prepare(ctx, o)
	if err != nil {
		return err
	}
	cgroupDir, err := hostfs.Cgroup2Dir("/proc/mounts")
	if err != nil {
		return fmt.Errorf("find cgroup2 mount: %w", err)
	}
	ts, err := makeTenants(cgroupDir, fmt.Sprintf("kmeter-agent10k-%d", os.Getpid()), o.tenants)
	defer ts.remove()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "kmeter agent10k: %d tenants, interval %v, bill interval %v, warm-up %d windows, measure %v, %d CPUs, work dir %s\n",
		o.tenants, o.interval, cmp.Or(o.billInterval, o.interval), o.warmup, o.measure, mustPossibleCPUs(), o.workDir)
	for _, mode := range o.modes {
		r, err := runMode(ctx, o, b, ts, mode)
		if err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		r.print(out)
	}
	return nil
}

// binaries are what prepare built.
type binaries struct {
	kmeter, kmeterProf string
	plugin, trusted    string
}

func prepare(ctx context.Context, o options) (binaries, error) {
	var b binaries
	root, err := moduleRoot(ctx)
	if err != nil {
		return b, err
	}
	b.kmeter = o.kmeterBin
	if b.kmeter == "" {
		b.kmeter = filepath.Join(o.workDir, "kmeter")
		if err := sh(ctx, root, "go", "build", "-o", b.kmeter, "./cmd/kmeter"); err != nil {
			return b, fmt.Errorf("build kmeter (or pass -kmeter): %w", err)
		}
	}
	if o.profile {
		overlay, err := writeOverlay(root, o.workDir)
		if err != nil {
			return b, err
		}
		b.kmeterProf = filepath.Join(o.workDir, "kmeter-pprof")
		if err := sh(ctx, root, "go", "build", "-overlay", overlay, "-o", b.kmeterProf, "./cmd/kmeter"); err != nil {
			return b, fmt.Errorf("build kmeter with the pprof overlay: %w", err)
		}
	}
	plugins := filepath.Join(o.workDir, "plugins")
	if err := sh(ctx, root, "bash", "plugins/build.sh", plugins, "c"); err != nil {
		return b, fmt.Errorf("build c-flat plugin: %w", err)
	}
	secret := filepath.Join(o.workDir, "secret")
	b.trusted = filepath.Join(o.workDir, "trusted")
	for _, d := range []string{secret, b.trusted} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return b, err
		}
	}
	key := filepath.Join(secret, "bench")
	if err := sh(ctx, root, b.kmeter, "plugin", "keygen", "--out", key); err != nil {
		return b, fmt.Errorf("make a publisher key: %w", err)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return b, err
	}
	if err := os.WriteFile(filepath.Join(b.trusted, "bench.pub"), pub, 0o600); err != nil {
		return b, err
	}
	b.plugin = filepath.Join(o.workDir, "c-flat.signed.wasm")
	if err := sh(ctx, root, b.kmeter, "plugin", "sign", "--key", key+".key", "--out", b.plugin, filepath.Join(plugins, "c-flat.wasm")); err != nil {
		return b, fmt.Errorf("sign c-flat: %w", err)
	}
	return b, nil
}

// writeOverlay writes a go build -overlay file that adds pprof.go.overlay
// to package main of cmd/kmeter for this build only.
func writeOverlay(root, work string) (string, error) {
	src, err := filepath.Abs(filepath.Join(root, "bench", "agent10k", "pprof.go.overlay"))
	if err != nil {
		return "", err
	}
	ov := map[string]map[string]string{"Replace": {filepath.Join(root, "cmd", "kmeter", "zz_bench_pprof.go"): src}}
	b, err := json.Marshal(ov)
	if err != nil {
		return "", err
	}
	f := filepath.Join(work, "overlay.json")
	return f, os.WriteFile(f, b, 0o600)
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run this from the kmeter module (go run ./bench/agent10k)")
	}
	return filepath.Dir(mod), nil
}

func sh(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, b)
	}
	return nil
}

// tenants are the benchmark's cgroups.
type tenants struct {
	parent string
	rel    []string // tenant names: paths relative to the cgroup2 mount
	ids    []uint64 // cgroup ids: inode numbers of the cgroup dirs
}

func makeTenants(cgroupDir, name string, n int) (*tenants, error) {
	ts := &tenants{parent: filepath.Join(cgroupDir, name)}
	if err := os.Mkdir(ts.parent, 0o755); err != nil {
		return ts, fmt.Errorf("create cgroup %s: %w", ts.parent, err)
	}
	for i := range n {
		base := fmt.Sprintf("t%05d", i)
		dir := filepath.Join(ts.parent, base)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return ts, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return ts, err
		}
		ts.rel = append(ts.rel, "/"+name+"/"+base)
		ts.ids = append(ts.ids, st.Ino)
	}
	return ts, nil
}

func (ts *tenants) remove() {
	for _, r := range ts.rel {
		_ = os.Remove(filepath.Join(filepath.Dir(ts.parent), r))
	}
	_ = os.Remove(ts.parent)
}

// counterKey is the layout of struct kmeter_key (bpf/include/kmeter.h),
// used by the syscalls, sockstate and netbytes maps. The bpf2go types are
// unexported in the meter packages; openFeeder checks the pinned maps'
// key and value sizes against these types before writing.
type counterKey struct {
	CgroupID uint64
	Kind     uint32
	Pad      uint32
}

// tlsCounts is the layout of struct tls_counts (bpf/tlsmeter.bpf.c).
type tlsCounts struct {
	Client, Server uint64
}

// feeder raises every tenant's counters in the agent's pinned maps, the
// way the kernel programs do.
type feeder struct {
	ts                  *tenants
	sys, sock, net, tls *ebpf.Map
	nrs                 int
	both                int // tenants fed with both kinds in sockstate and netbytes
	cpus                int
	rounds              uint64
	missing             []string
	sysKeys, sockKeys   []counterKey
	tlsKeys             []uint64
	sysVals, sockVals   []uint64
	tlsVals             []tlsCounts
	// With cgroup storage: the storage map, one open fd per tenant
	// cgroup (its key) and the value written.
	store       *ebpf.Map
	cgFDs       []int
	storeVal    []byte   // one cgroup's storage value, rewritten each round
	storeCounts []uint64 // its counts by syscall number
}

// Per-round growth of each counter; different per counter so a swapped
// counter is caught by the final check.
const (
	incSyscall = 50  // per syscall number
	incConnect = 1   // tcp_connects
	incAccept  = 2   // tcp_accepts
	incTx      = 700 // net_tx_bytes
	incRx      = 300 // net_rx_bytes
	incTLSc    = 1   // tls_client_handshakes
	incTLSs    = 3   // tls_server_handshakes
)

func openFeeder(pinDir string, ts *tenants, nrs int) (*feeder, error) {
	f := &feeder{ts: ts, nrs: nrs, cpus: mustPossibleCPUs(), both: len(ts.ids)}
	open := func(rel string, keySize, valSize uint32) (*ebpf.Map, error) {
		p := filepath.Join(pinDir, rel)
		m, err := ebpf.LoadPinnedMap(p, nil)
		if errors.Is(err, os.ErrNotExist) {
			f.missing = append(f.missing, rel)
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", p, err)
		}
		if m.KeySize() != keySize || m.ValueSize() != valSize {
			m.Close()
			return nil, fmt.Errorf("pinned map %s has key/value sizes %d/%d, this bench writes %d/%d: update its key types",
				p, m.KeySize(), m.ValueSize(), keySize, valSize)
		}
		return m, nil
	}
	var err error
	if f.sys, err = open("syscalls/sys_counts", 16, 8); err != nil {
		return nil, err
	}
	if f.sys != nil {
		f.store, err = ebpf.LoadPinnedMap(filepath.Join(pinDir, "syscalls/sys_store"), nil)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open pinned map syscalls/sys_store: %w", err)
		}
		if f.store != nil {
			if err := f.openCgroups(); err != nil {
				f.close()
				return nil, err
			}
		}
	}
	if f.sock, err = open("sockstate/sock_counts", 16, 8); err != nil {
		return nil, err
	}
	if f.net, err = open("netbytes/net_counts", 16, 8); err != nil {
		return nil, err
	}
	if f.tls, err = open("tlsmeter/handshakes", 8, 16); err != nil {
		return nil, err
	}
	// The sockstate and netbytes maps hold fewer {cgroup, kind} keys
	// than 10,000 tenants need for both kinds: every tenant gets kind 0
	// (connects, tx bytes) and as many as fit also kind 1, leaving room
	// for the host's own cgroups.
	if f.both, err = fitBoth(len(ts.ids), f.sock, f.net); err != nil {
		return nil, err
	}
	need := uint32(len(ts.ids) * nrs)
	if f.sys != nil && need+keyMargin > f.sys.MaxEntries() {
		return nil, fmt.Errorf("-syscall-nrs %d: %d tenants need %d keys, the syscalls map holds %d", nrs, len(ts.ids), need, f.sys.MaxEntries())
	}
	for i, id := range ts.ids {
		for nr := range nrs {
			f.sysKeys = append(f.sysKeys, counterKey{CgroupID: id, Kind: uint32(nr)})
		}
		f.sockKeys = append(f.sockKeys, counterKey{CgroupID: id, Kind: 0})
		if i < f.both {
			f.sockKeys = append(f.sockKeys, counterKey{CgroupID: id, Kind: 1})
		}
		f.tlsKeys = append(f.tlsKeys, id)
	}
	f.sysVals = make([]uint64, len(f.sysKeys)*f.cpus)
	f.sockVals = make([]uint64, len(f.sockKeys)*f.cpus)
	f.tlsVals = make([]tlsCounts, len(f.tlsKeys)*f.cpus)
	return f, nil
}

// round adds one round of usage to every tenant. The growth is split
// over the CPUs' slots, as the kernel would leave it.
// openCgroups opens every tenant's cgroup dir: its fd is the key of the
// syscalls meter's cgroup storage.
func (f *feeder) openCgroups() error {
	probe, err := syscalls.StorageValue(nil)
	if err != nil {
		return err
	}
	if want := uint32(len(probe)); f.store.KeySize() != 4 || f.store.ValueSize() != want {
		return fmt.Errorf("pinned map syscalls/sys_store has key/value sizes %d/%d, this bench writes 4/%d: rebuild it with the kmeter it runs",
			f.store.KeySize(), f.store.ValueSize(), want)
	}
	if f.nrs > syscalls.NumberSlots {
		return fmt.Errorf("-syscall-nrs %d: cgroup storage has counters for numbers 0 to %d", f.nrs, syscalls.NumberSlots-1)
	}
	root := filepath.Dir(f.ts.parent)
	for _, r := range f.ts.rel {
		fd, err := syscall.Open(filepath.Join(root, r), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open cgroup %s: %w", r, err)
		}
		f.cgFDs = append(f.cgFDs, fd)
	}
	f.storeCounts = make([]uint64, f.nrs)
	return nil
}

func (f *feeder) round() error {
	f.rounds++
	spread := func(vals []uint64, i int, inc uint64) {
		for c := range f.cpus {
			vals[i*f.cpus+c] = f.rounds * inc * uint64(c+1)
		}
	}
	for i := range f.sysKeys {
		spread(f.sysVals, i, incSyscall)
	}
	for i := range f.tlsKeys {
		for c := range f.cpus {
			f.tlsVals[i*f.cpus+c] = tlsCounts{Client: f.rounds * incTLSc * uint64(c+1), Server: f.rounds * incTLSs * uint64(c+1)}
		}
	}
	var errs []error
	switch {
	case f.store != nil:
		// Cgroup storage holds one count per number, summed over CPUs
		// (the kernel adds atomically); the same total as the hash.
		for nr := range f.nrs {
			f.storeCounts[nr] = f.rounds * incSyscall * uint64(f.cpus*(f.cpus+1)/2)
		}
		var err error
		if f.storeVal, err = syscalls.StorageValue(f.storeCounts); err != nil {
			return err
		}
		for _, fd := range f.cgFDs {
			if err := f.store.Update(int32(fd), f.storeVal, ebpf.UpdateAny); err != nil {
				errs = append(errs, fmt.Errorf("update syscalls cgroup storage: %w", err))
				break
			}
		}
	case f.sys != nil:
		if _, err := f.sys.BatchUpdate(f.sysKeys, f.sysVals, nil); err != nil {
			errs = append(errs, fmt.Errorf("update syscalls map: %w", err))
		}
	}
	for _, m := range []struct {
		m      *ebpf.Map
		name   string
		k0, k1 uint64
	}{{f.sock, "sockstate", incConnect, incAccept}, {f.net, "netbytes", incTx, incRx}} {
		if m.m == nil {
			continue
		}
		for i := range f.sockKeys {
			spread(f.sockVals, i, []uint64{m.k0, m.k1}[f.sockKeys[i].Kind])
		}
		if _, err := m.m.BatchUpdate(f.sockKeys, f.sockVals, nil); err != nil {
			errs = append(errs, fmt.Errorf("update %s map: %w", m.name, err))
		}
	}
	if f.tls != nil {
		if _, err := f.tls.BatchUpdate(f.tlsKeys, f.tlsVals, nil); err != nil {
			errs = append(errs, fmt.Errorf("update tlsmeter map: %w", err))
		}
	}
	return errors.Join(errs...)
}

// expected returns tenant i's cumulative usage per counter after the
// rounds written so far.
func (f *feeder) expected(i int) map[string]uint64 {
	tri := f.rounds * uint64(f.cpus*(f.cpus+1)/2) // sum over CPUs of rounds*(c+1)
	out := map[string]uint64{}
	if f.sys != nil {
		out[meter.Syscalls] = tri * incSyscall * uint64(f.nrs)
	}
	if f.sock != nil {
		out[meter.TCPConnects] = tri * incConnect
		if i < f.both {
			out[meter.TCPAccepts] = tri * incAccept
		}
	}
	if f.net != nil {
		out[meter.NetTxBytes] = tri * incTx
		if i < f.both {
			out[meter.NetRxBytes] = tri * incRx
		}
	}
	if f.tls != nil {
		out[meter.TLSClientHandshakes], out[meter.TLSServerHandshakes] = tri*incTLSc, tri*incTLSs
	}
	return out
}

// keyMargin is the room left in each counter map for the host's own
// cgroups, which the kernel programs keep counting during the bench.
const keyMargin = 256

// fitBoth returns how many of n tenants fit with both kinds in each of
// the {cgroup, kind} maps ms (nil maps are not attached).
func fitBoth(n int, ms ...*ebpf.Map) (int, error) {
	both := n
	for _, m := range ms {
		if m == nil {
			continue
		}
		used, err := meter.CountKeys(m)
		if err != nil {
			return 0, err
		}
		free := int(m.MaxEntries()) - used - keyMargin
		if free < n {
			return 0, fmt.Errorf("map %s has room for %d keys, %d tenants need at least %d: use fewer -tenants", m, free, n, n)
		}
		both = min(both, free-n)
	}
	return both, nil
}

func (f *feeder) close() {
	for _, m := range []*ebpf.Map{f.sys, f.sock, f.net, f.tls, f.store} {
		if m != nil {
			m.Close()
		}
	}
	for _, fd := range f.cgFDs {
		syscall.Close(fd)
	}
	f.cgFDs = nil
}

// result is one mode's measurement.
type result struct {
	mode                      string
	rssMedian, rssMax, hwm    uint64 // KiB
	cpuPct                    float64
	cpuPerWindow              time.Duration
	measured                  time.Duration
	commitMean                time.Duration
	commits                   float64
	lag                       float64
	heapInuse                 float64
	goSys, heapIdleHeld       float64 // Go runtime memory from the OS; idle heap not yet returned
	load0, load1              string
	tenantsOK, chargedOK      int
	tenants                   int
	missing                   []string
	feedRounds                uint64
	scrapes                   int // /metrics scrapes during the measured period
	feedMean                  time.Duration
	profileCPU, profileHeap   string
	usageSeries, chargeSeries int
	charged                   bool
	ledgerScrape              float64
	both                      int // tenants fed with both kinds in sockstate and netbytes
}

func runMode(ctx context.Context, o options, b binaries, ts *tenants, mode string) (*result, error) {
	r := &result{mode: mode, tenants: len(ts.ids), charged: mode == "billed"}
	pinDir := filepath.Join(o.bpfBase, fmt.Sprintf("kmeter-agent10k-%d-%s", os.Getpid(), mode))
	if err := hostfs.EnsureBPFFS(pinDir); err != nil {
		return nil, err
	}
	defer os.RemoveAll(pinDir)
	dataDir := filepath.Join(o.workDir, "data-"+mode)
	if err := os.RemoveAll(dataDir); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	bin := b.kmeter
	profiling := o.profile && slices.Contains(o.profModes, mode)
	var pprofAddr string
	if profiling {
		bin = b.kmeterProf
		if pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	args := []string{"run", "--listen", addr, "--interval", o.interval.String(), "--data-dir", dataDir,
		"--pin-dir", pinDir, "--node-id", "agent10k"}
	if mode == "billed" {
		args = append(args, "--plugin", b.plugin, "--trusted-keys", b.trusted)
	}
	if o.billInterval > 0 {
		args = append(args, "--bill-interval", o.billInterval.String())
	}
	logFile, err := os.Create(filepath.Join(o.workDir, "agent-"+mode+".log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = os.Environ()
	if pprofAddr != "" {
		cmd.Env = append(cmd.Env, "KMETER_BENCH_PPROF="+pprofAddr)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	pid := cmd.Process.Pid
	base := "http://" + addr
	if err := waitUp(ctx, base+"/metrics", exited, 90*time.Second); err != nil {
		return nil, fmt.Errorf("%w (log: %s)", err, logFile.Name())
	}
	f, err := openFeeder(pinDir, ts, o.syscallNrs)
	if err != nil {
		return nil, err
	}
	defer f.close()
	r.missing = f.missing

	// Feed twice per interval so every window of the agent sees growth.
	fctx, stopFeed := context.WithCancel(ctx)
	feedDone := make(chan error, 1)
	var feedTime time.Duration
	go func() {
		t := time.NewTicker(o.interval / 2)
		defer t.Stop()
		for {
			start := time.Now()
			if err := f.round(); err != nil {
				feedDone <- err
				return
			}
			feedTime += time.Since(start)
			select {
			case <-fctx.Done():
				feedDone <- nil
				return
			case <-t.C:
			}
		}
	}()
	stopFeeding := func() error {
		if stopFeed == nil {
			return nil
		}
		stopFeed()
		stopFeed = nil
		return <-feedDone
	}
	defer stopFeeding()

	if err := sleep(ctx, time.Duration(o.warmup)*o.interval); err != nil {
		return nil, err
	}
	m0, err := scrape(base + "/metrics")
	if err != nil {
		return nil, err
	}
	r.load0 = loadavg()
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	lastScrape := t0
	var rss []uint64
	tick := time.NewTicker(time.Second)
	for time.Since(t0) < o.measure {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil, ctx.Err()
		case err := <-exited:
			tick.Stop()
			return nil, fmt.Errorf("agent exited during the measurement: %v (log: %s)", err, logFile.Name())
		case <-tick.C:
		}
		kb, err := statusKB(pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		rss = append(rss, kb)
		if o.scrapeEvery > 0 && time.Since(lastScrape) >= o.scrapeEvery {
			lastScrape = time.Now()
			if _, err := scrape(base + "/metrics"); err != nil {
				tick.Stop()
				return nil, err
			}
			r.scrapes++
		}
	}
	tick.Stop()
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	r.measured = time.Since(t0)
	r.load1 = loadavg()
	m1, err := scrape(base + "/metrics")
	if err != nil {
		return nil, err
	}
	cpuSec := float64(cpu1-cpu0) / clockTicks
	r.cpuPct = 100 * cpuSec / r.measured.Seconds()
	r.cpuPerWindow = time.Duration(cpuSec / (r.measured.Seconds() / o.interval.Seconds()) * float64(time.Second))
	slices.Sort(rss)
	r.rssMedian, r.rssMax = rss[len(rss)/2], rss[len(rss)-1]
	if n := m1.sum("kmeter_ledger_write_seconds_count") - m0.sum("kmeter_ledger_write_seconds_count"); n > 0 {
		r.commits = n
		r.commitMean = time.Duration((m1.sum("kmeter_ledger_write_seconds_sum") - m0.sum("kmeter_ledger_write_seconds_sum")) / n * float64(time.Second))
	}
	r.lag = m1.sum("kmeter_window_lag_seconds")
	r.heapInuse = m1.sum("go_memstats_heap_inuse_bytes")
	r.goSys = m1.sum("go_memstats_sys_bytes")
	r.heapIdleHeld = m1.sum("go_memstats_heap_idle_bytes") - m1.sum("go_memstats_heap_released_bytes")

	if profiling {
		r.profileCPU = filepath.Join(o.workDir, "cpu-"+mode+".pprof")
		r.profileHeap = filepath.Join(o.workDir, "heap-"+mode+".pprof")
		// Scrapes go on during the CPU profile as during the measurement,
		// so that the profile shows what they cost.
		stopScrapes := make(chan struct{})
		scraped := make(chan struct{})
		go func() {
			defer close(scraped)
			if o.scrapeEvery <= 0 {
				return
			}
			t := time.NewTicker(o.scrapeEvery)
			defer t.Stop()
			for {
				select {
				case <-stopScrapes:
					return
				case <-t.C:
					scrape(base + "/metrics") // errors show in the measurement's scrapes
				}
			}
		}()
		err := download(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(o.profileFor.Seconds())), r.profileCPU)
		close(stopScrapes)
		<-scraped
		if err != nil {
			return nil, err
		}
		if err := download("http://"+pprofAddr+"/debug/pprof/heap", r.profileHeap); err != nil {
			return nil, err
		}
	}

	// Stop feeding and let the agent read and bill the last round.
	if err := stopFeeding(); err != nil {
		return nil, err
	}
	r.feedRounds = f.rounds
	r.feedMean = feedTime / time.Duration(f.rounds)
	// The last read must happen and, with longer windows, a window
	// must close after it.
	if err := sleep(ctx, 2*o.interval+o.interval/2+o.billInterval); err != nil {
		return nil, err
	}
	if r.hwm, err = statusKB(pid, "VmHWM"); err != nil {
		return nil, err
	}
	final, err := scrape(base + "/metrics")
	if err != nil {
		return nil, err
	}
	usage := final.byTenant("kmeter_usage_total", "meter")
	r.ledgerScrape = final.sum("kmeter_ledger_scrape_success")
	charges, err := ledgerCharges(ctx, bin, dataDir)
	if err != nil {
		return nil, err
	}
	r.both = f.both
	for i, t := range ts.rel {
		want := f.expected(i)
		u := usage[t]
		ok := len(want) > 0
		var total uint64
		for name, v := range want {
			if u[name] != float64(v) {
				ok = false
			}
			total += v
		}
		if ok {
			r.tenantsOK++
		}
		r.usageSeries += len(u)
		charged, ok := charges[t]
		if ok {
			r.chargeSeries++
		}
		if charged == int64(total*priceMicro) {
			r.chargedOK++
		}
	}
	return r, nil
}

func (r *result) print(w io.Writer) {
	mib := func(kb uint64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }
	fmt.Fprintf(w, "\nmode %s (%d tenants)\n", r.mode, r.tenants)
	fmt.Fprintf(w, "  RSS steady median   %s   max %s   VmHWM %s   (Go heap in use %.1f MiB)\n",
		mib(r.rssMedian), mib(r.rssMax), mib(r.hwm), r.heapInuse/(1<<20))
	fmt.Fprintf(w, "  Go runtime memory   %.1f MiB from the OS, %.1f MiB of it idle heap not yet returned (at the end of the measurement; the rest of RSS is outside Go: SQLite, wazero)\n",
		r.goSys/(1<<20), r.heapIdleHeld/(1<<20))
	fmt.Fprintf(w, "  CPU                 %.2f%% of one core over %v (%v CPU per window)\n",
		r.cpuPct, r.measured.Round(time.Second), r.cpuPerWindow.Round(time.Millisecond))
	if r.commits > 0 {
		fmt.Fprintf(w, "  ledger commit       %v mean over %.0f windows; window lag at end %.1fs\n",
			r.commitMean.Round(time.Millisecond), r.commits, r.lag)
	}
	fmt.Fprintf(w, "  load average        %s (start)  %s (end)\n", r.load0, r.load1)
	if r.scrapes > 0 {
		fmt.Fprintf(w, "  scrapes             %d of /metrics during the measured period (in RSS and CPU)\n", r.scrapes)
	}
	fmt.Fprintf(w, "  feeder              %d rounds, %v per round (bench process, not the agent)\n", r.feedRounds, r.feedMean.Round(time.Millisecond))
	fmt.Fprintf(w, "  check: usage exact  %d/%d tenants (%d usage series)\n", r.tenantsOK, r.tenants, r.usageSeries)
	if r.charged {
		fmt.Fprintf(w, "  check: charged      %d/%d tenants exactly price x usage in the ledger (%d tenants with a balance; kmeter tenants --json)\n", r.chargedOK, r.tenants, r.chargeSeries)
		fmt.Fprintf(w, "  /metrics ledger     kmeter_ledger_scrape_success %v\n", r.ledgerScrape)
	}
	if r.both < r.tenants {
		fmt.Fprintf(w, "  map capacity        only %d/%d tenants fit with both tcp_accepts and net_rx_bytes (the sockstate and netbytes maps are full)\n", r.both, r.tenants)
	}
	if len(r.missing) > 0 {
		fmt.Fprintf(w, "  NOT FED (meter not attached): %s\n", strings.Join(r.missing, ", "))
	}
	if r.profileCPU != "" {
		fmt.Fprintf(w, "  profiles            go tool pprof -top %s ; go tool pprof -top -sample_index=inuse_space %s\n", r.profileCPU, r.profileHeap)
	}
}

func mustPossibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		panic(err)
	}
	return n
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitUp(ctx context.Context, url string, exited <-chan error, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("agent exited at start: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("agent did not serve %s within %v", url, limit)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func download(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ledgerCharges returns every tenant's charges in micro-units, read
// from the ledger in dataDir with `kmeter tenants --json` (as an operator
// would).
func ledgerCharges(ctx context.Context, kmeter, dataDir string) (map[string]int64, error) {
	b, err := exec.CommandContext(ctx, kmeter, "tenants", "--json", "--data-dir", dataDir).Output()
	if err != nil {
		return nil, fmt.Errorf("kmeter tenants --json: %w", err)
	}
	var rows []struct {
		Name     string `json:"name"`
		Balances []struct {
			ChargedMicro int64 `json:"charged_micro"`
		} `json:"balances"`
	}
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("parse kmeter tenants --json: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		for _, bal := range r.Balances {
			out[r.Name] += bal.ChargedMicro
		}
	}
	return out, nil
}

// cpuTicks returns utime+stime of pid, in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are fixed.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(fields[11], 10, 64) // field 14
	st, err2 := strconv.ParseUint(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return ut + st, nil
}

// statusKB returns a "kB" field of /proc/PID/status, such as VmRSS.
func statusKB(pid int, field string) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// sample is one Prometheus text-format sample.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []sample

func scrape(url string) (metrics, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	var out metrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s, ok := parseSample(line)
		if ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// parseSample parses `name{a="x",b="y"} value`; label values from kmeter
// hold no quotes or commas.
func parseSample(line string) (sample, bool) {
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return sample{}, false
	}
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil || math.IsNaN(v) {
		return sample{}, false
	}
	head := line[:sp]
	s := sample{value: v, labels: map[string]string{}}
	name, rest, hasLabels := strings.Cut(head, "{")
	s.name = name
	if hasLabels {
		for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
			k, v, ok := strings.Cut(kv, "=")
			if ok {
				s.labels[k] = strings.Trim(v, `"`)
			}
		}
	}
	return s, true
}

func (m metrics) sum(name string) float64 {
	var t float64
	for _, s := range m {
		if s.name == name {
			t += s.value
		}
	}
	return t
}

// byTenant returns tenant -> label value -> sample value for one metric.
func (m metrics) byTenant(name, label string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, s := range m {
		if s.name != name {
			continue
		}
		t := s.labels["tenant"]
		if out[t] == nil {
			out[t] = map[string]float64{}
		}
		out[t][s.labels[label]] = s.value
	}
	return out
}
