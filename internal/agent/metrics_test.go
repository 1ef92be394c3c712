package agent

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// agentWith returns an Agent without meters whose latest read is s, so the
// collector can be exercised without the kernel.
func agentWith(s *Snapshot) *Agent {
	a := &Agent{}
	if s != nil {
		a.snap.Store(s)
	}
	return a
}

func TestCollector_usageSeries(t *testing.T) {
	at := time.Unix(1700000000, 0)
	tests := []struct {
		name  string
		snaps []*Snapshot // scraped in order; the last scrape is checked
		want  string
	}{
		{
			name:  "usage and syscalls by number",
			snaps: []*Snapshot{{Time: at, Tenants: map[string]map[string]uint64{"acme": {"syscalls": 7, "net_tx_bytes": 1 << 40}, "beta": {"syscalls": 0}}, SyscallsByNumber: map[string]map[uint32]uint64{"acme": {39: 5, 110: 2}}}},
			want: `# HELP kmeter_syscalls_by_number_total Cumulative syscalls per tenant and syscall number.
# TYPE kmeter_syscalls_by_number_total counter
kmeter_syscalls_by_number_total{nr="110",tenant="acme"} 2
kmeter_syscalls_by_number_total{nr="39",tenant="acme"} 5
# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="net_tx_bytes",tenant="acme"} 1.099511627776e+12
kmeter_usage_total{meter="syscalls",tenant="acme"} 7
kmeter_usage_total{meter="syscalls",tenant="beta"} 0
`,
		},
		{
			// Series cached by an earlier scrape must show the new values,
			// and series gone from the latest read must not reappear.
			name: "values follow the latest read, gone series vanish",
			snaps: []*Snapshot{
				{Time: at, Tenants: map[string]map[string]uint64{"acme": {"syscalls": 1}, "gone": {"syscalls": 9}}, SyscallsByNumber: map[string]map[uint32]uint64{"gone": {1: 1}}},
				{Time: at, Tenants: map[string]map[string]uint64{"acme": {"syscalls": 3, "tls_handshakes": 4}}, SyscallsByNumber: map[string]map[uint32]uint64{"acme": {1: 2}}},
			},
			want: `# HELP kmeter_syscalls_by_number_total Cumulative syscalls per tenant and syscall number.
# TYPE kmeter_syscalls_by_number_total counter
kmeter_syscalls_by_number_total{nr="1",tenant="acme"} 2
# HELP kmeter_usage_total Cumulative kernel usage per tenant and meter, counted in the kernel.
# TYPE kmeter_usage_total counter
kmeter_usage_total{meter="syscalls",tenant="acme"} 3
kmeter_usage_total{meter="tls_handshakes",tenant="acme"} 4
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := agentWith(nil)
			c := a.Collector()
			for _, s := range tt.snaps {
				a.snap.Store(s)
				if n := testutil.CollectAndCount(c); n == 0 {
					t.Fatalf("scrape collected no metrics")
				}
			}
			err := testutil.CollectAndCompare(c, strings.NewReader(tt.want), "kmeter_usage_total", "kmeter_syscalls_by_number_total")
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCollector_rejectsInvalidTenantName(t *testing.T) {
	a := agentWith(&Snapshot{Time: time.Unix(1, 0), Tenants: map[string]map[string]uint64{"bad\xff": {"syscalls": 1}}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Gather() error = %v, want one about invalid UTF-8", err)
	}
}

// tenSnapshot is a read of n tenants with 7 counters and 2 syscall numbers
// each: the bench/agent10k shape (90,000 series at 10,000 tenants).
func tenSnapshot(n int, scale uint64) *Snapshot {
	s := &Snapshot{Time: time.Unix(1700000000, 0), Tenants: map[string]map[string]uint64{}, SyscallsByNumber: map[string]map[uint32]uint64{}}
	for i := range n {
		t := fmt.Sprintf("t%05d", i)
		m := map[string]uint64{}
		for j, c := range []string{"syscalls", "connects", "accepts", "net_tx_bytes", "net_rx_bytes", "tls_client_handshakes", "tls_server_handshakes"} {
			m[c] = uint64(i*10+j) * scale
		}
		s.Tenants[t] = m
		s.SyscallsByNumber[t] = map[uint32]uint64{0: uint64(i) * scale, 1: uint64(i) * scale}
	}
	return s
}

// BenchmarkScrape measures one /metrics scrape (gather and text encoding)
// of 10,000 tenants, 90,000 series: B/op is the heap a scrape allocates.
func BenchmarkScrape(b *testing.B) {
	snaps := []*Snapshot{tenSnapshot(10000, 1), tenSnapshot(10000, 2)}
	a := agentWith(snaps[0])
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector())
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		a.snap.Store(snaps[i%2]) // new values every scrape, as after each read
		w := &discardResponse{header: http.Header{}}
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK || w.n < 90000*40 {
			b.Fatalf("scrape: status %d, %d bytes", w.code, w.n)
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
