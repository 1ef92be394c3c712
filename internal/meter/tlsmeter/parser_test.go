package tlsmeter

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

// The parser in bpf/include/tls.h is tested on crafted frames through the
// tls_parse_test program (BPF_PROG_TEST_RUN), with hellos recorded from
// real crypto/tls handshakes.

// parser loads tls_parse_test and its result map.
func parser(t *testing.T) func(frame []byte) tlsmeterParseResult {
	t.Helper()
	testutil.RequireBPF(t)
	spec := unpinnedSpec(t)
	var objs struct {
		Prog *ebpf.Program `ebpf:"tls_parse_test"`
		Out  *ebpf.Map     `ebpf:"parse_out"`
	}
	testutil.CheckLoad(t, spec.LoadAndAssign(&objs, nil))
	t.Cleanup(func() { objs.Prog.Close(); objs.Out.Close() })
	return func(frame []byte) tlsmeterParseResult {
		t.Helper()
		if _, err := objs.Prog.Run(&ebpf.RunOptions{Data: frame}); err != nil {
			t.Fatalf("run parser: %v", err)
		}
		var res tlsmeterParseResult
		if err := objs.Out.Lookup(uint32(0), &res); err != nil {
			t.Fatalf("read parser result: %v", err)
		}
		return res
	}
}

var (
	src4 = netip.MustParseAddr("10.0.0.1")
	dst4 = netip.MustParseAddr("10.0.0.2")
	src6 = netip.MustParseAddr("2001:db8::1")
	dst6 = netip.MustParseAddr("2001:db8::2")
)

// frame builds an Ethernet frame carrying payload in TCP (or UDP when
// udp), from port 40000 to 8443, with tcpOpts bytes of TCP options.
func frame(v6, udp bool, tcpOpts int, payload []byte) []byte {
	var l4 []byte
	proto := byte(6)
	if udp {
		proto = 17
		l4 = binary.BigEndian.AppendUint16(nil, 40000)
		l4 = binary.BigEndian.AppendUint16(l4, 8443)
		l4 = binary.BigEndian.AppendUint16(l4, uint16(8+len(payload)))
		l4 = append(l4, 0, 0)
	} else {
		l4 = binary.BigEndian.AppendUint16(nil, 40000)
		l4 = binary.BigEndian.AppendUint16(l4, 8443)
		l4 = append(l4, 0, 0, 0, 1, 0, 0, 0, 1)
		l4 = append(l4, byte((20+tcpOpts)/4)<<4, 0x18, 0xff, 0xff, 0, 0, 0, 0)
		l4 = append(l4, bytes.Repeat([]byte{1}, tcpOpts)...) // NOP options
	}
	l4 = append(l4, payload...)
	f := append(make([]byte, 12), 0x08, 0x00)
	if v6 {
		f[12], f[13] = 0x86, 0xdd
		f = append(f, 0x60, 0, 0, 0)
		f = binary.BigEndian.AppendUint16(f, uint16(len(l4)))
		f = append(f, proto, 64)
		f = append(f, src6.AsSlice()...)
		f = append(f, dst6.AsSlice()...)
	} else {
		f = append(f, 0x45, 0)
		f = binary.BigEndian.AppendUint16(f, uint16(20+len(l4)))
		f = append(f, 0, 0, 0x40, 0, 64, proto, 0, 0)
		f = append(f, src4.AsSlice()...)
		f = append(f, dst4.AsSlice()...)
	}
	return append(f, l4...)
}

// firstWrite records the first record a TLS peer writes.
type firstWrite struct {
	net.Conn
	got chan []byte
}

func (c *firstWrite) Write(p []byte) (int, error) {
	select {
	case c.got <- append([]byte(nil), p...):
	default:
	}
	return c.Conn.Write(p)
}

// hellos runs a handshake in memory and returns the first record of each
// side: the ClientHello and the ServerHello (or HelloRetryRequest).
func hellos(t *testing.T, client, server *tls.Config) (clientHello, serverHello []byte) {
	t.Helper()
	cert, err := testutil.SelfSignedCert("kmeter-test")
	if err != nil {
		t.Fatal(err)
	}
	server = server.Clone()
	server.Certificates = []tls.Certificate{cert}
	client = client.Clone()
	client.InsecureSkipVerify = true
	a, b := net.Pipe()
	ca := &firstWrite{Conn: a, got: make(chan []byte, 1)}
	sb := &firstWrite{Conn: b, got: make(chan []byte, 1)}
	go func() { _ = tls.Client(ca, client).Handshake() }()
	go func() { _ = tls.Server(sb, server).Handshake() }()
	clientHello, serverHello = firstRecord(t, <-ca.got), firstRecord(t, <-sb.got)
	a.Close()
	b.Close()
	return clientHello, serverHello
}

func firstRecord(t *testing.T, b []byte) []byte {
	t.Helper()
	if len(b) < 5 {
		t.Fatalf("short write %x", b)
	}
	n := 5 + int(b[3])<<8 | int(b[4])
	if len(b) < n {
		t.Fatalf("record of %d bytes in a write of %d", n, len(b))
	}
	return b[:n]
}

