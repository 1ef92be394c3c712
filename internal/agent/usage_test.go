package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/server"
	"github.com/kmeter/kmeter/internal/tenant"
)

// mapSnapshot is the snapshot as it was before Usage and Syscalls: the
// JSON clients of /v1/usage know.
type mapSnapshot struct {
	Time             time.Time                    `json:"time"`
	Tenants          map[string]map[string]uint64 `json:"tenants"`
	SyscallsByNumber map[string]map[uint32]uint64 `json:"syscalls_by_number,omitempty"`
	Enforced         map[string]map[string]uint64 `json:"enforced,omitempty"`
	Unavailable      []string                     `json:"unavailable,omitempty"`
}

type mapUsageResponse struct {
	*mapSnapshot
	Meters []meter.Status `json:"meters"`
}

// oldPerTenant is what perTenant made before: maps added up from counts.
func oldPerTenant(c *meter.Counts, res *tenant.Resolver) (map[string]map[string]uint64, map[string]map[uint32]uint64) {
	tenants := map[string]map[string]uint64{}
	for id, m := range c.Map() {
		t := res.Tenant(id)
		if tenants[t] == nil {
			tenants[t] = map[string]uint64{}
		}
		for k, v := range m {
			tenants[t][k] += v
		}
	}
	byNr := c.ByNumber()
	if len(byNr) == 0 {
		return tenants, nil
	}
	nrs := map[string]map[uint32]uint64{}
	for id, m := range byNr {
		t := res.Tenant(id)
		if nrs[t] == nil {
			nrs[t] = map[uint32]uint64{}
		}
		for nr, v := range m {
			nrs[t][nr] += v
		}
	}
	return tenants, nrs
}

// encodings are the ways the snapshot reaches clients: the server's
// (indented, HTML escaped), json.Marshal, and an encoder without HTML
// escaping.
var encodings = map[string]func(v any) string{
	"server.WriteJSON": func(v any) string {
		rec := httptest.NewRecorder()
		server.WriteJSON(rec, http.StatusOK, v)
		return rec.Body.String()
	},
	"json.Marshal": func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return string(b)
	},
	"no HTML escaping": func(v any) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			panic(err)
		}
		return b.String()
	},
}

// The JSON of a read's snapshot is byte for byte what the maps it
// replaced marshalled to, both made from the same counts: tenants with
// several cgroups, names to escape, counters absent or zero, syscall
// numbers whose text sorts otherwise than their value, a number counted
// twice for a cgroup.
func TestSnapshot_jsonAsMaps(t *testing.T) {
	root := t.TempDir()
	dirs := []string{"shop", "shop/a", "shop/b", "<b>&amp;", `quo"te`, "back\\slash", "new\nline", "ünï☃", "bad\xffutf8", "tab\tx", "z"}
	id := map[string]uint64{}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(root, d), &st); err != nil {
			t.Fatal(err)
		}
		id[d] = st.Ino
	}
	res, err := tenant.NewResolver(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Refresh(); err != nil {
		t.Fatal(err)
	}
	ag := &Agent{
		cfg:        Config{Resolver: res, Interval: 5 * time.Second},
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		unresolved: map[uint64]bool{},
		meters: []meter.Meter{&scriptMeter{add: func(c *meter.Counts, n uint64) {
			for i, d := range slices.Backward(dirs) {
				cg := id[d]
				switch i % 3 {
				case 0:
					c.AddSyscalls(cg, 110, n*uint64(i))
					c.AddSyscalls(cg, 39, 7)
					c.AddSyscalls(cg, 2, 1)
					c.AddSyscalls(cg, 1000, 1)
					c.AddSyscalls(cg, 39, 3) // counted in a second map
				case 1:
					c.Add(cg, meter.CounterNetTxBytes, 1<<60+n)
					c.Add(cg, meter.CounterTLSServerHandshakes, 0)
				case 2:
					c.Add(cg, meter.CounterTCPConnects, n)
					c.AddSyscalls(cg, 0, 0)
				}
			}
		}}},
	}
	for n := range 3 {
		s, err := ag.Read()
		if err != nil {
			t.Fatal(err)
		}
		tenants, nrs := oldPerTenant(&ag.counts, res)
		old := &mapSnapshot{Time: s.Time, Tenants: tenants, SyscallsByNumber: nrs, Unavailable: s.Unavailable}
		if s.Tenants.Len() != len(tenants) || len(tenants) < 10 {
			t.Fatalf("read %d: %d tenants, want %d (at least 10)", n, s.Tenants.Len(), len(tenants))
		}
		statuses := []meter.Status{{Meter: "script"}}
		for enc, marshal := range encodings {
			if got, want := marshal(UsageResponse{Snapshot: s, Meters: statuses}), marshal(mapUsageResponse{old, statuses}); got != want {
				t.Errorf("read %d, %s:\n got %s\nwant %s", n, enc, got, want)
			}
		}
	}
}

