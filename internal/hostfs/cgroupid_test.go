package hostfs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCgroupPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("opening cgroups by file handle needs CAP_DAC_READ_SEARCH: run as root")
	}
	mnt, err := Cgroup2Dir("/proc/mounts")
	if err != nil {
		t.Skipf("no cgroup2 mount: %v", err)
	}
	dir, err := os.MkdirTemp(mnt, "kmeter-hostfs-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	m, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	got, ok, err := CgroupPath(m, st.Ino)
	if err != nil || !ok || filepath.Clean(got) != filepath.Clean(dir) {
		t.Fatalf("CgroupPath(%d) = %q, %v, %v; want %q, true, nil", st.Ino, got, ok, err, dir)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := CgroupPath(m, st.Ino); err != nil || ok {
		t.Fatalf("CgroupPath of a removed cgroup = %q, %v, %v; want not found", got, ok, err)
	}
}
