// Package enforce makes the kernel enforce per-tenant limits: token buckets
// in BPF maps for egress and ingress bandwidth (cgroup_skb), new TCP
// connections (cgroup/connect4 and connect6) and TLS handshakes, money and
// quota policies on top of them, and network slices with their own meters
// and limits.
//
// Limits are changed live by writing maps; programs are loaded once. Maps
// and links are pinned, so limits keep being enforced while the agent
// restarts. Every drop and denial is counted per tenant in per-CPU maps and
// exported by [Enforcer.Collector].
package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/meter"
)

// Name is the enforcer's pin directory name under the agent's pin dir.
const Name = "limiter"

// Bucket kinds. Keep in sync with enum kind in bpf/limiter.bpf.c.
const (
	kindEgress      = 0
	kindIngress     = 1
	kindConnect     = 2
	kindTLS         = 3
	kindSliceEgress = 4
	numLimitKinds   = 4
)

const nano = 1_000_000_000

// ErrUnknownTenant is returned for a tenant the resolver cannot find.
var ErrUnknownTenant = errors.New("unknown tenant")

// ErrClosed is returned by methods of a closed Enforcer.
var ErrClosed = errors.New("enforcer is closed")

// Resolver maps tenant names to the cgroup ids of their subtree roots and
// back. internal/tenant.Resolver implements it. It must be safe for
// concurrent use.
type Resolver interface {
	// Roots returns the cgroup ids at the top of tenant's subtrees, or an
	// error for an unknown tenant.
	Roots(tenant string) ([]uint64, error)
	// Tenant returns the tenant that cgroup id belongs to.
	Tenant(id uint64) string
}

// Config is what [Open] needs.
type Config struct {
	// PinDir is a directory on bpffs; maps and links go under PinDir/limiter.
	PinDir string
	// CgroupDir is the cgroup v2 mount. The programs attach to the
	// cgroups of tenants with something to enforce, found under it by id
	// (see attach.go); a few attach to it.
	CgroupDir string
	// Resolver names tenants.
	Resolver Resolver
}