func TestParser(t *testing.T) {
	run := parser(t)
	tls13 := &tls.Config{ServerName: "shop.kmeter.test"}
	tls12 := &tls.Config{ServerName: "shop.kmeter.test", MaxVersion: tls.VersionTLS12}
	ch13, sh13 := hellos(t, tls13, &tls.Config{})
	ch12, sh12 := hellos(t, tls12, &tls.Config{MaxVersion: tls.VersionTLS12})
	_, hrr := hellos(t, tls13, &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256}})
	longName := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".test"
	chLong, _ := hellos(t, &tls.Config{ServerName: longName}, &tls.Config{})
	chNoSNI, _ := hellos(t, &tls.Config{ServerName: "127.0.0.1"}, &tls.Config{})

	// GREASE (RFC 8701) in supported_versions must not count as a version.
	sv := []byte{0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03}
	i := bytes.Index(ch13, sv)
	if i < 0 {
		t.Fatalf("no supported_versions [1.3, 1.2] in the ClientHello")
	}
	grease := bytes.Clone(ch13)
	grease[i+5], grease[i+6] = 0x7a, 0x7a
	finished := bytes.Clone(ch13)
	finished[5] = 20

	type want struct {
		flowRet int32
		kind    Kind
		version Version
		flags   uint8
		sni     string
		payload uint32
	}
	tests := []struct {
		name    string
		frame   []byte
		want    want
		anySNI  bool // the SNI may or may not be in the bytes kept
		anyVers bool
	}{
		{"TLS 1.3 ClientHello IPv4", frame(false, false, 0, ch13), want{kind: Client, version: VersionTLS13, sni: "shop.kmeter.test", payload: uint32(len(ch13))}, false, false},
		{"TLS 1.3 ClientHello IPv6", frame(true, false, 0, ch13), want{kind: Client, version: VersionTLS13, sni: "shop.kmeter.test", payload: uint32(len(ch13))}, false, false},
		{"TCP options", frame(false, false, 12, ch13), want{kind: Client, version: VersionTLS13, sni: "shop.kmeter.test", payload: uint32(len(ch13))}, false, false},
		{"TLS 1.2 ClientHello", frame(false, false, 0, ch12), want{kind: Client, version: VersionTLS12, sni: "shop.kmeter.test", payload: uint32(len(ch12))}, false, false},
		{"TLS 1.3 ServerHello", frame(false, false, 0, sh13), want{kind: Server, version: VersionTLS13, payload: uint32(len(sh13))}, false, false},
		{"TLS 1.2 ServerHello", frame(true, false, 0, sh12), want{kind: Server, version: VersionTLS12, payload: uint32(len(sh12))}, false, false},
		{"HelloRetryRequest", frame(false, false, 0, hrr), want{kind: Server, version: VersionTLS13, flags: flagHelloRetry, payload: uint32(len(hrr))}, false, false},
		{"GREASE version ignored", frame(false, false, 0, grease), want{kind: Client, version: VersionTLS12, sni: "shop.kmeter.test", payload: uint32(len(grease))}, false, false},
		{"long SNI cut", frame(false, false, 0, chLong), want{kind: Client, version: VersionTLS13, flags: flagSNITruncated, sni: longName[:SNIMax], payload: uint32(len(chLong))}, false, false},
		{"no SNI for an IP address", frame(false, false, 0, chNoSNI), want{kind: Client, version: VersionTLS13, payload: uint32(len(chNoSNI))}, false, false},
		{"hello cut by the segment", frame(false, false, 0, ch13[:100]), want{kind: Client, payload: 100}, true, true},
		{"Finished record", frame(false, false, 0, finished), want{payload: uint32(len(finished))}, false, false},
		{"application data", frame(false, false, 0, append([]byte{23, 3, 3, 0, 64}, make([]byte, 64)...)), want{payload: 69}, false, false},
		{"HTTP", frame(false, false, 0, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), want{payload: 27}, false, false},
		{"record header only", frame(false, false, 0, ch13[:8]), want{payload: 8}, false, false},
		{"pure ACK", frame(false, false, 0, nil), want{}, false, false},
		{"UDP", frame(false, true, 0, ch13), want{flowRet: -1}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(tt.frame)
			sni := ""
			if n := int(res.Hello.SniLen); n > 0 && n <= SNIMax {
				sni = string(int8Bytes(res.Hello.Sni[:n]))
			}
			got := want{
				flowRet: res.FlowRet,
				kind:    Kind(res.Kind),
				version: Version(res.Hello.Version),
				flags:   res.Hello.Flags,
				sni:     sni,
				payload: res.Flow.PayloadLen,
			}
			if tt.anySNI {
				got.sni = tt.want.sni
			}
			if tt.anyVers {
				got.version = tt.want.version
			}
			if got != tt.want {
				t.Errorf("parsed %+v\n          want %+v", got, tt.want)
			}
			if res.FlowRet != 0 {
				return
			}
			if res.Flow.Sport != 40000 || res.Flow.Dport != 8443 {
				t.Errorf("ports %d -> %d, want 40000 -> 8443", res.Flow.Sport, res.Flow.Dport)
			}
			wantSrc, wantVer := src4, uint8(4)
			if res.Flow.IpVersion == 6 {
				wantSrc, wantVer = src6, 6
			}
			if gotSrc, _ := netip.AddrFromSlice(res.Flow.Saddr[:wantSrc.BitLen()/8]); gotSrc != wantSrc || res.Flow.IpVersion != wantVer {
				t.Errorf("source %v (IPv%d), want %v", gotSrc, res.Flow.IpVersion, wantSrc)
			}
		})
	}
}

func int8Bytes(s []int8) []byte {
	b := make([]byte, len(s))
	for i, c := range s {
		b[i] = byte(c)
	}
	return b
}
