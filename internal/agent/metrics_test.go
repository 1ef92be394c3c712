package agent

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kmeter/kmeter/internal/exposition"
	"github.com/kmeter/kmeter/internal/meter"
)

// agentWith returns an Agent without meters whose latest read is s, so the
// metrics can be exercised without the kernel.
func agentWith(s *Snapshot) *Agent {
	a := &Agent{}
	if s != nil {
		a.snap.Store(s)
	}
	return a
}

// metricsHandler is /metrics as `kmeter run` wires it: a registry with the
// agent's collector (and the given collectors) beside the usage families.
func metricsHandler(t testing.TB, a *Agent, cs ...prometheus.Collector) http.Handler {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(append(cs, a.Collector())...)
	h, err := exposition.NewHandler(reg, []exposition.Source{a.UsageFamilies()}, exposition.HandlerOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// get serves one request and returns its response, body read.
func get(h http.Handler, target string, header http.Header) (*http.Response, []byte) {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// scrapeText scrapes h and returns the body, failing on anything but 200.
func scrapeText(t testing.TB, h http.Handler, target string) string {
	t.Helper()
	resp, body := get(h, target, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", target, resp.Status, body)
	}
	return string(body)
}

// parse parses text-format metrics and checks that every family comes
// once: the parser refuses a second HELP or TYPE line, and a family whose
// lines are split apart has two TYPE lines.
func parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	for name := range mfs {
		if n := strings.Count(text, "# TYPE "+name+" "); n != 1 {
			t.Errorf("%d TYPE lines for %s, want 1", n, name)
		}
	}
	return mfs
}

// canonical writes families in the text format, families by name and
// series by labels, so that two expositions with the same content compare
// equal whatever order they were written in.
func canonical(t testing.TB, mfs map[string]*dto.MetricFamily) string {
	t.Helper()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(mfs)) {
		mf := mfs[name]
		slices.SortFunc(mf.Metric, func(x, y *dto.Metric) int { return strings.Compare(labelKey(x), labelKey(y)) })
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// labelKey identifies a series of a family by its label pairs.
func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.Label {
		b.WriteString(l.GetName())
		b.WriteByte(0)
		b.WriteString(l.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

// registryFamilies gathers s through the former registry path.
func registryFamilies(t testing.TB, s *Snapshot) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newRegistryUsage(agentWith(s)))
	got, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range got {
		out[mf.GetName()] = mf
	}
	return out
}

// nastyTenants are tenant names the text format must escape, or that look
// like its syntax: cgroup paths and configured names can hold them.
var nastyTenants = []string{
	`quote"d`, `back\slash`, "new\nline", `trailing\`, `\"`, `{a="b"},c=d`, "tab\there",
	"/sys/fs/cgroup/unified/kubepods.slice/pod 1/x", "ünïcödé-☃-日本", "# HELP x y", "",
}

func TestUsageFamilies_matchRegistryPath(t *testing.T) {
	tenants := 10000
	if testing.Short() {
		tenants = 1000
	}
	at := time.Unix(1700000000, 123456789)
	nastyTenantsMap, nastyNrs := map[string]map[string]uint64{}, map[string]map[uint32]uint64{}
	for i, tn := range nastyTenants {
		nastyTenantsMap[tn] = map[string]uint64{"syscalls": uint64(i), "net_tx_bytes": 1<<53 + uint64(i)}
		nastyNrs[tn] = map[uint32]uint64{uint32(i): 1, 300: uint64(i) * 1e6}
	}
	nasty := snapOf(at, nastyTenantsMap, nastyNrs)
	tests := []struct {
		name string
		snap *Snapshot
	}{
		{"no read yet", nil},
		{"no tenants", snapOf(at, map[string]map[string]uint64{})},
		{"no breakdown by number", snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 7, "net_rx_bytes": 1 << 40}})},
		{"breakdown of a tenant without usage", snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 1}}, map[string]map[uint32]uint64{"other": {1: 2}})},
		{"values past 2^53 and zero", snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 1<<64 - 1, "net_tx_bytes": 1<<53 + 1, "net_rx_bytes": 0, "tcp_accepts": 1}})},
		{"names to escape", nasty},
		{"10,000 tenants", tenSnapshot(tenants, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := scrapeText(t, metricsHandler(t, agentWith(tt.snap)), "/metrics")
			got := parse(t, text)
			for name := range got {
				if !slices.Contains(usageFamiliesNames, name) {
					delete(got, name) // the registry's own families
				}
			}
			want := registryFamilies(t, tt.snap)
			if g, w := canonical(t, got), canonical(t, want); g != w {
				t.Errorf("streamed families differ from the registry's:\n%s", diff(g, w))
			}
			if tt.snap != nil {
				wantSeries := 2
				for _, m := range tt.snap.Tenants.All() {
					wantSeries += m.Len()
				}
				for _, m := range tt.snap.SyscallsByNumber.All() {
					wantSeries += len(m)
				}
				if n := series(got); n != wantSeries {
					t.Errorf("%d streamed series, want %d", n, wantSeries)
				}
			}
		})
	}
}

