package main

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/testutil"
)

// Two agents (two node ids, two pin dirs: two independent sets of kernel
// programs) bill into one PostgreSQL fleet ledger at the same time. Each
// node's series come out exact: its own tenant's TLS handshakes, and the
// other node's tenant seen as an unconfigured cgroup. The ledger lives in
// a fresh schema of $KMETER_TEST_POSTGRES (ledgertest.PostgresURL), which
// fails the test under KMETER_REQUIRE_BPF=1 when the variable is unset.
func TestE2E_postgresTwoNodes(t *testing.T) {
	url := ledgertest.PostgresURL(t)
	signed, keys := signedPlugin(t, buildPlugin(t, "c-tls"))
	cgA, cgB := testutil.NewCgroup(t, "a"), testutil.NewCgroup(t, "b")
	client := testutil.NewCgroup(t, "client")
	const interval = 200 * time.Millisecond
	start := func(node, tenant string, cg testutil.Cgroup) *testAgent {
		return startAgent(t, "--pin-dir", testutil.PinDir(t), "--data-dir", t.TempDir(), "--interval", interval.String(),
			"--node-id", node, "--ledger", url, "--plugin", signed, "--trusted-keys", keys,
			"--config", writeConfig(t, tenantConfig(tenant, cg, "")))
	}
	a, b := start("node-a", "shop-a", cgA), start("node-b", "shop-b", cgB)

	const na, nb = 30, 17
	waitA, waitB := startTLS(t, cgA, client, na), startTLS(t, cgB, client, nb) // both nodes write at once
	if err := errors.Join(waitA(), waitB()); err != nil {
		t.Fatal(err)
	}
	a.waitBilled(t, "shop-a", meter.TLSServerHandshakes, na, 10*time.Second)
	b.waitBilled(t, "shop-b", meter.TLSServerHandshakes, nb, 10*time.Second)
	time.Sleep(3 * interval)
	a.stop(t)
	b.stop(t)

	out, _, err := pluginCLI(t, "ledger", "totals", "--ledger", url)
	if err != nil {
		t.Fatalf("kmeter ledger totals: %v", err)
	}
	var totals []ledger.Total
	if err := json.Unmarshal([]byte(out), &totals); err != nil {
		t.Fatalf("totals JSON: %v\n%s", err, out)
	}
	type series struct{ node, tenant string }
	got := map[series]ledger.Total{}
	for _, tot := range totals {
		if tot.Meter == meter.TLSServerHandshakes {
			got[series{tot.Node, tot.Tenant}] = tot
		}
	}
	for s, n := range map[series]int64{
		{"node-a", "shop-a"}: na,
		{"node-a", cgB.Rel}:  nb, // node a meters b's cgroup too, as a tenant of its own
		{"node-b", "shop-b"}: nb,
		{"node-b", cgA.Rel}:  na,
	} {
		if tot := got[s]; tot.Quantity != n || tot.AmountMicro != n {
			t.Errorf("%s/%s: billed %d handshakes for %d micro-USD, want %d and %d", s.node, s.tenant, tot.Quantity, tot.AmountMicro, n, n)
		}
	}
	for tenant, n := range map[string]int64{"shop-a": na, "shop-b": nb} {
		if inv := invoiceCLI(t, tenant, "--ledger", url); inv.TotalMicro != n {
			t.Errorf("invoice of %s: %d micro-USD, want %d", tenant, inv.TotalMicro, n)
		}
	}
	if out, code, err := pluginCLI(t, "ledger", "verify", "--ledger", url); code != 0 {
		t.Fatalf("kmeter ledger verify: exit %d, %v\n%s", code, err, out)
	}
}
