package tlsmeter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(helpers)
	os.Exit(m.Run())
}

// collector reads events in the background and keeps those of the given
// cgroups.
type collector struct {
	r      *Reader
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	events map[uint64][]Event
}

func collect(t *testing.T, m *Meter, cgroups ...uint64) *collector {
	t.Helper()
	r, err := m.Events()
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{r: r, cancel: cancel, done: make(chan error, 1), events: make(map[uint64][]Event)}
	go func() {
		for {
			e, err := r.Read(ctx)
			if err != nil {
				c.done <- err
				return
			}
			if slices.Contains(cgroups, e.CgroupID) {
				c.mu.Lock()
				c.events[e.CgroupID] = append(c.events[e.CgroupID], e)
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); r.Close() })
	return c
}

// stop waits until every event produced so far was delivered or dropped,
// checks that delivered + dropped == produced, stops reading and returns
// the events kept per cgroup.
func (c *collector) stop(t *testing.T) map[uint64][]Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := c.r.Stats()
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if s.Delivered+s.Dropped == s.Produced {
			t.Logf("ring buffer: produced %d, delivered %d, dropped %d", s.Produced, s.Delivered, s.Dropped)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d + dropped %d != produced %d after 10s", s.Delivered, s.Dropped, s.Produced)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.cancel()
	if err := <-c.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("reader ended with %v, want context.Canceled", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

// pair is a server helper in one cgroup and a client helper in another.
type pair struct {
	server, client         testutil.Cgroup
	serverHelper           string
	clientHelper           string
	listen                 string // address the server listens on, port 0
	serverArgs, clientArgs []string
	// beforeClient, if set, runs once the server listens on port.
	beforeClient func(port uint16)
}

type pairResult struct {
	port        uint16
	serverPID   int
	clientPID   int
	server      map[string]string
	client      map[string]string
	clientPorts []uint16
}

// run starts the server, then the client against it, and waits for both.
func (p pair) run(t *testing.T) pairResult {
	t.Helper()
	srv := p.server.SelfCommand(t, p.serverHelper, append([]string{"-addr", p.listen}, p.serverArgs...)...)
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("server printed no port: %v", sc.Err())
	}
	port, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "port="), 10, 16)
	if err != nil {
		t.Fatalf("server port line %q: %v", sc.Text(), err)
	}
	if p.beforeClient != nil {
		p.beforeClient(uint16(port))
	}
	host, _, _ := net.SplitHostPort(p.listen)
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	cl := p.client.SelfCommand(t, p.clientHelper, append([]string{"-addr", addr}, p.clientArgs...)...)
	clientOut, err := cl.Output()
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := srv.Wait(); err != nil {
		t.Fatalf("server: %v", err)
	}
	res := pairResult{
		port:      uint16(port),
		serverPID: srv.Process.Pid,
		clientPID: cl.Process.Pid,
		server:    helperOutput(rest.String()),
		client:    helperOutput(string(clientOut)),
	}
	for _, s := range strings.Split(res.client["ports"], ",") {
		if v, err := strconv.ParseUint(s, 10, 16); err == nil {
			res.clientPorts = append(res.clientPorts, uint16(v))
		}
	}
	return res
}

