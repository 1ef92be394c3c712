package enforce

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"testing"

	"github.com/kmeter/kmeter/internal/testutil"
)

// openTest opens an Enforcer on a private pin dir, closed and unpinned
// when the test ends.
func openTest(t *testing.T) (*Enforcer, *pathResolver) {
	t.Helper()
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	res := newPathResolver(root)
	e, err := Open(Config{PinDir: testutil.PinDir(t), CgroupDir: root, Resolver: res})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() {
		if err := e.Unpin(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("unpin: %v", err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e, res
}

// listen accepts and drops TCP connections on loopback until the test ends.
func listen(t *testing.T, network, addr string) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func runConnect(t *testing.T, cg testutil.Cgroup, addr string, n int) connectResult {
	t.Helper()
	cmd := cg.SelfCommand(t, "connect", addr, itoa(n))
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("connect helper: %v", err)
	}
	var res connectResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("connect helper output %q: %v", out.String(), err)
	}
	if res.Other != 0 {
		t.Fatalf("connect helper: %d unexpected errors, first: %s", res.Other, res.FirstOther)
	}
	return res
}
