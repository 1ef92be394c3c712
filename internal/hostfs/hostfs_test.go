package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCgroup2Dir(t *testing.T) {
	for _, tc := range []struct {
		name, mounts, want string
		err                error
	}{
		{"hybrid", "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n", "/sys/fs/cgroup/unified", nil},
		{"unified", "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n", "/sys/fs/cgroup", nil},
		{"escaped space", `cgroup2 /mnt/my\040cg cgroup2 rw 0 0` + "\n", "/mnt/my cg", nil},
		{"none", "proc /proc proc rw 0 0\n", "", ErrNoCgroup2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "mounts")
			if err := os.WriteFile(f, []byte(tc.mounts), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := Cgroup2Dir(f)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("Cgroup2Dir = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestEnsureBPFFS_notBPFFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount bpffs")
	}
	err := EnsureBPFFS(t.TempDir())
	if err == nil {
		t.Fatal("a tmp dir is not on bpffs: want an error")
	}
}