// /v1/usage (and ?tenant=) serves the document the maps gave, and it
// decodes back to the same snapshot.
func TestUsageHandler_jsonAsMaps(t *testing.T) {
	at := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	tenants := map[string]map[string]uint64{
		"acme":  {meter.Syscalls: 7, meter.NetTxBytes: 0, meter.TLSClientHandshakes: 1 << 63},
		"a&b":   {meter.TCPAccepts: 1},
		"quiet": {meter.NetRxBytes: 5},
	}
	nrs := map[string]map[uint32]uint64{"acme": {39: 5, 110: 2, 4: 1}, "a&b": {0: 0}}
	enforced := map[string]map[string]uint64{"acme": {"egress_drop": 3}}
	s := snapOf(at, tenants, nrs)
	s.Enforced = enforced
	a := agentWith(s)
	mux := http.NewServeMux()
	a.Register(mux)
	only := func(t string) (map[string]map[string]uint64, map[string]map[uint32]uint64, map[string]map[string]uint64) {
		u, n, e := map[string]map[string]uint64{}, map[string]map[uint32]uint64{}, map[string]map[string]uint64{}
		if v, ok := tenants[t]; ok {
			u[t] = v
		}
		if v, ok := nrs[t]; ok {
			n[t] = v
		}
		if v, ok := enforced[t]; ok {
			e[t] = v
		}
		return u, n, e
	}
	tests := []struct {
		query string
		want  *mapSnapshot
	}{
		{"", &mapSnapshot{Time: at, Tenants: tenants, SyscallsByNumber: nrs, Enforced: enforced}},
		{"?tenant=acme", func() *mapSnapshot { u, n, e := only("acme"); return &mapSnapshot{at, u, n, e, nil} }()},
		{"?tenant=quiet", func() *mapSnapshot { u, n, e := only("quiet"); return &mapSnapshot{at, u, n, e, nil} }()},
		{"?tenant=a%26b", func() *mapSnapshot { u, n, e := only("a&b"); return &mapSnapshot{at, u, n, e, nil} }()},
		{"?tenant=nobody", func() *mapSnapshot { u, n, e := only("nobody"); return &mapSnapshot{at, u, n, e, nil} }()},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := get(mux, "/v1/usage"+tt.query, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s: %s", resp.Status, body)
			}
			if want := encodings["server.WriteJSON"](mapUsageResponse{tt.want, nil}); string(body) != want {
				t.Errorf("GET /v1/usage%s:\n got %s\nwant %s", tt.query, body, want)
			}
			var back UsageResponse
			if err := json.Unmarshal(body, &back); err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(back.Tenants.Map(), tt.want.Tenants, maps.Equal) ||
				!maps.EqualFunc(back.SyscallsByNumber.Map(), tt.want.SyscallsByNumber, maps.Equal) {
				t.Errorf("decoded %v %v, want %v %v", back.Tenants.Map(), back.SyscallsByNumber.Map(), tt.want.Tenants, tt.want.SyscallsByNumber)
			}
		})
	}
}

