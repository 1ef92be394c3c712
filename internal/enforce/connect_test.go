package enforce

import (
	"strconv"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

func itoa(n int) string { return strconv.Itoa(n) }

// TestEnforcer_connectBucketExact limits a tenant to 100 connects/s with
// burst 100 and makes 1,000 connects in a burst from a child cgroup created
// after the limit was set. Exactly the bucket's allowance passes: the 100
// of the burst plus the refill over the kernel time between the first and
// the last connect, floor(100/s * (last-first)); every other connect fails
// with EPERM and is counted once.
func TestEnforcer_connectBucketExact(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"ipv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := openTest(t)
			tenant := testutil.NewCgroup(t, "tenant")
			if err := e.SetLimit(tenant.Rel, Limit{ConnectRate: 100, ConnectBurst: 100}); err != nil {
				t.Fatal(err)
			}
			child := testutil.NewCgroup(t, "tenant/child")
			addr := listen(t, tc.network, tc.addr)

			const n = 1000
			res := runConnect(t, child, addr, n)

			var b limiterTbucket
			if err := e.objs.Buckets.Lookup(limiterBucketKey{Id: tenant.ID, Kind: kindConnect}, &b); err != nil {
				t.Fatalf("read connect bucket: %v", err)
			}
			elapsed := b.LastNs - b.SinceNs
			want := 100 + int(elapsed*100/nano)
			t.Logf("kernel time from first to last connect: %d ns; allowance %d; passed %d, EPERM %d", elapsed, want, res.OK, res.EPERM)
			if res.OK != want {
				t.Errorf("%d connects succeeded, want exactly %d (burst 100 + refill over %d ns)", res.OK, want, elapsed)
			}
			if res.OK+res.EPERM != n || int(b.Passed) != res.OK {
				t.Errorf("ok %d + eperm %d != %d, or kernel passed %d != ok", res.OK, res.EPERM, n, b.Passed)
			}
			// Token conservation: burst + refill = taken + left, in nano-tokens.
			if left := int64(100*nano+elapsed*100) - int64(res.OK)*nano; b.Tokens != left {
				t.Errorf("bucket holds %d nano-tokens, want %d", b.Tokens, left)
			}
			got, err := e.Enforced()
			if err != nil {
				t.Fatal(err)
			}
			if d := got[tenant.Rel][ConnectDenied]; d != uint64(res.EPERM) {
				t.Errorf("kernel counted %d connect_denied for %s, the helper saw %d EPERM", d, tenant.Rel, res.EPERM)
			}
		})
	}
}
