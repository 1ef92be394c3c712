package tlsmeter

import (
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 15, 4, 5, 123456000, time.Local)
	tests := []struct {
		name   string
		e      Event
		cgroup string
		want   string
	}{
		{"client with SNI", Event{
			Time: at, CgroupID: 9, PID: 42, Comm: "curl", Kind: Client, Version: VersionTLS13, SNI: "example.com",
			Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.0.0.2:443"),
		}, "/shop/web", "15:04:05.123456 /shop/web pid=42 comm=curl client TLS 1.3 10.0.0.1:40000 -> 10.0.0.2:443 sni=example.com"},
		{"server in softirq, unknown cgroup, retry", Event{
			Time: at, CgroupID: 9, Kind: Server, Version: VersionTLS13, HelloRetry: true,
			Src: netip.MustParseAddrPort("[::1]:443"), Dst: netip.MustParseAddrPort("[::1]:50000"),
		}, "", "15:04:05.123456 cgroup:9 pid=0 comm=- server TLS 1.3 [::1]:443 -> [::1]:50000 hello-retry"},
		{"truncated SNI", Event{
			Time: at, CgroupID: 9, PID: 1, Comm: "x", Kind: Client, Version: VersionTLS12, SNI: "abc", SNITruncated: true,
			Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.0.2:2"),
		}, "/", "15:04:05.123456 / pid=1 comm=x client TLS 1.2 10.0.0.1:1 -> 10.0.0.2:2 sni=abc..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatEvent(tt.e, tt.cgroup); got != tt.want {
				t.Errorf("FormatEvent\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCgroupNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "shop", "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	inode := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	names := newCgroupNames(root)
	if got := names.path(inode(dir)); got != "/shop/web" {
		t.Errorf("path = %q, want /shop/web", got)
	}
	if got := names.path(inode(root)); got != "/" {
		t.Errorf("root path = %q, want /", got)
	}
	later := filepath.Join(root, "later")
	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := names.path(inode(later)); got != "" {
		t.Errorf("new cgroup resolved to %q before the rescan interval passed", got)
	}
	names.interval = 0
	if got := names.path(inode(later)); got != "/later" {
		t.Errorf("path after rescan = %q, want /later", got)
	}
}
