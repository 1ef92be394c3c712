// Command syscalls measures what counting syscalls costs per syscall: it
// times getppid in a tight loop with nothing attached, with empty BPF
// programs on tp_btf/sys_enter and on the classic tracepoint
// raw_syscalls/sys_enter, with kmeter's syscalls meter (cgroup storage and
// the per-CPU hash fallback, each on both hooks), and with bpftrace
// counting per cgroup, all in one run.
//
// Each round visits every setup in turn (attach, time, detach) between
// timings with nothing attached, so slow drifts of a shared machine cancel
// out; the report gives medians over rounds of the thread's CPU time.
//
//	go run ./bench/syscalls           # as root; about 2 minutes
//	go run ./bench/syscalls -bpfstats # each program's own run time (BPF_ENABLE_STATS)
//
// It needs root, bpffs and tracefs, and bpftrace on PATH (-bpftrace="" skips it).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
)

// bpftraceProgram is the bpftrace one-liner kmeter is compared with.
const bpftraceProgram = `tracepoint:raw_syscalls:sys_enter { @[cgroup] = count(); }`

// Setup names the report's ratios refer to.
const (
	noProgram     = "no program"
	emptyBTF      = "empty tp_btf/sys_enter"
	emptyTP       = "empty tracepoint raw_syscalls/sys_enter"
	meterStoreBTF = "kmeter syscalls (tp_btf, cgroup storage)"
	meterStoreTP  = "kmeter syscalls (tracepoint, cgroup storage)"
	meterHashBTF  = "kmeter syscalls (tp_btf, per-CPU hash)"
	meterHashTP   = "kmeter syscalls (tracepoint, per-CPU hash)"
	bpftraceName  = "bpftrace @[cgroup] = count()"
)

// setup attaches something to measure and returns how to detach it.
type setup struct {
	name   string
	attach func(ctx context.Context) (detach func() error, err error)
}

