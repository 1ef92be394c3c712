package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/kmeter/kmeter/internal/agent"
	"github.com/kmeter/kmeter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(map[string]func([]string) error{
		// kmeter runs the CLI, so a test can start (and SIGKILL) an agent.
		"kmeter": func(args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cmd := newRootCmd()
			cmd.SetArgs(args)
			return cmd.ExecuteContext(ctx)
		},
		// getppid makes exactly N getppid syscalls.
		"getppid": func(args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return err
			}
			runtime.LockOSThread()
			for range n {
				syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
			}
			return nil
		},
		// Helpers of the billing, crash and quota tests (e2e_helpers_test.go).
		"tls-server":   tlsServerHelper,
		"tls-client":   tlsClientHelper,
		"connect-loop": connectLoopHelper,
		"connects":     connectsHelper,
	})
	os.Exit(m.Run())
}

// testAgent is a `kmeter run` process started by a test.
type testAgent struct {
	cmd  *exec.Cmd
	addr string
}

func startAgent(t *testing.T, args ...string) *testAgent {
	t.Helper()
	a := spawnAgent(t, args...)
	for deadline := time.Now().Add(30 * time.Second); !a.ready(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready at %s after 30s", a.addr)
		}
	}
	return a
}

func (a *testAgent) kill() {
	if a.cmd.ProcessState == nil {
		_ = a.cmd.Process.Kill()
		_ = a.cmd.Wait()
	}
}

func (a *testAgent) usage(t *testing.T, tenant string) agent.UsageResponse {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/usage?tenant=%s", a.addr, tenant))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var u agent.UsageResponse
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
		t.Fatal(err)
	}
	return u
}

// waitGetppid waits until the agent reports want getppid calls for tenant,
// then checks that the count stays exactly there for two more intervals.
func (a *testAgent) waitGetppid(t *testing.T, tenant string, want uint64, interval time.Duration) {
	t.Helper()
	var got uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(interval / 2) {
		got = a.usage(t, tenant).SyscallsByNumber.Map()[tenant][syscall.SYS_GETPPID]
		if got >= want {
			break
		}
	}
	time.Sleep(2 * interval)
	got = a.usage(t, tenant).SyscallsByNumber.Map()[tenant][syscall.SYS_GETPPID]
	if got != want {
		t.Fatalf("tenant %s: %d getppid calls counted, want exactly %d", tenant, got, want)
	}
}

func runGetppid(t *testing.T, cg testutil.Cgroup, n int) {
	t.Helper()
	if err := cg.SelfCommand(t, "getppid", strconv.Itoa(n)).Run(); err != nil {
		t.Fatalf("getppid helper: %v", err)
	}
}

// An agent killed with SIGKILL and restarted loses no counts (the pinned
// links kept counting while it was down) and counts nothing twice.
func TestAgent_sigkillRestart(t *testing.T) {
	pin := testutil.PinDir(t)
	cg := testutil.NewCgroup(t, "work")
	data := t.TempDir()
	const interval = 200 * time.Millisecond
	args := []string{"--pin-dir", pin, "--data-dir", data, "--interval", interval.String()}

	a := startAgent(t, args...)
	const k, m, n = 1000, 700, 300
	runGetppid(t, cg, k)
	a.waitGetppid(t, cg.Rel, k, interval)

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
	runGetppid(t, cg, m) // no agent running: the pinned program counts

	a = startAgent(t, args...)
	for _, st := range a.usage(t, cg.Rel).Meters {
		if st.Err == "" && !st.Reused {
			t.Errorf("meter %s attached a new link instead of re-using the pinned one", st.Meter)
		}
	}
	a.waitGetppid(t, cg.Rel, k+m, interval)
	runGetppid(t, cg, n)
	a.waitGetppid(t, cg.Rel, k+m+n, interval)
	a.checkMetrics(t, cg.Rel, k+m+n)
}

// checkMetrics scrapes /metrics, lints it, and checks the getppid count of
// tenant and that the syscalls meter reports its hook.
func (a *testAgent) checkMetrics(t *testing.T, tenant string, getppid uint64) {
	t.Helper()
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	text := string(body)
	for _, want := range []string{
		fmt.Sprintf(`kmeter_syscalls_by_number_total{nr="%d",tenant="%s"} %d`, syscall.SYS_GETPPID, tenant, getppid),
		fmt.Sprintf(`kmeter_usage_total{meter="syscalls",tenant="%s"} `, tenant),
		`kmeter_meter_up{fallback="false",hook="tp_btf/sys_enter",meter="syscalls"} 1`,
		`kmeter_map_overflow_total{counter="syscalls",meter="syscalls"} 0`,
		"kmeter_tls_events_dropped_total 0",
		`kmeter_meter_up{fallback="false",hook="cgroup_skb/egress",meter="tlsmeter"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