func openMeter(t *testing.T, pinDir string) *Meter {
	t.Helper()
	m, err := Open(meter.Config{PinDir: pinDir, CgroupDir: testutil.Cgroup2Dir(t)})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// checkCounts asserts the exact kernel counts of the cgroups.
func checkCounts(t *testing.T, m *Meter, want map[uint64][2]uint64) {
	t.Helper()
	var c meter.Counts
	if err := m.ReadInto(&c); err != nil {
		t.Fatalf("read counts: %v", err)
	}
	for id, w := range want {
		client, _ := c.Get(id, meter.CounterTLSClientHandshakes)
		server, _ := c.Get(id, meter.CounterTLSServerHandshakes)
		got := [2]uint64{client, server}
		if got != w {
			t.Errorf("cgroup %d: (client, server) handshakes = %v, want %v", id, got, w)
		}
	}
}

const handshakes = 20

func TestMeter_handshakes(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		version string
		want    Version
	}{
		{"tls12-ipv4", "127.0.0.1:0", "1.2", VersionTLS12},
		{"tls13-ipv4", "127.0.0.1:0", "1.3", VersionTLS13},
		{"tls12-ipv6", "[::1]:0", "1.2", VersionTLS12},
		{"tls13-ipv6", "[::1]:0", "1.3", VersionTLS13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testutil.NewCgroup(t, "client")
			b := testutil.NewCgroup(t, "server")
			m := openMeter(t, testutil.PinDir(t))
			col := collect(t, m, a.ID, b.ID)
			sni := "shop-" + tt.name + ".kmeter.test"
			res := pair{
				server: b, client: a,
				serverHelper: "tls-server", clientHelper: "tls-client",
				listen:     tt.listen,
				serverArgs: []string{"-n", strconv.Itoa(handshakes), "-version", tt.version},
				clientArgs: []string{"-n", strconv.Itoa(handshakes), "-version", tt.version, "-sni", sni},
			}.run(t)
			if got := res.server["clienthellos"]; got != strconv.Itoa(handshakes) {
				t.Fatalf("server saw %s ClientHellos on the wire, want %d", got, handshakes)
			}

			checkCounts(t, m, map[uint64][2]uint64{a.ID: {handshakes, 0}, b.ID: {0, handshakes}})

			events := col.stop(t)
			ip := netip.MustParseAddrPort(tt.listen).Addr()
			checkEvents(t, events[a.ID], Client, handshakes, func(e Event) error {
				if e.SNI != sni {
					return fmt.Errorf("SNI %q, want %q", e.SNI, sni)
				}
				if e.Dst.Port() != res.port || !slices.Contains(res.clientPorts, e.Src.Port()) {
					return fmt.Errorf("ports %v -> %v, want one of %v -> %d", e.Src, e.Dst, res.clientPorts, res.port)
				}
				if e.PID != uint32(res.clientPID) {
					return fmt.Errorf("pid %d, want client %d", e.PID, res.clientPID)
				}
				return nil
			}, tt.want, ip)
			checkEvents(t, events[b.ID], Server, handshakes, func(e Event) error {
				if e.SNI != "" {
					return fmt.Errorf("server event has SNI %q", e.SNI)
				}
				if e.Src.Port() != res.port || !slices.Contains(res.clientPorts, e.Dst.Port()) {
					return fmt.Errorf("ports %v -> %v, want %d -> one of %v", e.Src, e.Dst, res.port, res.clientPorts)
				}
				if e.PID != uint32(res.serverPID) {
					return fmt.Errorf("pid %d, want server %d", e.PID, res.serverPID)
				}
				return nil
			}, tt.want, ip)
		})
	}
}

// checkEvents asserts exactly n events of kind, version and loopback
// address ip, each also passing check.
func checkEvents(t *testing.T, events []Event, kind Kind, n int, check func(Event) error, version Version, ip netip.Addr) {
	t.Helper()
	var got int
	for _, e := range events {
		if e.Kind != kind {
			t.Errorf("%v event in a %v-only cgroup: %+v", e.Kind, kind, e)
			continue
		}
		got++
		if e.Version != version {
			t.Errorf("%v event version %v, want %v", kind, e.Version, version)
		}
		if e.Src.Addr() != ip || e.Dst.Addr() != ip {
			t.Errorf("%v event addresses %v -> %v, want %v", kind, e.Src, e.Dst, ip)
		}
		if err := check(e); err != nil {
			t.Errorf("%v event: %v (%+v)", kind, err, e)
		}
	}
	if got != n {
		t.Errorf("%d %v events, want %d", got, kind, n)
	}
}

func TestMeter_helloRetryRequest(t *testing.T) {
	a := testutil.NewCgroup(t, "client")
	b := testutil.NewCgroup(t, "server")
	m := openMeter(t, testutil.PinDir(t))
	col := collect(t, m, a.ID, b.ID)
	// crypto/tls sends one key share, for the first curve in its own fixed
	// order (X25519 before P-256); the server accepts only P-256 and asks
	// again with a HelloRetryRequest.
	res := pair{
		server: b, client: a,
		serverHelper: "tls-server", clientHelper: "tls-client",
		listen:     "127.0.0.1:0",
		serverArgs: []string{"-n", strconv.Itoa(handshakes), "-curves", "p256"},
		clientArgs: []string{"-n", strconv.Itoa(handshakes), "-curves", "x25519,p256", "-sni", "retry.kmeter.test"},
	}.run(t)
	if got, want := res.server["clienthellos"], strconv.Itoa(2*handshakes); got != want {
		t.Fatalf("server saw %s ClientHellos on the wire, want %s (no HelloRetryRequest happened)", got, want)
	}
	if got := res.server["retries"]; got != strconv.Itoa(handshakes) {
		t.Fatalf("server sent %s HelloRetryRequests, want %d", got, handshakes)
	}

	checkCounts(t, m, map[uint64][2]uint64{a.ID: {handshakes, 0}, b.ID: {0, handshakes}})
	events := col.stop(t)
	if n := len(events[a.ID]); n != handshakes {
		t.Errorf("%d client events, want %d", n, handshakes)
	}
	if n := len(events[b.ID]); n != handshakes {
		t.Errorf("%d server events, want %d", n, handshakes)
	}
	for _, e := range events[b.ID] {
		if !e.HelloRetry || e.Version != VersionTLS13 {
			t.Errorf("server event: HelloRetry %v, version %v; want true, TLS 1.3", e.HelloRetry, e.Version)
		}
	}
}

