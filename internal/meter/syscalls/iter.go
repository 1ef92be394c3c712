package syscalls

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachCgroupIter attaches the cgroup iterator prog to walk every cgroup
// of the v2 hierarchy, parents before children.
//
// cilium/ebpf v0.22's link.AttachIter cannot pass a cgroup iterator's
// traversal order, and the kernel rejects the unspecified one (EINVAL), so
// the link is created here and handed to cilium/ebpf as a *link.Iter.
func attachCgroupIter(prog *ebpf.Program) (*link.Iter, error) {
	// The cgroup member of union bpf_iter_link_info (uapi/linux/bpf.h).
	// A zero fd and id mean the root cgroup.
	info := struct {
		order    uint32
		cgroupFD uint32
		cgroupID uint64
	}{order: unix.BPF_CGROUP_ITER_DESCENDANTS_PRE}
	// The link_create member of union bpf_attr for an iterator, padded
	// as cilium/ebpf pads it.
	attr := struct {
		progFD      uint32
		targetFD    uint32
		attachType  uint32
		flags       uint32
		iterInfo    uint64
		iterInfoLen uint32
		_           [36]byte
	}{
		progFD:      uint32(prog.FD()),
		attachType:  unix.BPF_TRACE_ITER,
		iterInfo:    uint64(uintptr(unsafe.Pointer(&info))),
		iterInfoLen: uint32(unsafe.Sizeof(info)),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&info)
	runtime.KeepAlive(prog)
	if errno != 0 {
		return nil, fmt.Errorf("create cgroup iterator link: %w", errno)
	}
	l, err := link.NewFromFD(int(fd))
	if err != nil {
		return nil, fmt.Errorf("create cgroup iterator link: %w", err)
	}
	it, ok := l.(*link.Iter)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("create cgroup iterator link: kernel returned a %T", l)
	}
	return it, nil
}
