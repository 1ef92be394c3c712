package enforce

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/testutil"
)

// limiterRuns returns how many times each of the limiter's programs runs
// for the cgroup at path, by hook name: its effective program list for
// each attach type, which includes programs attached to ancestors.
func limiterRuns(t *testing.T, e *Enforcer, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	for _, h := range e.allHooks() {
		info, err := h.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: h.attach, QueryFlags: unix.BPF_F_QUERY_EFFECTIVE})
		if err != nil {
			t.Fatalf("query %s programs of %s: %v", h.name, path, err)
		}
		for _, p := range res.Programs {
			if p.ID == id {
				out[h.name]++
			}
		}
	}
	return out
}

// TestEnforcer_attachesOnlyWhereNeeded checks which cgroups run the
// limiter: a tenant with a limit, a policy or a slice rule runs each
// program once (also in a child cgroup made afterwards), an unlimited
// tenant runs none but the root's sockops, a slice rule for every tenant
// moves the cgroup_skb programs to the root without running them twice,
// and removing what there was to enforce detaches.
func TestEnforcer_attachesOnlyWhereNeeded(t *testing.T) {
	e, _ := openTest(t)
	lim := testutil.NewCgroup(t, "lim")
	free := testutil.NewCgroup(t, "free")
	all := map[string]int{"egress": 1, "ingress": 1, "connect4": 1, "connect6": 1, "bind4": 1, "bind6": 1, "sockops": 1}
	rootOnly := map[string]int{"sockops": 1}
	check := func(step string, cg testutil.Cgroup, want map[string]int) {
		t.Helper()
		got := limiterRuns(t, e, cg.Path)
		for _, h := range e.allHooks() {
			if got[h.name] != want[h.name] {
				t.Errorf("%s: %s runs the limiter's %s %d times, want %d", step, cg.Rel, h.name, got[h.name], want[h.name])
			}
		}
	}
	check("no limits", free, rootOnly)
	if err := e.SetLimit(lim.Rel, Limit{Egress: 1 << 20, EgressBurst: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	check("limit on lim", lim, all)
	check("limit on lim", free, rootOnly)
	child := lim.Path + "/later"
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(child) })
	check("child made after the limit", testutil.Cgroup{Path: child, Rel: lim.Rel + "/later"}, all)
	if err := os.Remove(child); err != nil {
		t.Fatal(err)
	}

	if err := e.SetTenantPolicy(free.Rel, Policy{Kind: PolicyBlockConnections}); err != nil {
		t.Fatal(err)
	}
	check("policy on free", free, all)
	if err := e.SetTenantPolicy(free.Rel, Policy{}); err != nil {
		t.Fatal(err)
	}
	check("policy lifted", free, rootOnly)

	rule := func(tenant string) []Slice {
		s, err := ParseSlices([]config.Slice{{Name: "s", ID: 1, Rules: []config.SliceRule{{Tenant: tenant, CIDR: "10.0.0.0/8"}}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := e.SetSlices(rule(free.Rel)); err != nil {
		t.Fatal(err)
	}
	check("slice rule for free", free, all)
	if err := e.SetSlices(rule("")); err != nil {
		t.Fatal(err)
	}
	skbAtRoot := map[string]int{"egress": 1, "ingress": 1, "sockops": 1}
	check("slice rule for every tenant", free, skbAtRoot)
	check("slice rule for every tenant", lim, all)
	if err := e.SetSlices(nil); err != nil {
		t.Fatal(err)
	}
	check("no slices", free, rootOnly)

	if err := e.RemoveLimit(lim.Rel); err != nil {
		t.Fatal(err)
	}
	check("limit removed", lim, rootOnly)
	if pins, _ := filepath.Glob(filepath.Join(e.dir, "links", "*")); len(pins) != 0 {
		t.Errorf("links still pinned with nothing to enforce: %v", pins)
	}
}

// TestEnforcer_nestedTenants checks that a limited tenant inside another
// limited tenant's subtree gets no links of its own: the programs would
// run twice per packet and take twice from the bucket.
func TestEnforcer_nestedTenants(t *testing.T) {
	e, _ := openTest(t)
	outer := testutil.NewCgroup(t, "outer")
	inner := testutil.Cgroup{Path: outer.Path + "/inner", Rel: outer.Rel + "/inner"}
	if err := os.Mkdir(inner.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(inner.Path) })
	l := Limit{ConnectRate: 10, ConnectBurst: 10}
	for _, cg := range []testutil.Cgroup{inner, outer} {
		if err := e.SetLimit(cg.Rel, l); err != nil {
			t.Fatal(err)
		}
	}
	if got := limiterRuns(t, e, inner.Path); got["egress"] != 1 || got["connect4"] != 1 {
		t.Errorf("inner tenant runs egress %d and connect4 %d times, want once each", got["egress"], got["connect4"])
	}
	if err := e.RemoveLimit(outer.Rel); err != nil {
		t.Fatal(err)
	}
	if got := limiterRuns(t, e, inner.Path); got["egress"] != 1 || got["connect4"] != 1 {
		t.Errorf("after the outer limit went: inner runs egress %d and connect4 %d times, want once each", got["egress"], got["connect4"])
	}
}

// TestEnforcer_limitOnRunningConnection sets a limit on a tenant whose TCP
// connection was opened while it had none, so no limiter program ran at
// connect(): the limit still holds the connection down, and removing it
// detaches the programs and the connection speeds up again.
func TestEnforcer_limitOnRunningConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for 5 s")
	}
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "running")
	const rate = 4 << 20
	start := time.Now()
	addr, ch := timelineReceiver(t, start)
	cmd := cg.SelfCommand(t, "send", addr, "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
	if err := e.SetLimit(cg.Rel, Limit{Egress: rate, EgressBurst: DefaultByteBurst(rate)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start.Add(3500 * time.Millisecond)))
	if err := e.RemoveLimit(cg.Rel); err != nil {
		t.Fatal(err)
	}
	if got := limiterRuns(t, e, cg.Path); got["egress"] != 0 {
		t.Errorf("egress program still runs %d times for the tenant after its limit was removed", got["egress"])
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	tl := <-ch
	s := time.Second
	before, limited, after := tl.rate(s/2, 3*s/2), tl.rate(2*s, 7*s/2), tl.rate(4*s, 5*s)
	t.Logf("before %.1f MiB/s, limited %.2f MiB/s, after %.1f MiB/s", before/(1<<20), limited/(1<<20), after/(1<<20))
	if limited > 1.1*rate || limited < 0.5*rate {
		t.Errorf("with the limit set on the running connection it moved %.2f MiB/s, want about %d MiB/s", limited/(1<<20), rate>>20)
	}
	for _, r := range []float64{before, after} {
		if r < 3*rate {
			t.Errorf("without a limit the connection moved %.1f MiB/s, want at least 3x the %d MiB/s limit (before %.1f, after %.1f)", r/(1<<20), rate>>20, before/(1<<20), after/(1<<20))
		}
	}
	drops, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if drops[cg.Rel][EgressDrop] == 0 {
		t.Errorf("no egress drop counted while the limit held the connection down")
	}
}

// TestEnforcer_restartReusesTenantLinks closes an agent without unpinning
// and opens another: it takes over the tenant's links (same link ids, each
// program still attached once), and a link whose cgroup was removed
// meanwhile is unpinned.
func TestEnforcer_restartReusesTenantLinks(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	pin := testutil.PinDir(t)
	res := newPathResolver(root)
	cg := testutil.NewCgroup(t, "kept")
	gone := testutil.Cgroup{Path: filepath.Join(root, "kmeter-gone-"+filepath.Base(pin)), Rel: "/kmeter-gone-" + filepath.Base(pin)}
	if err := os.Mkdir(gone.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(gone.Path) })
	var goneStat unix.Stat_t
	if err := unix.Stat(gone.Path, &goneStat); err != nil {
		t.Fatal(err)
	}

	e1, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: res})
	testutil.CheckLoad(t, err)
	for _, c := range []testutil.Cgroup{cg, gone} {
		if err := e1.SetLimit(c.Rel, Limit{ConnectRate: 5, ConnectBurst: 5}); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]link.ID{}
	for name, l := range e1.attached[cg.ID] {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = info.ID
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone.Path); err != nil {
		t.Fatal(err)
	}

	e2, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Unpin(); e2.Close() })
	if !e2.Reused() {
		t.Errorf("second agent did not reuse the pinned links")
	}
	if len(e2.attached[cg.ID]) != len(ids) {
		t.Errorf("second agent holds %d links of the tenant, want %d", len(e2.attached[cg.ID]), len(ids))
	}
	for name, l := range e2.attached[cg.ID] {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.ID != ids[name] {
			t.Errorf("%s: link id %d after restart, want the pinned %d", name, info.ID, ids[name])
		}
	}
	for name, n := range limiterRuns(t, e2, cg.Path) {
		if n != 1 {
			t.Errorf("after restart the tenant runs %s %d times, want once", name, n)
		}
	}
	if pins, _ := filepath.Glob(filepath.Join(pin, Name, "links", "*")); len(pins) != len(ids) {
		t.Errorf("pinned links after restart: %v, want only the %d of %s (the removed cgroup's unpinned)", pins, len(ids), cg.Rel)
	}
}
