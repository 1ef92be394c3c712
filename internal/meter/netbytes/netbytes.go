// Package netbytes is the kmeter meter that counts network bytes per
// cgroup: [meter.NetTxBytes] at cgroup_skb/egress and [meter.NetRxBytes]
// at cgroup_skb/ingress.
//
// Both programs (bpf/netbytes.bpf.c) are attached at the root of the
// cgroup v2 hierarchy (Config.CgroupDir), so every cgroup below it is
// covered, and they always allow the packet. A packet counts its IP and
// transport headers as well as its payload (skb->len from the network
// header), and belongs to the cgroup of its socket. Sizes are those of
// the packets the stack hands over: a GSO/TSO packet is counted once, with
// one set of headers, before the device splits it into wire segments;
// received packets are counted after GRO merged them.
//
// Maps and links are pinned under <PinDir>/netbytes, so counting goes on
// while the agent restarts; remove that directory (or call
// [Meter.Unpin]) to stop counting and drop the counts.
package netbytes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the meter's name and the directory under PinDir holding its pins.
const Name = "netbytes"

// MaxEntries is the number of {cgroup, direction} keys the counter map
// holds. Keep in sync with NETBYTES_MAX_ENTRIES in bpf/netbytes.bpf.c.
const MaxEntries = 65536

// Directions, as stored in the key. Keep in sync with KIND_* in
// bpf/netbytes.bpf.c.
const (
	kindTx = 0
	kindRx = 1
)

// kindCounters are the counters of the kinds.
var kindCounters = [...]meter.Counter{kindTx: meter.CounterNetTxBytes, kindRx: meter.CounterNetRxBytes}

// Hook is the hook pair reported in [meter.Status.Hook].
const Hook = "cgroup_skb/egress+cgroup_skb/ingress"

// Meter is the loaded and attached network bytes meter. Its methods are
// safe to call from one goroutine at a time.
type Meter struct {
	dir      string
	maps     map[string]*ebpf.Map
	links    []link.Link
	counts   *ebpf.Map
	overflow *ebpf.Map
	status   meter.Status
	closed   bool
	// buf holds ReadInto's batch buffers across reads.
	buf meter.PerCPUBuffers[netbytesKmeterKey, uint64]
}

var _ meter.Meter = (*Meter)(nil)

// Open loads the meter and attaches it at cfg.CgroupDir, which should be
// the cgroup v2 mount point (a sub-directory meters only its subtree).
// cfg.PinDir must be an existing directory on bpffs (hostfs.EnsureBPFFS
// prepares one). When an earlier agent left the same programs attached
// under cfg.PinDir, its links and counts are kept ([meter.Status.Reused]);
// links attached to another cgroup are replaced.
func Open(cfg meter.Config) (_ *Meter, err error) {
	if err := meter.CheckConfig(cfg, true); err != nil {
		return nil, fmt.Errorf("open netbytes meter: %w", err)
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, fmt.Errorf("open netbytes meter: %w", err)
	}
	spec, err := loadNetbytes()
	if err != nil {
		return nil, fmt.Errorf("open netbytes meter: %w", err)
	}
	coll, err := meter.LoadPinned(spec, dir, "kmeter_net_egress", "kmeter_net_ingress")
	if err != nil {
		return nil, fmt.Errorf("open netbytes meter: %w", err)
	}
	defer coll.Close() // programs; the links hold their own references
	m := &Meter{
		dir:      dir,
		maps:     coll.Maps,
		counts:   coll.Maps["net_counts"],
		overflow: coll.Maps["net_overflow"],
		status: meter.Status{
			Meter:    Name,
			Counters: []string{meter.NetTxBytes, meter.NetRxBytes},
			Hook:     Hook,
			Reused:   true,
		},
	}
	coll.Maps = nil
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	for _, a := range []struct {
		prog, pin string
		typ       ebpf.AttachType
	}{
		{"kmeter_net_egress", "egress_link", ebpf.AttachCGroupInetEgress},
		{"kmeter_net_ingress", "ingress_link", ebpf.AttachCGroupInetIngress},
	} {
		path := filepath.Join(dir, a.pin)
		if err := dropIfOtherCgroup(path, cfg.CgroupDir); err != nil {
			return nil, fmt.Errorf("attach netbytes meter: %w", err)
		}
		prog := coll.Programs[a.prog]
		l, reused, err := meter.AttachPinned(path, prog, func() (link.Link, error) {
			return link.AttachCgroup(link.CgroupOptions{Path: cfg.CgroupDir, Attach: a.typ, Program: prog})
		})
		if err != nil {
			return nil, fmt.Errorf("attach netbytes meter at %s %s: %w", a.typ, cfg.CgroupDir, err)
		}
		m.links = append(m.links, l)
		m.status.Reused = m.status.Reused && reused
	}
	return m, nil
}

// dropIfOtherCgroup removes the link pinned at path when it is attached
// to another cgroup than dir (the configured root changed): reusing it
// would meter the wrong subtree.
func dropIfOtherCgroup(path, dir string) error {
	old, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return nil // AttachPinned replaces stale pins
	}
	defer old.Close()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat cgroup %s: %w", dir, err)
	}
	info, err := old.Info()
	if err != nil {
		return fmt.Errorf("inspect pinned link %s: %w", path, err)
	}
	if cg := info.Cgroup(); cg != nil && cg.CgroupId == st.Ino {
		return nil
	}
	if err := old.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s of another cgroup: %w", path, err)
	}
	return nil
}

// Status reports the hooks in use.
func (m *Meter) Status() meter.Status { return m.status }

// ReadInto adds each cgroup's cumulative net_tx_bytes and net_rx_bytes to c.
func (m *Meter) ReadInto(c *meter.Counts) error {
	if m.closed {
		return meter.ErrClosed
	}
	return meter.SumPerCPU(m.counts, &m.buf, func(k netbytesKmeterKey, n uint64) {
		if int(k.Kind) < len(kindCounters) {
			c.Add(k.CgroupId, kindCounters[k.Kind], n)
		}
	})
}

// Overflow returns, per counter name, the bytes that were not attributed
// to a cgroup because the counter map was full. Agents export it; it
// should stay 0.
func (m *Meter) Overflow() (map[string]uint64, error) {
	if m.closed {
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
// {cgroup, direction} keys (up to two per cgroup).
func (m *Meter) Stats() (meter.MapStats, error) {
	if m.closed {
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
	missed, err := meter.ProgramMisses(m.links...)
	if err != nil {
		return meter.MapStats{}, err
	}
	return meter.MapStats{MaxEntries: m.counts.MaxEntries(), Entries: n, Overflow: of, ProgramMisses: missed}, nil
}

// Close releases the meter's file descriptors. The programs stay attached
// and keep counting into the pinned maps until [Meter.Unpin] or the pin
// dir is removed. Close is idempotent.
func (m *Meter) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	for _, l := range m.links {
		errs = append(errs, l.Close())
	}
	for _, mp := range m.maps {
		errs = append(errs, mp.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close netbytes meter: %w", err)
	}
	return nil
}

// Unpin removes the meter's pins (links and maps), so the programs detach
// once the meter is closed and the counts are dropped. Call it when
// uninstalling; a restarting agent must not.
func (m *Meter) Unpin() error {
	if err := os.RemoveAll(m.dir); err != nil {
		return fmt.Errorf("unpin netbytes meter: %w", err)
	}
	return nil
}
