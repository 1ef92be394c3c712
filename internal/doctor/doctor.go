// Package doctor checks whether this host can run the kmeter agent: kernel,
// BTF, cgroup v2, bpffs, capabilities, and for each kernel hook kmeter may
// use, whether a program of that kind really loads and attaches here.
package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
)

// Level grades one check.
type Level int

const (
	// OK: works.
	OK Level = iota
	// Warn: missing, but kmeter falls back or only an optional feature is lost.
	Warn
	// Fail: the agent cannot run until this is fixed.
	Fail
)

func (l Level) String() string { return [...]string{"ok", "warn", "FAIL"}[l] }

// Check is one line of the report.
type Check struct {
	Name   string
	Level  Level
	Detail string
}

// Options says where to look; the zero value checks this host.
type Options struct {
	// MountsFile is the mount table (default /proc/mounts).
	MountsFile string
	// PinDir is the agent's pin dir (default /sys/fs/bpf/kmeter).
	PinDir string
}

// Report is the result of [Run].
type Report struct{ Checks []Check }

// OK reports whether the agent can run: no check failed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Level == Fail {
			return false
		}
	}
	return true
}

// Write prints the report as a table.
func (r Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Level, c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.OK() {
		_, err := fmt.Fprintln(w, "\nkmeter can run here.")
		return err
	}
	_, err := fmt.Fprintln(w, "\nkmeter cannot run here until the FAIL lines are fixed.")
	return err
}

// Run performs every check. It loads and attaches tiny programs for a
// moment, so it needs the same privileges as the agent.
func Run(opts Options) Report {
	if opts.MountsFile == "" {
		opts.MountsFile = "/proc/mounts"
	}
	if opts.PinDir == "" {
		opts.PinDir = "/sys/fs/bpf/kmeter"
	}
	var r Report
	add := func(name string, l Level, format string, args ...any) {
		r.Checks = append(r.Checks, Check{Name: name, Level: l, Detail: fmt.Sprintf(format, args...)})
	}

	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		add("kernel", OK, "%s %s", unix.ByteSliceToString(uts.Sysname[:]), unix.ByteSliceToString(uts.Release[:]))
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		add("btf", Fail, "/sys/kernel/btf/vmlinux missing: CO-RE programs need a kernel built with CONFIG_DEBUG_INFO_BTF=y")
	} else {
		add("btf", OK, "/sys/kernel/btf/vmlinux")
	}
	caps, err := effectiveCaps()
	switch {
	case err != nil:
		add("capabilities", Warn, "cannot read: %v", err)
	case caps&(1<<unix.CAP_SYS_ADMIN) != 0 || caps&(1<<unix.CAP_BPF) != 0 && caps&(1<<unix.CAP_PERFMON) != 0 && caps&(1<<unix.CAP_NET_ADMIN) != 0:
		add("capabilities", OK, "CapEff=%#x (CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN)", caps)
	default:
		add("capabilities", Fail, "CapEff=%#x: run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_RESOURCE", caps)
	}
	cgroupDir, err := hostfs.Cgroup2Dir(opts.MountsFile)
	if err != nil {
		add("cgroup2", Fail, "%v", err)
	} else {
		add("cgroup2", OK, "mounted at %s", cgroupDir)
	}
	if err := hostfs.EnsureBPFFS(opts.PinDir); err != nil {
		add("bpffs", Fail, "%v", err)
	} else {
		add("bpffs", OK, "pin dir %s is on a writable bpffs", opts.PinDir)
	}
	if dir, err := hostfs.EnsureTracefs(); err != nil {
		add("tracefs", Warn, "%v (classic tracepoint fallbacks unavailable)", err)
	} else {
		add("tracefs", OK, "%s", dir)
	}

	anyMeterHook := false
	for _, h := range hooks(cgroupDir) {
		err := h.probe()
		switch {
		case err == nil:
			add("hook "+h.name, OK, "%s", h.usedBy)
			if h.meter {
				anyMeterHook = true
			}
		case h.optional:
			add("hook "+h.name, Warn, "%s: %v", h.usedBy, short(err))
		default:
			add("hook "+h.name, Fail, "%s: %v", h.usedBy, short(err))
		}
	}
	if !anyMeterHook {
		add("meters", Fail, "no meter hook works on this kernel")
	}
	return r
}

