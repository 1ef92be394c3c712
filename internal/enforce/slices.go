package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/kmeter/kmeter/internal/config"
)

// slicePorts is how many port ranges one trie entry holds, its own and
// those inherited from enclosing networks of the same tenant.
// Keep in sync with SLICE_PORTS in bpf/limiter.bpf.c.
const slicePorts = 8

// Slice is a network slice: traffic matched by its rules is metered under
// the slice id and limited by the slice's own bucket.
type Slice struct {
	Name  string
	ID    uint32
	Rules []SliceRule
	// Egress is the slice's bandwidth in bytes per second; 0 is unlimited.
	Egress, EgressBurst uint64
}

// SliceRule matches packets of Tenant ("" for every tenant) to or from
// remote addresses in Prefix and remote ports PortLo..PortHi.
type SliceRule struct {
	Tenant         string
	Prefix         netip.Prefix
	PortLo, PortHi uint16
}

func (r SliceRule) String() string {
	t := r.Tenant
	if t == "" {
		t = "*"
	}
	return fmt.Sprintf("%s -> %s ports %d-%d", t, r.Prefix, r.PortLo, r.PortHi)
}

// ParseSlices validates slices from the config file: ids and names unique,
// CIDRs and ports well formed, and no two rules that could match the same
// packet (same tenant, or one of them for every tenant; overlapping
// networks; overlapping ports), because then the slice of a packet would
// depend on rule order.
func ParseSlices(cs []config.Slice) ([]Slice, error) {
	var errs []error
	var out []Slice
	ids := map[uint32]string{}
	names := map[string]bool{}
	type owned struct {
		rule  SliceRule
		slice string
	}
	var all []owned
	for i, c := range cs {
		where := fmt.Sprintf("slices[%d] %q", i, c.Name)
		s := Slice{Name: c.Name, ID: c.ID}
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is empty", where))
		} else if names[c.Name] {
			errs = append(errs, fmt.Errorf("%s: the name is used twice", where))
		}
		names[c.Name] = true
		if c.ID == 0 {
			errs = append(errs, fmt.Errorf("%s: id must be 1 or more (0 means no slice)", where))
		} else if o, ok := ids[c.ID]; ok {
			errs = append(errs, fmt.Errorf("%s: id %d is already used by slice %q", where, c.ID, o))
		}
		ids[c.ID] = c.Name
		if len(c.Rules) == 0 {
			errs = append(errs, fmt.Errorf("%s: has no rules", where))
		}
		var err error
		if s.Egress, err = ParseByteRate(c.Egress); err != nil {
			errs = append(errs, fmt.Errorf("%s: egress: %w", where, err))
		} else if l, err := (Spec{Egress: c.Egress, EgressBurst: c.EgressBurst}).Parse(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		} else {
			s.EgressBurst = l.EgressBurst
		}
		for j, rc := range c.Rules {
			r, err := parseSliceRule(rc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s rules[%d]: %w", where, j, err))
				continue
			}
			for _, o := range all {
				if overlaps(o.rule, r) {
					errs = append(errs, fmt.Errorf("%s rules[%d] (%s) overlaps slice %q rule (%s): make the networks or port ranges disjoint", where, j, r, o.slice, o.rule))
				}
			}
			all = append(all, owned{r, c.Name})
			s.Rules = append(s.Rules, r)
		}
		out = append(out, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func parseSliceRule(c config.SliceRule) (SliceRule, error) {
	r := SliceRule{Tenant: c.Tenant, PortLo: 0, PortHi: 65535}
	p, err := netip.ParsePrefix(c.CIDR)
	if err != nil {
		return r, fmt.Errorf("cidr %q: %v (write it like 10.1.0.0/16 or fd00::/8)", c.CIDR, err)
	}
	r.Prefix = p.Masked()
	if c.Ports != "" {
		lo, hi, isRange := strings.Cut(c.Ports, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		h, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || l > h || l == 0 {
			return r, fmt.Errorf("ports %q: write a port (443) or a range (8000-8999) within 1-65535", c.Ports)
		}
		r.PortLo, r.PortHi = uint16(l), uint16(h)
	}
	return r, nil
}

func overlaps(a, b SliceRule) bool {
	if a.Tenant != b.Tenant && a.Tenant != "" && b.Tenant != "" {
		return false
	}
	return a.Prefix.Overlaps(b.Prefix) && a.PortLo <= b.PortHi && b.PortLo <= a.PortHi
}

// prefix16 returns p's address as 16 bytes (IPv4 mapped) and its length
// in bits of that form.
func prefix16(p netip.Prefix) ([16]byte, int) {
	if p.Addr().Is4() {
		return p.Addr().As16(), 96 + p.Bits()
	}
	return p.Addr().As16(), p.Bits()
}

// SetSlices replaces every slice. Slice rules name tenants, which must be
// known to the resolver.
func (e *Enforcer) SetSlices(slices []Slice) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	for _, s := range slices {
		if s.ID == 0 {
			return fmt.Errorf("slice %q: id must be 1 or more", s.Name)
		}
		if s.Egress > 0 {
			if err := (Limit{Egress: s.Egress, EgressBurst: s.EgressBurst}).validate(); err != nil {
				return fmt.Errorf("slice %q: %w", s.Name, err)
			}
		}
	}
	// Resolve tenants first so that an unknown tenant changes nothing.
	keys := map[string]uint64{"": 0}
	for _, s := range slices {
		for _, r := range s.Rules {
			if _, ok := keys[r.Tenant]; ok {
				continue
			}
			roots, err := e.cfg.Resolver.Roots(r.Tenant)
			if err != nil || len(roots) == 0 {
				return fmt.Errorf("slice %q: %w %q: %v", s.Name, ErrUnknownTenant, r.Tenant, err)
			}
			keys[r.Tenant] = 0
		}
	}
	for name := range keys {
		if name == "" {
			continue
		}
		t, err := e.state(name)
		if err != nil {
			return fmt.Errorf("slices: %w", err)
		}
		t.sliced = true
		keys[name] = t.key
		if err := e.sync(name, t); err != nil {
			return err
		}
	}

	entries := buildSliceEntries(slices, keys)
	if err := e.replaceSliceMaps(slices, entries); err != nil {
		return err
	}
	var set limiterHostSettings
	for _, s := range slices {
		for _, r := range s.Rules {
			if r.Tenant == "" {
				set.WildcardSlices = 1
			}
		}
	}
	if err := e.objs.Settings.Put(uint32(0), set); err != nil {
		return fmt.Errorf("write slice settings: %w", err)
	}
	for name, t := range e.tenants {
		if _, ok := keys[name]; !ok && t.sliced {
			t.sliced = false
			if err := e.sync(name, t); err != nil {
				return err
			}
		}
	}
	e.slices = slices
	e.dirty = true // a slice rule for every tenant moves hooks to the root
	return e.reconcile()
}

type sliceEntry struct {
	key limiterSliceKey
	val limiterSliceVal
	n   int
}

// buildSliceEntries makes one trie entry per (tenant, network), holding
// its own port ranges and those of enclosing networks of the same tenant:
// the kernel's longest-prefix lookup returns only the most specific entry.
func buildSliceEntries(slices []Slice, keys map[string]uint64) []*sliceEntry {
	type owned struct {
		r  SliceRule
		id uint32
	}
	var rules []owned
	limited := map[uint32]uint32{}
	for _, s := range slices {
		for _, r := range s.Rules {
			rules = append(rules, owned{r, s.ID})
		}
		if s.Egress > 0 {
			limited[s.ID] = 1
		}
	}
	byKey := map[limiterSliceKey]*sliceEntry{}
	var order []limiterSliceKey
	for _, o := range rules {
		k := sliceKey(keys[o.r.Tenant], o.r.Prefix)
		if byKey[k] == nil {
			byKey[k] = &sliceEntry{key: k}
			order = append(order, k)
		}
	}
	for _, k := range order {
		ent := byKey[k]
		for _, o := range rules {
			if keys[o.r.Tenant] != tenantOfKey(k) {
				continue
			}
			addr, bits := prefix16(o.r.Prefix)
			entAddr := netip.AddrFrom16(k.Addr)
			if bits > int(k.Prefixlen)-64 || !netip.PrefixFrom(netip.AddrFrom16(addr), bits).Contains(entAddr) {
				continue
			}
			if ent.n < slicePorts {
				ent.val.P[ent.n] = limiterSlicePort{Lo: o.r.PortLo, Hi: o.r.PortHi, Slice: o.id, Limited: limited[o.id]}
			}
			ent.n++
		}
	}
	out := make([]*sliceEntry, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out
}

func sliceKey(tenant uint64, p netip.Prefix) limiterSliceKey {
	addr, bits := prefix16(p)
	k := limiterSliceKey{Prefixlen: uint32(64 + bits), Addr: addr}
	putNative(k.Tenant[:], tenant)
	return k
}

func tenantOfKey(k limiterSliceKey) uint64 { return getNative(k.Tenant[:]) }

func (e *Enforcer) replaceSliceMaps(slices []Slice, entries []*sliceEntry) error {
	for _, ent := range entries {
		if ent.n > slicePorts {
			addr := netip.AddrFrom16(ent.key.Addr).Unmap()
			return fmt.Errorf("slices: network %s/%d has %d port ranges with those of enclosing networks, at most %d fit", addr, int(ent.key.Prefixlen)-64-96*b2i(addr.Is4()), ent.n, slicePorts)
		}
	}
	want := map[limiterSliceKey]bool{}
	for _, ent := range entries {
		want[ent.key] = true
		if err := e.objs.Slices.Put(ent.key, ent.val); err != nil {
			return fmt.Errorf("write slice rule: %w", err)
		}
	}
	var stale []limiterSliceKey
	var k limiterSliceKey
	var v limiterSliceVal
	it := e.objs.Slices.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list slice rules: %w", err)
	}
	for _, k := range stale {
		_ = e.objs.Slices.Delete(k)
	}
	ids := map[uint32]bool{}
	for _, s := range slices {
		ids[s.ID] = true
		if s.Egress == 0 {
			_ = e.objs.SliceLimits.Delete(s.ID)
			continue
		}
		if err := e.objs.SliceLimits.Put(s.ID, kernelRate(s.Egress, s.EgressBurst)); err != nil {
			return fmt.Errorf("write limit of slice %q: %w", s.Name, err)
		}
	}
	var id uint32
	var r limiterRate
	var staleIDs []uint32
	it = e.objs.SliceLimits.Iterate()
	for it.Next(&id, &r) {
		if !ids[id] {
			staleIDs = append(staleIDs, id)
		}
	}
	for _, id := range staleIDs {
		_ = e.objs.SliceLimits.Delete(id)
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Slices returns the slices in force, by id.
func (e *Enforcer) Slices() []Slice {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := append([]Slice(nil), e.slices...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (e *Enforcer) sliceNames() map[uint32]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[uint32]string{}
	for _, s := range e.slices {
		m[s.ID] = s.Name
	}
	return m
}

// putNative and getNative store a tenant key the way the kernel copies a
// __u64 into the trie key: in host byte order.
func putNative(b []byte, v uint64) { binary.NativeEndian.PutUint64(b, v) }

func getNative(b []byte) uint64 { return binary.NativeEndian.Uint64(b) }
