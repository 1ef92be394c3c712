package enforce

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/testutil"
)

// benchPacket is an Ethernet + IPv4 + TCP frame with 1000 bytes of
// payload to 10.1.2.3:443, as BPF_PROG_TEST_RUN wants it for cgroup_skb.
func benchPacket() []byte {
	var b bytes.Buffer
	b.Write(make([]byte, 12))                          // MACs
	binary.Write(&b, binary.BigEndian, uint16(0x0800)) // IPv4
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 10, 1, 2, 3}
	binary.BigEndian.PutUint16(ip[2:], 20+20+1000)
	b.Write(ip)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH|ACK
	b.Write(tcp)
	b.Write(make([]byte, 1000))
	return b.Bytes()
}

// progBenchResult is what the progbench helper prints: nanoseconds per
// run of each program over 15 alternating rounds, the fastest round
// (interference only adds time) and the median.
type progBenchResult struct {
	Empty, Limiter       float64
	EmptyMin, LimiterMin float64
}

// helperProgBench runs, inside the cgroup it was started in, the egress
// program behind the pinned link LINK and an empty cgroup_skb program with
// BPF_PROG_TEST_RUN, REPEAT times per round, alternating for 7 rounds. The
// test-run skb belongs to a socket made in the caller's cgroup, so the
// limiter sees this cgroup's tenant.
func helperProgBench(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: progbench LINK REPEAT")
	}
	repeat, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	prog, err := pinnedLinkProgram(args[0])
	if err != nil {
		return err
	}
	defer prog.Close()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSKB, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		return err
	}
	defer empty.Close()
	pkt := benchPacket()
	var e, lim []float64
	for round := 0; round < 15; round++ {
		for _, p := range []struct {
			prog *ebpf.Program
			out  *[]float64
		}{{empty, &e}, {prog, &lim}} {
			ret, d, err := p.prog.Benchmark(pkt, repeat, nil)
			if err != nil {
				return err
			}
			if ret != 1 {
				return fmt.Errorf("program returned %d, want 1 (pass)", ret)
			}
			*p.out = append(*p.out, float64(d.Nanoseconds()))
		}
	}
	return json.NewEncoder(os.Stdout).Encode(progBenchResult{Empty: median(e), Limiter: median(lim), EmptyMin: e[0], LimiterMin: lim[0]})
}

