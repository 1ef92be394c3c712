// Package limitapi serves the agent's limits API and is the client the
// `kmeter limit` command uses:
//
//	PUT    /v1/limits/{tenant}   body: enforce.Spec as JSON; sets the limit
//	GET    /v1/limits/{tenant}   the limit, policy and enforcement counts
//	DELETE /v1/limits/{tenant}   removes the limit
//	GET    /v1/limits            every limited tenant
//
// Tenant names that contain "/" (cgroup paths) are path-escaped by the
// client ("%2Fshop%2Fweb"). Every request needs the agent's bearer token.
package limitapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/server"
)

// Store is what the API changes; *enforce.Enforcer implements it.
type Store interface {
	SetLimit(tenant string, l enforce.Limit) error
	Limit(tenant string) (enforce.Limit, enforce.Policy, bool)
	Limits() map[string]enforce.Limit
	RemoveLimit(tenant string) error
	Enforced() (map[string]map[string]uint64, error)
}

// Tenant is one tenant's limit as the API returns it.
type Tenant struct {
	Tenant string         `json:"tenant"`
	Limit  enforce.Spec   `json:"limit"`
	Policy enforce.Policy `json:"policy"`
	// Enforced counts the kernel's drops and denials by kind.
	Enforced map[string]uint64 `json:"enforced,omitempty"`
}

// maxBody bounds a PUT body; a limit is a few hundred bytes.
const maxBody = 64 << 10

// Handler returns the API routes, guarded by tok.
func Handler(s Store, tok httpauth.Token) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/limits/{tenant...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("tenant")
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		var spec enforce.Spec
		if err := dec.Decode(&spec); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit body: %w (send JSON like {\"egress\":\"10MiB/s\",\"connect_rate\":\"100/s\"})", err))
			return
		}
		l, err := spec.Parse()
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if l == (enforce.Limit{}) {
			writeError(w, http.StatusBadRequest, errors.New("the limit sets no rate: give at least one, or DELETE the limit"))
			return
		}
		if err := s.SetLimit(name, l); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeTenant(w, s, name)
	})
	mux.HandleFunc("GET /v1/limits/{tenant...}", func(w http.ResponseWriter, r *http.Request) {
		writeTenant(w, s, r.PathValue("tenant"))
	})
	mux.HandleFunc("DELETE /v1/limits/{tenant...}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.RemoveLimit(r.PathValue("tenant")); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/limits", func(w http.ResponseWriter, r *http.Request) {
		all := s.Limits()
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		sort.Strings(names)
		out := make([]Tenant, 0, len(names))
		for _, n := range names {
			l, p, _ := s.Limit(n)
			out = append(out, Tenant{Tenant: n, Limit: l.Spec(), Policy: p})
		}
		server.WriteJSON(w, http.StatusOK, out)
	})
	return tok.Require(mux)
}

func writeTenant(w http.ResponseWriter, s Store, name string) {
	l, p, ok := s.Limit(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("tenant %q has no limit (set one with PUT /v1/limits/{tenant})", name))
		return
	}
	t := Tenant{Tenant: name, Limit: l.Spec(), Policy: p}
	if counts, err := s.Enforced(); err == nil {
		t.Enforced = counts[name]
	}
	server.WriteJSON(w, http.StatusOK, t)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, enforce.ErrUnknownTenant):
		return http.StatusNotFound
	case errors.Is(err, enforce.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, err error) {
	server.WriteError(w, code, err.Error())
}

var _ Store = (*enforce.Enforcer)(nil)
