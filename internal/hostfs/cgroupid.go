package hostfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// fileidKernfs is the file handle type of kernfs (cgroupfs) nodes: a
// handle of this type holding a cgroup id opens that cgroup.
// Keep in sync with FILEID_KERNFS in the kernel's include/linux/exportfs.h.
const fileidKernfs = 0xfe

// CgroupPath returns the absolute path of the cgroup whose id (as
// bpf_get_current_cgroup_id returns it) is id, without walking the
// hierarchy: a cgroup id is its kernfs file handle, so the kernel opens
// the cgroup directly and /proc names the open directory. mount is an
// open directory of the cgroup2 mount. ok is false when no live cgroup
// has that id. It needs CAP_DAC_READ_SEARCH.
func CgroupPath(mount *os.File, id uint64) (path string, ok bool, err error) {
	handle := binary.NativeEndian.AppendUint64(nil, id)
	fd, err := unix.OpenByHandleAt(int(mount.Fd()), unix.NewFileHandle(fileidKernfs, handle), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("open cgroup %d by id under %s (needs CAP_DAC_READ_SEARCH and a cgroup2 mount): %w", id, mount.Name(), err)
	}
	path, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	unix.Close(fd)
	if err != nil {
		return "", false, fmt.Errorf("name cgroup %d: %w", id, err)
	}
	return path, true, nil
}
