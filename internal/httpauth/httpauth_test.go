package httpauth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestToken_Require(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := FromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, tc := range []struct {
		name   string
		tok    Token
		header string
		want   int
		body   string
	}{
		{"right token", tok, "Bearer s3cret", http.StatusNoContent, ""},
		{"no header", tok, "", http.StatusUnauthorized, "missing or wrong bearer token"},
		{"wrong token", tok, "Bearer nope", http.StatusUnauthorized, "missing or wrong bearer token"},
		{"basic auth", tok, "Basic s3cret", http.StatusUnauthorized, "missing or wrong bearer token"},
		{"no token configured", Token{}, "Bearer ", http.StatusUnauthorized, "start the agent with --token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/v1/topups", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			tc.tok.Require(ok).ServeHTTP(rec, req)
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.want, tc.body)
			}
		})
	}
}

func TestFromFile_errors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := FromFile(empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := FromFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: want an error")
	}
}
