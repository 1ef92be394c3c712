package enforce

import (
	"bufio"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/testutil"
)

// goodput is what a receiver measured: bytes between the end of the
// warm-up and the end of the stream.
type goodput struct {
	bytes int64
	dur   time.Duration
}

func (g goodput) rate() float64 { return float64(g.bytes) / g.dur.Seconds() }

// receiver accepts one connection and measures goodput after warmup.
func receiver(t testing.TB, warmup time.Duration) (string, <-chan goodput) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan goodput, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- goodput{}
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		var start, last time.Time
		var n int64
		var first time.Time
		for {
			k, err := c.Read(buf)
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			if now.Sub(first) >= warmup {
				if start.IsZero() {
					start = now
				} else {
					n += int64(k)
				}
				if k > 0 {
					last = now
				}
			}
			if err == io.EOF || err != nil {
				break
			}
		}
		ch <- goodput{bytes: n, dur: last.Sub(start)}
	}()
	return ln.Addr().String(), ch
}

func send(t *testing.T, cg testutil.Cgroup, secs string) (<-chan goodput, func()) {
	t.Helper()
	addr, ch := receiver(t, 500*time.Millisecond)
	cmd := cg.SelfCommand(t, "send", addr, secs)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return ch, func() {
		if err := cmd.Wait(); err != nil {
			t.Errorf("sender in %s: %v", cg.Rel, err)
		}
	}
}

// TestEnforcer_egressBandwidth limits tenant A to 10 MiB/s while tenant B,
// unlimited, sends at the same time; A's goodput at the receiver must be
// within 10% of the limit and B must keep most of its own unlimited rate.
func TestEnforcer_egressBandwidth(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for 10 s")
	}
	e, _ := openTest(t)
	a := testutil.NewCgroup(t, "a")
	b := testutil.NewCgroup(t, "b")

	chB, waitB := send(t, b, "5")
	waitB()
	alone1 := <-chB

	const limit = 10 << 20
	if err := e.SetLimit(a.Rel, Limit{Egress: limit, EgressBurst: DefaultByteBurst(limit)}); err != nil {
		t.Fatal(err)
	}
	chA, waitA := send(t, a, "5")
	chB, waitB = send(t, b, "5")
	waitA()
	waitB()
	gotA, gotB := <-chA, <-chB
	chB, waitB = send(t, b, "5")
	waitB()
	alone2 := <-chB
	alone := (alone1.rate() + alone2.rate()) / 2
	drops, _ := e.Enforced()
	t.Logf("A limited to 10 MiB/s: %.2f MiB/s (%.1f%% of the limit), %d egress drops", gotA.rate()/(1<<20), 100*gotA.rate()/limit, drops[a.Rel][EgressDrop])
	ratio := gotB.rate() / alone
	t.Logf("B unlimited: alone %.0f and %.0f MiB/s, next to A %.0f MiB/s (ratio %.3f)", alone1.rate()/(1<<20), alone2.rate()/(1<<20), gotB.rate()/(1<<20), ratio)
	if r := gotA.rate() / limit; r < 0.9 || r > 1.1 {
		t.Errorf("tenant A reached %.1f%% of its 10 MiB/s limit, want 90%%..110%%", 100*r)
	}
	// B's loopback throughput is CPU-bound and varies by 20% from run to
	// run on a small shared machine, so by default this only catches gross
	// interference; that the limiter leaves B alone is asserted exactly by
	// B having no enforcement actions (see docs/benchmarks/enforce.md). The
	// 5% bound is checked with KMETER_STRICT_PERF=1 on a quiet machine.
	minRatio := 0.5
	if os.Getenv("KMETER_STRICT_PERF") == "1" {
		minRatio = 0.95
	}
	if len(drops[b.Rel]) != 0 {
		t.Errorf("unlimited tenant B had enforcement actions %v", drops[b.Rel])
	}
	if ratio < minRatio {
		t.Errorf("unlimited tenant B slowed to %.3f of its own unlimited rate next to limited A, want >= %.2f", ratio, minRatio)
	}
}

// timeline records when each byte count arrived at a receiver.
type timeline struct {
	start time.Time
	at    []time.Duration
	total []int64
}

// rate returns the goodput between from and to after start.
func (tl timeline) rate(from, to time.Duration) float64 {
	var a, b int64
	for i, d := range tl.at {
		if d <= from {
			a = tl.total[i]
		}
		if d <= to {
			b = tl.total[i]
		}
	}
	return float64(b-a) / (to - from).Seconds()
}

// timelineReceiver accepts one connection and records its bytes over
// time since start.
func timelineReceiver(t *testing.T, start time.Time) (string, <-chan timeline) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan timeline, 1)
	go func() {
		tl := timeline{start: start}
		defer func() { ch <- tl }()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		var n int64
		for {
			k, err := c.Read(buf)
			now := time.Now()
			n += int64(k)
			tl.at = append(tl.at, now.Sub(tl.start))
			tl.total = append(tl.total, n)
			if err != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), ch
}