var usageFamiliesNames = []string{lastReadName, tenantsName, usageName, byNrName}

func series(mfs map[string]*dto.MetricFamily) int {
	n := 0
	for _, mf := range mfs {
		n += len(mf.Metric)
	}
	return n
}

// diff returns the first lines where got and want differ.
func diff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %q\nwant: %q", i+1, gl, wl)
		}
	}
	return ""
}

func TestUsageFamilies_text(t *testing.T) {
	at := time.Unix(1700000000, 0)
	const filter = "/metrics?name[]=kmeter_usage_total&name[]=kmeter_syscalls_by_number_total"
	tests := []struct {
		name  string
		snaps []*Snapshot // scraped in order; the last scrape is checked
		want  string
	}{
		{
			name:  "usage and syscalls by number",
			snaps: []*Snapshot{snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 7, "net_tx_bytes": 1 << 40}, "beta": {"syscalls": 0}}, map[string]map[uint32]uint64{"acme": {39: 5, 110: 2}})},
			want: `# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="net_tx_bytes",tenant="acme"} 1.099511627776e+12
kmeter_usage_total{meter="syscalls",tenant="acme"} 7
kmeter_usage_total{meter="syscalls",tenant="beta"} 0
# HELP kmeter_syscalls_by_number_total Cumulative syscalls per tenant and syscall number.
# TYPE kmeter_syscalls_by_number_total counter
kmeter_syscalls_by_number_total{nr="39",tenant="acme"} 5
kmeter_syscalls_by_number_total{nr="110",tenant="acme"} 2
`,
		},
		{
			// Values follow the latest read, and series gone from it do
			// not reappear.
			name: "values follow the latest read, gone series vanish",
			snaps: []*Snapshot{
				snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 1}, "gone": {"syscalls": 9}}, map[string]map[uint32]uint64{"gone": {1: 1}}),
				snapOf(at, map[string]map[string]uint64{"acme": {"syscalls": 3, "tls_client_handshakes": 4}}, map[string]map[uint32]uint64{"acme": {1: 2}}),
			},
			want: `# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="syscalls",tenant="acme"} 3
kmeter_usage_total{meter="tls_client_handshakes",tenant="acme"} 4
# HELP kmeter_syscalls_by_number_total Cumulative syscalls per tenant and syscall number.
# TYPE kmeter_syscalls_by_number_total counter
kmeter_syscalls_by_number_total{nr="1",tenant="acme"} 2
`,
		},
		{
			// The sorted tenants are kept between scrapes while the set
			// of names stays the same, and a tenant's sorted meters for
			// the next tenant: a tenant (or meter, or syscall number)
			// replaced by another, as many, or added must be written, in
			// order.
			name: "tenants replaced and added between scrapes",
			snaps: []*Snapshot{
				snapOf(at, map[string]map[string]uint64{"b": {"syscalls": 1}, "d": {"syscalls": 2}}, map[string]map[uint32]uint64{"b": {1: 1}}),
				snapOf(at, map[string]map[string]uint64{"b": {"syscalls": 3}, "d": {"syscalls": 4}}, map[string]map[uint32]uint64{"b": {1: 2}}),
				snapOf(at, map[string]map[string]uint64{"c": {"syscalls": 5}, "d": {"syscalls": 6}}, map[string]map[uint32]uint64{"a": {1: 3}}),
				snapOf(at, map[string]map[string]uint64{"a": {"syscalls": 7}, "c": {"syscalls": 8}, "d": {"tcp_connects": 9}}, map[string]map[uint32]uint64{"a": {1: 4}, "e": {2: 5}}),
			},
			want: `# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="syscalls",tenant="a"} 7
kmeter_usage_total{meter="syscalls",tenant="c"} 8
kmeter_usage_total{meter="tcp_connects",tenant="d"} 9
# HELP kmeter_syscalls_by_number_total Cumulative syscalls per tenant and syscall number.
# TYPE kmeter_syscalls_by_number_total counter
kmeter_syscalls_by_number_total{nr="1",tenant="a"} 4
kmeter_syscalls_by_number_total{nr="2",tenant="e"} 5
`,
		},
		{
			name:  "label values escaped",
			snaps: []*Snapshot{snapOf(at, map[string]map[string]uint64{"a\"b\\c\nd": {"syscalls": 1}})},
			want: `# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="syscalls",tenant="a\"b\\c\nd"} 1
`,
		},
		{
			name:  "no read yet",
			snaps: []*Snapshot{nil},
			want:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := agentWith(nil)
			h := metricsHandler(t, a)
			var got string
			for _, s := range tt.snaps {
				if s != nil {
					a.snap.Store(s)
				}
				got = scrapeText(t, h, filter)
			}
			if got != tt.want {
				t.Errorf("scrape:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestUsageFamilies_invalidTenantName(t *testing.T) {
	tests := []struct {
		name string
		snap *Snapshot
	}{
		{"usage", snapOf(time.Unix(1, 0), map[string]map[string]uint64{"bad\xff": {"syscalls": 1}})},
		{"syscalls by number", snapOf(time.Unix(1, 0), map[string]map[string]uint64{}, map[string]map[uint32]uint64{"ok": {1: 1}, "bad\xc3": {1: 1}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A valid read scraped first: its tenants, kept for the next
			// scrape, must not spare the next read's names the check.
			valid := snapOf(time.Unix(1, 0), map[string]map[string]uint64{"ok": {"syscalls": 1}}, map[string]map[uint32]uint64{"ok": {1: 1}})
			a := agentWith(valid)
			h := metricsHandler(t, a)
			if resp, body := get(h, "/metrics", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics of a valid read: %s %q", resp.Status, body)
			}
			a.snap.Store(tt.snap)
			resp, body := get(h, "/metrics", nil)
			if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "not valid UTF-8") {
				t.Fatalf("GET /metrics: %s %q, want 500 about invalid UTF-8", resp.Status, body)
			}
			a.snap.Store(valid)
			if resp, body := get(h, "/metrics", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics of a valid read again: %s %q", resp.Status, body)
			}
		})
	}
}

// TestMetricsHandler_http scrapes /metrics as Prometheus does, with and
// without gzip, and checks what it gets: one exposition in which every
// family of the registry and of the snapshot comes once and lints clean.
func TestMetricsHandler_http(t *testing.T) {
	m := tenSnapshot(50, 1).Tenants.Map()
	m[`we"ird\name`] = map[string]uint64{"syscalls": 5}
	snap := snapOf(time.Unix(1700000000, 0), m, tenSnapshot(50, 1).SyscallsByNumber.Map())
	h := metricsHandler(t, agentWith(snap), collectors.NewGoCollector())
	tests := []struct {
		name           string
		acceptEncoding string
		gzipped        bool
	}{
		{"plain", "", false},
		{"gzip as Prometheus asks", "gzip", true},
		{"gzip refused", "gzip;q=0, identity", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{"Accept": {"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}}
			if tt.acceptEncoding != "" {
				header.Set("Accept-Encoding", tt.acceptEncoding)
			}
			resp, body := get(h, "/metrics", header)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s: %s", resp.Status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if ce := resp.Header.Get("Content-Encoding"); (ce == "gzip") != tt.gzipped {
				t.Fatalf("Content-Encoding %q, want gzip: %v", ce, tt.gzipped)
			}
			if tt.gzipped {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			mfs := parse(t, string(body))
			for _, name := range append([]string{"go_goroutines", "kmeter_read_errors_total"}, usageFamiliesNames...) {
				if mfs[name] == nil {
					t.Errorf("no family %s", name)
				}
			}
			if n, want := len(mfs[usageName].Metric), 50*7+1; n != want {
				t.Errorf("%d usage series, want %d", n, want)
			}
			if v := mfs[tenantsName].Metric[0].GetGauge().GetValue(); v != 51 {
				t.Errorf("kmeter_tenants %v, want 51", v)
			}
			problems, err := promlint.New(bytes.NewReader(body)).Lint()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
		})
	}
}

// Scrapes run while the read loop publishes new snapshots (run with
// -race): every scrape shows one snapshot whole, never a mix of two.
func TestUsageFamilies_concurrentReads(t *testing.T) {
	snaps := []*Snapshot{tenSnapshot(10, 1), tenSnapshot(20, 2), tenSnapshot(30, 3)}
	a := agentWith(snaps[0])
	h := metricsHandler(t, a)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				a.snap.Store(snaps[i%len(snaps)])
			}
		}
	})
	var scrapers sync.WaitGroup
	for range 4 {
		scrapers.Go(func() {
			for range 25 {
				resp, body := get(h, "/metrics", http.Header{"Accept-Encoding": {"gzip"}})
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %s", resp.Status)
					return
				}
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				text, err := io.ReadAll(zr)
				if err != nil {
					t.Error(err)
					return
				}
				mfs := parse(t, string(text))
				n := mfs[tenantsName].Metric[0].GetGauge().GetValue()
				if len(mfs[usageName].Metric) != int(n)*7 || len(mfs[byNrName].Metric) != int(n)*2 {
					t.Errorf("kmeter_tenants %v with %d usage and %d by-number series: two snapshots mixed", n, len(mfs[usageName].Metric), len(mfs[byNrName].Metric))
				}
			}
		})
	}
	scrapers.Wait()
	close(stop)
	wg.Wait()
}

