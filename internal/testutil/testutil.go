// Package testutil helps tests that load BPF programs: they fail in CI
// (KMETER_REQUIRE_BPF=1) where the kernel should support them and skip with
// a clear message elsewhere; each test gets its own pin directory and its
// own cgroups, and cleans up after itself.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/hostfs"
)

// RequireBPF skips the test when BPF cannot be used here (not root), unless
// KMETER_REQUIRE_BPF=1, in which case it fails instead.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "BPF tests need root")
	}
}

// SkipOrFail skips with reason, or fails when KMETER_REQUIRE_BPF=1.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("KMETER_REQUIRE_BPF") == "1" {
		tb.Fatalf("KMETER_REQUIRE_BPF=1 but: %s", msg)
	}
	tb.Skipf("skipping BPF test: %s (set KMETER_REQUIRE_BPF=1 to make this a failure)", msg)
}

// CheckLoad fails or skips the test when err, from loading or attaching
// BPF programs, is not nil.
func CheckLoad(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		SkipOrFail(tb, "load BPF: %v", err)
	}
}

// PinDir returns a fresh directory on bpffs, removed when the test ends.
func PinDir(tb testing.TB) string {
	tb.Helper()
	RequireBPF(tb)
	base := filepath.Join("/sys/fs/bpf", "kmeter-test")
	if err := hostfs.EnsureBPFFS(base); err != nil {
		SkipOrFail(tb, "bpffs: %v", err)
	}
	dir, err := os.MkdirTemp(base, sanitize(tb.Name())+"-")
	if err != nil {
		tb.Fatalf("pin dir: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Cgroup2Dir returns the cgroup v2 mount point of this host.
func Cgroup2Dir(tb testing.TB) string {
	tb.Helper()
	dir, err := hostfs.Cgroup2Dir("/proc/mounts")
	if err != nil {
		SkipOrFail(tb, "%v", err)
	}
	return dir
}

// Cgroup is a child cgroup made for one test.
type Cgroup struct {
	// Path is the absolute directory of the cgroup.
	Path string
	// Rel is the path relative to the cgroup2 mount, starting with "/".
	Rel string
	// ID is the cgroup id (the directory's inode number), as BPF sees it.
	ID uint64
}

// NewCgroup creates a cgroup named after the test and name under the
// cgroup2 mount (nested paths like "shop/web" are allowed) and removes it
// when the test ends, killing processes left in it.
func NewCgroup(tb testing.TB, name string) Cgroup {
	tb.Helper()
	RequireBPF(tb)
	root := Cgroup2Dir(tb)
	rel := "/kmeter-test-" + sanitize(tb.Name()) + fmt.Sprintf("-%d", os.Getpid()) + "/" + strings.Trim(name, "/")
	path := filepath.Join(root, rel)
	if err := os.MkdirAll(path, 0o755); err != nil {
		tb.Fatalf("create cgroup %s: %v", path, err)
	}
	top := filepath.Join(root, strings.SplitN(strings.TrimPrefix(rel, "/"), "/", 2)[0])
	tb.Cleanup(func() { removeCgroupTree(top) })
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		tb.Fatalf("stat cgroup: %v", err)
	}
	return Cgroup{Path: path, Rel: rel, ID: st.Ino}
}

func removeCgroupTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	for i := 0; i < 100; i++ {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Command returns cmd set up to start directly inside cgroup cg
// (CLONE_INTO_CGROUP), so that every event of the process is counted there.
func (cg Cgroup) Command(tb testing.TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	fd, err := unix.Open(cg.Path, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open cgroup: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	cmd.Stderr = os.Stderr
	return cmd
}

// HelperEnv is the variable that turns a test binary into a helper process:
// see [SelfCommand] and [RunHelper].
const HelperEnv = "KMETER_TEST_HELPER"

// SelfCommand returns a command that re-runs the test binary as helper
// `helper` with args inside cg. The test binary's TestMain must call
// [RunHelper] first.
func (cg Cgroup) SelfCommand(tb testing.TB, helper string, args ...string) *exec.Cmd {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := cg.Command(tb, exe, append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+helper)
	return cmd
}

// RunHelper runs the helper named in $KMETER_TEST_HELPER, if any, and
// exits with its result. Call it first in TestMain.
func RunHelper(helpers map[string]func(args []string) error) {
	name := os.Getenv(HelperEnv)
	if name == "" {
		return
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown test helper %q\n", name)
		os.Exit(2)
	}
	var args []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			args = append(args, a)
		}
	}
	if err := h(args); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}
