// Command tlshandshake measures the cost of kmeter's meters on TLS
// handshakes: fresh crypto/tls 1.3 connections over loopback (ECDSA P-256
// certificate), with every meter attached and with no program attached,
// in interleaved rounds of the same run, and reports the ratio of
// handshake rates (meters on / off).
//
// Run as root: go run ./bench/tlshandshake -rounds 20 -n 300
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/netbytes"
	"github.com/kmeter/kmeter/internal/meter/sockstate"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
	"github.com/kmeter/kmeter/internal/testutil"
)

// opener opens one meter.
type opener struct {
	name string
	open func(meter.Config) (meter.Meter, error)
}

var meters = []opener{
	{tlsmeter.Name, func(c meter.Config) (meter.Meter, error) { return tlsmeter.Open(c) }},
	{"syscalls", func(c meter.Config) (meter.Meter, error) { return syscalls.Open(c) }},
	{"sockstate", func(c meter.Config) (meter.Meter, error) { return sockstate.Open(c) }},
	{"netbytes", func(c meter.Config) (meter.Meter, error) { return netbytes.Open(c) }},
}

func main() {
	rounds := flag.Int("rounds", 20, "interleaved rounds")
	n := flag.Int("n", 300, "handshakes per phase of a round")
	only := flag.String("meters", "", "comma-separated meters to attach (default: all)")
	runtime := flag.Bool("bpf-stats", false, "also report the kernel's run time of each program (enabling it slows every BPF program, so the ratio is then pessimistic)")
	hold := flag.String("hold", "", "internal: open the meters pinned here, print their names, wait for stdin to close")
	flag.Parse()
	var err error
	if *hold != "" {
		err = holdMeters(*hold, *only)
	} else {
		err = run(context.Background(), *rounds, *n, *only, *runtime)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlshandshake:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, rounds, n int, only string, bpfStats bool) error {
	base := "/sys/fs/bpf/kmeter-bench-tls"
	if err := hostfs.EnsureBPFFS(base); err != nil {
		return err
	}
	defer os.RemoveAll(base)
	srv, err := newServer()
	if err != nil {
		return err
	}
	defer srv.Close()
	go srv.serve()

	// Warm up: the first handshakes pay for lazy initialisation.
	if _, err := handshakes(ctx, srv.addr, n); err != nil { // warm-up
		return err
	}
	// The kernel's own accounting of the time spent in the meters'
	// programs: a measure of their cost that the machine's noise does not
	// swamp (an upper bound: preemption inside a program counts too).
	if bpfStats {
		stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			return fmt.Errorf("enable BPF run time stats: %w", err)
		}
		defer stats.Close()
	}
	var (
		on, off       []rate
		names         []string
		perProg       = map[string]progCost{}
		bpfHandshakes int
	)
	for r := 0; r < rounds; r++ {
		// Alternate the order so drift in machine load hits both sides.
		for _, meters := range [][]bool{{r%2 == 0}, {r%2 != 0}} {
			if !meters[0] {
				// The same helper process, attaching nothing: starting
				// it disturbs the machine as much as on the other side.
				h, err := startHolder(filepath.Join(base, fmt.Sprintf("round-%d-off", r)), "none")
				if err != nil {
					return err
				}
				rate, err := handshakes(ctx, srv.addr, n)
				if err := h.stop(); err != nil {
					return err
				}
				if err != nil {
					return err
				}
				off = append(off, rate)
				continue
			}
			pin := filepath.Join(base, fmt.Sprintf("round-%d", r))
			h, err := startHolder(pin, only)
			if err != nil {
				return err
			}
			names = h.names
			progs, err := pinnedPrograms(pin)
			if err != nil {
				_ = h.stop()
				return err
			}
			before := programStats(progs)
			rate, err := handshakes(ctx, srv.addr, n)
			for i, st := range programStats(progs) {
				name := progs[i].String()
				if info, err := progs[i].Info(); err == nil {
					name = info.Name
				}
				d := perProg[name]
				d.runtime += st.Runtime - before[i].Runtime
				d.runs += st.RunCount - before[i].RunCount
				perProg[name] = d
			}
			bpfHandshakes += n
			for _, p := range progs {
				p.Close()
			}
			if err := h.stop(); err != nil {
				return err
			}
			if err != nil {
				return err
			}
			on = append(on, rate)
		}
		fmt.Printf("round %2d: per CPU second off %6.0f on %6.0f ratio %.3f | per wall second off %6.0f on %6.0f ratio %.3f\n",
			r+1, off[r].cpu, on[r].cpu, on[r].cpu/off[r].cpu, off[r].wall, on[r].wall, on[r].wall/off[r].wall)
	}
	if len(names) == 0 {
		// -meters none: a control run, where both sides should match.
		names = []string{"none (control run)"}
	}
	fmt.Printf("meters on: %s\n", strings.Join(names, ", "))
	for _, k := range []struct {
		name string
		get  func(rate) float64
	}{{"CPU", func(r rate) float64 { return r.cpu }}, {"wall", func(r rate) float64 { return r.wall }}} {
		var offs, ons, ratios []float64
		for i := range on {
			offs = append(offs, k.get(off[i]))
			ons = append(ons, k.get(on[i]))
			ratios = append(ratios, k.get(on[i])/k.get(off[i]))
		}
		fmt.Printf("handshakes per %s second, median: off %.0f, on %.0f; ratio on/off: median of rounds %.3f (min %.3f, max %.3f), of medians %.3f\n",
			k.name, median(offs), median(ons), median(ratios), slices.Min(ratios), slices.Max(ratios), median(ons)/median(offs))
	}
	var offWall []float64
	for _, r := range off {
		offWall = append(offWall, r.wall)
	}
	if !bpfStats {
		return nil
	}
	// Programs also run for every other process on the machine: their
	// time per handshake is an upper bound.
	var total time.Duration
	for _, name := range slices.Sorted(maps.Keys(perProg)) {
		c := perProg[name]
		per := c.runtime / time.Duration(bpfHandshakes)
		total += per
		fmt.Printf("  %-24s %8d runs  %6.0f ns/run  %9v per handshake\n", name, c.runs, float64(c.runtime)/float64(max(c.runs, 1)), per)
	}
	fmt.Printf("BPF run time of the meters: %v per handshake = %.2f%% of a handshake at the median off rate (ratio bound %.4f)\n",
		total, 100*total.Seconds()*median(offWall), 1-total.Seconds()*median(offWall))
	return nil
}