// meanSE returns the mean of v and its standard error.
func meanSE(v []float64) (mean, se float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	if len(v) > 1 {
		se = math.Sqrt(ss/float64(len(v)-1)) / math.Sqrt(float64(len(v)))
	}
	return mean, se
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// BenchmarkLimiter_perPacket measures the egress program's cost per packet
// with BPF_PROG_TEST_RUN against an empty cgroup_skb program in the same
// run, from three cgroups: one that is no tenant, a tenant whose egress
// bucket is taken from on every packet (rate too high to ever drop), and
// that tenant with a matching slice. ns/op is per packet.
func BenchmarkLimiter_perPacket(b *testing.B) {
	testutil.RequireBPF(b)
	root := testutil.Cgroup2Dir(b)
	pin := testutil.PinDir(b)
	e, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: newPathResolver(root)})
	testutil.CheckLoad(b, err)
	b.Cleanup(func() { e.Unpin(); e.Close() })
	none := testutil.NewCgroup(b, "none")
	tenant := testutil.NewCgroup(b, "tenant")
	sliced := testutil.NewCgroup(b, "sliced")
	for _, cg := range []testutil.Cgroup{tenant, sliced} {
		if err := e.SetLimit(cg.Rel, Limit{Egress: MaxByteRate, EgressBurst: MaxByteBurst, ConnectRate: 100, ConnectBurst: 100}); err != nil {
			b.Fatal(err)
		}
	}
	slices, err := ParseSlices([]config.Slice{{Name: "s", ID: 1, Rules: []config.SliceRule{{Tenant: sliced.Rel, CIDR: "10.1.0.0/16", Ports: "443"}}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetSlices(slices); err != nil {
		b.Fatal(err)
	}
	// The limiter attaches to limited tenants only; the test run takes the
	// program from the tenant's pinned link and runs it in each cgroup.
	linkPin := e.tenantPin(tenant.ID, hook{name: "egress"})
	for _, cg := range []testutil.Cgroup{none, tenant, sliced} {
		name := filepath.Base(cg.Rel)
		b.Run(name, func(b *testing.B) {
			cmd := cg.SelfCommand(b, "progbench", linkPin, strconv.Itoa(max(b.N, 1000)))
			var out bytes.Buffer
			cmd.Stdout = &out
			b.ResetTimer()
			if err := cmd.Run(); err != nil {
				b.Fatalf("progbench: %v", err)
			}
			b.StopTimer()
			var r progBenchResult
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				b.Fatalf("progbench output %q: %v", out.String(), err)
			}
			b.ReportMetric(r.Empty, "empty-ns/pkt")
			b.ReportMetric(r.Limiter, "limiter-ns/pkt")
			b.ReportMetric(r.Limiter-r.Empty, "added-ns/pkt")
			b.ReportMetric(r.LimiterMin-r.EmptyMin, "added-min-ns/pkt")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// What a tcptoggle phase attaches to the tenant's cgroup.
const (
	progNone = iota
	progEmpty
	progLimiter
)

// toggleOrder is one block of tcptoggle phases: symmetric, so that a
// linear drift within the block cancels out of every comparison.
var toggleOrder = []int{progNone, progEmpty, progLimiter, progLimiter, progEmpty, progNone}

// togglePhase is one measuring phase of the tcptoggle helper.
type togglePhase struct {
	// Prog is what ran at the hooks: progNone, progEmpty or progLimiter.
	Prog   int   `json:"prog"`
	Bytes  int64 `json:"bytes"`
	CPUNs  int64 `json:"cpu_ns"`
	WallNs int64 `json:"wall_ns"`
	// Packets is the segments the sender sent and received (data and
	// ACKs): each passes the egress hook once and the ingress hook once.
	Packets int64 `json:"packets"`
}

// helperTCPToggle keeps one loopback TCP connection busy inside the cgroup
// it was started in (sender and receiver in this process, each on its own
// locked thread, pinned to CPU 0 and 1 when PIN is 1) and measures PHASES
// phases of MS milliseconds each, in blocks of toggleOrder: nothing
// attached to CGROUP, an empty cgroup_skb program (the kernel's hook cost
// alone), or the limiter's programs pinned at EGRESS and INGRESS attached
// to CGROUP. Each phase records
// bytes received and the CPU time of the whole process (loopback softirq
// work runs in the sender's context and is charged to it). It prints the
// phases as JSON.
func helperTCPToggle(args []string) error {
	if len(args) != 6 {
		return errors.New("usage: tcptoggle EGRESS INGRESS CGROUP PHASES MS PIN")
	}
	var progs []*ebpf.Program
	for _, pin := range args[:2] {
		prog, err := ebpf.LoadPinnedProgram(pin, nil)
		if err != nil {
			return err
		}
		defer prog.Close()
		progs = append(progs, prog)
	}
	return tcpToggle(args[2:], attachSKB(args[2], progs...))
}

// helperTCPEnforcer is helperTCPToggle with a limiter phase that is the
// real deployment for an unlimited tenant: an Enforcer opened on the
// cgroup2 mount ROOT with pin dir PINDIR, the tenant OTHER (a cgroup path
// relative to ROOT) limited, and CGROUP, where the traffic runs, not
// limited. Each limiter phase opens it and the next phase unpins and
// closes it, so the other phases run with no limiter loaded.
func helperTCPEnforcer(args []string) error {
	if len(args) != 7 {
		return errors.New("usage: tcpenforcer PINDIR ROOT OTHER CGROUP PHASES MS PIN")
	}
	pinDir, root, other := args[0], args[1], args[2]
	open := func() (func(), error) {
		e, err := Open(Config{PinDir: pinDir, CgroupDir: root, Resolver: newPathResolver(root)})
		if err != nil {
			return nil, err
		}
		off := func() { e.Unpin(); e.Close() }
		if err := e.SetLimit(other, Limit{Egress: 10 << 20, EgressBurst: 1 << 20, Ingress: 10 << 20, IngressBurst: 1 << 20}); err != nil {
			off()
			return nil, err
		}
		return off, nil
	}
	return tcpToggle(args[3:], open)
}

// attachSKB returns a phase switch that attaches egress and ingress
// cgroup_skb programs to cgroup.
func attachSKB(cgroup string, progs ...*ebpf.Program) func() (func(), error) {
	return func() (func(), error) {
		var ls []link.Link
		off := func() {
			for _, l := range ls {
				l.Close()
			}
		}
		for j, at := range []ebpf.AttachType{ebpf.AttachCGroupInetEgress, ebpf.AttachCGroupInetIngress} {
			l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: progs[j]})
			if err != nil {
				off()
				return nil, fmt.Errorf("attach: %w", err)
			}
			ls = append(ls, l)
		}
		return off, nil
	}
}

// tcpToggle runs the phases of helperTCPToggle (args CGROUP PHASES MS
// PIN); limiter switches the limiter phase on and returns what switches
// it off.
func tcpToggle(args []string, limiter func() (func(), error)) error {
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSKB, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		return err
	}
	defer empty.Close()
	on := map[int]func() (func(), error){progEmpty: attachSKB(args[0], empty, empty), progLimiter: limiter}
	phases, err1 := strconv.Atoi(args[1])
	ms, err2 := strconv.Atoi(args[2])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	pin := args[3] == "1"
	pinTo := func(cpu int) {
		runtime.LockOSThread()
		if pin {
			var set unix.CPUSet
			set.Set(cpu)
			_ = unix.SchedSetaffinity(0, &set)
		}
	}

	// Blocking sockets on locked threads: the Go netpoller's wakeups would
	// add their own noise to the CPU time.
	lfd, port, err := listenLoopback()
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	var received atomic.Int64
	var stop atomic.Bool
	sendFD := make(chan int, 1)
	done := make(chan error, 2)
	go func() {
		pinTo(1)
		fd, _, err := unix.Accept(lfd)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		buf := make([]byte, 256<<10)
		for {
			n, err := unix.Read(fd, buf)
			if n <= 0 || err != nil {
				done <- nil
				return
			}
			received.Add(int64(n))
		}
	}()
	go func() {
		pinTo(0)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		}
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		sendFD <- fd
		buf := make([]byte, 256<<10)
		for !stop.Load() {
			if _, err := unix.Write(fd, buf); err != nil {
				done <- err
				return
			}
		}
		done <- unix.Shutdown(fd, unix.SHUT_WR)
	}()
	cpu := func() int64 {
		var ru unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	detach := func() {}
	defer func() { detach() }()
	time.Sleep(300 * time.Millisecond) // slow start and first allocations
	sfd := <-sendFD
	segs := func() int64 {
		ti, err := unix.GetsockoptTCPInfo(sfd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0
		}
		return int64(ti.Segs_out) + int64(ti.Segs_in)
	}
	var out []togglePhase
	cur := progNone
	for i := 0; i < phases; i++ {
		want := toggleOrder[i%len(toggleOrder)]
		if want != cur {
			detach()
			detach = func() {}
			if f := on[want]; f != nil {
				off, err := f()
				if err != nil {
					return fmt.Errorf("phase %d: %w", want, err)
				}
				detach = off
			}
			cur = want
		}
		time.Sleep(20 * time.Millisecond) // let the switch settle
		b0, c0, s0, t0 := received.Load(), cpu(), segs(), time.Now()
		time.Sleep(time.Duration(ms) * time.Millisecond)
		b1, c1, s1, t1 := received.Load(), cpu(), segs(), time.Now()
		out = append(out, togglePhase{Prog: want, Bytes: b1 - b0, CPUNs: c1 - c0, WallNs: t1.Sub(t0).Nanoseconds(), Packets: s1 - s0})
	}
	stop.Store(true)
	for range 2 {
		if err := <-done; err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// listenLoopback returns a blocking TCP socket listening on 127.0.0.1 and
// its port.
func listenLoopback() (fd, port int, err error) {
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, 0, err
	}
	if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = unix.Listen(fd, 1)
	}
	var sa unix.Sockaddr
	if err == nil {
		sa, err = unix.Getsockname(fd)
	}
	if err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}

// BenchmarkLimiter_loopbackTCP measures what the limiter costs a
// tenant's loopback TCP throughput: one connection between two threads of
// one process in the tenant's cgroup runs all the time, and short phases
// switch between no limiter, an empty cgroup_skb program attached to that
// cgroup, and the limiter, in blocks of toggleOrder. Each block gives one
// ratio of each against each; the result is their median and spread (mean
// and standard error in the log). Loopback throughput is CPU-bound and the
// machine is shared, so the main metric is bytes per CPU-second of the
// process (wall goodput is reported too); the empty program separates the
// kernel's hook from the limiter's own work.
//
// Sub-benchmarks: "unlimited" is the deployment the target is about: in
// its limiter phases an Enforcer is open on the cgroup2 mount with another
// tenant limited to 10 MiB/s and the measured tenant unlimited, and in the
// others no Enforcer is loaded. "connectlimit" (a tenant with only a
// connect limit: every packet walks the tenant lookup and the limits
// check) and "maxlimit" (egress and ingress limits too high to ever drop:
// every packet also takes from its byte credit) attach the limiter's
// programs to the measured cgroup, as they are for a limited tenant. b.N
// is the number of blocks; KMETER_BENCH_PIN=1 pins sender and receiver to
// CPUs 0 and 1.
func BenchmarkLimiter_loopbackTCP(b *testing.B) {
	testutil.RequireBPF(b)
	root := testutil.Cgroup2Dir(b)
	pin := testutil.PinDir(b)
	e, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: newPathResolver(root)})
	testutil.CheckLoad(b, err)
	b.Cleanup(func() { e.Unpin(); e.Close() })
	progPins := []string{filepath.Join(pin, "prog_egress"), filepath.Join(pin, "prog_ingress")}
	for i, p := range []*ebpf.Program{e.objs.LimitEgress, e.objs.LimitIngress} {
		if err := p.Pin(progPins[i]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Unpin() })
	}
	pinCPUs := "0"
	if os.Getenv("KMETER_BENCH_PIN") == "1" {
		pinCPUs = "1"
	}
	for _, c := range []struct {
		name  string
		limit Limit // zero: the "unlimited" deployment
	}{
		{"unlimited", Limit{}},
		{"connectlimit", Limit{ConnectRate: 1000, ConnectBurst: 1000}},
		{"maxlimit", Limit{Egress: MaxByteRate, EgressBurst: MaxByteBurst, Ingress: MaxByteRate, IngressBurst: MaxByteBurst, ConnectRate: 1000, ConnectBurst: 1000}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cg := testutil.NewCgroup(b, c.name)
			phases := strconv.Itoa(len(toggleOrder) * max(b.N, 2))
			var cmd *exec.Cmd
			if c.limit == (Limit{}) {
				other := testutil.NewCgroup(b, "other")
				cmd = cg.SelfCommand(b, "tcpenforcer", testutil.PinDir(b), root, other.Rel, cg.Path, phases, "250", pinCPUs)
			} else {
				if err := e.SetLimit(cg.Rel, c.limit); err != nil {
					b.Fatal(err)
				}
				defer e.RemoveLimit(cg.Rel)
				// The helper attaches the programs itself in its limiter
				// phases: drop the Enforcer's links to the cgroup.
				e.mu.Lock()
				for _, l := range e.attached[cg.ID] {
					l.Unpin()
					l.Close()
				}
				delete(e.attached, cg.ID)
				e.mu.Unlock()
				cmd = cg.SelfCommand(b, "tcptoggle", progPins[0], progPins[1], cg.Path, phases, "250", pinCPUs)
			}
			var out bytes.Buffer
			cmd.Stdout = &out
			if err := cmd.Run(); err != nil {
				b.Fatalf("tcptoggle: %v", err)
			}
			var ph []togglePhase
			if err := json.Unmarshal(out.Bytes(), &ph); err != nil {
				b.Fatalf("tcptoggle output %q: %v", out.String(), err)
			}
			perCPU := func(p togglePhase) float64 { return float64(p.Bytes) / float64(p.CPUNs) * 1e9 / (1 << 20) }
			perWall := func(p togglePhase) float64 { return float64(p.Bytes) / float64(p.WallNs) * 1e9 / (1 << 20) }
			// Ratios per block: limiter/none, empty/none, limiter/empty.
			var lim, hook, prog, wall, offRate []float64
			var total [3]togglePhase
			for i := 0; i+len(toggleOrder) <= len(ph); i += len(toggleOrder) {
				var blk [3]togglePhase
				for _, p := range ph[i : i+len(toggleOrder)] {
					for _, acc := range []*togglePhase{&blk[p.Prog], &total[p.Prog]} {
						acc.Bytes += p.Bytes
						acc.CPUNs += p.CPUNs
						acc.WallNs += p.WallNs
						acc.Packets += p.Packets
					}
				}
				lim = append(lim, perCPU(blk[progLimiter])/perCPU(blk[progNone]))
				hook = append(hook, perCPU(blk[progEmpty])/perCPU(blk[progNone]))
				prog = append(prog, perCPU(blk[progLimiter])/perCPU(blk[progEmpty]))
				wall = append(wall, perWall(blk[progLimiter])/perWall(blk[progNone]))
				offRate = append(offRate, perCPU(blk[progNone]))
			}
			for _, r := range []struct {
				name string
				v    []float64
			}{{"limiter/none", lim}, {"empty/none", hook}, {"limiter/empty", prog}} {
				v := append([]float64(nil), r.v...)
				sort.Float64s(v)
				mean, se := meanSE(v)
				b.Logf("%s, %d blocks: cpu ratio median %.3f (p25 %.3f, p75 %.3f), mean %.3f ± %.3f (standard error)",
					r.name, len(v), median(v), v[len(v)/4], v[len(v)*3/4], mean, se)
			}
			mean, se := meanSE(lim)
			b.ReportMetric(median(offRate), "off-MiB/cpu-s")
			b.ReportMetric(median(lim), "cpu-ratio")
			b.ReportMetric(mean, "cpu-ratio-mean")
			b.ReportMetric(se, "cpu-ratio-se")
			b.ReportMetric(perCPU(total[progLimiter])/perCPU(total[progNone]), "cpu-ratio-total")
			b.ReportMetric(median(hook), "hook-ratio")
			b.ReportMetric(median(prog), "prog-ratio")
			b.ReportMetric(median(wall), "wall-ratio")
			// Packets per CPU-second with the limiter on, each passing the
			// egress and the ingress hook once: what the per-packet cost
			// predicts the ratio from.
			b.ReportMetric(float64(total[progLimiter].Packets)/float64(total[progLimiter].CPUNs)*1e9, "pkts/cpu-s")
			b.ReportMetric(float64(len(lim)), "blocks")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// helperRecv listens on loopback, prints its address, accepts one
// connection and prints how many bytes it read until EOF.
func helperRecv(args []string) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return err
	}
	fmt.Println(n)
	return nil
}
