package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoad_example(t *testing.T) {
	c, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "edge-01" || c.BillInterval != time.Minute || len(c.Tenants) != 1 || c.Tenants[0].Attributes["plan"] != "gold" ||
		c.Limits[0].ConnectBurst != 100 || c.Pricing[0].Meter != "tls_server_handshakes" {
		t.Fatalf("unexpected config: %+v", c)
	}
}

func TestParse_errors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown top key", "tenantz: []\n", "field tenantz not found"},
		{"unknown nested key", "tenants:\n  - name: a\n    cgroup: [/a]\n", "field cgroup not found"},
		{"relative cgroup", "tenants:\n  - name: a\n    cgroups: [a]\n", `must start with /`},
		{"duplicate tenant", "tenants:\n  - {name: a, cgroups: [/a]}\n  - {name: a, cgroups: [/b]}\n", "listed twice"},
		{"cgroup owned twice", "tenants:\n  - {name: a, cgroups: [/a]}\n  - {name: b, cgroups: [/a]}\n", `already belongs to tenant "a"`},
		{"bad account", "tenants:\n  - {name: a, cgroups: [/a], account: credit}\n", "not prepaid or postpaid"},
		{"bad policy", "tenants:\n  - {name: a, cgroups: [/a], on_empty: kill}\n", "on_empty"},
		{"pricing without plugin", "pricing:\n  - {meter: syscalls}\n", "plugin is empty"},
		{"not yaml", "tenants: [\n", "yaml"},
		{"negative bill interval", "bill_interval: -5s\n", "bill_interval -5s is negative"},
		{"bill interval without unit", "bill_interval: 60\n", "cannot unmarshal"},
		{"bill interval not a duration", "bill_interval: hourly\n", "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParse_empty(t *testing.T) {
	c, err := Parse(nil)
	if err != nil || len(c.Tenants) != 0 {
		t.Fatalf("empty config: %+v, %v", c, err)
	}
}

func TestParse_billInterval(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want time.Duration
	}{
		{"", 0},
		{"bill_interval: 60s\n", time.Minute},
		{"bill_interval: 5m\n", 5 * time.Minute},
		{"bill_interval: 1h30m\n", 90 * time.Minute},
	} {
		c, err := Parse([]byte(tc.doc))
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.doc, err)
		} else if c.BillInterval != tc.want {
			t.Errorf("Parse(%q): bill interval %v, want %v", tc.doc, c.BillInterval, tc.want)
		}
	}
}