func (c Config) validate() error {
	var errs []error
	// The cgroup dir is only checked for presence: attaching there is the
	// real test, and a failed attach must leave no pinned link behind.
	if err := meter.CheckConfig(meter.Config{PinDir: c.PinDir}, false); err != nil {
		errs = append(errs, err)
	}
	if c.CgroupDir == "" {
		errs = append(errs, errors.New("cgroup2 dir is empty: set it to the cgroup v2 mount point (see /proc/mounts)"))
	}
	if c.Resolver == nil {
		errs = append(errs, errors.New("tenant resolver is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("enforcer config: %w", err)
	}
	return nil
}

// Enforcer owns the limiter programs and their maps. It is safe for
// concurrent use.
type Enforcer struct {
	cfg    Config
	dir    string // the limiter's pin dir
	objs   limiterObjects
	reused bool
	// opening is set while Open runs; fresh are the links it pinned, which
	// are unpinned if it fails.
	opening bool
	fresh   []link.Link

	mu      sync.Mutex
	closed  bool
	tenants map[string]*tenantState
	names   map[uint64]string // tenant key -> name, including removed tenants
	slices  []Slice
	// rootLinks are the links at the cgroup2 root by hook name; attached
	// those at tenant subtree roots by cgroup id and hook name (attach.go).
	rootLinks map[string]link.Link
	attached  map[uint64]map[string]link.Link
	paths     map[uint64]string // cgroup id -> path, for attached cgroups
	// dirty is set when what needs the programs may have changed since
	// the last successful reconcile, so that the many calls that change
	// only a limit's rate skip it.
	dirty bool
}

type tenantState struct {
	key    uint64   // the smallest root id: keys limits, buckets and counters
	roots  []uint64 // cgroup ids written to the tenants map
	limit  Limit
	policy Policy
	sliced bool // named by a slice rule
	// enforced is whether the last sync left anything to enforce: when
	// that flips, the programs must be attached or detached.
	enforced bool
}

func (t *tenantState) empty() bool {
	return t.limit == (Limit{}) && t.policy.Kind == PolicyNone && !t.sliced
}

// Open loads and attaches the limiter. Maps pinned by an earlier agent
// under the same pin dir are reused with their limits, policies and
// buckets (which [Enforcer.Limit] then reports), and so are its links.
func Open(cfg Config) (_ *Enforcer, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := meter.MapsDir(cfg.PinDir, Name)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{cfg: cfg, dir: dir, opening: true, dirty: true, tenants: map[string]*tenantState{}, names: map[uint64]string{},
		rootLinks: map[string]link.Link{}, attached: map[uint64]map[string]link.Link{}, paths: map[uint64]string{}}
	defer func() {
		if err != nil {
			for _, l := range e.fresh {
				_ = l.Unpin()
			}
			e.Close()
		}
		e.opening, e.fresh = false, nil
	}()
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	if err := loadLimiterObjects(&e.objs, opts); err != nil {
		return nil, fmt.Errorf("load limiter: %w (if an older kmeter pinned different maps, remove %s)", err, dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("make limiter link dir: %w", err)
	}
	if err := e.adoptPinned(); err != nil {
		return nil, err
	}
	if err := e.restore(); err != nil {
		return nil, err
	}
	if err := e.reconcile(); err != nil {
		return nil, err
	}
	return e, nil
}

// policyCode numbers policies in the tenants map.
// Keep in sync with the policy field of struct tenant_limits in
// bpf/limiter.bpf.c.
var policyCode = map[PolicyKind]uint32{PolicyNone: 0, PolicyBlockConnections: 1, PolicyFloorBandwidth: 2}

// restore reads back the limits and policies an earlier agent left in
// the pinned tenants map, so that [Enforcer.Limit] and the API show them
// and they can be changed or removed.
func (e *Enforcer) restore() error {
	byKey := map[uint64]*tenantState{}
	var root uint64
	var kl limiterTenantLimits
	it := e.objs.Tenants.Iterate()
	for it.Next(&root, &kl) {
		t := byKey[kl.Key]
		if t == nil {
			t = &tenantState{key: kl.Key, sliced: kl.Sliced == 1, enforced: true}
			t.limit = Limit{
				Egress: kl.CfgRate[kindEgress], EgressBurst: kl.CfgBurst[kindEgress],
				Ingress: kl.CfgRate[kindIngress], IngressBurst: kl.CfgBurst[kindIngress],
				ConnectRate: kl.CfgRate[kindConnect], ConnectBurst: kl.CfgBurst[kindConnect],
				TLSRate: kl.CfgRate[kindTLS], TLSBurst: kl.CfgBurst[kindTLS],
			}
			for kind, code := range policyCode {
				if code == kl.Policy {
					t.policy = Policy{Kind: kind, Floor: kl.PolicyFloor}
				}
			}
			byKey[kl.Key] = t
		}
		t.roots = append(t.roots, root)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned limits: %w", err)
	}
	for key, t := range byKey {
		sort.Slice(t.roots, func(i, j int) bool { return t.roots[i] < t.roots[j] })
		name := e.cfg.Resolver.Tenant(key)
		e.tenants[name] = t
		e.names[key] = name
	}
	return nil
}

// Close detaches nothing: the pinned links keep enforcing the limits in the
// maps until [Enforcer.Unpin] or the next agent replaces them. It closes
// the agent's file descriptors and may be called more than once.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	e.eachLink(func(l link.Link) { errs = append(errs, l.Close()) })
	e.rootLinks, e.attached = nil, nil
	errs = append(errs, e.objs.Close())
	return errors.Join(errs...)
}

// Unpin removes the pinned links and maps, so the limits stop when the
// Enforcer is closed. Use it when enforcement is switched off for good.
func (e *Enforcer) Unpin() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	var errs []error
	e.eachLink(func(l link.Link) { errs = append(errs, l.Unpin()) })
	if err := os.Remove(filepath.Join(e.dir, "links")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, m := range []*ebpf.Map{e.objs.Tenants, e.objs.SliceLimits, e.objs.Buckets, e.objs.Counters, e.objs.Slices, e.objs.SliceStats, e.objs.Handshakes, e.objs.Paced, e.objs.Settings} {
		errs = append(errs, m.Unpin())
	}
	return errors.Join(errs...)
}

func (e *Enforcer) eachLink(f func(link.Link)) {
	for _, l := range e.rootLinks {
		f(l)
	}
	for _, ls := range e.attached {
		for _, l := range ls {
			f(l)
		}
	}
}

// Reused reports whether links pinned by an earlier agent were kept.
func (e *Enforcer) Reused() bool { return e.reused }

// state returns the state of tenant, resolving its roots afresh so that a
// tenant whose subtrees changed is keyed correctly. Callers hold e.mu.
func (e *Enforcer) state(tenant string) (*tenantState, error) {
	if tenant == "" {
		return nil, fmt.Errorf("%w: the tenant name is empty", ErrUnknownTenant)
	}
	roots, err := e.cfg.Resolver.Roots(tenant)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnknownTenant, tenant, err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w %q: it has no cgroup", ErrUnknownTenant, tenant)
	}
	roots = append([]uint64(nil), roots...)
	sort.Slice(roots, func(i, j int) bool { return roots[i] < roots[j] })
	t := e.tenants[tenant]
	if t == nil {
		t = &tenantState{}
		e.tenants[tenant] = t
	}
	if t.key != 0 && (t.key != roots[0] || !equalIDs(t.roots, roots)) {
		// The tenant's subtrees changed: drop the old kernel entries.
		e.dirty = true
		if err := e.deleteKernel(t); err != nil {
			return nil, err
		}
	}
	t.key, t.roots = roots[0], roots
	e.names[t.key] = tenant
	return t, nil
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SetLimit sets tenant's limit, replacing the previous one. It takes
// effect for the next packet or connect() of every cgroup in the tenant's
// subtrees; buckets keep their tokens (capped at the new burst).
func (e *Enforcer) SetLimit(tenant string, l Limit) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("limit for %q: %w", tenant, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	t, err := e.state(tenant)
	if err != nil {
		return err
	}
	t.limit = l
	if err := e.sync(tenant, t); err != nil {
		return err
	}
	return e.reconcile()
}

// Limit returns tenant's configured limit and policy; ok is false when
// the tenant has neither.
func (e *Enforcer) Limit(tenant string) (l Limit, p Policy, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tenants[tenant]
	if t == nil || (t.limit == Limit{} && t.policy.Kind == PolicyNone) {
		return Limit{}, Policy{}, false
	}
	return t.limit, t.policy, true
}

// Limits returns the configured limits of every limited tenant.
func (e *Enforcer) Limits() map[string]Limit {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]Limit{}
	for name, t := range e.tenants {
		if t.limit != (Limit{}) {
			out[name] = t.limit
		}
	}
	return out
}

// RemoveLimit removes tenant's limit; a policy set by [Enforcer.SetPolicy]
// stays. Removing a limit that is not set is not an error, but an unknown
// tenant is.
func (e *Enforcer) RemoveLimit(tenant string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	t, err := e.state(tenant)
	if err != nil {
		return err
	}
	t.limit = Limit{}
	if err := e.sync(tenant, t); err != nil {
		return err
	}
	return e.reconcile()
}

// SetPolicy puts the tenant that cgroup id belongs to (any cgroup of its
// subtree, usually the root) under p, or lifts the policy with
// Policy{}. The kernel applies it to the next connect() or packet.
func (e *Enforcer) SetPolicy(cgroupID uint64, p Policy) error {
	return e.SetTenantPolicy(e.cfg.Resolver.Tenant(cgroupID), p)
}

// SetTenantPolicy is [Enforcer.SetPolicy] by tenant name.
func (e *Enforcer) SetTenantPolicy(tenant string, p Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("policy for %q: %w", tenant, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	t, err := e.state(tenant)
	if err != nil {
		return err
	}
	t.policy = p
	if err := e.sync(tenant, t); err != nil {
		return err
	}
	return e.reconcile()
}

// sync writes t's effective limits to the kernel, or removes t from the
// kernel when nothing is left to enforce. Callers hold e.mu.
func (e *Enforcer) sync(name string, t *tenantState) error {
	if t.enforced == t.empty() {
		e.dirty = true
	}
	t.enforced = !t.empty()
	if t.empty() {
		delete(e.tenants, name)
		return e.deleteKernel(t)
	}
	eff := t.policy.apply(t.limit)
	kl := kernelLimits(eff, t.policy.Kind == PolicyBlockConnections)
	if t.sliced {
		kl.Sliced = 1
	}
	kl.Key = t.key
	kl.CfgRate = [numLimitKinds]uint64{t.limit.Egress, t.limit.Ingress, t.limit.ConnectRate, t.limit.TLSRate}
	kl.CfgBurst = [numLimitKinds]uint64{t.limit.EgressBurst, t.limit.IngressBurst, t.limit.ConnectBurst, t.limit.TLSBurst}
	kl.Policy, kl.PolicyFloor = policyCode[t.policy.Kind], t.policy.Floor
	for _, root := range t.roots {
		if err := e.objs.Tenants.Put(root, kl); err != nil {
			return fmt.Errorf("write limits of %q under cgroup %d: %w", name, root, err)
		}
	}
	// A kind that became unlimited loses its bucket, so that a later limit
	// starts with a full bucket rather than stale debt.
	for k := uint32(0); k < numLimitKinds; k++ {
		if kl.K[k].On == 0 {
			if err := e.objs.Buckets.Delete(limiterBucketKey{Id: t.key, Kind: k}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("reset bucket of %q: %w", name, err)
			}
		}
	}
	return nil
}

func (e *Enforcer) deleteKernel(t *tenantState) error {
	var errs []error
	del := func(m *ebpf.Map, k any) {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	for _, root := range t.roots {
		del(e.objs.Tenants, root)
	}
	for k := uint32(0); k < numLimitKinds; k++ {
		del(e.objs.Buckets, limiterBucketKey{Id: t.key, Kind: k})
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove tenant limits from the kernel: %w", err)
	}
	return nil
}

func kernelRate(rate, burst uint64) limiterRate {
	if rate == 0 {
		return limiterRate{}
	}
	burstN := burst * nano
	return limiterRate{Rate: rate, BurstN: burstN, MaxIdleNs: burstN / rate, On: 1}
}

// creditBatch is how many bytes a subtree root takes from a byte bucket
// at once into its credit (struct tenant_limits in bpf/limiter.bpf.c), so
// that most packets pass on one atomic add instead of the bucket's
// locked refill. A sixteenth of the burst keeps what one root can hold
// ahead small against the burst, and the kernel hands out none once the
// bucket runs low, so a tenant at its limit is judged packet by packet.
func creditBatch(burst uint64) uint64 { return burst / 16 }

func kernelLimits(l Limit, blockConnect bool) limiterTenantLimits {
	var kl limiterTenantLimits
	kl.K[kindEgress] = kernelRate(l.Egress, l.EgressBurst)
	kl.K[kindIngress] = kernelRate(l.Ingress, l.IngressBurst)
	kl.K[kindConnect] = kernelRate(l.ConnectRate, l.ConnectBurst)
	kl.K[kindTLS] = kernelRate(l.TLSRate, l.TLSBurst)
	kl.K[kindEgress].Batch = creditBatch(l.EgressBurst)
	kl.K[kindIngress].Batch = creditBatch(l.IngressBurst)
	if blockConnect {
		// On with rate 0: the kernel denies every connect().
		kl.K[kindConnect] = limiterRate{On: 1}
	}
	return kl
}

// validate checks a Limit built in code rather than parsed from a Spec.
func (l Limit) validate() error {
	var errs []error
	check := func(name string, rate, burst, maxRate, maxBurst, minBurst uint64) {
		if rate == 0 && burst == 0 {
			return
		}
		if rate == 0 || rate > maxRate {
			errs = append(errs, fmt.Errorf("%s rate %d is outside 1..%d per second", name, rate, maxRate))
		}
		if burst < minBurst || burst > maxBurst {
			errs = append(errs, fmt.Errorf("%s burst %d is outside %d..%d", name, burst, minBurst, maxBurst))
		}
	}
	check("egress", l.Egress, l.EgressBurst, MaxByteRate, MaxByteBurst, MinByteBurst)
	check("ingress", l.Ingress, l.IngressBurst, MaxByteRate, MaxByteBurst, MinByteBurst)
	check("connect", l.ConnectRate, l.ConnectBurst, MaxEventRate, MaxEventBurst, 1)
	check("tls", l.TLSRate, l.TLSBurst, MaxEventRate, MaxEventBurst, 1)
	return errors.Join(errs...)
}

// tenantName names tenant key for metrics. Callers hold e.mu.
func (e *Enforcer) tenantName(key uint64) string {
	if n, ok := e.names[key]; ok {
		return n
	}
	return e.cfg.Resolver.Tenant(key)
}