func main() {
	n := flag.Int("n", 300_000, "getppid calls per timing")
	rounds := flag.Int("rounds", 9, "rounds over all setups")
	bpftrace := flag.String("bpftrace", "bpftrace", "bpftrace binary; empty skips it")
	pinBase := flag.String("pin", "/sys/fs/bpf", "bpffs directory for the meter's temporary pins")
	cpu := flag.Int("cpu", 0, "CPU to run the loop on; -1 lets the scheduler choose")
	nslices := flag.Int("slices", 15, "each timing keeps the fastest of this many slices of its calls")
	bpfStats := flag.Bool("bpfstats", false, "instead of timing getppid, report each attached program's own mean run time (kernel BPF stats, enabled only while it runs)")
	flag.Parse()
	if *bpfStats {
		*bpftrace = "" // its program is not ours to find by name
	}
	if err := run(context.Background(), *n, *rounds, *nslices, *cpu, *bpftrace, *pinBase, *bpfStats, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench syscalls:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, rounds, nslices, cpu int, bpftrace, pinBase string, bpfStats bool, out io.Writer) error {
	if _, err := hostfs.EnsureTracefs(); err != nil {
		return err
	}
	pinDir := filepath.Join(pinBase, fmt.Sprintf("kmeter-bench-%d", os.Getpid()))
	if err := hostfs.EnsureBPFFS(pinDir); err != nil {
		return err
	}
	defer os.RemoveAll(pinDir)

	setups := []setup{
		{noProgram, func(context.Context) (func() error, error) { return func() error { return nil }, nil }},
		{emptyBTF, attachEmptyTPBTF},
		{emptyTP, attachEmptyTracepoint},
		{"tp_btf: bpf_get_current_cgroup_id only", attachCgroupIDOnly},
		{meterStoreBTF, attachMeter(pinDir, meter.HookPreferredOnly, syscalls.StorageCgroup)},
		{meterStoreTP, attachMeter(pinDir, meter.HookFallbackOnly, syscalls.StorageCgroup)},
		{meterHashBTF, attachMeter(pinDir, meter.HookPreferredOnly, syscalls.StorageHash)},
		{meterHashTP, attachMeter(pinDir, meter.HookFallbackOnly, syscalls.StorageHash)},
	}
	if bpftrace != "" {
		setups = append(setups, setup{bpftraceName, attachBpftrace(bpftrace)})
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cpu >= 0 {
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin to cpu %d: %w", cpu, err)
		}
	}
	loop(n / 10) // warm up caches and the CPU frequency
	if bpfStats {
		return runStats(ctx, out, setups[1:], n*rounds)
	}

	// Every setup is timed between two timings with nothing attached;
	// its added cost in a round is its time minus the mean of those two,
	// so drifts of a shared machine cancel out.
	abs := make([][]float64, len(setups))
	added := make([][]float64, len(setups))
	for r := range rounds {
		before := sample(n, nslices)
		abs[0] = append(abs[0], before)
		added[0] = append(added[0], 0)
		for i, s := range setups[1:] {
			detach, err := s.attach(ctx)
			if err != nil {
				return fmt.Errorf("attach %s: %w", s.name, err)
			}
			loop(n / 20)
			t := sample(n, nslices)
			if err := detach(); err != nil {
				return fmt.Errorf("detach %s: %w", s.name, err)
			}
			after := sample(n, nslices)
			abs[i+1] = append(abs[i+1], t)
			added[i+1] = append(added[i+1], t-(before+after)/2)
			before = after
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done\n", r+1, rounds)
	}
	report(out, setups, abs, added, n, rounds, nslices)
	return nil
}

// sample makes n getppid syscalls in k slices and returns the mean ns
// per call of the fastest slice: interrupts and neighbours on a shared
// machine only ever add time, so the fastest slice is the least
// disturbed.
func sample(n, k int) float64 {
	best := loop(n / k)
	for range k - 1 {
		best = min(best, loop(n/k))
	}
	return best
}

// loop makes n getppid syscalls and returns the mean ns per call. It
// measures the CPU time of its own thread (the caller locked it), not
// wall time: on a shared machine the wall clock also counts the time
// other processes ran.
func loop(n int) float64 {
	start := threadCPU()
	for range n {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	return float64(threadCPU()-start) / float64(n)
}

func threadCPU() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err) // cannot fail for this clock on Linux
	}
	return ts.Nano()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(w io.Writer, setups []setup, abs, added [][]float64, n, rounds, nslices int) {
	fmt.Fprintf(w, "getppid, %d calls per timing (fastest of %d slices), %d rounds, %d CPUs, kernel %s; thread CPU time, medians over rounds\n\n",
		n, nslices, rounds, runtime.NumCPU(), kernel())
	fmt.Fprintln(w, "| setup | ns/op | added ns/op | added, min..max over rounds |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	add := make([]float64, len(setups))
	for i, s := range setups {
		add[i] = median(added[i])
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f..%.1f |\n", s.name, median(abs[i]), add[i], slices.Min(added[i]), slices.Max(added[i]))
	}
	idx := func(name string) int { return slices.IndexFunc(setups, func(s setup) bool { return s.name == name }) }
	ratio := func(name, a, b string) {
		if i, j := idx(a), idx(b); i >= 0 && j >= 0 {
			fmt.Fprintf(w, "| %s | %.2f |\n", name, add[i]/add[j])
		}
	}
	fmt.Fprintln(w, "\n| ratio of added costs (medians) | ratio |")
	fmt.Fprintln(w, "|---|---:|")
	ratio("kmeter (tp_btf, cgroup storage) / bpftrace (goal <= 0.5)", meterStoreBTF, bpftraceName)
	ratio("kmeter (tp_btf, cgroup storage) / empty tp_btf (goal <= 1.5)", meterStoreBTF, emptyBTF)
	ratio("kmeter (tp_btf, per-CPU hash) / empty tp_btf", meterHashBTF, emptyBTF)
	ratio("kmeter (tracepoint, cgroup storage) / empty tracepoint", meterStoreTP, emptyTP)
	ratio("kmeter (tracepoint, per-CPU hash) / empty tracepoint", meterHashTP, emptyTP)
	ratio("kmeter (tracepoint, cgroup storage) / bpftrace", meterStoreTP, bpftraceName)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(w, "\nload average at the end: %s", la)
	}
}

func kernel() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "?"
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

var emptyBody = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

func attachEmptyTPBTF(context.Context) (func() error, error) {
	return attachTPBTF("bench_empty_btf", emptyBody)
}

// attachCgroupIDOnly splits kmeter's cost: the cgroup id lookup alone,
// without the map update.
func attachCgroupIDOnly(context.Context) (func() error, error) {
	return attachTPBTF("bench_cgid_btf", asm.Instructions{
		asm.FnGetCurrentCgroupId.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
}

func attachTPBTF(name string, body asm.Instructions) (func() error, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp,
		AttachTo: "sys_enter", License: "GPL", Instructions: body,
	})
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		prog.Close()
		return nil, err
	}
	return func() error { return errors.Join(l.Close(), prog.Close()) }, nil
}