func TestMeter_notFirstPayload(t *testing.T) {
	tests := []struct {
		name   string
		mode   string
		listen string
	}{
		{"hello-after-plain-ipv4", "late-hello", "127.0.0.1:0"},
		{"hello-after-plain-ipv6", "late-hello", "[::1]:0"},
		{"not-a-hello-first", "not-tls", "127.0.0.1:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testutil.NewCgroup(t, "client")
			b := testutil.NewCgroup(t, "server")
			m := openMeter(t, testutil.PinDir(t))
			col := collect(t, m, a.ID, b.ID)
			pair{
				server: b, client: a,
				serverHelper: "plain-server", clientHelper: "plain-client",
				listen:     tt.listen,
				serverArgs: []string{"-n", "5"},
				clientArgs: []string{"-n", "5", "-mode", tt.mode, "-sni", "late.kmeter.test"},
			}.run(t)
			checkCounts(t, m, map[uint64][2]uint64{a.ID: {0, 0}, b.ID: {0, 0}})
			events := col.stop(t)
			if n := len(events[a.ID]) + len(events[b.ID]); n != 0 {
				t.Errorf("%d events, want none: %+v", n, events)
			}
		})
	}
}

func TestMeter_restartKeepsCounts(t *testing.T) {
	a := testutil.NewCgroup(t, "client")
	b := testutil.NewCgroup(t, "server")
	pinDir := testutil.PinDir(t)
	run := func(n int) {
		pair{
			server: b, client: a,
			serverHelper: "tls-server", clientHelper: "tls-client",
			listen:     "127.0.0.1:0",
			serverArgs: []string{"-n", strconv.Itoa(n)},
			clientArgs: []string{"-n", strconv.Itoa(n)},
		}.run(t)
	}

	first := openMeter(t, pinDir)
	if first.Status().Reused {
		t.Fatal("first Open reports a reused link")
	}
	run(5)
	checkCounts(t, first, map[uint64][2]uint64{a.ID: {5, 0}, b.ID: {0, 5}})
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// No agent runs: the pinned link keeps counting.
	run(3)
	second := openMeter(t, pinDir)
	if !second.Status().Reused {
		t.Error("second Open did not reuse the pinned link")
	}
	run(4)
	checkCounts(t, second, map[uint64][2]uint64{a.ID: {12, 0}, b.ID: {0, 12}})
}

func TestMeter_Close_idempotent(t *testing.T) {
	m := openMeter(t, testutil.PinDir(t))
	r, err := m.Events()
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		var raw RawEvent
		for {
			if err := r.ReadRaw(&raw); err != nil {
				readErr <- err
				return
			}
		}
	}()
	for i := 0; i < 2; i++ {
		if err := m.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if err := <-readErr; !errors.Is(err, ringbuf.ErrClosed) {
		t.Errorf("blocked read after Close: %v, want ringbuf.ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Reader.Close after Meter.Close: %v", err)
	}
	if err := m.ReadInto(&meter.Counts{}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadInto after Close: %v, want os.ErrClosed", err)
	}
	if _, err := m.Events(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Events after Close: %v, want os.ErrClosed", err)
	}
}

