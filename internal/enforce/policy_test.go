package enforce

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

// TestEnforcer_SetPolicy_blockConnections blocks a tenant with no limit of
// its own: its next connect() fails with EPERM and is counted; lifting
// the policy lets connects through again.
func TestEnforcer_SetPolicy_blockConnections(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "prepaid")
	addr := listen(t, "tcp4", "127.0.0.1:0")

	if res := runConnect(t, cg, addr, 3); res.OK != 3 {
		t.Fatalf("before the policy %d of 3 connects passed", res.OK)
	}
	if err := e.SetPolicy(cg.ID, Policy{Kind: PolicyBlockConnections}); err != nil {
		t.Fatal(err)
	}
	if res := runConnect(t, cg, addr, 1); res.EPERM != 1 {
		t.Fatalf("under block_connections connect() gave %+v, want EPERM", res)
	}
	if _, p, ok := e.Limit(cg.Rel); !ok || p.Kind != PolicyBlockConnections {
		t.Errorf("Limit(%s) policy = %+v, %v", cg.Rel, p, ok)
	}
	if err := e.SetPolicy(cg.ID, Policy{}); err != nil {
		t.Fatal(err)
	}
	if res := runConnect(t, cg, addr, 3); res.OK != 3 {
		t.Fatalf("after lifting the policy %d of 3 connects passed", res.OK)
	}
	got, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if d := got[cg.Rel][ConnectDenied]; d != 1 {
		t.Errorf("connect_denied = %d, want 1", d)
	}
	// Nothing left to enforce: the tenant is gone from the kernel maps.
	var kl limiterTenantLimits
	if err := e.objs.Tenants.Lookup(cg.ID, &kl); err == nil {
		t.Errorf("tenant %s still in the tenants map after its policy was lifted", cg.Rel)
	}
}

