package enforce

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/testutil"
)

// helperUDP sends N datagrams of SIZE bytes to ADDR.
func helperUDP(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: udp ADDR N SIZE")
	}
	n, _ := strconv.Atoi(args[1])
	size, _ := strconv.Atoi(args[2])
	c, err := net.Dial("udp4", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("datagram %d: %w", i, err)
		}
	}
	return nil
}

// udpSink counts datagrams received on addr.
func udpSink(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	var n atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return pc.LocalAddr().String(), &n
}

func sendUDP(t *testing.T, cg testutil.Cgroup, addr string, n, size int) {
	t.Helper()
	if err := cg.SelfCommand(t, "udp", addr, strconv.Itoa(n), strconv.Itoa(size)).Run(); err != nil {
		t.Fatalf("udp helper: %v", err)
	}
}

// TestEnforcer_slices sends real datagrams from a tenant into three
// networks: a slice of that tenant, a slice of every tenant with its own
// egress limit, and no slice. Each slice meters exactly its packets and
// bytes; the limited slice's drops are exactly the datagrams that never
// arrived.
func TestEnforcer_slices(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "slices")
	videoAddr, video := udpSink(t, "127.0.0.2:0")
	iotAddr, iot := udpSink(t, "127.0.0.3:0")
	otherAddr, other := udpSink(t, "127.0.0.4:0")
	_, videoPort, _ := net.SplitHostPort(videoAddr)
	_, iotPort, _ := net.SplitHostPort(iotAddr)

	slices, err := ParseSlices([]config.Slice{
		{Name: "video", ID: 7, Rules: []config.SliceRule{
			// A /24 for the video port, and inside it a /32 whose own
			// trie entry must inherit the /24's port range.
			{Tenant: cg.Rel, CIDR: "127.0.0.0/24", Ports: videoPort},
			{Tenant: cg.Rel, CIDR: "127.0.0.4/32", Ports: "1-10"},
		}},
		// For every tenant: the tenant's own /24 entry does not match this
		// port, so the kernel falls back to the every-tenant rules.
		{Name: "iot", ID: 9, Egress: "64KiB/s", EgressBurst: MinByteBurst, Rules: []config.SliceRule{{CIDR: "127.0.0.3/32", Ports: iotPort}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetSlices(slices); err != nil {
		t.Fatal(err)
	}

	sendUDP(t, cg, videoAddr, 50, 500)
	sendUDP(t, cg, iotAddr, 200, 1000)
	sendUDP(t, cg, otherAddr, 10, 100)
	time.Sleep(200 * time.Millisecond) // let the sinks drain their sockets

	if video.Load() != 50 || other.Load() != 10 {
		t.Fatalf("sinks got video %d of 50, other %d of 10", video.Load(), other.Load())
	}
	got, err := e.SliceCounts()
	if err != nil {
		t.Fatal(err)
	}
	const hdr = 20 + 8 // IPv4 + UDP
	if want := (SliceCounts{TxBytes: 50 * (500 + hdr), TxPackets: 50}); got[7] != want {
		t.Errorf("slice video counted %+v, want %+v", got[7], want)
	}
	arrived := uint64(iot.Load())
	if want := (SliceCounts{TxBytes: arrived * (1000 + hdr), TxPackets: arrived, Dropped: 200 - arrived}); got[9] != want || arrived == 200 {
		t.Errorf("slice iot counted %+v, want %+v (its 64KiB/s limit must drop some of 200 datagrams)", got[9], want)
	}
	if len(got) != 2 {
		t.Errorf("slices with traffic: %v, want only 7 and 9", got)
	}
	t.Logf("iot slice: %d of 200 datagrams of 1000 B passed its 64 KiB/s limit", arrived)

	expected := fmt.Sprintf(`
# HELP kmeter_slice_packets_total Packets matched by a network slice.
# TYPE kmeter_slice_packets_total counter
kmeter_slice_packets_total{direction="rx",slice="iot"} 0
kmeter_slice_packets_total{direction="rx",slice="video"} 0
kmeter_slice_packets_total{direction="tx",slice="iot"} %d
kmeter_slice_packets_total{direction="tx",slice="video"} 50
# HELP kmeter_slice_dropped_total Egress packets dropped by a network slice's own limit.
# TYPE kmeter_slice_dropped_total counter
kmeter_slice_dropped_total{slice="iot"} %d
kmeter_slice_dropped_total{slice="video"} 0
`, arrived, 200-arrived)
	if err := promtest.CollectAndCompare(e.Collector(), strings.NewReader(expected), "kmeter_slice_packets_total", "kmeter_slice_dropped_total"); err != nil {
		t.Error(err)
	}

	// Replacing the slices removes the old rules from the kernel.
	if err := e.SetSlices(nil); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, cg, videoAddr, 5, 500)
	if got, _ := e.SliceCounts(); got[7].TxPackets != 50 {
		t.Errorf("after removing the slices, video counted %d packets, want still 50", got[7].TxPackets)
	}
}
