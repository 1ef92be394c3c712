package limitapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/testutil"
	"golang.org/x/sys/unix"
)

// cgroupResolver names tenants by cgroup path relative to the mount.
type cgroupResolver struct{ root string }

func (r cgroupResolver) Roots(tenant string) ([]uint64, error) {
	var st unix.Stat_t
	if !strings.HasPrefix(tenant, "/") || unix.Stat(filepath.Join(r.root, tenant), &st) != nil {
		return nil, errors.New("no such cgroup")
	}
	return []uint64{st.Ino}, nil
}

func (r cgroupResolver) Tenant(id uint64) string { return "" }

func newServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	testutil.RequireBPF(t)
	root := testutil.Cgroup2Dir(t)
	e, err := enforce.Open(enforce.Config{PinDir: testutil.PinDir(t), CgroupDir: root, Resolver: cgroupResolver{root}})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { e.Unpin(); e.Close() })
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := httpauth.FromFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(e, tok))
	t.Cleanup(srv.Close)
	return srv, "s3cret"
}

func TestHandler_roundTrip(t *testing.T) {
	srv, token := newServer(t)
	cg := testutil.NewCgroup(t, "api")
	ctx := context.Background()
	c := &Client{Server: srv.URL, Token: token}

	got, err := c.Set(ctx, cg.Rel, enforce.Spec{Egress: "10MiB/s", ConnectRate: "100/s", ConnectBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	want := enforce.Spec{Egress: "10MiB/s", EgressBurst: enforce.DefaultByteBurst(10 << 20), ConnectRate: "100/s", ConnectBurst: 100}
	if got.Tenant != cg.Rel || got.Limit != want {
		t.Errorf("PUT answered %+v, want tenant %s limit %+v", got, cg.Rel, want)
	}
	if got, err = c.Get(ctx, cg.Rel); err != nil || got.Limit != want {
		t.Errorf("GET = %+v, %v", got, err)
	}
	if err := c.Remove(ctx, cg.Rel); err != nil {
		t.Fatal(err)
	}
	var se *StatusError
	if _, err := c.Get(ctx, cg.Rel); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Errorf("GET after DELETE = %v, want 404", err)
	}
}

// TestHandler_errors checks real status codes and that each error names
// the problem.
func TestHandler_errors(t *testing.T) {
	srv, token := newServer(t)
	cg := testutil.NewCgroup(t, "api")
	esc := "%2F" + strings.ReplaceAll(strings.TrimPrefix(cg.Rel, "/"), "/", "%2F")
	for _, tc := range []struct {
		name, method, path, body, token string
		code                            int
		say                             string
	}{
		{"no token", "PUT", "/v1/limits/" + esc, `{"egress":"1MiB/s"}`, "", 401, "bearer token"},
		{"wrong token", "GET", "/v1/limits/" + esc, "", "nope", 401, "bearer token"},
		{"negative rate", "PUT", "/v1/limits/" + esc, `{"egress":"-1MiB/s"}`, token, 400, "negative"},
		{"absurd rate", "PUT", "/v1/limits/" + esc, `{"connect_rate":"1000000000/s"}`, token, 400, "above the maximum"},
		{"unknown field", "PUT", "/v1/limits/" + esc, `{"egres":"1MiB/s"}`, token, 400, `unknown field \"egres\"`},
		{"empty limit", "PUT", "/v1/limits/" + esc, `{}`, token, 400, "sets no rate"},
		{"unknown tenant", "PUT", "/v1/limits/%2Fno%2Fsuch", `{"egress":"1MiB/s"}`, token, 404, "unknown tenant"},
		{"delete unknown tenant", "DELETE", "/v1/limits/%2Fno%2Fsuch", "", token, 404, "unknown tenant"},
		{"get unlimited tenant", "GET", "/v1/limits/" + esc, "", token, 404, "has no limit"},
		{"set", "PUT", "/v1/limits/" + esc, `{"tls_rate":"5/s"}`, token, 200, `"tls_rate": "5/s"`},
		{"list", "GET", "/v1/limits", "", token, 200, cg.Rel},
		{"delete", "DELETE", "/v1/limits/" + esc, "", token, 204, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(b.String(), tc.say) {
				t.Errorf("%s %s = %d %s, want %d saying %q", tc.method, tc.path, resp.StatusCode, b.String(), tc.code, tc.say)
			}
		})
	}
}
