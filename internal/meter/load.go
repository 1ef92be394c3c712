package meter

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by a meter used after Close.
var ErrClosed = errors.New("meter is closed")

// HookMode chooses between a meter's preferred hook and its fallback.
// Agents leave it at [HookAuto]; tests and benchmarks force one hook to
// exercise both paths on a kernel that supports both.
type HookMode int

const (
	// HookAuto uses the preferred hook when a feature probe says it
	// works, and the fallback hook otherwise.
	HookAuto HookMode = iota
	// HookPreferredOnly uses the preferred hook or fails.
	HookPreferredOnly
	// HookFallbackOnly uses the fallback hook or fails.
	HookFallbackOnly
)

// CheckConfig validates cfg for a meter: the pin dir must exist on a
// bpffs and, when needCgroupDir is set, CgroupDir must be a cgroup v2
// mount. All problems are reported at once.
func CheckConfig(cfg Config, needCgroupDir bool) error {
	var errs []error
	if cfg.PinDir == "" {
		errs = append(errs, errors.New("pin dir is empty: set it to a directory on bpffs, for example /sys/fs/bpf/kmeter"))
	} else if err := checkFS(cfg.PinDir, "bpffs", unix.BPF_FS_MAGIC); err != nil {
		errs = append(errs, fmt.Errorf("pin dir %s: %w (create it under a bpffs mount, for example: mount -t bpf bpf /sys/fs/bpf)", cfg.PinDir, err))
	}
	if needCgroupDir {
		if cfg.CgroupDir == "" {
			errs = append(errs, errors.New("cgroup2 dir is empty: set it to the cgroup v2 mount point (see /proc/mounts)"))
		} else if err := checkFS(cfg.CgroupDir, "cgroup2", unix.CGROUP2_SUPER_MAGIC); err != nil {
			errs = append(errs, fmt.Errorf("cgroup2 dir %s: %w (use the cgroup2 mount point listed in /proc/mounts)", cfg.CgroupDir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("meter config: %w", err)
	}
	return nil
}

func checkFS(dir, name string, magic int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return os.ErrNotExist
		}
		return err
	}
	if st.Type != magic {
		return fmt.Errorf("not on a %s file system", name)
	}
	return nil
}

// LoadPinned loads the maps of spec, pinned by name under dir (reusing
// maps an earlier agent pinned there), and only the programs named in
// progs: a meter with a preferred and a fallback program loads just the
// one it attaches, so a program the kernel rejects never blocks the other.
func LoadPinned(spec *ebpf.CollectionSpec, dir string, progs ...string) (*ebpf.Collection, error) {
	spec = spec.Copy()
	keep := make(map[string]bool, len(progs))
	for _, p := range progs {
		if spec.Programs[p] == nil {
			return nil, fmt.Errorf("program %s is not in the object file", p)
		}
		keep[p] = true
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: dir},
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load %v: %w (maps pinned under %s come from another kmeter version: remove that directory to start counting afresh)", progs, err, dir)
		}
		return nil, fmt.Errorf("load %v: %w", progs, err)
	}
	return coll, nil
}
