// Package httpauth guards the agent's HTTP API with a bearer token read
// from a file, so the token never appears in a process listing.
package httpauth

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Token is a bearer token. The zero Token accepts no request.
type Token struct{ secret string }

// FromFile reads a token from path; surrounding white space is ignored.
func FromFile(path string) (Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Token{}, fmt.Errorf("read token file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return Token{}, fmt.Errorf("token file %s is empty", path)
	}
	return Token{secret: s}, nil
}

// Check reports whether r carries the token.
func (t Token) Check(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && t.secret != "" && subtle.ConstantTimeCompare([]byte(got), []byte(t.secret)) == 1
}

// Require wraps h so that requests without the token get 401 with a JSON
// error. A zero Token (no --token-file given) refuses every request.
func (t Token) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.Check(r) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="kmeter"`)
			w.WriteHeader(http.StatusUnauthorized)
			msg := "missing or wrong bearer token: send Authorization: Bearer <token from --token-file>"
			if t.secret == "" {
				msg = "writes are disabled: start the agent with --token-file"
			}
			fmt.Fprintf(w, "{\"error\":%q}\n", msg)
			return
		}
		h.ServeHTTP(w, r)
	})
}