// TestEnforcer_SetPolicy_floorBandwidth checks the limits the kernel gets
// under a floor: the lower of the configured rate and the floor.
func TestEnforcer_SetPolicy_floorBandwidth(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "floor")
	if err := e.SetLimit(cg.Rel, Limit{Egress: 10 << 20, EgressBurst: 1 << 20, ConnectRate: 5, ConnectBurst: 5}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetPolicy(cg.ID, Policy{Kind: PolicyFloorBandwidth, Floor: 128 << 10}); err != nil {
		t.Fatal(err)
	}
	var kl limiterTenantLimits
	if err := e.objs.Tenants.Lookup(cg.ID, &kl); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[int]uint64{kindEgress: 128 << 10, kindIngress: 128 << 10, kindConnect: 5} {
		if kl.K[kind].On != 1 || kl.K[kind].Rate != want {
			t.Errorf("kind %d: kernel rate %+v, want %d", kind, kl.K[kind], want)
		}
	}
	if err := e.SetPolicy(cg.ID, Policy{}); err != nil {
		t.Fatal(err)
	}
	if err := e.objs.Tenants.Lookup(cg.ID, &kl); err != nil {
		t.Fatal(err)
	}
	if kl.K[kindEgress].Rate != 10<<20 || kl.K[kindIngress].On != 0 {
		t.Errorf("after lifting the floor the kernel has %+v", kl)
	}
}

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestEnforcer_liveChangeKeepsConnections changes limits and policies 50
// times while tenant B ping-pongs over an established connection: B's
// connection survives every change (also B's own block_connections,
// which only stops new connects), and each change to tenant A takes
// effect at once.
func TestEnforcer_liveChangeKeepsConnections(t *testing.T) {
	e, _ := openTest(t)
	a := testutil.NewCgroup(t, "a")
	b := testutil.NewCgroup(t, "b")
	echo := echoServer(t)
	sink := listen(t, "tcp4", "127.0.0.1:0")

	cmd := b.SelfCommand(t, "echo", echo)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewScanner(stdout)
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("echo helper did not connect: %q", out.Text())
	}

	for i := 0; i < 50; i++ {
		if err := e.SetLimit(a.Rel, Limit{Egress: uint64(1+i) << 20, EgressBurst: 1 << 20, ConnectRate: 10, ConnectBurst: 10}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetLimit(b.Rel, Limit{Egress: 1 << 20, EgressBurst: 1 << 20}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetTenantPolicy(b.Rel, Policy{Kind: PolicyBlockConnections}); err != nil {
			t.Fatal(err)
		}
		if err := e.RemoveLimit(b.Rel); err != nil {
			t.Fatal(err)
		}
		if err := e.SetTenantPolicy(b.Rel, Policy{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.SetTenantPolicy(a.Rel, Policy{Kind: PolicyBlockConnections}); err != nil {
		t.Fatal(err)
	}
	if res := runConnect(t, a, sink, 1); res.EPERM != 1 {
		t.Errorf("tenant a under block_connections: %+v, want 1 EPERM", res)
	}
	if err := e.RemoveLimit(a.Rel); err != nil {
		t.Fatal(err)
	}
	if res := runConnect(t, a, sink, 1); res.EPERM != 1 {
		t.Errorf("tenant a: removing its limit must keep its policy: %+v", res)
	}

	stdin.Close()
	if !out.Scan() {
		t.Fatalf("echo helper printed no round count")
	}
	rounds, _ := strconv.Atoi(strings.TrimSpace(out.Text()))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tenant b's established connection broke during live changes: %v", err)
	}
	if rounds == 0 {
		t.Errorf("tenant b made no round trips")
	}
	t.Logf("tenant b made %d round trips over one connection during 250 live changes", rounds)
	got, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if len(got[b.Rel]) != 0 {
		t.Errorf("tenant b had enforcement actions %v, want none", got[b.Rel])
	}
}

// TestEnforcer_survivesRestart closes the agent without unpinning: the
// kernel keeps enforcing with no agent running, a new agent on the same pin
// dir reuses the links and can lift the limit.
func TestEnforcer_survivesRestart(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	pin := testutil.PinDir(t)
	res := newPathResolver(root)
	cg := testutil.NewCgroup(t, "restart")
	addr := listen(t, "tcp4", "127.0.0.1:0")

	e1, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: res})
	testutil.CheckLoad(t, err)
	if err := e1.SetTenantPolicy(cg.Rel, Policy{Kind: PolicyBlockConnections}); err != nil {
		t.Fatal(err)
	}
	want := Limit{Egress: 5 << 20, EgressBurst: 1 << 20, TLSRate: 3, TLSBurst: 1}
	if err := e1.SetLimit(cg.Rel, want); err != nil {
		t.Fatal(err)
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e1.SetLimit(cg.Rel, Limit{}); err != ErrClosed {
		t.Errorf("SetLimit after Close = %v, want ErrClosed", err)
	}
	if r := runConnect(t, cg, addr, 1); r.EPERM != 1 {
		t.Fatalf("with no agent running the block must hold: %+v", r)
	}

	e2, err := Open(Config{PinDir: pin, CgroupDir: root, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Unpin(); e2.Close() })
	if !e2.Reused() {
		t.Errorf("second agent did not reuse the pinned links")
	}
	if l, p, ok := e2.Limit(cg.Rel); !ok || l != want || p.Kind != PolicyBlockConnections {
		t.Errorf("second agent read back %+v, %+v, %v; want %+v under block_connections", l, p, ok, want)
	}
	if err := e2.RemoveLimit(cg.Rel); err != nil {
		t.Fatal(err)
	}
	if err := e2.SetTenantPolicy(cg.Rel, Policy{}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e2.Limit(cg.Rel); ok {
		t.Errorf("limit still reported after removing limit and policy")
	}
	if r := runConnect(t, cg, addr, 2); r.OK != 2 {
		t.Fatalf("after the new agent lifted the block: %+v", r)
	}
}

// TestOpen_badConfig checks that Open names every missing setting and
// that a cgroup dir where programs cannot attach leaves no pinned link.
func TestOpen_badConfig(t *testing.T) {
	_, err := Open(Config{})
	for _, w := range []string{"pin dir is empty", "cgroup2 dir is empty", "tenant resolver is nil"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Open(Config{}) = %v, want it to say %q", err, w)
		}
	}
	pin := testutil.PinDir(t)
	_, err = Open(Config{PinDir: pin, CgroupDir: t.TempDir(), Resolver: newPathResolver("/")})
	if err == nil || !strings.Contains(err.Error(), "attach limiter sockops") {
		t.Fatalf("Open on a non-cgroup dir = %v, want an attach error", err)
	}
	if links, _ := filepath.Glob(filepath.Join(pin, Name, "link_*")); len(links) != 0 {
		t.Errorf("failed Open left pinned links %v", links)
	}
}
