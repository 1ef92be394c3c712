package enforce

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

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
	l, err := link.LoadPinnedLink(args[0], nil)
	if err != nil {
		return err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return err
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
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
	linkPin := filepath.Join(pin, Name, "link_egress")
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

// tcpRun is one loopback transfer: bytes moved, wall time, and the CPU
// time (user+system) of the sender and receiver processes.
type tcpRun struct {
	bytes     int64
	wall, cpu time.Duration
}

func runTCP(b *testing.B, cg testutil.Cgroup, secs string) tcpRun {
	b.Helper()
	recv := cg.SelfCommand(b, "recv")
	out, err := recv.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := recv.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		b.Fatal("receiver printed no address")
	}
	addr := sc.Text()
	start := time.Now()
	send := cg.SelfCommand(b, "send", addr, secs)
	if err := send.Run(); err != nil {
		b.Fatal(err)
	}
	if !sc.Scan() {
		b.Fatal("receiver printed no byte count")
	}
	n, _ := strconv.ParseInt(sc.Text(), 10, 64)
	if err := recv.Wait(); err != nil {
		b.Fatal(err)
	}
	wall := time.Since(start)
	cpu := func(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }
	return tcpRun{bytes: n, wall: wall, cpu: cpu(send.ProcessState) + cpu(recv.ProcessState)}
}

// BenchmarkLimiter_loopbackTCP compares one loopback TCP transfer between
// two processes of a tenant that has limits but none on bandwidth (so
// every packet walks the tenant lookup both on egress and on ingress)
// with the limiter loaded and with no limiter at all. Loopback throughput
// is CPU-bound, and on a shared machine wall-clock goodput mostly measures
// the neighbours, so the main metric is bytes per CPU-second of the two
// processes (softirq work on loopback is charged to them); wall goodput is
// reported too. Runs of 2 s alternate off, on, off, ..., off; each "on" run
// is compared with the mean of the two "off" runs around it.
func BenchmarkLimiter_loopbackTCP(b *testing.B) {
	testutil.RequireBPF(b)
	root := testutil.Cgroup2Dir(b)
	cg := testutil.NewCgroup(b, "tenant")
	run := func(loaded bool) tcpRun {
		if loaded {
			e, err := Open(Config{PinDir: testutil.PinDir(b), CgroupDir: root, Resolver: newPathResolver(root)})
			testutil.CheckLoad(b, err)
			defer func() { e.Unpin(); e.Close() }()
			if err := e.SetLimit(cg.Rel, Limit{ConnectRate: 1000, ConnectBurst: 1000}); err != nil {
				b.Fatal(err)
			}
		}
		return runTCP(b, cg, "2")
	}
	perCPU := func(r tcpRun) float64 { return float64(r.bytes) / r.cpu.Seconds() }
	perWall := func(r tcpRun) float64 { return float64(r.bytes) / r.wall.Seconds() }
	rounds := max(b.N, 3)
	off := []tcpRun{run(false)}
	var on []tcpRun
	var cpuRatio, wallRatio []float64
	for i := 0; i < rounds; i++ {
		on = append(on, run(true))
		off = append(off, run(false))
		cpuRatio = append(cpuRatio, perCPU(on[i])/((perCPU(off[i])+perCPU(off[i+1]))/2))
		wallRatio = append(wallRatio, perWall(on[i])/((perWall(off[i])+perWall(off[i+1]))/2))
	}
	var offCPU, onCPU []float64
	for _, r := range off {
		offCPU = append(offCPU, perCPU(r)/(1<<20))
	}
	for _, r := range on {
		onCPU = append(onCPU, perCPU(r)/(1<<20))
	}
	b.ReportMetric(median(offCPU), "off-MiB/cpu-s")
	b.ReportMetric(median(onCPU), "on-MiB/cpu-s")
	b.ReportMetric(median(cpuRatio), "cpu-ratio")
	b.ReportMetric(cpuRatio[0], "cpu-ratio-min")
	b.ReportMetric(cpuRatio[len(cpuRatio)-1], "cpu-ratio-max")
	b.ReportMetric(median(wallRatio), "wall-ratio")
	b.ReportMetric(0, "ns/op")
}
