package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/limitapi"
	"github.com/kmeter/kmeter/internal/tenant"
	"github.com/kmeter/kmeter/internal/testutil"
)

// TestLimitCLI drives `kmeter limit set/get/rm` against the limits API of
// a real enforcer, with tenants named by internal/tenant's resolver.
func TestLimitCLI(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	cg := testutil.NewCgroup(t, "cli")
	res, err := tenant.NewResolver(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := enforce.Open(enforce.Config{PinDir: testutil.PinDir(t), CgroupDir: root, Resolver: res})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { e.Unpin(); e.Close() })
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := httpauth.FromFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(limitapi.Handler(e, tok))
	t.Cleanup(srv.Close)
	flags := []string{"--server", srv.URL, "--token-file", tokFile}

	out, err := moneyCLI(t, append([]string{"limit", "set", cg.Rel, "--egress", "10MiB/s", "--connect-rate", "100/s", "--connect-burst", "100"}, flags...)...)
	if err != nil || !strings.Contains(out, `"egress": "10MiB/s"`) || !strings.Contains(out, `"connect_burst": 100`) {
		t.Fatalf("limit set: %v\n%s", err, out)
	}
	if l, _, ok := e.Limit(cg.Rel); !ok || l.Egress != 10<<20 || l.ConnectRate != 100 {
		t.Errorf("the enforcer holds %+v after limit set", l)
	}
	if out, err := moneyCLI(t, append([]string{"limit", "get", cg.Rel}, flags...)...); err != nil || !strings.Contains(out, `"connect_rate": "100/s"`) {
		t.Errorf("limit get: %v\n%s", err, out)
	}
	if _, err := moneyCLI(t, append([]string{"limit", "rm", cg.Rel}, flags...)...); err != nil {
		t.Errorf("limit rm: %v", err)
	}
	var se *limitapi.StatusError
	if _, err := moneyCLI(t, append([]string{"limit", "get", cg.Rel}, flags...)...); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("limit get after rm: %v, want 404", err)
	}
	for _, tc := range []struct {
		args []string
		say  string
	}{
		{[]string{"limit", "set", cg.Rel, "--egress", "-1MiB/s"}, "negative"},
		{[]string{"limit", "set", "/no/such/cgroup", "--connect-rate", "5/s"}, "404"},
		{[]string{"limit", "get"}, "accepts 1 arg"},
	} {
		if _, err := moneyCLI(t, append(tc.args, flags...)...); err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("kmeter %s: %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.say)
		}
	}
	if _, err := moneyCLI(t, "limit", "get", cg.Rel, "--server", srv.URL); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("limit get without a token: %v, want 401", err)
	}
}
