package tlsmeter

import (
	"net/netip"
	"strings"
	"testing"
	"unsafe"
)

func TestVersion_String(t *testing.T) {
	tests := []struct {
		v    Version
		want string
	}{
		{VersionSSL30, "SSL 3.0"},
		{VersionTLS10, "TLS 1.0"},
		{VersionTLS11, "TLS 1.1"},
		{VersionTLS12, "TLS 1.2"},
		{VersionTLS13, "TLS 1.3"},
		{0x7f1c, "0x7f1c"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("Version(%#04x).String() = %q, want %q", uint16(tt.v), got, tt.want)
		}
	}
}

// rawRecord lays out a record as the kernel writes it into the ring.
func rawRecord(ev RawEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&ev)), rawEventSize)
}

func setString[T int8 | uint8](dst []T, s string) {
	for i := 0; i < len(s); i++ {
		dst[i] = T(s[i])
	}
}

func TestDecode(t *testing.T) {
	v4 := RawEvent{TimestampNs: 1_000, CgroupId: 42, Pid: 7, Sport: 40000, Dport: 8443, IpVersion: 4}
	copy(v4.Saddr[:], []byte{127, 0, 0, 1})
	copy(v4.Daddr[:], []byte{10, 1, 2, 3})
	setString(v4.Comm[:], "curl")
	v4.Hello.Kind = uint8(Client)
	v4.Hello.Version = uint16(VersionTLS13)
	v4.Hello.SniLen = 11
	setString(v4.Hello.Sni[:], "example.com")

	v6 := RawEvent{CgroupId: 43, Sport: 443, Dport: 50000, IpVersion: 6}
	v6.Saddr[15] = 1
	v6.Daddr = netip.MustParseAddr("2001:db8::9").As16()
	v6.Hello.Kind = uint8(Server)
	v6.Hello.Version = uint16(VersionTLS12)
	v6.Hello.Flags = flagHelloRetry

	long := v4
	long.Hello.SniLen = SNIMax
	long.Hello.Flags = flagSNITruncated
	setString(long.Hello.Sni[:], strings.Repeat("a", SNIMax))

	tests := []struct {
		name string
		raw  RawEvent
		want Event
	}{
		{"ipv4 client with SNI", v4, Event{
			CgroupID: 42, PID: 7, Comm: "curl", Kind: Client, Version: VersionTLS13, SNI: "example.com",
			Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.1.2.3:8443"),
		}},
		{"ipv6 server after retry", v6, Event{
			CgroupID: 43, Kind: Server, Version: VersionTLS12, HelloRetry: true,
			Src: netip.MustParseAddrPort("[::1]:443"), Dst: netip.MustParseAddrPort("[2001:db8::9]:50000"),
		}},
		{"truncated SNI", long, Event{
			CgroupID: 42, PID: 7, Comm: "curl", Kind: Client, Version: VersionTLS13,
			SNI: strings.Repeat("a", SNIMax), SNITruncated: true,
			Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.1.2.3:8443"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw RawEvent
			if err := decodeRaw(rawRecord(tt.raw), &raw); err != nil {
				t.Fatal(err)
			}
			got := newEvent(&raw, 5_000)
			if got.Time.UnixNano() != int64(tt.raw.TimestampNs)+5_000 {
				t.Errorf("time %d, want %d", got.Time.UnixNano(), int64(tt.raw.TimestampNs)+5_000)
			}
			got.Time = tt.want.Time
			if got != tt.want {
				t.Errorf("event\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecode_shortRecord(t *testing.T) {
	var raw RawEvent
	if err := decodeRaw(make([]byte, rawEventSize-8), &raw); err == nil {
		t.Fatal("decoded a short record")
	}
}