func attachEmptyTracepoint(context.Context) (func() error, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "bench_empty_tp", Type: ebpf.TracePoint, License: "GPL", Instructions: emptyBody,
	})
	if err != nil {
		return nil, err
	}
	l, err := link.Tracepoint("raw_syscalls", "sys_enter", prog, nil)
	if err != nil {
		prog.Close()
		return nil, err
	}
	return func() error { return errors.Join(l.Close(), prog.Close()) }, nil
}

func attachMeter(pinDir string, mode meter.HookMode, storage syscalls.Storage) func(context.Context) (func() error, error) {
	return func(context.Context) (func() error, error) {
		m, err := syscalls.OpenWith(meter.Config{PinDir: pinDir}, syscalls.Options{Hook: mode, Storage: storage})
		if err != nil {
			return nil, err
		}
		// Unpin then Close detaches, so the next setup runs alone.
		return func() error { return errors.Join(m.Unpin(), m.Close()) }, nil
	}
}

// attachBpftrace starts bpftrace and returns once its tracepoint program
// is attached (bpftool perf lists it for bpftrace's pid).
func attachBpftrace(bin string) func(ctx context.Context) (func() error, error) {
	return func(ctx context.Context) (func() error, error) {
		cmd := exec.CommandContext(ctx, bin, "-e", bpftraceProgram)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = io.Discard // a RLIMIT_MEMLOCK warning on kernels that no longer need it
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		stop := func() error {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			return nil
		}
		go io.Copy(io.Discard, bufio.NewReader(stdout))
		deadline := time.Now().Add(30 * time.Second)
		want := fmt.Sprintf("pid %d ", cmd.Process.Pid)
		for {
			out, _ := exec.CommandContext(ctx, "bpftool", "perf", "list").Output()
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, want) && strings.Contains(line, "sys_enter") {
					return stop, nil
				}
			}
			if time.Now().After(deadline) {
				stop()
				return nil, errors.New("bpftrace did not attach within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// runStats attaches each setup in turn, makes n getppid calls with the
// kernel's BPF run-time statistics on, and reports the mean run time of
// the programs the setup loaded (bench_* and kmeter_* programs that were
// not there before). The statistics cost two clock reads per run, so
// the numbers are a program body's own time plus a constant, for
// comparing programs with each other.
func runStats(ctx context.Context, w io.Writer, setups []setup, n int) error {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable bpf stats: %w", err)
	}
	defer stats.Close()
	fmt.Fprintf(w, "getppid x %d per setup, kernel %s; run_time_ns / run_cnt of each program while attached (all CPUs, every process's syscalls)\n\n", n, kernel())
	fmt.Fprintln(w, "| setup | program | runs | ns per run |")
	fmt.Fprintln(w, "|---|---|---:|---:|")
	for _, s := range setups {
		before, err := programIDs()
		if err != nil {
			return err
		}
		detach, err := s.attach(ctx)
		if err != nil {
			return fmt.Errorf("attach %s: %w", s.name, err)
		}
		after, err := programIDs()
		if err != nil {
			return errors.Join(err, detach())
		}
		var progs []*ebpf.Program
		var st0 []*ebpf.ProgramStats
		for _, id := range after {
			if slices.Contains(before, id) {
				continue
			}
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				continue // gone already: not ours
			}
			info, err := p.Info()
			st, serr := p.Stats()
			if err != nil || serr != nil || !(strings.HasPrefix(info.Name, "bench_") || strings.HasPrefix(info.Name, "kmeter_")) {
				p.Close()
				continue
			}
			progs, st0 = append(progs, p), append(st0, st)
		}
		loop(n)
		for i, p := range progs {
			info, _ := p.Info()
			st, err := p.Stats()
			if err == nil && st.RunCount > st0[i].RunCount {
				runs := st.RunCount - st0[i].RunCount
				fmt.Fprintf(w, "| %s | %s | %d | %.1f |\n", s.name, info.Name, runs, float64(st.Runtime-st0[i].Runtime)/float64(runs))
			}
			p.Close()
		}
		if err := detach(); err != nil {
			return fmt.Errorf("detach %s: %w", s.name, err)
		}
	}
	return nil
}

func programIDs() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		ids, id = append(ids, next), next
	}
}
