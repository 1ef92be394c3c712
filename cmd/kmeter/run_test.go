package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

// runCLI runs kmeter in-process with args and returns its error.
func runCLI(t *testing.T, args ...string) error {
	t.Helper()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&strings.Builder{})
	cmd.SetErr(&strings.Builder{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	return cmd.ExecuteContext(ctx)
}

func TestRun_badInput(t *testing.T) {
	tmp := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badConfig := write("bad.yaml", "tenants:\n  - name: shop\n    cgroups: [/shop]\n    colour: red\n")
	shortBill := write("short.yaml", "bill_interval: 2s\n")
	noCgroup2 := write("mounts", "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown config key", []string{"run", "--config", badConfig}, []string{"bad.yaml", "field colour not found"}},
		{"missing config file", []string{"run", "--config", filepath.Join(tmp, "none.yaml")}, []string{"read config", "no such file"}},
		{"missing cgroup2 mount", []string{"run", "--mounts", noCgroup2}, []string{"no cgroup2 file system is mounted", "mount -t cgroup2"}},
		{"pin dir not on bpffs", []string{"run", "--pin-dir", tmp}, []string{"--pin-dir", "is not on a bpffs"}},
		{"bad interval", []string{"run", "--interval", "-1s"}, []string{"--interval", "must be positive"}},
		{"bill interval below reads", []string{"run", "--bill-interval", "1s"}, []string{"--bill-interval 1s is shorter than --interval 5s"}},
		{"negative bill interval", []string{"run", "--bill-interval", "-1m"}, []string{"--bill-interval -1m0s must be positive"}},
		{"config bill interval below reads", []string{"run", "--config", shortBill, "--interval", "10s"}, []string{"--bill-interval 2s is shorter than --interval 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runCLI(t, tc.args...)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRun_portInUse(t *testing.T) {
	pin := testutil.PinDir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = runCLI(t, "run", "--pin-dir", pin, "--data-dir", t.TempDir(), "--listen", ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("err = %v, want 'address already in use' naming --listen", err)
	}
}
