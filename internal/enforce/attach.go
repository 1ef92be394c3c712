package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/hostfs"
	"github.com/kmeter/kmeter/internal/meter"
)

// Programs attach to the cgroups of tenants with something to enforce,
// not to the cgroup2 root: a cgroup_skb hook costs every packet of every
// cgroup below it about 3.5% of loopback TCP throughput even with an
// empty program, so an unlimited tenant must not run under one. A program
// attached with BPF_F_ALLOW_MULTI (what link.AttachCgroup does) runs for
// every descendant, including cgroups created later, so attaching at each
// tenant subtree root covers the whole tenant.
//
// Two hooks stay at the root. sockops lifts the pacing cap of a tenant's
// established sockets when its limit goes away, which it could not do once
// detached from the tenant; it runs per connection event, not per packet.
// The cgroup_skb hooks move to the root while a slice rule names every
// tenant, since such a rule meters traffic of cgroups that are no tenant;
// tenant roots then get no cgroup_skb link, so no packet runs it twice.

// hook is one limiter program and where the kernel calls it.
type hook struct {
	name   string
	prog   *ebpf.Program
	attach ebpf.AttachType
}

func (e *Enforcer) skbHooks() []hook {
	return []hook{
		{"egress", e.objs.LimitEgress, ebpf.AttachCGroupInetEgress},
		{"ingress", e.objs.LimitIngress, ebpf.AttachCGroupInetIngress},
	}
}

func (e *Enforcer) sockHooks() []hook {
	return []hook{
		{"connect4", e.objs.LimitConnect4, ebpf.AttachCGroupInet4Connect},
		{"connect6", e.objs.LimitConnect6, ebpf.AttachCGroupInet6Connect},
		{"bind4", e.objs.LimitBind4, ebpf.AttachCGroupInet4Bind},
		{"bind6", e.objs.LimitBind6, ebpf.AttachCGroupInet6Bind},
	}
}

func (e *Enforcer) allHooks() []hook {
	return append(append(e.skbHooks(), e.sockHooks()...), hook{"sockops", e.objs.LimitSockops, ebpf.AttachCGroupSockOps})
}

// rootPin is where the link of h at the cgroup2 root is pinned; earlier
// versions pinned every hook there.
func (e *Enforcer) rootPin(h hook) string { return filepath.Join(e.dir, "link_"+h.name) }

// tenantPin is where the link of h at cgroup id is pinned.
func (e *Enforcer) tenantPin(id uint64, h hook) string {
	return filepath.Join(e.dir, "links", strconv.FormatUint(id, 10)+"_"+h.name)
}

// attachPinned attaches h to the cgroup at cgPath, reusing (or updating
// to this program) a link pinned at pin by an earlier agent.
func (e *Enforcer) attachPinned(pin, cgPath string, h hook) (link.Link, error) {
	l, reused, err := meter.AttachPinned(pin, h.prog, func() (link.Link, error) {
		return link.AttachCgroup(link.CgroupOptions{Path: cgPath, Attach: h.attach, Program: h.prog})
	})
	if err != nil {
		return nil, fmt.Errorf("attach limiter %s to %s: %w", h.name, cgPath, err)
	}
	e.reused = e.reused || reused
	if !reused && e.opening {
		e.fresh = append(e.fresh, l)
	}
	return l, nil
}

