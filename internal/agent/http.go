package agent

import (
	"net/http"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/server"
)

// UsageResponse is the body of GET /v1/usage.
type UsageResponse struct {
	*Snapshot
	Meters []meter.Status `json:"meters"`
}

// Register mounts /v1/usage, /healthz and /readyz on mux.
func (a *Agent) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		s := a.Latest()
		if s == nil {
			server.WriteError(w, http.StatusServiceUnavailable, "no usage read yet")
			return
		}
		if t := r.URL.Query().Get("tenant"); t != "" {
			cp := *s
			cp.Tenants = s.Tenants.Only(t)
			cp.Enforced = map[string]map[string]uint64{}
			if e, ok := s.Enforced[t]; ok {
				cp.Enforced[t] = e
			}
			cp.SyscallsByNumber = s.SyscallsByNumber.Only(t)
			s = &cp
		}
		server.WriteJSON(w, http.StatusOK, UsageResponse{Snapshot: s, Meters: a.statuses})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		server.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		s := a.Latest()
		// Ready means counters are fresh: read within two intervals.
		if s == nil || time.Since(s.Time) > 2*a.cfg.Interval+time.Second {
			server.WriteError(w, http.StatusServiceUnavailable, "kernel counters not read within two intervals")
			return
		}
		server.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "last_read": s.Time})
	})
}