// pinnedPrograms returns the programs of the links pinned under dir.
func pinnedPrograms(dir string) ([]*ebpf.Program, error) {
	var progs []*ebpf.Program
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return nil // a pinned map
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return err
		}
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			return err
		}
		progs = append(progs, p)
		return nil
	})
	return progs, err
}

type progCost struct {
	runtime time.Duration
	runs    uint64
}

// programStats reads the kernel's run time and count of progs.
func programStats(progs []*ebpf.Program) []ebpf.ProgramStats {
	out := make([]ebpf.ProgramStats, len(progs))
	for i, p := range progs {
		if st, err := p.Stats(); err == nil {
			out[i] = *st
		}
	}
	return out
}

// holder is a child process holding the meters attached, so that loading
// them (kernel BTF parsing, large allocations, garbage collection) never
// runs in the process whose handshakes are measured.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	names []string
}

func startHolder(pinDir, only string) (*holder, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-hold", pinDir, "-meters", only)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start meter holder: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("meter holder: %w", err)
	}
	return &holder{cmd: cmd, stdin: stdin, names: strings.Fields(line)}, nil
}

// stop closes the holder's stdin; it detaches the meters and exits.
func (h *holder) stop() error {
	_ = h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		return fmt.Errorf("meter holder: %w", err)
	}
	return nil
}

// holdMeters opens the meters under pinDir, prints their names, waits for
// stdin to close, then closes them and removes their pins.
func holdMeters(pinDir, only string) error {
	cgroupDir, err := hostfs.Cgroup2Dir("/proc/mounts")
	if err != nil {
		return err
	}
	if err := hostfs.EnsureBPFFS(pinDir); err != nil {
		return err
	}
	var use []opener
	for _, m := range meters {
		if only == "" || slices.Contains(strings.Split(only, ","), m.name) {
			use = append(use, m)
		}
	}
	opened, err := openAll(use, meter.Config{PinDir: pinDir, CgroupDir: cgroupDir})
	if err != nil {
		return err
	}
	defer closeAll(opened, pinDir)
	var names []string
	for _, m := range opened {
		names = append(names, m.Status().Meter)
	}
	// Finish this process's garbage collection now, so it does not run
	// beside the measured handshakes.
	debug.FreeOSMemory()
	fmt.Println(strings.Join(names, " "))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func openAll(use []opener, cfg meter.Config) ([]meter.Meter, error) {
	var opened []meter.Meter
	for _, o := range use {
		m, err := o.open(cfg)
		if err != nil {
			closeAll(opened, cfg.PinDir)
			return nil, fmt.Errorf("open %s: %w", o.name, err)
		}
		opened = append(opened, m)
	}
	return opened, nil
}

// closeAll closes the meters and removes their pins, which detaches them.
func closeAll(ms []meter.Meter, pinDir string) {
	for _, m := range ms {
		_ = m.Close()
	}
	_ = os.RemoveAll(pinDir)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// rate is handshakes per second of wall time and per second of this
// process's CPU time (user + system, which includes the BPF programs and
// the loopback network stack run on its behalf). CPU time leaves out the
// time other processes of the shared machine take.
type rate struct {
	wall, cpu float64
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sliceLen is how many handshakes one timing slice holds; a phase keeps
// its fastest slice, because interference from the rest of the machine
// only ever adds time.
const sliceLen = 20

// handshakes makes n fresh TLS 1.3 connections and returns the rate of the
// fastest slice of sliceLen of them, by CPU and by wall time.
func handshakes(ctx context.Context, addr string, n int) (rate, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, ServerName: "bench.kmeter.test"}
	d := tls.Dialer{Config: cfg}
	buf := make([]byte, 1)
	var best rate
	for done := 0; done < n; done += sliceLen {
		start, startCPU := time.Now(), cpuTime()
		for i := 0; i < sliceLen; i++ {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return rate{}, fmt.Errorf("handshake: %w", err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				return rate{}, err
			}
			c.Close()
		}
		best.wall = max(best.wall, sliceLen/time.Since(start).Seconds())
		best.cpu = max(best.cpu, sliceLen/(cpuTime()-startCPU).Seconds())
	}
	return best, nil
}

type server struct {
	net.Listener
	addr string
}

func newServer() (*server, error) {
	cert, err := testutil.SelfSignedCert("bench.kmeter.test")
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	return &server{Listener: ln, addr: ln.Addr().String()}, nil
}

func (s *server) serve() {
	for {
		c, err := s.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			_, _ = c.Write([]byte{1}) // completes the handshake first
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}
