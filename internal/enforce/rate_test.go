package enforce

import (
	"errors"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/testutil"
)

func TestParseByteRate(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{"", 0, ""},
		{"10MiB/s", 10 << 20, ""},
		{"1.5KiB/s", 1536, ""},
		{"500KB/s", 500_000, ""},
		{"100Mbit/s", 12_500_000, ""},
		{"64B/s", 64, ""},
		{"1TiB/s", 1 << 40, ""},
		{"-5MiB/s", 0, "negative"},
		{"0MiB/s", 0, "zero"},
		{"2TiB/s", 0, "above the maximum"},
		{"10PB/s", 0, "unknown unit"},
		{"10MiB", 0, "must end in /s"},
		{"abc/s", 0, "no number"},
		{"1.2.3MiB/s", 0, "not a number"},
		{"0.5B/s", 0, "below 1 per second"},
	} {
		got, err := ParseByteRate(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseByteRate(%q) error = %v, want one saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseByteRate(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseEventRate(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{"100/s", 100, ""},
		{"10000000/s", 10_000_000, ""},
		{"-1/s", 0, "negative"},
		{"100000000/s", 0, "above the maximum"},
		{"100/min", 0, "must end in /s"},
		{"100k/s", 0, "has no unit"},
	} {
		got, err := ParseEventRate(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseEventRate(%q) error = %v, want one saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseEventRate(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatByteRate_roundTrip(t *testing.T) {
	for _, n := range []uint64{1, 1000, 1024, 10 << 20, 3 << 30, 12_500_000} {
		s := FormatByteRate(n)
		got, err := ParseByteRate(s)
		if err != nil || got != n {
			t.Errorf("ParseByteRate(FormatByteRate(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
}

func TestSpec_Parse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    Spec
		want    Limit
		wantErr []string
	}{
		{"defaults", Spec{Egress: "10MiB/s", ConnectRate: "100/s"},
			Limit{Egress: 10 << 20, EgressBurst: DefaultByteBurst(10 << 20), ConnectRate: 100, ConnectBurst: 100}, nil},
		{"explicit bursts", Spec{Ingress: "1MiB/s", IngressBurst: 1 << 20, TLSRate: "5/s", TLSBurst: 1},
			Limit{Ingress: 1 << 20, IngressBurst: 1 << 20, TLSRate: 5, TLSBurst: 1}, nil},
		{"every problem at once", Spec{Egress: "-1MiB/s", ConnectRate: "fast", TLSBurst: 3, IngressBurst: 1},
			Limit{}, []string{"egress: rate \"-1MiB/s\" is negative", "connect rate:", "tls burst 3 given without a tls rate", "ingress burst 1 given without"}},
		{"tiny byte burst", Spec{Egress: "1MiB/s", EgressBurst: 1500}, Limit{}, []string{"below the minimum 65536"}},
		{"absurd burst", Spec{ConnectRate: "1/s", ConnectBurst: 1 << 40}, Limit{}, []string{"connect burst 1099511627776 is above the maximum"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.spec.Parse()
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Parse() = %+v, want errors %q", got, tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse() = %+v, %v, want %+v", got, err, tc.want)
			}
			if back, err := got.Spec().Parse(); err != nil || back != got {
				t.Errorf("Spec round trip = %+v, %v", back, err)
			}
		})
	}
}

func TestParseSlices(t *testing.T) {
	rule := func(tenant, cidr, ports string) config.SliceRule {
		return config.SliceRule{Tenant: tenant, CIDR: cidr, Ports: ports}
	}
	for _, tc := range []struct {
		name    string
		slices  []config.Slice
		wantErr string
	}{
		{"disjoint ports on one network", []config.Slice{
			{Name: "video", ID: 1, Egress: "50MiB/s", Rules: []config.SliceRule{rule("/shop", "10.1.0.0/16", "443")}},
			{Name: "iot", ID: 2, Rules: []config.SliceRule{rule("/shop", "10.1.0.0/16", "8000-8999"), rule("", "fd00::/8", "")}},
		}, ""},
		{"same network, different tenants", []config.Slice{
			{Name: "a", ID: 1, Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "")}},
			{Name: "b", ID: 2, Rules: []config.SliceRule{rule("/b", "10.0.0.0/8", "")}},
		}, ""},
		{"overlapping networks and ports", []config.Slice{
			{Name: "a", ID: 1, Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "400-500")}},
			{Name: "b", ID: 2, Rules: []config.SliceRule{rule("/a", "10.1.0.0/16", "443")}},
		}, `slices[1] "b" rules[0] (/a -> 10.1.0.0/16 ports 443-443) overlaps slice "a" rule`},
		{"wildcard tenant overlaps", []config.Slice{
			{Name: "a", ID: 1, Rules: []config.SliceRule{rule("", "10.0.0.0/8", "")}},
			{Name: "b", ID: 2, Rules: []config.SliceRule{rule("/b", "10.0.0.1/32", "80")}},
		}, "overlaps"},
		{"duplicate id", []config.Slice{
			{Name: "a", ID: 1, Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "")}},
			{Name: "b", ID: 1, Rules: []config.SliceRule{rule("/b", "10.0.0.0/8", "")}},
		}, `id 1 is already used by slice "a"`},
		{"id zero", []config.Slice{{Name: "a", Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "")}}}, "id must be 1 or more"},
		{"bad cidr", []config.Slice{{Name: "a", ID: 1, Rules: []config.SliceRule{rule("/a", "10.0.0/8", "")}}}, `cidr "10.0.0/8"`},
		{"bad ports", []config.Slice{{Name: "a", ID: 1, Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "90-80")}}}, `ports "90-80"`},
		{"tiny slice burst", []config.Slice{{Name: "a", ID: 1, Egress: "1MiB/s", EgressBurst: 100, Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "")}}}, "egress burst 100 bytes is below the minimum"},
		{"bad egress", []config.Slice{{Name: "a", ID: 1, Egress: "5/s", Rules: []config.SliceRule{rule("/a", "10.0.0.0/8", "")}}}, `egress: rate "5/s" has no unit`},
		{"no rules", []config.Slice{{Name: "a", ID: 1}}, "has no rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSlices(tc.slices)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseSlices error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	floor := Policy{Kind: PolicyFloorBandwidth, Floor: 64 << 10}
	for _, tc := range []struct {
		name  string
		rule  QuotaRule
		state QuotaState
		want  Policy
	}{
		{"prepaid with money", QuotaRule{Prepaid: true}, QuotaState{BalanceMicro: 1}, Policy{}},
		{"prepaid at zero blocks by default", QuotaRule{Prepaid: true}, QuotaState{BalanceMicro: 0}, Policy{Kind: PolicyBlockConnections}},
		{"prepaid below zero gets its floor", QuotaRule{Prepaid: true, OnEmpty: floor}, QuotaState{BalanceMicro: -5}, floor},
		{"postpaid at zero is not throttled", QuotaRule{}, QuotaState{BalanceMicro: -100}, Policy{}},
		{"quota reached", QuotaRule{MonthlyQuotaBytes: 100 << 30, OnEmpty: floor}, QuotaState{MonthBytes: 100 << 30}, floor},
		{"quota not reached", QuotaRule{MonthlyQuotaBytes: 100 << 30}, QuotaState{MonthBytes: 100<<30 - 1}, Policy{}},
		{"topped up and under quota", QuotaRule{Prepaid: true, MonthlyQuotaBytes: 1 << 30}, QuotaState{BalanceMicro: 10, MonthBytes: 1}, Policy{}},
	} {
		if got := Decide(tc.rule, tc.state); got != tc.want {
			t.Errorf("%s: Decide = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestPolicy_Validate(t *testing.T) {
	for _, tc := range []struct {
		p       Policy
		wantErr string
	}{
		{Policy{}, ""},
		{Policy{Kind: PolicyBlockConnections}, ""},
		{Policy{Kind: PolicyFloorBandwidth, Floor: 1000}, ""},
		{Policy{Kind: PolicyFloorBandwidth}, "needs a floor"},
		{Policy{Kind: PolicyBlockConnections, Floor: 5}, "takes no floor"},
		{Policy{Kind: "throttle"}, `unknown policy "throttle"`},
	} {
		err := tc.p.Validate()
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%+v.Validate() = %v, want %q", tc.p, err, tc.wantErr)
		}
	}
}

// TestEnforcer_badInput checks the errors of an open Enforcer: unknown
// tenants, limits built in code with absurd values, invalid policies.
func TestEnforcer_badInput(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "bad")
	for _, tc := range []struct {
		name    string
		do      func() error
		is      error
		wantErr string
	}{
		{"unknown tenant", func() error { return e.SetLimit("/no/such/cgroup", Limit{ConnectRate: 1, ConnectBurst: 1}) }, ErrUnknownTenant, "/no/such/cgroup"},
		{"empty tenant", func() error { return e.RemoveLimit("") }, ErrUnknownTenant, "empty"},
		{"rate without burst", func() error { return e.SetLimit(cg.Rel, Limit{ConnectRate: 5}) }, nil, "connect burst 0 is outside 1..1000000000"},
		{"absurd egress", func() error { return e.SetLimit(cg.Rel, Limit{Egress: 1 << 50, EgressBurst: 1 << 20}) }, nil, "egress rate 1125899906842624 is outside"},
		{"bad policy", func() error { return e.SetTenantPolicy(cg.Rel, Policy{Kind: "nap"}) }, nil, `unknown policy "nap"`},
		{"slice for unknown tenant", func() error {
			return e.SetSlices([]Slice{{Name: "s", ID: 1, Rules: []SliceRule{{Tenant: "/nope", PortHi: 65535}}}})
		}, ErrUnknownTenant, "/nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
	if _, _, ok := e.Limit(cg.Rel); ok {
		t.Errorf("a rejected limit was stored")
	}
}

func TestParseLimits(t *testing.T) {
	got, err := ParseLimits([]config.Limit{
		{Tenant: "shop", Egress: "10MiB/s", ConnectRate: "100/s", ConnectBurst: 50},
		{Tenant: "/batch", TLSRate: "5/s", TLSBurst: 1, Ingress: "1MiB/s", IngressBurst: 1 << 21},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Limit{
		"shop":   {Egress: 10 << 20, EgressBurst: DefaultByteBurst(10 << 20), ConnectRate: 100, ConnectBurst: 50},
		"/batch": {TLSRate: 5, TLSBurst: 1, Ingress: 1 << 20, IngressBurst: 1 << 21},
	}
	if len(got) != len(want) || got["shop"] != want["shop"] || got["/batch"] != want["/batch"] {
		t.Errorf("ParseLimits = %+v, want %+v", got, want)
	}
	_, err = ParseLimits([]config.Limit{
		{Tenant: "shop", Egress: "10MiB/s"},
		{Tenant: "shop", Ingress: "1MiB/s"},
		{Tenant: "", Egress: "1MiB/s"},
		{Tenant: "idle"},
		{Tenant: "typo", ConnectRate: "100/sec"},
	})
	for _, w := range []string{`limits[1] (tenant "shop"): the tenant has two limits entries`, "limits[2]: tenant is empty", `limits[3] (tenant "idle"): sets no rate`, `limits[4] (tenant "typo"): connect rate: rate "100/sec": must end in /s`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("ParseLimits error %v does not say %q", err, w)
		}
	}
}

func TestQuotaRuleFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tenant  config.Tenant
		floor   uint64
		want    QuotaRule
		wantErr string
	}{
		{"prepaid default", config.Tenant{Name: "a"}, 0, QuotaRule{Prepaid: true, OnEmpty: Policy{Kind: PolicyBlockConnections}}, ""},
		{"postpaid with quota", config.Tenant{Name: "b", Account: "postpaid", MonthlyQuotaBytes: 100 << 30}, 0,
			QuotaRule{MonthlyQuotaBytes: 100 << 30, OnEmpty: Policy{Kind: PolicyBlockConnections}}, ""},
		{"floor default", config.Tenant{Name: "c", OnEmpty: "floor_bandwidth"}, 0, QuotaRule{Prepaid: true, OnEmpty: Policy{Kind: PolicyFloorBandwidth, Floor: DefaultFloor}}, ""},
		{"floor given", config.Tenant{Name: "d", OnEmpty: "floor_bandwidth"}, 1 << 20, QuotaRule{Prepaid: true, OnEmpty: Policy{Kind: PolicyFloorBandwidth, Floor: 1 << 20}}, ""},
		{"absurd floor", config.Tenant{Name: "e", OnEmpty: "floor_bandwidth"}, 1 << 50, QuotaRule{}, "needs a floor between"},
		{"unknown policy", config.Tenant{Name: "f", OnEmpty: "nap"}, 0, QuotaRule{}, `on_empty "nap"`},
	} {
		got, err := QuotaRuleFor(tc.tenant, tc.floor)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: QuotaRuleFor = %+v, %v, want %+v", tc.name, got, err, tc.want)
		}
	}
}
