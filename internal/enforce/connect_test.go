package enforce

import (
	"strconv"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

func itoa(n int) string { return strconv.Itoa(n) }

// TestEnforcer_connectBucketExact makes 1,000 TCP connects in a burst from
// a child cgroup created after its parent tenant was limited. Exactly the
// bucket's allowance passes, every other connect fails with EPERM and is
// counted once as connect_denied.
//
// With 1/s and burst 100 the allowance is independent of the bucket's own
// bookkeeping: 100 + floor(1/s * kernel time from first to last connect),
// which is 100 unless the burst takes a second. With 100/s the refill
// during the burst is read back from the bucket (refilled_n, which is
// less than 100/s * elapsed only when a stall let the bucket fill up
// again), and the test checks token conservation to the nano-token.
func TestEnforcer_connectBucketExact(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr string
		rate                uint64
	}{
		{"ipv4 1/s", "tcp4", "127.0.0.1:0", 1},
		{"ipv4 100/s", "tcp4", "127.0.0.1:0", 100},
		{"ipv6 100/s", "tcp6", "[::1]:0", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := openTest(t)
			tenant := testutil.NewCgroup(t, "tenant")
			if err := e.SetLimit(tenant.Rel, Limit{ConnectRate: tc.rate, ConnectBurst: 100}); err != nil {
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
			earned := elapsed * tc.rate // nano-tokens a never-full bucket earns
			t.Logf("first to last connect: %d ns; refilled %d of %d nano-tokens earned; passed %d, EPERM %d", elapsed, b.RefilledN, earned, res.OK, res.EPERM)
			want := 100 + int(b.RefilledN/nano)
			if tc.rate == 1 {
				want = 100 + int(earned/nano)
				if b.RefilledN != earned {
					t.Errorf("refilled %d nano-tokens, want %d", b.RefilledN, earned)
				}
			}
			if b.RefilledN > earned {
				t.Errorf("refilled %d nano-tokens, more than the %d earned", b.RefilledN, earned)
			}
			if res.OK != want {
				t.Errorf("%d connects succeeded, want exactly %d", res.OK, want)
			}
			if res.OK+res.EPERM != n || int(b.Passed) != res.OK {
				t.Errorf("ok %d + eperm %d != %d, or kernel passed %d != ok", res.OK, res.EPERM, n, b.Passed)
			}
			if left := int64(100*nano+b.RefilledN) - int64(res.OK)*nano; b.Tokens != left {
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