// adoptPinned takes over the links an earlier agent pinned, so that
// enforcement has no gap while this one starts. Links of cgroups that are
// gone (the kernel detached them) and of unknown hooks are unpinned.
func (e *Enforcer) adoptPinned() error {
	for _, h := range e.allHooks() {
		if _, err := os.Stat(e.rootPin(h)); err != nil {
			continue
		}
		l, err := e.attachPinned(e.rootPin(h), e.cfg.CgroupDir, h)
		if err != nil {
			return err
		}
		e.rootLinks[h.name] = l
	}
	files, err := os.ReadDir(filepath.Join(e.dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read pinned limiter links: %w", err)
	}
	for _, f := range files {
		pin := filepath.Join(e.dir, "links", f.Name())
		idText, name, _ := strings.Cut(f.Name(), "_")
		id, perr := strconv.ParseUint(idText, 10, 64)
		var h *hook
		for _, c := range e.allHooks() {
			if c.name == name {
				h = &c
			}
		}
		if perr != nil || h == nil {
			_ = os.Remove(pin)
			continue
		}
		cgPath, ok, err := e.cgroupPath(id)
		if err != nil {
			return err
		}
		if !ok {
			_ = os.Remove(pin)
			continue
		}
		l, err := e.attachPinned(pin, cgPath, *h)
		if err != nil {
			return err
		}
		if e.attached[id] == nil {
			e.attached[id] = map[string]link.Link{}
		}
		e.attached[id][h.name] = l
	}
	return nil
}

// reconcile attaches the limiter to the subtree roots of every tenant
// with a limit, a policy or a slice rule, and detaches it from cgroups
// that no longer need it. New links are made before old ones go, so a
// tenant is never left unenforced. Callers hold e.mu.
func (e *Enforcer) reconcile() error {
	if !e.dirty {
		return nil
	}
	wildcard := false
	for _, s := range e.slices {
		for _, r := range s.Rules {
			wildcard = wildcard || r.Tenant == ""
		}
	}
	want := map[uint64]string{} // cgroup id -> path
	var errs []error
	for _, t := range e.tenants {
		if t.empty() {
			continue
		}
		for _, id := range t.roots {
			p, ok, err := e.cgroupPath(id)
			if err != nil {
				errs = append(errs, err)
			} else if ok {
				want[id] = p
			}
		}
	}
	// A root inside another attached root is covered by it; a second link
	// would run the program twice per packet and take twice.
	byPath := make(map[string]bool, len(want))
	for _, p := range want {
		byPath[p] = true
	}
	for id, p := range want {
		for d := filepath.Dir(p); len(d) > len(e.cfg.CgroupDir); d = filepath.Dir(d) {
			if byPath[d] {
				delete(want, id)
				break
			}
		}
	}
	perTenant, atRoot := e.sockHooks(), []hook{{"sockops", e.objs.LimitSockops, ebpf.AttachCGroupSockOps}}
	if wildcard {
		atRoot = append(atRoot, e.skbHooks()...)
	} else {
		perTenant = append(perTenant, e.skbHooks()...)
	}

	keepRoot := map[string]bool{}
	for _, h := range atRoot {
		keepRoot[h.name] = true
		if e.rootLinks[h.name] != nil {
			continue
		}
		l, err := e.attachPinned(e.rootPin(h), e.cfg.CgroupDir, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.rootLinks[h.name] = l
	}
	keep := map[uint64]map[string]bool{}
	for id, p := range want {
		keep[id] = map[string]bool{}
		for _, h := range perTenant {
			keep[id][h.name] = true
			if e.attached[id][h.name] != nil {
				continue
			}
			l, err := e.attachPinned(e.tenantPin(id, h), p, h)
			if errors.Is(err, os.ErrNotExist) {
				break // the cgroup was just removed
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if e.attached[id] == nil {
				e.attached[id] = map[string]link.Link{}
			}
			e.attached[id][h.name] = l
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("attach limiter to tenant cgroups: %w", err)
	}

	drop := func(l link.Link) {
		errs = append(errs, l.Unpin(), l.Close())
	}
	for name, l := range e.rootLinks {
		if !keepRoot[name] {
			drop(l)
			delete(e.rootLinks, name)
		}
	}
	for id, ls := range e.attached {
		for name, l := range ls {
			if !keep[id][name] {
				drop(l)
				delete(ls, name)
			}
		}
		if len(ls) == 0 {
			delete(e.attached, id)
			delete(e.paths, id)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach limiter from cgroups: %w", err)
	}
	e.dirty = false
	return nil
}

// cgroupPath finds the path of cgroup id by opening it by file handle (a
// cgroup id is its kernfs file handle); ok is false when no live cgroup
// has that id. Cgroup ids are never reused, so paths are cached.
func (e *Enforcer) cgroupPath(id uint64) (string, bool, error) {
	if p, ok := e.paths[id]; ok {
		return p, true, nil
	}
	mnt, err := os.Open(e.cfg.CgroupDir)
	if err != nil {
		return "", false, fmt.Errorf("find cgroup %d: %w", id, err)
	}
	defer mnt.Close()
	p, ok, err := hostfs.CgroupPath(mnt, id)
	if err != nil || !ok {
		return "", ok, err
	}
	e.paths[id] = p
	return p, true, nil
}
