package top

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRender_ratesAndOrder(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	prev := &Usage{Time: t0, Tenants: map[string]map[string]uint64{
		"/a": {"syscalls": 100, "net_tx_bytes": 0},
		"/b": {"syscalls": 1000},
	}}
	cur := &Usage{Time: t0.Add(2 * time.Second), Tenants: map[string]map[string]uint64{
		"/a": {"syscalls": 4100, "net_tx_bytes": 2 * 1024 * 1024},
		"/b": {"syscalls": 1200},
	}, Enforced: map[string]map[string]uint64{"/b": {"connect_denied": 30, "egress_drop": 12}},
		Unavailable: []string{"tls_client_handshakes"}}
	var buf bytes.Buffer
	if err := Render(&buf, prev, cur, 0); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	// /a does 2000 syscalls/s and 1 MiB/s, /b 100/s: /a first.
	if !strings.Contains(lines[3], "/a") || !strings.Contains(lines[3], "2.0k (4.1k)") || !strings.Contains(lines[3], "1.0MiB (2.0MiB)") {
		t.Errorf("row /a wrong:\n%s", out)
	}
	if !strings.Contains(lines[4], "/b") || !strings.Contains(lines[4], "100 (1.2k)") || !strings.HasSuffix(strings.TrimSpace(lines[4]), "0 (42)") {
		t.Errorf("row /b wrong:\n%s", out)
	}
	if !strings.Contains(out, "unavailable (meter not attached, see kmeter doctor): tls_client_handshakes") {
		t.Errorf("unavailable meters not shown:\n%s", out)
	}
}

func TestRender_once(t *testing.T) {
	cur := &Usage{Time: time.Now(), Tenants: map[string]map[string]uint64{"/a": {"syscalls": 5}}}
	var buf bytes.Buffer
	if err := Render(&buf, nil, cur, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "- (5)") {
		t.Errorf("without an earlier read the rate must be '-':\n%s", buf.String())
	}
}

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/usage" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"time":"2026-11-25T10:00:00Z","tenants":{"/x":{"syscalls":7}}}`))
	}))
	defer srv.Close()
	u, err := Fetch(context.Background(), srv.Client(), srv.URL)
	if err != nil || u.Tenants["/x"]["syscalls"] != 7 {
		t.Fatalf("Fetch = %+v, %v", u, err)
	}
	if _, err := Fetch(context.Background(), srv.Client(), srv.URL+"/nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("want a 404 error, got %v", err)
	}
}