// TestEnforcer_egressLiveChange raises and lowers a tenant's egress limit
// while one of its TCP connections sends: the established connection
// follows each new rate (its pacing cap is updated from the kernel on the
// next ACK), without being reset.
func TestEnforcer_egressLiveChange(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for 6 s")
	}
	e, _ := openTest(t)
	a := testutil.NewCgroup(t, "a")
	set := func(rate uint64) {
		t.Helper()
		if err := e.SetLimit(a.Rel, Limit{Egress: rate, EgressBurst: DefaultByteBurst(rate)}); err != nil {
			t.Fatal(err)
		}
	}
	set(4 << 20)
	start := time.Now()
	addr, ch := timelineReceiver(t, start)
	cmd := a.SelfCommand(t, "send", addr, "6.5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	set(16 << 20)
	time.Sleep(time.Until(start.Add(4 * time.Second)))
	set(4 << 20)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	tl := <-ch
	drops, _ := e.Enforced()
	t.Logf("egress drops: %d", drops[a.Rel][EgressDrop])
	s := time.Second
	for _, w := range []struct {
		from, to time.Duration
		want     float64
	}{
		{s / 2, 2 * s, 4 << 20},
		{5 * s / 2, 4 * s, 16 << 20},
		{9 * s / 2, 6 * s, 4 << 20},
	} {
		// Windows are from the sender's start and begin 0.5 s after each
		// change, when the process runs and the next ACK has come.
		got := tl.rate(w.from, w.to)
		t.Logf("%v..%v: %.2f MiB/s, limit %.0f MiB/s", w.from, w.to, got/(1<<20), w.want/(1<<20))
		if r := got / w.want; r < 0.9 || r > 1.1 {
			t.Errorf("%v..%v: %.2f MiB/s, want %.0f MiB/s +-10%%", w.from, w.to, got/(1<<20), w.want/(1<<20))
		}
	}
}

// TestEnforcer_largestLimitNeverDrops is a regression test: with the
// largest rate and burst the token arithmetic must not overflow into a
// negative bucket that drops everything.
func TestEnforcer_largestLimitNeverDrops(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "max")
	if err := e.SetLimit(cg.Rel, Limit{Egress: MaxByteRate, EgressBurst: MaxByteBurst}); err != nil {
		t.Fatal(err)
	}
	addr, got := udpSink(t, "127.0.0.1:0")
	for i := 0; i < 3; i++ { // later rounds refill a nearly full bucket
		sendUDP(t, cg, addr, 100, 1000)
		time.Sleep(50 * time.Millisecond)
	}
	drops, _ := e.Enforced()
	if got.Load() != 300 || drops[cg.Rel][EgressDrop] != 0 {
		t.Errorf("%d of 300 datagrams arrived, %d egress drops", got.Load(), drops[cg.Rel][EgressDrop])
	}
}

// TestEnforcer_ingressBandwidth sends to a receiver in a tenant limited to
// 4 MiB/s ingress for 3 s from outside the tenant. Ingress is policed by
// drops (a receiver cannot pace its sender), so the goodput must not
// exceed the limit plus the burst, and the drops are counted.
func TestEnforcer_ingressBandwidth(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for 3 s")
	}
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "in")
	const limit = 4 << 20
	if err := e.SetLimit(cg.Rel, Limit{Ingress: limit, IngressBurst: DefaultByteBurst(limit)}); err != nil {
		t.Fatal(err)
	}
	recv := cg.SelfCommand(t, "recv")
	out, err := recv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("receiver printed no address")
	}
	c, err := net.Dial("tcp4", sc.Text())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 256<<10)
	_ = c.SetWriteDeadline(start.Add(3 * time.Second))
	for {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.Close()
	// The receiver reads until EOF, after what was still queued when the
	// sender stopped: the rate is taken over that whole time.
	if !sc.Scan() {
		t.Fatal("receiver printed no byte count")
	}
	elapsed := time.Since(start)
	n, _ := strconv.ParseInt(sc.Text(), 10, 64)
	if err := recv.Wait(); err != nil {
		t.Fatal(err)
	}
	drops, _ := e.Enforced()
	rate := float64(n) / elapsed.Seconds()
	t.Logf("ingress goodput %.2f MiB/s under a 4 MiB/s limit, %d ingress drops", rate/(1<<20), drops[cg.Rel][IngressDrop])
	if max := 1.1*limit + float64(DefaultByteBurst(limit))/elapsed.Seconds(); rate > max || n == 0 {
		t.Errorf("ingress goodput %.2f MiB/s, want above 0 and at most %.2f MiB/s", rate/(1<<20), max/(1<<20))
	}
	if drops[cg.Rel][IngressDrop] == 0 {
		t.Errorf("no ingress drops counted")
	}
}
