// Package tlsmeter counts TLS handshakes per cgroup in the kernel and
// streams one event per handshake through a BPF ring buffer.
//
// A cgroup_skb/egress program at the cgroup2 root parses the TLS record and
// handshake headers of the first payload each TCP socket sends, on any
// port, over IPv4 and IPv6: a ClientHello counts as
// [meter.TLSClientHandshakes], a ServerHello as [meter.TLSServerHandshakes]
// of the socket's cgroup.
//
// The first payload is recognised by the kernel's own count of data
// segments the socket sent (tcp_sock data_segs_out, retransmissions
// included), so retransmissions, later data that looks like a hello and
// the second ClientHello after a HelloRetryRequest are not counted, and
// neither is anything a socket sends when it already carried data before
// the meter was attached. Socket storage then marks each counted socket,
// so it is never counted twice; it is created only for sockets that sent a
// hello, because creating it for every socket would cost microseconds per
// connection.
package tlsmeter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the meter's name in [meter.Status] and its pin directory.
const Name = "tlsmeter"

// Hook is the kernel hook the meter attaches to.
const Hook = "cgroup_skb/egress"

// countsMaxEntries is how many cgroups the kernel keeps counts for.
// Keep in sync with COUNTS_MAX_ENTRIES in bpf/tlsmeter.bpf.c.
const countsMaxEntries = 65536

// linkPin is the name of the pinned link inside the meter's pin directory.
const linkPin = "tls_egress_link"

// objects are the parts of the collection the meter uses; the benchmark
// producer in the same object file is left out, so it is never loaded.
type objects struct {
	Egress *ebpf.Program `ebpf:"tls_egress"`
	maps
}

type maps struct {
	Events     *ebpf.Map `ebpf:"events"`
	Handshakes *ebpf.Map `ebpf:"handshakes"`
	Stats      *ebpf.Map `ebpf:"stats"`
	SkSeen     *ebpf.Map `ebpf:"sk_seen"`
}

