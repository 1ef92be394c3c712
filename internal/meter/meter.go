// Package meter holds what every kernel meter shares: the names of the
// counters, the per-cgroup counts they produce, the status each meter
// reports about its hook, and the pinning rules that let counters keep
// counting while the agent restarts.
//
// Each meter lives in its own sub-package (one .bpf.c file, one bpf2go
// stem) and implements [Meter].
package meter

import (
	"io"
)

// Counter names, as exported in kmeter_usage_total{meter="..."}.
const (
	Syscalls            = "syscalls"
	TCPConnects         = "tcp_connects"
	TCPAccepts          = "tcp_accepts"
	NetTxBytes          = "net_tx_bytes"
	NetRxBytes          = "net_rx_bytes"
	TLSClientHandshakes = "tls_client_handshakes"
	TLSServerHandshakes = "tls_server_handshakes"
)

// Names lists every counter name in a stable order.
var Names = []string{Syscalls, TCPConnects, TCPAccepts, NetTxBytes, NetRxBytes, TLSClientHandshakes, TLSServerHandshakes}

// Status says how a meter attached on this kernel.
type Status struct {
	// Meter is the meter's name (a package, for example "syscalls").
	Meter string `json:"meter"`
	// Counters are the counter names the meter produces.
	Counters []string `json:"counters"`
	// Hook is the kernel hook attached, for example "tp_btf/sys_enter".
	Hook string `json:"hook"`
	// Fallback is true when the preferred hook was missing.
	Fallback bool `json:"fallback"`
	// Reused is true when a pinned link from an earlier agent was kept.
	Reused bool `json:"reused"`
	// Storage names where the hot path keeps its counters, for meters
	// that have a choice (the syscalls meter: "cgrp_storage" or
	// "percpu_hash"); empty for the others.
	Storage string `json:"storage,omitempty"`
	// Err is set when the meter could not attach; its counters are then
	// reported as unavailable, never as zero.
	Err string `json:"error,omitempty"`
}

// Meter is one loaded and attached kernel meter.
type Meter interface {
	io.Closer
	// Status reports the hook in use.
	Status() Status
	// ReadInto adds the meter's cumulative per-cgroup counts to c.
	ReadInto(c *Counts) error
}

// Config is what every meter needs to load.
type Config struct {
	// PinDir is a directory on bpffs, private to this agent (or test),
	// under which maps and links are pinned.
	PinDir string
	// CgroupDir is the cgroup v2 mount point; cgroup programs attach there.
	CgroupDir string
}
