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
			got := newEvent(&raw, 5_000, &interner{m: map[string]string{}})
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

func BenchmarkDecode(b *testing.B) {
	raw := RawEvent{CgroupId: 42, Pid: 7, Sport: 40000, Dport: 8443, IpVersion: 4}
	setString(raw.Comm[:], "curl")
	raw.Hello.SniLen = 11
	setString(raw.Hello.Sni[:], "example.com")
	rec := rawRecord(raw)
	for _, bb := range []struct {
		name  string
		names *interner
	}{{"interned", &interner{m: map[string]string{}}}, {"allocating", nil}} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			var ev RawEvent
			for b.Loop() {
				if err := decodeRaw(rec, &ev); err != nil {
					b.Fatal(err)
				}
				_ = newEvent(&ev, 0, bb.names)
			}
		})
	}
}

func TestInterner(t *testing.T) {
	in := &interner{m: map[string]string{}}
	a := in.get([]byte("example.com"))
	b := in.get([]byte("example.com"))
	if a != "example.com" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Errorf("repeated name not shared: %q %q", a, b)
	}
	if got := in.get(nil); got != "" {
		t.Errorf("empty name = %q", got)
	}
	for i := 0; i < maxInterned+10; i++ {
		in.get([]byte(strings.Repeat("x", i%200) + string(rune('a'+i%26)) + string(rune(i))))
	}
	if len(in.m) > maxInterned {
		t.Errorf("interner holds %d names, limit %d", len(in.m), maxInterned)
	}
	var nilIn *interner
	if got := nilIn.get([]byte("x")); got != "x" {
		t.Errorf("nil interner = %q", got)
	}
}
