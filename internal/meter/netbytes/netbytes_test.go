package netbytes

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/metertest"
	"github.com/kmeter/kmeter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(metertest.Helpers())
	os.Exit(m.Run())
}

// Header overhead bound. Each packet the meter sees carries its IP header
// (IPv4: at most 60 bytes with options; IPv6: 40 without extension
// headers) and a TCP header (at most 60 with options) on top of its
// payload, so a packet adds at most maxHeaders bytes beyond its payload.
//
// The packet count comes from the kernel, independently of the meter:
// tcpi_segs_out/in of the workload's sockets count wire segments (loopback
// MTU 65536, so at most 64 KiB each). The meter sees at most that many
// packets: a GSO skb of several segments passes the egress hook once
// with one header. A socket's counters miss at most handshakeSlack
// packets per connection: the SYN and handshake ACK handled by the
// listener, the SYN-ACK sent by the request socket, and the peer's last
// ACK that arrives after the helper read TCP_INFO.
const (
	maxHeaders     = 120
	handshakeSlack = 4
)

func bound(payload, segs uint64, conns int) uint64 {
	return payload + (segs+handshakeSlack*uint64(conns))*maxHeaders
}

func openMeter(t *testing.T, pinDir string) *Meter {
	t.Helper()
	m, err := Open(meter.Config{PinDir: pinDir, CgroupDir: testutil.Cgroup2Dir(t)})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// read returns the meter's counts as cgroup id -> counter name -> value.
func read(t *testing.T, m *Meter) map[uint64]map[string]uint64 {
	t.Helper()
	var c meter.Counts
	if err := m.ReadInto(&c); err != nil {
		t.Fatal(err)
	}
	return c.Map()
}

func checkRange(t *testing.T, what string, got, lo, hi uint64) {
	t.Helper()
	t.Logf("%s = %d, bounds [%d, %d]", what, got, lo, hi)
	if got < lo || got > hi {
		t.Errorf("%s = %d, want in [%d, %d]", what, got, lo, hi)
	}
}

func TestMeter_countsBytesPerCgroup(t *testing.T) {
	for _, tc := range []struct {
		name           string
		network        string
		conns, payload int
	}{
		{"ipv4 bulk", "tcp4", 2, 1 << 20},
		{"ipv6 bulk", "tcp6", 2, 1 << 20},
		{"ipv4 small", "tcp4", 5, 1000},
		{"ipv6 small", "tcp6", 5, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := openMeter(t, testutil.PinDir(t))
			if st := m.Status(); st.Hook != Hook || st.Fallback || st.Reused {
				t.Fatalf("status = %+v, want hook %s, no fallback, not reused", st, Hook)
			}
			client := testutil.NewCgroup(t, "client")
			server := testutil.NewCgroup(t, "server")

			srv, cli := metertest.RunTCP(t, server, client, tc.network, tc.conns, tc.payload)

			c := read(t, m)
			b := uint64(tc.conns * tc.payload)
			if cli.BytesSent < b || srv.BytesSent != 0 {
				t.Fatalf("tcp_info: client sent %d payload bytes, server %d; want >= %d and 0", cli.BytesSent, srv.BytesSent, b)
			}
			// Retransmitted payload (cli.BytesSent > b) really crosses
			// the loopback twice, so it counts: the upper bounds use it.
			checkRange(t, "client net_tx_bytes", c[client.ID][meter.NetTxBytes], cli.BytesSent, bound(cli.BytesSent, cli.SegsOut, tc.conns))
			checkRange(t, "server net_rx_bytes", c[server.ID][meter.NetRxBytes], b, bound(cli.BytesSent, srv.SegsIn, tc.conns))
			// The other direction carries only headers (ACKs, SYN-ACK, FIN).
			checkRange(t, "server net_tx_bytes", c[server.ID][meter.NetTxBytes], 1, bound(0, srv.SegsOut, tc.conns))
			checkRange(t, "client net_rx_bytes", c[client.ID][meter.NetRxBytes], 1, bound(0, cli.SegsIn, tc.conns))
			of, err := m.Overflow()
			if err != nil {
				t.Fatal(err)
			}
			if of[meter.NetTxBytes] != 0 || of[meter.NetRxBytes] != 0 {
				t.Errorf("overflow = %v, want none", of)
			}
			stats, err := m.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if stats.MaxEntries != MaxEntries || stats.Entries < 4 {
				t.Errorf("stats = %+v, want %d max entries and at least our 4 keys", stats, MaxEntries)
			}
		})
	}
}

// An agent restart must neither lose the bytes sent while it was down nor
// count any twice (twice would be about 2x the payload, far above the
// header bound).
//
// Bytes are bounded by what TCP itself says it sent (tcpi_bytes_sent,
// payload with retransmissions) plus at most maxHeaders per segment.
func TestMeter_restartKeepsCounting(t *testing.T) {
	const payload = 256 << 10
	pinDir := testutil.PinDir(t)
	client := testutil.NewCgroup(t, "client")
	server := testutil.NewCgroup(t, "server")
	var segs, sent uint64
	run := func() {
		_, cli := metertest.RunTCP(t, server, client, "tcp4", 1, payload)
		segs += cli.SegsOut
		sent += cli.BytesSent // payload plus retransmissions
	}

	first := openMeter(t, pinDir)
	run()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	run() // no Meter open: the pinned links count

	second := openMeter(t, pinDir)
	if !second.Status().Reused {
		t.Errorf("second open: status %+v, want Reused", second.Status())
	}
	checkRange(t, "tx after restart", read(t, second)[client.ID][meter.NetTxBytes], sent, bound(sent, segs, 2))

	third := openMeter(t, pinDir)
	if !third.Status().Reused {
		t.Errorf("third open: status %+v, want Reused", third.Status())
	}
	run()
	for _, m := range []*Meter{second, third} {
		checkRange(t, "tx after third open", read(t, m)[client.ID][meter.NetTxBytes], sent, bound(sent, segs, 3))
	}
}

func TestMeter_Close_idempotent(t *testing.T) {
	m := openMeter(t, testutil.PinDir(t))
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
	if err := m.ReadInto(&meter.Counts{}); !errors.Is(err, meter.ErrClosed) {
		t.Errorf("ReadInto after Close = %v, want ErrClosed", err)
	}
}

func TestOpen_badConfig(t *testing.T) {
	pinDir := testutil.PinDir(t)
	cgroupDir := testutil.Cgroup2Dir(t)
	for _, tc := range []struct {
		name string
		cfg  meter.Config
		want []string
	}{
		{"empty config", meter.Config{}, []string{"pin dir is empty", "cgroup2 dir is empty"}},
		{"pin dir not on bpffs", meter.Config{PinDir: t.TempDir(), CgroupDir: cgroupDir}, []string{"not on a bpffs"}},
		{"missing cgroup dir", meter.Config{PinDir: pinDir, CgroupDir: "/no/such/cgroup"}, []string{"cgroup2 dir /no/such/cgroup: file does not exist"}},
		{"cgroup dir not cgroup2", meter.Config{PinDir: pinDir, CgroupDir: t.TempDir()}, []string{"not on a cgroup2 file system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Open(tc.cfg)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
