package exposition

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// tenantSource streams one gauge per tenant.
type tenantSource struct {
	names   []string
	balance map[string]float64
	err     error // returned by Scrape
	scrapes int
}

func (s *tenantSource) Names() []string { return s.names }

func (s *tenantSource) Scrape() (func(*Writer), error) {
	s.scrapes++
	if s.err != nil {
		return nil, s.err
	}
	return func(w *Writer) {
		w.Family(s.names[0], "Balance per tenant.", prometheus.GaugeValue, "tenant")
		for _, t := range []string{"acme", "beta"} {
			if v, ok := s.balance[t]; ok {
				w.Sample(v, t)
			}
		}
	}, nil
}

func newTestHandler(t *testing.T, g prometheus.Gatherer, sources ...Source) *Handler {
	t.Helper()
	h, err := NewHandler(g, sources, HandlerOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func serve(h http.Handler, target string, header http.Header) (*http.Response, string) {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func registryWith(t *testing.T, cs ...prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	return reg
}

func TestHandler_ServeHTTP(t *testing.T) {
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "app_up", Help: "Up."})
	up.Set(1)
	src := func() *tenantSource {
		return &tenantSource{names: []string{"app_balance"}, balance: map[string]float64{"acme": 5, "beta": -2}}
	}
	const both = "# HELP app_up Up.\n# TYPE app_up gauge\napp_up 1\n" +
		"# HELP app_balance Balance per tenant.\n# TYPE app_balance gauge\napp_balance{tenant=\"acme\"} 5\napp_balance{tenant=\"beta\"} -2\n"
	tests := []struct {
		name        string
		g           prometheus.Gatherer
		src         *tenantSource
		target      string
		wantStatus  int
		wantBody    string // exact, or the start of the error text
		wantScrapes int
	}{
		{"gathered then streamed", registryWith(t, up), src(), "/metrics", 200, both, 1},
		{"name[] selects gathered", registryWith(t, up), src(), "/metrics?name[]=app_up", 200, "# HELP app_up Up.\n# TYPE app_up gauge\napp_up 1\n", 0},
		{"name[] selects streamed", registryWith(t, up), src(), "/metrics?name[]=app_balance", 200, "# HELP app_balance Balance per tenant.\n# TYPE app_balance gauge\napp_balance{tenant=\"acme\"} 5\napp_balance{tenant=\"beta\"} -2\n", 1},
		{"name[] selects nothing", registryWith(t, up), src(), "/metrics?name[]=nothing", 200, "", 0},
		{"gather error", prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return nil, errors.New("ledger unreachable") }), src(), "/metrics", 500,
			"An error has occurred while serving metrics:\n\ngather metrics: ledger unreachable\n", 0},
		{"family both gathered and streamed", registryWith(t, prometheus.NewGauge(prometheus.GaugeOpts{Name: "app_balance", Help: "x"})), src(), "/metrics", 500,
			"An error has occurred while serving metrics:\n\nmetric family app_balance is both gathered and streamed\n", 0},
		{"source cannot begin", registryWith(t, up), &tenantSource{names: []string{"app_balance"}, err: errors.New("no snapshot")}, "/metrics", 500,
			"An error has occurred while serving metrics:\n\nbegin streamed metrics: no snapshot\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, tt.g, tt.src)
			resp, body := serve(h, tt.target, nil)
			if resp.StatusCode != tt.wantStatus || body != tt.wantBody {
				t.Fatalf("GET %s: %d %q, want %d %q", tt.target, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if tt.src.scrapes != tt.wantScrapes {
				t.Errorf("source scraped %d times, want %d", tt.src.scrapes, tt.wantScrapes)
			}
			if tt.wantStatus == 200 {
				if ct := resp.Header.Get("Content-Type"); ct != ContentType {
					t.Errorf("Content-Type %q, want %q", ct, ContentType)
				}
				if ce := resp.Header.Get("Content-Encoding"); ce != "" {
					t.Errorf("Content-Encoding %q without Accept-Encoding", ce)
				}
				p := expfmt.NewTextParser(model.LegacyValidation)
				if _, err := p.TextToMetricFamilies(strings.NewReader(body)); err != nil {
					t.Errorf("parse: %v", err)
				}
			}
		})
	}
}

// A scrape whose source misuses the Writer is aborted: the scraper gets
// an error, not a body it could take for the whole exposition.
func TestHandler_ServeHTTP_writeError(t *testing.T) {
	twice := sourceFunc{[]string{"a_total"}, func(w *Writer) {
		w.Family("a_total", "A.", prometheus.CounterValue)
		w.Sample(1)
		w.Family("a_total", "A.", prometheus.CounterValue)
		w.Sample(2)
	}}
	srv := httptest.NewServer(newTestHandler(t, prometheus.NewRegistry(), twice))
	defer srv.Close()
	for _, ae := range []string{"identity", "gzip"} {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", ae)
		resp, err := srv.Client().Do(req)
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Errorf("Accept-Encoding %s: %s %q, want the response aborted", ae, resp.Status, body)
			}
		}
	}
}

type sourceFunc struct {
	names []string
	write func(*Writer)
}

func (s sourceFunc) Names() []string                { return s.names }
func (s sourceFunc) Scrape() (func(*Writer), error) { return s.write, nil }

func TestHandler_gzip(t *testing.T) {
	src := &tenantSource{names: []string{"app_balance"}, balance: map[string]float64{"acme": 5}}
	h := newTestHandler(t, prometheus.NewRegistry(), src)
	for _, ae := range []string{"gzip", "deflate, gzip;q=0.8", "gzip, identity;q=0.5"} {
		resp, body := serve(h, "/metrics", http.Header{"Accept-Encoding": {ae}})
		if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q", ae, ce)
		}
		zr, err := gzip.NewReader(bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		text, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if want := "# HELP app_balance Balance per tenant.\n# TYPE app_balance gauge\napp_balance{tenant=\"acme\"} 5\n"; string(text) != want {
			t.Errorf("Accept-Encoding %q: %q", ae, text)
		}
		if v := resp.Header.Values("Vary"); len(v) != 1 || v[0] != "Accept-Encoding" {
			t.Errorf("Vary %q", v)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"GZIP", true},
		{"gzip, deflate, br", true},
		{"deflate, gzip;q=1.0, *;q=0.5", true},
		{"gzip;q=0", false},
		{"gzip;q=0.5, identity", false},
		{"identity;q=0.5, gzip", true},
		{"*", false},
		{"br, zstd", false},
		{"gzip;q=bogus", false},
	}
	for _, tt := range tests {
		if got := acceptsGzip(tt.header); got != tt.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestNewHandler_errors(t *testing.T) {
	tests := []struct {
		name    string
		sources []Source
		wantErr string
	}{
		{"family in two sources", []Source{sourceFunc{names: []string{"a", "b"}}, sourceFunc{names: []string{"b"}}}, "b is streamed by two sources"},
		{"invalid name", []Source{sourceFunc{names: []string{"a.b"}}}, `"a.b" is not a valid`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHandler(prometheus.NewRegistry(), tt.sources, HandlerOpts{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}
