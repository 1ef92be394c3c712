// Package api serves kmeter's money API: tenants, balances, idempotent
// top-ups and invoices, as JSON over HTTP. The agent mounts it on its
// listener beside /metrics and /v1/usage.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/kmeter/kmeter/internal/httpauth"
	"github.com/kmeter/kmeter/internal/invoice"
	"github.com/kmeter/kmeter/internal/ledger"
)

// Ledger is what the API needs of the ledger; *ledger.Ledger implements
// it.
type Ledger interface {
	invoice.Source
	Tenants(ctx context.Context) ([]ledger.Tenant, error)
	Balances(ctx context.Context, tenant string) ([]ledger.Balance, error)
	TopUp(ctx context.Context, t ledger.TopUp) (ledger.TopUpResult, error)
}

// Config configures an [API].
type Config struct {
	Ledger Ledger
	// Token guards writes; the zero Token refuses every write.
	Token httpauth.Token
	// ProtectReads requires the token for reads too.
	ProtectReads bool
	// MaxBodyBytes caps request bodies; default 64 KiB.
	MaxBodyBytes int64
	// Log receives server-side errors; default slog.Default().
	Log *slog.Logger
}

// API is the money API's handlers. It is safe for concurrent use.
type API struct {
	cfg Config
}

// New validates cfg.
func New(cfg Config) (*API, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("money api: ledger is nil")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &API{cfg: cfg}, nil
}

// Register mounts the API's routes on mux:
//
//	GET  /v1/tenants
//	GET  /v1/balances/{tenant}
//	POST /v1/topups                 (Idempotency-Key header required)
//	GET  /v1/invoices/{tenant}?period=2026-11[&format=json|csv|html][&currency=USD]
func (a *API) Register(mux *http.ServeMux) {
	read := func(h http.HandlerFunc) http.Handler {
		if a.cfg.ProtectReads {
			return a.cfg.Token.Require(h)
		}
		return h
	}
	mux.Handle("GET /v1/tenants", read(a.tenants))
	mux.Handle("GET /v1/balances/{tenant}", read(a.balances))
	mux.Handle("GET /v1/invoices/{tenant}", read(a.invoice))
	mux.Handle("POST /v1/topups", a.cfg.Token.Require(http.HandlerFunc(a.topUp)))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

// internal logs err and answers 500 without leaking details.
func (a *API) internal(w http.ResponseWriter, r *http.Request, err error) {
	a.cfg.Log.Error("money api", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error; see the agent's log")
}

func (a *API) tenants(w http.ResponseWriter, r *http.Request) {
	ts, err := a.cfg.Ledger.Tenants(r.Context())
	if err != nil {
		a.internal(w, r, err)
		return
	}
	if ts == nil {
		ts = []ledger.Tenant{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": ts})
}

func (a *API) balances(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	bs, err := a.cfg.Ledger.Balances(r.Context(), tenant)
	if errors.Is(err, ledger.ErrUnknownTenant) {
		writeError(w, http.StatusNotFound, "unknown tenant %q", tenant)
		return
	}
	if err != nil {
		a.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, balancesResponse{Tenant: tenant, Balances: bs})
}

// balancesResponse is the body of GET /v1/balances/{tenant}.
type balancesResponse struct {
	Tenant   string           `json:"tenant"`
	Balances []ledger.Balance `json:"balances"`
}

// topUpRequest is the body of POST /v1/topups.
type topUpRequest struct {
	Tenant      string `json:"tenant"`
	AmountMicro int64  `json:"amount_micro"`
	Currency    string `json:"currency"`
	Memo        string `json:"memo"`
}

func (a *API) topUp(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		writeError(w, http.StatusBadRequest, "missing Idempotency-Key header: send a unique key (a UUID) per top-up, and the same key when retrying it")
		return
	}
	var req topUpRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON body: %v (want {\"tenant\":\"shop\",\"amount_micro\":5000000,\"currency\":\"USD\"})", err)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "malformed JSON body: data after the top-up object")
		return
	}
	res, err := a.cfg.Ledger.TopUp(r.Context(), ledger.TopUp{Tenant: req.Tenant, AmountMicro: req.AmountMicro,
		Currency: req.Currency, Memo: req.Memo, Key: key})
	switch {
	case errors.Is(err, ledger.ErrInvalid):
		writeError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, ledger.ErrKeyReused):
		writeError(w, http.StatusConflict, "Idempotency-Key %q was already used for a different top-up; use a new key for a new top-up", key)
	case err != nil:
		a.internal(w, r, err)
	case res.Replayed:
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusOK, res)
	default:
		writeJSON(w, http.StatusCreated, res)
	}
}

var contentTypes = map[string]string{
	"json": "application/json",
	"csv":  "text/csv; charset=utf-8",
	"html": "text/html; charset=utf-8",
}

func (a *API) invoice(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	q := r.URL.Query()
	period, format := q.Get("period"), q.Get("format")
	if format == "" {
		format = "json"
	}
	if _, ok := contentTypes[format]; !ok {
		writeError(w, http.StatusBadRequest, "format %q is not one of %s", format, strings.Join(invoice.Formats, ", "))
		return
	}
	if err := ledger.CheckPeriod(period); err != nil {
		writeError(w, http.StatusBadRequest, "%v: add ?period=YYYY-MM", err)
		return
	}
	if _, err := a.cfg.Ledger.Balances(r.Context(), tenant); errors.Is(err, ledger.ErrUnknownTenant) {
		writeError(w, http.StatusNotFound, "unknown tenant %q", tenant)
		return
	}
	inv, err := invoice.Build(r.Context(), a.cfg.Ledger, tenant, period, q.Get("currency"))
	if err != nil {
		if errors.Is(err, invoice.ErrManyCurrencies) {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		a.internal(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentTypes[format])
	if err := inv.Write(w, format); err != nil {
		a.cfg.Log.Error("write invoice", "tenant", tenant, "err", err)
	}
}