// A counter a meter reported as 0 is there; one no meter reported is
// absent, in lookups, walks and JSON.
func TestUsage_absentIsNotZero(t *testing.T) {
	u, err := NewUsage(map[string]map[string]uint64{"t": {meter.Syscalls: 0, meter.NetRxBytes: 9}})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := u.Lookup("t")
	if !ok || c.Len() != 2 {
		t.Fatalf("Lookup(t) = %v, %v; want 2 counters", c.Map(), ok)
	}
	tests := []struct {
		k     meter.Counter
		v     uint64
		found bool
	}{
		{meter.CounterSyscalls, 0, true},
		{meter.CounterNetRxBytes, 9, true},
		{meter.CounterNetTxBytes, 0, false},
		{meter.CounterTLSServerHandshakes, 0, false},
		{meter.Counter(meter.NumCounters), 0, false},
	}
	for _, tt := range tests {
		if v, found := c.Get(tt.k); v != tt.v || found != tt.found {
			t.Errorf("Get(%v) = %d, %v; want %d, %v", tt.k, v, found, tt.v, tt.found)
		}
	}
	var walked []string
	u.Walk(func(tn, m string, v uint64) { walked = append(walked, fmt.Sprintf("%s/%s=%d", tn, m, v)) })
	if want := []string{"t/net_rx_bytes=9", "t/syscalls=0"}; !slices.Equal(walked, want) {
		t.Errorf("Walk: %v, want %v", walked, want)
	}
	if b, _ := json.Marshal(u); string(b) != `{"t":{"net_rx_bytes":9,"syscalls":0}}` {
		t.Errorf("JSON %s", b)
	}
	if _, err := NewUsage(map[string]map[string]uint64{"t": {"bogus": 1}}); err == nil {
		t.Error("NewUsage took an unknown counter")
	}
}

// Tenants are found by binary search, whatever their place.
func TestUsage_lookup(t *testing.T) {
	m := map[string]map[string]uint64{}
	for i := range 100 {
		m[fmt.Sprintf("t%03d", i*2)] = map[string]uint64{meter.Syscalls: uint64(i)}
	}
	u, err := NewUsage(m)
	if err != nil {
		t.Fatal(err)
	}
	nrs := NewSyscalls(map[string]map[uint32]uint64{"t004": {3: 30, 1: 10}, "t100": {}})
	tests := []struct {
		tenant string
		v      uint64
		found  bool
	}{
		{"t000", 0, true}, {"t198", 99, true}, {"t100", 50, true},
		{"t001", 0, false}, {"a", 0, false}, {"t199", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		if v, found := u.Get(tt.tenant, meter.Syscalls); v != tt.v || found != tt.found {
			t.Errorf("Get(%q) = %d, %v; want %d, %v", tt.tenant, v, found, tt.v, tt.found)
		}
		if i, found := u.Index(tt.tenant); found != tt.found || found && u.Tenant(i) != tt.tenant {
			t.Errorf("Index(%q) = %d, %v", tt.tenant, i, found)
		}
	}
	if v, ok := nrs.Get("t004", 3); v != 30 || !ok {
		t.Errorf("syscall 3 of t004 = %d, %v", v, ok)
	}
	if _, ok := nrs.Get("t004", 2); ok {
		t.Error("syscall 2 of t004 found")
	}
	if got := nrs.Of("t100"); got != nil {
		t.Errorf("t100 without numbers has %v", got)
	}
	if got := nrs.Of("t004"); !slices.Equal(got, []SyscallCount{{1, 10}, {3, 30}}) {
		t.Errorf("t004: %v", got)
	}
	if o := u.Only("t010"); o.Len() != 1 || o.Tenant(0) != "t010" || u.Only("nobody").Len() != 0 {
		t.Errorf("Only: %v, %v", o.Map(), u.Only("nobody").Map())
	}
}

func TestCmpDecimal(t *testing.T) {
	nrs := []uint32{0, 1, 2, 9, 10, 11, 19, 20, 39, 99, 100, 101, 110, 1000, 4294967295, 429496729, 42949672}
	for _, a := range nrs {
		for _, b := range nrs {
			sa, sb := fmt.Sprint(a), fmt.Sprint(b)
			want := 0
			if sa < sb {
				want = -1
			} else if sa > sb {
				want = 1
			}
			if got := cmpDecimal(a, b); got != want {
				t.Errorf("cmpDecimal(%d, %d) = %d, want %d", a, b, got, want)
			}
		}
	}
}
