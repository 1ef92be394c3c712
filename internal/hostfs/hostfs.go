// Package hostfs finds and prepares the kernel file systems kmeter needs:
// the cgroup v2 hierarchy, bpffs for pinned objects and tracefs for
// classic tracepoints. Paths are never hard-coded: they come from
// /proc/mounts (or the file named in [Mounts]), so tests can use fixtures.
package hostfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 is returned when no cgroup v2 file system is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 file system is mounted (mount one with: mount -t cgroup2 none /sys/fs/cgroup)")

// Mount is one line of /proc/mounts.
type Mount struct {
	Device, Dir, Type, Options string
}

// ReadMounts parses a /proc/mounts style file.
func ReadMounts(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return parseMounts(f)
}

func parseMounts(r io.Reader) ([]Mount, error) {
	var ms []Mount
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 4 {
			continue
		}
		ms = append(ms, Mount{Device: f[0], Dir: unescape(f[1]), Type: f[2], Options: f[3]})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("parse mounts: %w", err)
	}
	return ms, nil
}

// unescape undoes the octal escapes (\040 for space) of /proc/mounts.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Cgroup2Dir returns the first cgroup2 mount point listed in the mounts
// file (normally /proc/mounts). On hybrid hosts this is often
// /sys/fs/cgroup/unified, on modern hosts /sys/fs/cgroup.
func Cgroup2Dir(mountsFile string) (string, error) {
	ms, err := ReadMounts(mountsFile)
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.Type == "cgroup2" {
			return m.Dir, nil
		}
	}
	return "", ErrNoCgroup2
}

// EnsureBPFFS makes sure dir lives on a bpffs, mounting one at
// /sys/fs/bpf when nothing is mounted there yet, and creates dir.
func EnsureBPFFS(dir string) error {
	if err := mountIfMissing("/sys/fs/bpf", "bpf", unix.BPF_FS_MAGIC); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w (is it on a writable bpffs?)", dir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("stat pin dir %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin dir %s is not on a bpffs: choose a dir under /sys/fs/bpf or mount one with: mount -t bpf bpf %s", dir, dir)
	}
	// bpffs refuses names with dots, so the probe has none.
	probe := filepath.Join(dir, "kmeter-write-test")
	if err := os.Mkdir(probe, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pin dir %s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)
	return nil
}

// EnsureTracefs makes sure tracefs is reachable, which cilium/ebpf needs to
// attach classic tracepoints, and returns its mount point.
func EnsureTracefs() (string, error) {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if _, err := os.Stat(filepath.Join(dir, "events")); err == nil {
			return dir, nil
		}
	}
	if err := mountIfMissing("/sys/kernel/tracing", "tracefs", unix.TRACEFS_MAGIC); err != nil {
		return "", err
	}
	return "/sys/kernel/tracing", nil
}

func mountIfMissing(dir, fstype string, magic int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == magic {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s mount point %s: %w", fstype, dir, err)
	}
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s at %s: %w (as root run: mount -t %s %s %s)", fstype, dir, err, fstype, fstype, dir)
	}
	return nil
}
