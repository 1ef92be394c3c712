// Package sockstate is the kmeter meter that counts completed TCP opens
// per cgroup: active opens ([meter.TCPConnects], SYN_SENT -> ESTABLISHED)
// and passive opens ([meter.TCPAccepts], SYN_RECV -> ESTABLISHED).
//
// The BPF program (bpf/sockstate.bpf.c) watches the inet_sock_set_state
// tracepoint and attributes each open to the cgroup of the socket, not of
// the current task: passive opens complete in softirq context, where the
// current task is unrelated. An accepted socket belongs to the cgroup of
// the process that created the listening socket. Only IPPROTO_TCP counts.
//
// It attaches to tp_btf/inet_sock_set_state where the kernel supports it,
// and to the classic tracepoint sock/inet_sock_set_state (which needs
// tracefs) otherwise. Maps and the link are pinned under <PinDir>/sockstate,
// so counting goes on while the agent restarts; remove that directory (or
// call [Meter.Unpin]) to stop counting and drop the counts.
package sockstate

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the meter's name and the directory under PinDir holding its pins.
const Name = "sockstate"

// MaxEntries is the number of {cgroup, kind} keys the counter map holds.
// Keep in sync with SOCKSTATE_MAX_ENTRIES in bpf/sockstate.bpf.c.
const MaxEntries = 65536

// The kinds of open, as stored in the key. Keep in sync with KIND_* in
// bpf/sockstate.bpf.c.
const (
	kindConnect = 0
	kindAccept  = 1
)

// kindCounters are the counters of the kinds.
var kindCounters = [...]meter.Counter{kindConnect: meter.CounterTCPConnects, kindAccept: meter.CounterTCPAccepts}

// The hooks, in order of preference.
const (
	HookTPBTF      = "tp_btf/inet_sock_set_state"
	HookTracepoint = "tracepoint/sock/inet_sock_set_state"
)

// Options tune [OpenWith]. The zero value is what agents use.
type Options struct {
	// Hook restricts the hook choice; tests use it to run both paths.
	Hook meter.HookMode
}

// Meter is the loaded and attached TCP open meter. Its methods are safe
// to call from one goroutine at a time.
type Meter struct {
	dir      string
	att      *meter.Attached
	counts   *ebpf.Map
	overflow *ebpf.Map
	status   meter.Status
	// buf holds ReadInto's batch buffers across reads.
	buf meter.PerCPUBuffers[sockstateKmeterKey, uint64]
}

var _ meter.Meter = (*Meter)(nil)

// Open loads and attaches the meter with the default options.
// cfg.PinDir must be an existing directory on bpffs (hostfs.EnsureBPFFS
// prepares one); cfg.CgroupDir is not used.
func Open(cfg meter.Config) (*Meter, error) {
	return OpenWith(cfg, Options{})
}

// OpenWith loads and attaches the meter. When an earlier agent left the
// same program attached under cfg.PinDir, its link and counts are kept
// ([meter.Status.Reused]).
func OpenWith(cfg meter.Config, opts Options) (*Meter, error) {
	if err := meter.CheckConfig(cfg, false); err != nil {
		return nil, fmt.Errorf("open sockstate meter: %w", err)
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, fmt.Errorf("open sockstate meter: %w", err)
	}
	spec, err := loadSockstate()
	if err != nil {
		return nil, fmt.Errorf("open sockstate meter: %w", err)
	}
	att, err := meter.LoadAttach(spec, dir, "set_state_link", opts.Hook, hooks())
	if err != nil {
		return nil, fmt.Errorf("attach sockstate meter: %w", err)
	}
	return &Meter{
		dir:      dir,
		att:      att,
		counts:   att.Maps["sock_counts"],
		overflow: att.Maps["sock_overflow"],
		status: meter.Status{
			Meter:    Name,
			Counters: []string{meter.TCPConnects, meter.TCPAccepts},
			Hook:     att.Hook,
			Fallback: att.Fallback,
			Reused:   att.Reused,
		},
	}, nil
}

func hooks() []meter.Hook {
	return []meter.Hook{
		{
			Name:    HookTPBTF,
			Program: "kmeter_sock_btf",
			Probe:   func() error { return meter.ProbeTPBTF("inet_sock_set_state") },
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
			},
		},
		{
			Name:    HookTracepoint,
			Program: "kmeter_sock_tp",
			Probe: func() error {
				_, err := hostfs.EnsureTracefs()
				return err
			},
			Attach: func(p *ebpf.Program) (link.Link, error) {
				return link.Tracepoint("sock", "inet_sock_set_state", p, nil)
			},
		},
	}
}

// Status reports the hook in use.
func (m *Meter) Status() meter.Status { return m.status }

// ReadInto adds each cgroup's cumulative tcp_connects and tcp_accepts to c.
func (m *Meter) ReadInto(c *meter.Counts) error {
	if m.att == nil {
		return meter.ErrClosed
	}
	return meter.SumPerCPU(m.counts, &m.buf, func(k sockstateKmeterKey, n uint64) {
		if int(k.Kind) < len(kindCounters) {
			c.Add(k.CgroupId, kindCounters[k.Kind], n)
		}
	})
}

// Overflow returns, per counter name, the opens that were not attributed
// to a cgroup because the counter map was full. Agents export it; it
// should stay 0.
func (m *Meter) Overflow() (map[string]uint64, error) {
	if m.att == nil {
		return nil, meter.ErrClosed
	}
	sums, err := meter.SumSlots(m.overflow)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(kindCounters))
	for kind, c := range kindCounters {
		out[c.Name()] = sums[kind]
	}
	return out, nil
}

// Stats reports how full the counter map is. Entries counts
// {cgroup, kind} keys (up to two per cgroup).
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
	return meter.MapStats{MaxEntries: m.counts.MaxEntries(), Entries: n, Overflow: of, ProgramMisses: missed}, nil
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
		return fmt.Errorf("close sockstate meter: %w", err)
	}
	return nil
}

// Unpin removes the meter's pins (link and maps), so the program stops
// counting once the meter is closed and the counts are dropped. Call it
// when uninstalling; a restarting agent must not.
func (m *Meter) Unpin() error {
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("unpin sockstate meter: %w", err)
	}
	return nil
}