// tenSnapshot is a read of n tenants with 7 counters and 2 syscall numbers
// each: the bench/agent10k shape (90,000 series at 10,000 tenants).
func tenSnapshot(n int, scale uint64) *Snapshot {
	tenants, nrs := map[string]map[string]uint64{}, map[string]map[uint32]uint64{}
	for i := range n {
		t := fmt.Sprintf("t%05d", i)
		m := map[string]uint64{}
		for j, c := range meter.Names {
			m[c] = uint64(i*10+j) * scale
		}
		tenants[t] = m
		nrs[t] = map[uint32]uint64{0: uint64(i) * scale, 1: uint64(i) * scale}
	}
	return snapOf(time.Unix(1700000000, 0), tenants, nrs)
}

// snapOf is a snapshot at at of tenant -> counter -> value and, when
// given, tenant -> syscall number -> count.
func snapOf(at time.Time, tenants map[string]map[string]uint64, nrs ...map[string]map[uint32]uint64) *Snapshot {
	u, err := NewUsage(tenants)
	if err != nil {
		panic(err)
	}
	s := &Snapshot{Time: at, Tenants: u}
	if len(nrs) > 0 {
		s.SyscallsByNumber = NewSyscalls(nrs[0])
	}
	return s
}

// BenchmarkScrape measures one /metrics scrape of 10,000 tenants, 90,000
// series, into a discarding writer: through the registry as before
// (promhttp) and streamed (exposition.Handler), each uncompressed and
// gzipped as Prometheus asks. B/op is the heap a scrape allocates.
func BenchmarkScrape(b *testing.B) {
	snaps := []*Snapshot{tenSnapshot(10000, 1), tenSnapshot(10000, 2)}
	handlers := []struct {
		name string
		h    func(*Agent) http.Handler
	}{
		{"registry", func(a *Agent) http.Handler {
			reg := prometheus.NewRegistry()
			reg.MustRegister(a.Collector(), newRegistryUsage(a))
			return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		}},
		{"streamed", func(a *Agent) http.Handler { return metricsHandler(b, a) }},
	}
	for _, enc := range []string{"identity", "gzip"} {
		for _, hh := range handlers {
			b.Run(hh.name+"/"+enc, func(b *testing.B) {
				a := agentWith(snaps[0])
				h := hh.h(a)
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				req.Header.Set("Accept-Encoding", enc)
				b.ReportAllocs()
				i := 0
				var n int
				for b.Loop() {
					i++
					a.snap.Store(snaps[i%2]) // new values every scrape, as after each read
					w := &discardResponse{header: http.Header{}}
					h.ServeHTTP(w, req)
					if w.code != http.StatusOK || enc == "identity" && w.n < 90000*40 {
						b.Fatalf("scrape: status %d, %d bytes", w.code, w.n)
					}
					n = w.n
				}
				b.ReportMetric(float64(n), "bytes/scrape")
			})
		}
	}
}

// discardResponse counts a response's bytes and keeps none, as a socket
// would: a recorder's growing buffer would dominate what is measured.
type discardResponse struct {
	header http.Header
	code   int
	n      int
}

func (d *discardResponse) Header() http.Header { return d.header }

func (d *discardResponse) WriteHeader(code int) { d.code = code }

func (d *discardResponse) Write(p []byte) (int, error) {
	if d.code == 0 {
		d.code = http.StatusOK
	}
	d.n += len(p)
	return len(p), nil
}
