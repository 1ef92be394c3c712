// Package syscalls is the kmeter meter that counts every syscall entry per
// cgroup and per syscall number, in the kernel.
//
// The BPF program (bpf/syscalls.bpf.c) runs on each syscall entry: it
// reads the current task's cgroup id and increments one per-CPU counter
// keyed by {cgroup id, syscall number}; nothing goes to user space per
// event. Per-cgroup totals are sums computed here, at read time.
//
// It attaches to tp_btf/sys_enter where the kernel supports it, and to the
// classic tracepoint raw_syscalls/sys_enter (which needs tracefs)
// otherwise. Maps and the link are pinned under <PinDir>/syscalls, so the
// counters keep counting while the agent restarts; remove that directory
// (or call [Meter.Unpin]) to stop counting and drop the counts.
//
// Syscall numbers are those of the task's ABI: on x86-64, 32-bit tasks
// count with their own (ia32) numbers under the same keys.
package syscalls

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the meter's name and the directory under PinDir holding its pins.
const Name = "syscalls"

// MaxEntries is the number of {cgroup, syscall} keys the counter map
// holds. Keep in sync with SYSCALLS_MAX_ENTRIES in bpf/syscalls.bpf.c.
const MaxEntries = 262144

// The hooks, in order of preference.
const (
	HookTPBTF      = "tp_btf/sys_enter"
	HookTracepoint = "tracepoint/raw_syscalls/sys_enter"
)

// Options tune [OpenWith]. The zero value is what agents use.
type Options struct {
	// Hook restricts the hook choice; tests use it to run both paths.
	Hook meter.HookMode
}

// Meter is the loaded and attached syscalls meter. Its methods are safe
// to call from one goroutine at a time.
type Meter struct {
	dir      string
	att      *meter.Attached
	counts   *ebpf.Map
	overflow *ebpf.Map
	status   meter.Status
}

var _ meter.Meter = (*Meter)(nil)

// Open loads and attaches the syscalls meter with the default options.
// cfg.PinDir must be an existing directory on bpffs (hostfs.EnsureBPFFS
// prepares one); cfg.CgroupDir is not used.
func Open(cfg meter.Config) (*Meter, error) {
	return OpenWith(cfg, Options{})
}

// OpenWith loads and attaches the syscalls meter. When an earlier agent
// left the same program attached under cfg.PinDir, its link and counts
// are kept ([meter.Status.Reused]).
func OpenWith(cfg meter.Config, opts Options) (*Meter, error) {
	if err := meter.CheckConfig(cfg, false); err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	spec, err := loadSyscalls()
	if err != nil {
		return nil, fmt.Errorf("open syscalls meter: %w", err)
	}
	att, err := meter.LoadAttach(spec, dir, "sys_enter_link", opts.Hook, hooks())
	if err != nil {
		return nil, fmt.Errorf("attach syscalls meter: %w", err)
	}
	m := &Meter{
		dir:      dir,
		att:      att,
		counts:   att.Maps["sys_counts"],
		overflow: att.Maps["sys_overflow"],
		status: meter.Status{
			Meter:    Name,
			Counters: []string{meter.Syscalls},
			Hook:     att.Hook,
			Fallback: att.Fallback,
			Reused:   att.Reused,
		},
	}
	return m, nil
}

func hooks() []meter.Hook {
	return []meter.Hook{
		{
			Name:    HookTPBTF,
			Program: "kmeter_sys_btf",
			Probe:   func() error { return meter.ProbeTPBTF("sys_enter") },
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
			},
		},
		{
			Name:    HookTracepoint,
			Program: "kmeter_sys_tp",
			Probe: func() error {
				_, err := hostfs.EnsureTracefs()
				return err
			},
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.Tracepoint("raw_syscalls", "sys_enter", p, nil)
			},
		},
	}
}

// Status reports the hook in use.
func (m *Meter) Status() meter.Status { return m.status }

// ReadInto adds each cgroup's cumulative syscall count (all numbers) to c.
func (m *Meter) ReadInto(c meter.Counts) error {
	if m.att == nil {
		return meter.ErrClosed
	}
	return meter.SumPerCPU(m.counts, func(k syscallsKmeterKey, n uint64) {
		c.Add(k.CgroupId, meter.Syscalls, n)
	})
}

// ReadByNumber returns the cumulative counts as cgroup id -> syscall
// number -> count.
func (m *Meter) ReadByNumber() (map[uint64]map[uint32]uint64, error) {
	if m.att == nil {
		return nil, meter.ErrClosed
	}
	out := make(map[uint64]map[uint32]uint64)
	err := meter.SumPerCPU(m.counts, func(k syscallsKmeterKey, n uint64) {
		byNr := out[k.CgroupId]
		if byNr == nil {
			byNr = make(map[uint32]uint64)
			out[k.CgroupId] = byNr
		}
		byNr[k.Kind] += n
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Overflow returns the number of syscalls that were not attributed to a
// cgroup because the counter map was full. Agents export it; it should
// stay 0.
func (m *Meter) Overflow() (uint64, error) {
	if m.att == nil {
		return 0, meter.ErrClosed
	}
	sums, err := meter.SumSlots(m.overflow)
	if err != nil {
		return 0, err
	}
	return sums[0], nil
}

// Stats reports how full the counter map is. Entries counts
// {cgroup, syscall number} keys; Overflow is keyed by [meter.Syscalls].
func (m *Meter) Stats() (meter.MapStats, error) {
	if m.att == nil {
		return meter.MapStats{}, meter.ErrClosed
	}
	n, err := meter.CountKeys(m.counts)
	if err != nil {
		return meter.MapStats{}, err
	}
	of, err := m.Overflow()
	if err != nil {
		return meter.MapStats{}, err
	}
	missed, err := meter.ProgramMisses(m.att.Link)
	if err != nil {
		return meter.MapStats{}, err
	}
	return meter.MapStats{
		MaxEntries:    m.counts.MaxEntries(),
		Entries:       n,
		Overflow:      map[string]uint64{meter.Syscalls: of},
		ProgramMisses: missed,
	}, nil
}

// Close releases the meter's file descriptors. The program keeps counting
// into the pinned maps until [Meter.Unpin] or the pin dir is removed.
// Close is idempotent.
func (m *Meter) Close() error {
	if m.att == nil {
		return nil
	}
	err := m.att.Close()
	m.att = nil
	if err != nil {
		return fmt.Errorf("close syscalls meter: %w", err)
	}
	return nil
}

// Unpin removes the meter's pins (link and maps), so the program stops
// counting once the meter is closed and the counts are dropped. Call it
// when uninstalling; a restarting agent must not.
func (m *Meter) Unpin() error {
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("unpin syscalls meter: %w", err)
	}
	return nil
}