func (m *maps) close() error {
	var errs []error
	for _, c := range []*ebpf.Map{m.Events, m.Handshakes, m.Stats, m.SkSeen} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Meter is the loaded and attached TLS handshake meter. It implements
// [meter.Meter] and is safe for concurrent use.
type Meter struct {
	maps   maps
	link   link.Link
	status meter.Status

	mu      sync.Mutex
	closed  bool
	readers map[*Reader]struct{}

	// readMu guards buf, ReadInto's batch buffers kept across reads.
	readMu sync.Mutex
	buf    meter.PerCPUBuffers[uint64, tlsmeterTlsCounts]
}

var _ meter.Meter = (*Meter)(nil)

// Open loads the TLS meter with its maps pinned under
// meter.MapsDir(cfg.PinDir, "tlsmeter") and attaches it at cfg.CgroupDir
// through a pinned link, so the kernel keeps counting while the agent is
// not running. Opening again with the same PinDir continues the same
// counts and reuses the link when the program is unchanged.
//
// It needs root (CAP_BPF and CAP_NET_ADMIN), cgroup v2, BPF sk_storage and
// ring buffers (Linux 5.8 or later).
func Open(cfg meter.Config) (*Meter, error) {
	if err := meter.CheckConfig(cfg, true); err != nil {
		return nil, fmt.Errorf("open tls meter: %w", err)
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, fmt.Errorf("open tls meter: %w", err)
	}
	m, err := open(cfg.CgroupDir, dir)
	if err != nil {
		return nil, fmt.Errorf("open tls meter: %w", err)
	}
	return m, nil
}

// OpenPrivate loads a separate, unpinned instance of the TLS meter at
// cgroupDir (the cgroup v2 mount). Its counts and events start from zero,
// belong to the caller alone and vanish on Close; a pinned agent instance
// keeps all of its own events. kmeter trace tls uses it.
func OpenPrivate(cgroupDir string) (*Meter, error) {
	if cgroupDir == "" {
		return nil, errors.New("open private tls meter: cgroup2 dir is empty (pass the cgroup v2 mount, e.g. from /proc/mounts)")
	}
	m, err := open(cgroupDir, "")
	if err != nil {
		return nil, fmt.Errorf("open private tls meter: %w", err)
	}
	return m, nil
}

// open loads the collection (pinned under pinDir unless it is empty) and
// attaches it; on any failure it closes what it made.
func open(cgroupDir, pinDir string) (_ *Meter, err error) {
	spec, err := loadTlsmeter()
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	var opts ebpf.CollectionOptions
	if pinDir != "" {
		opts.Maps.PinPath = pinDir
	} else {
		for _, ms := range spec.Maps {
			ms.Pinning = ebpf.PinNone
		}
	}
	var objs objects
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load objects: %w (maps pinned in %s come from an incompatible kmeter version: remove that directory to start new counts)", err, pinDir)
		}
		return nil, fmt.Errorf("load objects: %w", err)
	}
	// The link keeps its own reference to the program.
	defer objs.Egress.Close()
	defer func() {
		if err != nil {
			_ = objs.maps.close()
		}
	}()

	attach := func() (link.Link, error) {
		l, err := link.AttachCgroup(link.CgroupOptions{
			Path:    cgroupDir,
			Attach:  ebpf.AttachCGroupInetEgress,
			Program: objs.Egress,
		})
		if err != nil {
			return nil, fmt.Errorf("attach %s at %s: %w", Hook, cgroupDir, err)
		}
		return l, nil
	}
	m := &Meter{
		maps: objs.maps,
		status: meter.Status{
			Meter:    Name,
			Counters: []string{meter.TLSClientHandshakes, meter.TLSServerHandshakes},
			Hook:     Hook,
		},
		readers: make(map[*Reader]struct{}),
	}
	if pinDir == "" {
		m.link, err = attach()
	} else {
		m.link, m.status.Reused, err = meter.AttachPinned(filepath.Join(pinDir, linkPin), objs.Egress, attach)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Status reports the hook in use and whether a pinned link was reused.
func (m *Meter) Status() meter.Status {
	s := m.status
	s.Counters = append([]string(nil), s.Counters...)
	return s
}

// ReadInto adds the cumulative client and server handshake counts of
// every cgroup to c.
func (m *Meter) ReadInto(c *meter.Counts) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return fmt.Errorf("read tls counts: %w", os.ErrClosed)
	}
	m.readMu.Lock()
	defer m.readMu.Unlock()
	err := meter.EachPerCPU(m.maps.Handshakes, &m.buf, func(id uint64, percpu []tlsmeterTlsCounts) {
		var client, server uint64
		for _, v := range percpu {
			client += v.Client
			server += v.Server
		}
		c.Add(id, meter.CounterTLSClientHandshakes, client)
		c.Add(id, meter.CounterTLSServerHandshakes, server)
	})
	if err != nil {
		return fmt.Errorf("read tls counts: %w", err)
	}
	return nil
}

// Uncounted returns how many handshakes were seen but not counted because
// the kernel's counts map already held countsMaxEntries cgroups. A value
// above zero means the counts of some cgroups are incomplete; the agent
// should report them as unavailable rather than trust them.
func (m *Meter) Uncounted() (uint64, error) {
	var percpu []tlsmeterTlsStats
	if err := m.maps.Stats.Lookup(uint32(0), &percpu); err != nil {
		return 0, fmt.Errorf("read tls meter stats: %w", err)
	}
	var n uint64
	for _, v := range percpu {
		n += v.Uncounted
	}
	return n, nil
}

// Close stops the readers made by [Meter.Events] and releases the meter.
// A pinned instance keeps counting in the kernel (Close does not unpin);
// a private one is detached. Close is idempotent.
func (m *Meter) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	readers := m.readers
	m.readers = nil
	m.mu.Unlock()

	var errs []error
	for r := range readers {
		errs = append(errs, r.Close())
	}
	if m.link != nil {
		errs = append(errs, m.link.Close())
	}
	errs = append(errs, m.maps.close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close tls meter: %w", err)
	}
	return nil
}
