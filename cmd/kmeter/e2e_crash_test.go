package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/testutil"
)

// An agent SIGKILLed at random moments under a continuous workload, twenty
// times, bills exactly what the kernel counted: every
// (tenant, meter) series of the ledger ends equal to the pinned counter,
// no unit lost while the agent was down and none billed twice by a window
// the crash interrupted; and the ledger verifies. This is the SQLite
// ledger; TestE2E_crashLoopPostgres runs the same against PostgreSQL (a
// fresh schema of $KMETER_TEST_POSTGRES).
//
// The kills land anywhere: while the agent loads or re-attaches its
// programs, between windows, or inside a ledger commit. Crashes at the
// exact points just before and after the commit are injected in
// internal/window's tests with window.Config.Fault; this test covers a
// real process dying for real.
func TestE2E_crashLoopBillsExactly(t *testing.T) { crashLoop(t, t.TempDir(), nil) }

// TestE2E_crashLoopPostgres is the crash loop with the PostgreSQL ledger,
// where a kill can cut a commit's transaction on the server mid-way.
func TestE2E_crashLoopPostgres(t *testing.T) {
	crashLoop(t, t.TempDir(), []string{"--ledger", ledgertest.PostgresURL(t)})
}

// crashLoop runs the crash loop; ledgerArgs select the ledger besides
// --data-dir data.
func crashLoop(t *testing.T, data string, ledgerArgs []string) {
	signed, keys := signedPlugin(t, buildPlugin(t, "c-flat")) // 2 micro-USD per unit of any meter
	shop := testutil.NewCgroup(t, "shop")
	pin := testutil.PinDir(t)
	const interval = 100 * time.Millisecond
	args := append([]string{"--pin-dir", pin, "--data-dir", data, "--interval", interval.String(), "--node-id", "crashy",
		"--plugin", signed, "--trusted-keys", keys, "--config", writeConfig(t, tenantConfig("shop", shop, ""))}, ledgerArgs...)

	// The workload connects to a listener of the test (outside the
	// tenant) over and over: syscalls, tcp_connects and bytes both ways.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := startAgent(t, args...)
	work := shop.SelfCommand(t, "connect-loop", ln.Addr().String())
	if err := work.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = work.Process.Kill(); _ = work.Wait() }()

	seed := time.Now().UnixNano()
	t.Logf("kill delays seeded with %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	kills := 20
	if testing.Short() {
		kills = 5
	}
	var early int
	for i := range kills {
		delay := time.Duration(100+rng.IntN(601)) * time.Millisecond
		if i%2 == 1 {
			// Odd rounds: kill at a random moment after the start, often
			// before the agent is ready (loading, re-attaching, opening
			// the ledger).
			a = spawnAgent(t, args...)
			time.Sleep(delay)
			if !a.ready() {
				early++
			}
		} else {
			if i > 0 {
				a = startAgent(t, args...)
			}
			time.Sleep(delay)
		}
		if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = a.cmd.Wait()
	}
	t.Logf("%d SIGKILLs, %d of them before the agent was ready", kills, early)

	// Stop the workload while no agent runs: the pinned programs count
	// its last events; the final agent must bill them.
	_ = work.Process.Kill()
	_ = work.Wait()
	a = startAgent(t, args...)
	kernel := a.waitSettled(t, "shop", interval)
	if len(kernel) < 3 {
		t.Fatalf("kernel counted only %v for the workload; want syscalls, tcp_connects and bytes", kernel)
	}
	a.stop(t)

	out, _, err := pluginCLI(t, append([]string{"ledger", "totals", "--data-dir", data}, ledgerArgs...)...)
	if err != nil {
		t.Fatalf("kmeter ledger totals: %v", err)
	}
	var totals []ledger.Total
	if err := json.Unmarshal([]byte(out), &totals); err != nil {
		t.Fatalf("ledger totals JSON: %v\n%s", err, out)
	}
	billed := map[string]ledger.Total{}
	for _, tot := range totals {
		if tot.Tenant == "shop" {
			if tot.Node != "crashy" {
				t.Errorf("series %+v billed under node %q, want crashy", tot, tot.Node)
			}
			billed[tot.Meter] = tot
		}
	}
	for m, want := range kernel {
		got := billed[m]
		if got.Quantity != int64(want) {
			t.Errorf("shop/%s: ledger billed %d in %d windows, kernel counted %d", m, got.Quantity, got.Windows, want)
		}
		if got.AmountMicro != 2*got.Quantity {
			t.Errorf("shop/%s: %d micro-USD for %d units, c/flat charges 2 each", m, got.AmountMicro, got.Quantity)
		}
		t.Logf("shop/%s: kernel %d = ledger %d units in %d windows", m, want, got.Quantity, got.Windows)
		delete(billed, m)
	}
	for m, tot := range billed {
		t.Errorf("shop/%s: ledger billed %+v, the kernel counted nothing", m, tot)
	}
	if out, code, err := pluginCLI(t, append([]string{"ledger", "verify", "--data-dir", data}, ledgerArgs...)...); code != 0 {
		t.Fatalf("kmeter ledger verify: exit %d, %v\n%s", code, err, out)
	}
}

// spawnAgent starts `kmeter run` without waiting for it to be ready.
func spawnAgent(t *testing.T, args ...string) *testAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^$", "run", "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), testutil.HelperEnv+"=kmeter")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &testAgent{cmd: cmd, addr: addr}
	t.Cleanup(func() { a.kill() })
	return a
}

// ready reports whether the agent answers /readyz with 200.
func (a *testAgent) ready() bool {
	resp, err := http.Get("http://" + a.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitSettled waits until tenant's kernel counts stop moving and the
// agent's ledger has billed every one of them (its invoice quantity per
// meter equals the count), and returns the counts. It fails the test
// with both sides when that does not happen within 20s.
func (a *testAgent) waitSettled(t *testing.T, tenant string, interval time.Duration) map[string]uint64 {
	t.Helper()
	var kernel map[string]uint64
	var diff string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * interval) {
		before := a.usage(t, tenant).Tenants.Map()[tenant]
		inv := a.apiInvoice(t, tenant)
		time.Sleep(2 * interval)
		kernel = a.usage(t, tenant).Tenants.Map()[tenant]
		diff = ""
		for m, n := range kernel {
			if before[m] != n {
				diff += fmt.Sprintf(" %s still counting (%d -> %d);", m, before[m], n)
			}
			if q, _ := lineOf(inv, m); q != int64(n) {
				diff += fmt.Sprintf(" %s billed %d of %d;", m, q, n)
			}
		}
		if diff == "" && len(kernel) > 0 {
			return kernel
		}
	}
	t.Fatalf("tenant %s not settled after 20s:%s", tenant, diff)
	return nil
}
