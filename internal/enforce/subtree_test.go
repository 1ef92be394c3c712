package enforce

import (
	"fmt"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

// twoRoots names tenant "shop" with two cgroup subtrees.
type twoRoots struct {
	*pathResolver
	a, b testutil.Cgroup
}

func (r twoRoots) Roots(tenant string) ([]uint64, error) {
	if tenant == "shop" {
		return []uint64{r.b.ID, r.a.ID}, nil
	}
	return r.pathResolver.Roots(tenant)
}

func (r twoRoots) Tenant(id uint64) string {
	if id == r.a.ID || id == r.b.ID {
		return "shop"
	}
	return r.pathResolver.Tenant(id)
}

// TestEnforcer_tenantWithTwoSubtrees checks that a tenant's subtrees share
// one bucket: at 1/s with burst 10, 10 connects from each subtree let
// exactly 10 through in total, all counted under the tenant's name.
func TestEnforcer_tenantWithTwoSubtrees(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	r := twoRoots{pathResolver: newPathResolver(root), a: testutil.NewCgroup(t, "web"), b: testutil.NewCgroup(t, "db")}
	e, err := Open(Config{PinDir: testutil.PinDir(t), CgroupDir: root, Resolver: r})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { e.Unpin(); e.Close() })
	if err := e.SetLimit("shop", Limit{ConnectRate: 1, ConnectBurst: 10}); err != nil {
		t.Fatal(err)
	}
	addr := listen(t, "tcp4", "127.0.0.1:0")
	ra := runConnect(t, r.a, addr, 10)
	rb := runConnect(t, r.b, addr, 10)

	var bk limiterTbucket
	key := min(r.a.ID, r.b.ID)
	if err := e.objs.Buckets.Lookup(limiterBucketKey{Id: key, Kind: kindConnect}, &bk); err != nil {
		t.Fatal(err)
	}
	want := 10 + int((bk.LastNs-bk.SinceNs)/nano)
	if ra.OK+rb.OK != want {
		t.Errorf("%d + %d connects passed from the two subtrees, want %d in total", ra.OK, rb.OK, want)
	}
	got, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if d := got["shop"][ConnectDenied]; d != uint64(ra.EPERM+rb.EPERM) {
		t.Errorf("shop connect_denied = %d, want %d (all: %v)", d, ra.EPERM+rb.EPERM, fmt.Sprint(got))
	}
}