func TestOpen_badConfig(t *testing.T) {
	testutil.RequireBPF(t)
	cgroupDir := testutil.Cgroup2Dir(t)
	tests := []struct {
		name string
		cfg  meter.Config
		want []string
	}{
		{"empty", meter.Config{}, []string{"pin dir is empty", "cgroup2 dir is empty"}},
		{"no cgroup dir", meter.Config{PinDir: testutil.PinDir(t)}, []string{"cgroup2 dir is empty"}},
		{"pin dir not on bpffs", meter.Config{PinDir: t.TempDir(), CgroupDir: cgroupDir}, []string{"not on a bpffs"}},
		{"pin dir missing", meter.Config{PinDir: "/sys/fs/bpf/kmeter-test/missing", CgroupDir: cgroupDir}, []string{"missing: file does not exist"}},
		{"cgroup dir not a cgroup", meter.Config{PinDir: testutil.PinDir(t), CgroupDir: t.TempDir()}, []string{"not on a cgroup2 file system"}},
		{"cgroup dir missing", meter.Config{PinDir: testutil.PinDir(t), CgroupDir: "/nonexistent/cgroup"}, []string{"/nonexistent/cgroup: file does not exist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Open(tt.cfg)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := OpenPrivate(""); err == nil {
		t.Error("OpenPrivate with no cgroup dir succeeded")
	}
}

func TestReader_Read_contextEnds(t *testing.T) {
	testutil.RequireBPF(t)
	m, err := OpenPrivate(testutil.Cgroup2Dir(t))
	testutil.CheckLoad(t, err)
	defer m.Close()
	r, err := m.Events()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		for {
			// Handshakes of other processes may arrive meanwhile.
			if _, err := r.Read(ctx); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Read ended with %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still blocked 10s after its context ended")
	}
}

// TestMeter_uncounted fills the counts map the way thousands of cgroups
// would, then checks that a handshake of one more cgroup is reported as
// uncounted instead of vanishing.
func TestMeter_uncounted(t *testing.T) {
	m := openMeter(t, testutil.PinDir(t))
	if got := m.maps.Handshakes.MaxEntries(); got != countsMaxEntries {
		t.Fatalf("counts map holds %d cgroups, countsMaxEntries says %d", got, countsMaxEntries)
	}
	zero := make([]tlsmeterTlsCounts, mustPossibleCPUs(t)) // one value per CPU
	// The map allocates an entry per update (no preallocation), so an
	// update can fail for want of memory while the map has room: only
	// E2BIG means full. Stopping at any error once left the map short of
	// full under CI's load, and the handshakes below were counted.
	for id, retries := uint64(1), 0; ; {
		err := m.maps.Handshakes.Update(id<<40, zero, ebpf.UpdateNoExist)
		if errors.Is(err, unix.E2BIG) {
			break
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			if retries++; retries > 100 {
				t.Fatalf("fill the counts map: %v", err)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		id, retries = id+1, 0
	}
	a := testutil.NewCgroup(t, "client")
	b := testutil.NewCgroup(t, "server")
	pair{
		server: b, client: a,
		serverHelper: "tls-server", clientHelper: "tls-client",
		listen:     "127.0.0.1:0",
		serverArgs: []string{"-n", "3"},
		clientArgs: []string{"-n", "3"},
	}.run(t)
	n, err := m.Uncounted()
	if err != nil {
		t.Fatal(err)
	}
	// Other processes may have handshaked in new cgroups meanwhile.
	if n < 6 {
		t.Errorf("uncounted = %d, want at least 6 (3 client + 3 server)", n)
	}
	checkCounts(t, m, map[uint64][2]uint64{a.ID: {0, 0}, b.ID: {0, 0}})
}

func mustPossibleCPUs(t *testing.T) int {
	t.Helper()
	n, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMeter_retransmittedHello drops every other hello transmission on lo
// (in practice each hello's first one), after the meter saw it, so TCP
// retransmits the hellos: each handshake still counts exactly once.
func TestMeter_retransmittedHello(t *testing.T) {
	a := testutil.NewCgroup(t, "client")
	b := testutil.NewCgroup(t, "server")
	m := openMeter(t, testutil.PinDir(t))
	col := collect(t, m, a.ID, b.ID)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	var drops, hellos *ebpf.Variable
	const n = 10
	pair{
		server: b, client: a,
		serverHelper: "tls-server", clientHelper: "tls-client",
		listen:     "127.0.0.1:0",
		serverArgs: []string{"-n", strconv.Itoa(n)},
		clientArgs: []string{"-n", strconv.Itoa(n), "-sni", "retransmit.kmeter.test"},
		beforeClient: func(port uint16) {
			spec := unpinnedSpec(t)
			if err := spec.Variables["test_drop_port"].Set(port); err != nil {
				t.Fatal(err)
			}
			var objs struct {
				Drop   *ebpf.Program  `ebpf:"tls_test_drop"`
				Drops  *ebpf.Variable `ebpf:"test_drops"`
				Hellos *ebpf.Variable `ebpf:"test_hellos"`
			}
			testutil.CheckLoad(t, spec.LoadAndAssign(&objs, nil))
			t.Cleanup(func() { objs.Drop.Close() })
			l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: objs.Drop, Attach: ebpf.AttachTCXEgress})
			testutil.CheckLoad(t, err)
			t.Cleanup(func() { l.Close() })
			drops, hellos = objs.Drops, objs.Hellos
		},
	}.run(t)
	var dropped, seen uint64
	if err := drops.Get(&dropped); err != nil {
		t.Fatal(err)
	}
	if err := hellos.Get(&seen); err != nil {
		t.Fatal(err)
	}
	// 2n hellos, each first transmission dropped, each drop seen again
	// as a retransmission.
	if dropped < n || seen < 2*n+dropped {
		t.Fatalf("dropper saw %d hellos and dropped %d; want %d dropped and every drop retransmitted", seen, dropped, n)
	}
	t.Logf("%d hello transmissions on lo, %d dropped and retransmitted", seen, dropped)
	checkCounts(t, m, map[uint64][2]uint64{a.ID: {n, 0}, b.ID: {0, n}})
	events := col.stop(t)
	if len(events[a.ID]) != n || len(events[b.ID]) != n {
		t.Errorf("%d client and %d server events, want %d each", len(events[a.ID]), len(events[b.ID]), n)
	}
}