func short(err error) string {
	s := err.Error()
	if i := strings.Index(s, "\n"); i > 0 {
		s = s[:i]
	}
	return s
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line")
}

type hook struct {
	name, usedBy string
	// optional hooks only lose a fallback or a faster path when missing.
	optional bool
	// meter is true for hooks a meter can count with.
	meter bool
	probe func() error
}

// ret returns a program that returns v.
func ret(v int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, v), asm.Return()}
}

func loadAttach(spec *ebpf.ProgramSpec, attach func(*ebpf.Program) (link.Link, error)) error {
	spec.License = "GPL"
	if spec.Instructions == nil {
		spec.Instructions = ret(0)
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer prog.Close()
	l, err := attach(prog)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}

func hooks(cgroupDir string) []hook {
	tpBTF := func(event string) func() error {
		return func() error {
			return loadAttach(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: event},
				func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) })
		}
	}
	tracepoint := func(group, name string) func() error {
		return func() error {
			return loadAttach(&ebpf.ProgramSpec{Type: ebpf.TracePoint},
				func(p *ebpf.Program) (link.Link, error) { return link.Tracepoint(group, name, p, nil) })
		}
	}
	cgroup := func(typ ebpf.ProgramType, at ebpf.AttachType, rc int32) func() error {
		return func() error {
			if cgroupDir == "" {
				return errors.New("no cgroup2 mount")
			}
			return loadAttach(&ebpf.ProgramSpec{Type: typ, AttachType: at, Instructions: ret(rc)},
				func(p *ebpf.Program) (link.Link, error) {
					return link.AttachCgroup(link.CgroupOptions{Path: cgroupDir, Attach: at, Program: p})
				})
		}
	}
	return []hook{
		{name: "tp_btf/sys_enter", usedBy: "syscalls meter (preferred)", optional: true, meter: true, probe: tpBTF("sys_enter")},
		{name: "tracepoint/raw_syscalls/sys_enter", usedBy: "syscalls meter (fallback)", optional: true, meter: true, probe: tracepoint("raw_syscalls", "sys_enter")},
		{name: "tp_btf/inet_sock_set_state", usedBy: "tcp_connects/tcp_accepts (preferred)", optional: true, meter: true, probe: tpBTF("inet_sock_set_state")},
		{name: "tracepoint/sock/inet_sock_set_state", usedBy: "tcp_connects/tcp_accepts (fallback)", optional: true, meter: true, probe: tracepoint("sock", "inet_sock_set_state")},
		{name: "cgroup_skb/egress", usedBy: "net_tx_bytes, TLS handshakes, egress limits", meter: true, probe: cgroup(ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress, 1)},
		{name: "cgroup_skb/ingress", usedBy: "net_rx_bytes, ingress limits", meter: true, probe: cgroup(ebpf.CGroupSKB, ebpf.AttachCGroupInetIngress, 1)},
		{name: "cgroup/connect4", usedBy: "connection rate limits (IPv4)", optional: true, probe: cgroup(ebpf.CGroupSockAddr, ebpf.AttachCGroupInet4Connect, 1)},
		{name: "cgroup/connect6", usedBy: "connection rate limits (IPv6)", optional: true, probe: cgroup(ebpf.CGroupSockAddr, ebpf.AttachCGroupInet6Connect, 1)},
		{name: "map cgrp_storage", usedBy: "syscalls meter counts in cgroup storage, without hashing (else in a per-CPU hash)", optional: true, probe: syscalls.ProbeStorage},
		{name: "map ringbuf", usedBy: "per-event TLS records", optional: true, probe: func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{name: "map sk_storage", usedBy: "TLS first-payload tracking", optional: true, probe: func() error { return features.HaveMapType(ebpf.SkStorage) }},
		{name: "kprobe/tcp_sendmsg", usedBy: "optional faster paths on kernels with kprobes", optional: true, probe: func() error {
			return loadAttach(&ebpf.ProgramSpec{Type: ebpf.Kprobe},
				func(p *ebpf.Program) (link.Link, error) { return link.Kprobe("tcp_sendmsg", p, nil) })
		}},
		{name: "fentry/tcp_sendmsg", usedBy: "optional faster paths on kernels with fentry", optional: true, probe: func() error {
			return loadAttach(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "tcp_sendmsg"},
				func(p *ebpf.Program) (link.Link, error) { return link.AttachTracing(link.TracingOptions{Program: p}) })
		}},
	}
}
