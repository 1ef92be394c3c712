package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

func TestReport_Write(t *testing.T) {
	for _, tc := range []struct {
		name   string
		checks []Check
		ok     bool
		last   string
	}{
		{"warnings only", []Check{{"btf", OK, "x"}, {"hook kprobe", Warn, "missing"}}, true, "kmeter can run here."},
		{"a failure", []Check{{"cgroup2", Fail, "not mounted"}}, false, "cannot run here until the FAIL lines are fixed."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Report{Checks: tc.checks}
			var b strings.Builder
			if err := r.Write(&b); err != nil {
				t.Fatal(err)
			}
			if r.OK() != tc.ok || !strings.Contains(b.String(), tc.last) {
				t.Fatalf("OK() = %v, output:\n%s", r.OK(), b.String())
			}
		})
	}
}

// On this kernel the preferred hooks of every meter must work, kprobes
// are known to be missing, and a missing cgroup2 mount fails the report.
func TestRun_thisHost(t *testing.T) {
	pin := testutil.PinDir(t)
	r := Run(Options{PinDir: filepath.Join(pin, "doctor")})
	got := map[string]Level{}
	for _, c := range r.Checks {
		got[c.Name] = c.Level
	}
	for _, name := range []string{"btf", "cgroup2", "bpffs", "hook tp_btf/sys_enter", "hook tp_btf/inet_sock_set_state", "hook cgroup_skb/egress", "hook cgroup/connect4", "hook map ringbuf", "hook map cgrp_storage"} {
		if got[name] != OK {
			t.Errorf("%s: %v, want ok", name, got[name])
		}
	}
	if !r.OK() {
		t.Errorf("report says the agent cannot run here")
	}

	mounts := filepath.Join(t.TempDir(), "mounts")
	os.WriteFile(mounts, []byte("proc /proc proc rw 0 0\n"), 0o600)
	r = Run(Options{PinDir: filepath.Join(pin, "doctor2"), MountsFile: mounts})
	if r.OK() {
		t.Error("without cgroup2 the report must fail")
	}
}
