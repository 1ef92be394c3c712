// Package config reads kmeter's config file (YAML). Unknown keys are an
// error naming the key and line, so a typo never silently changes billing.
// A Config is validated once by [Load] and not changed afterwards.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole config file.
type Config struct {
	// NodeID names this agent in the ledger; default: the host name.
	NodeID string `yaml:"node_id"`
	// BillInterval is the usage window length, such as "60s": how often
	// usage is priced and committed to the ledger. Zero bills every read
	// interval (--interval). `kmeter run --bill-interval` overrides it.
	BillInterval time.Duration `yaml:"bill_interval"`
	// Tenants maps cgroup subtrees to named tenants. Cgroups outside every
	// listed subtree are each their own tenant, named by their path.
	Tenants []Tenant `yaml:"tenants"`
	// Pricing assigns plugins to tenants and meters.
	Pricing []PricingRule `yaml:"pricing"`
	// Limits are per-tenant rate limits enforced in the kernel.
	Limits []Limit `yaml:"limits"`
	// Slices are network slices: traffic matched by rules gets a slice id
	// with its own meters and limits.
	Slices []Slice `yaml:"slices"`
}

// Tenant names a cgroup subtree.
type Tenant struct {
	// Name is the tenant's name in metrics, the ledger and invoices.
	Name string `yaml:"name"`
	// Cgroups are cgroup paths relative to the cgroup2 mount, such as
	// "/shop"; each covers its whole subtree.
	Cgroups []string `yaml:"cgroups"`
	// Attributes are passed to pricing plugins (plan, region, ...).
	Attributes map[string]string `yaml:"attributes"`
	// Account is "prepaid" (default) or "postpaid".
	Account string `yaml:"account"`
	// LowBalanceMicro warns when a prepaid balance falls below it.
	LowBalanceMicro int64 `yaml:"low_balance_micro"`
	// OnEmpty is the policy when a prepaid balance reaches zero:
	// "block_connections" or "floor_bandwidth".
	OnEmpty string `yaml:"on_empty"`
	// MonthlyQuotaBytes caps egress+ingress bytes per calendar month.
	MonthlyQuotaBytes uint64 `yaml:"monthly_quota_bytes"`
}

// PricingRule assigns a plugin; the most specific matching rule wins.
type PricingRule struct {
	// Tenant is a tenant name, or empty for every tenant.
	Tenant string `yaml:"tenant"`
	// Meter is a meter name, or empty for every meter.
	Meter string `yaml:"meter"`
	// Plugin is the path of a signed .wasm file.
	Plugin string `yaml:"plugin"`
}

// Limit is a per-tenant rate limit, in the units of the CLI flags:
// rates such as "10MiB/s" and "100/s".
type Limit struct {
	Tenant       string `yaml:"tenant"`
	Egress       string `yaml:"egress"`
	Ingress      string `yaml:"ingress"`
	ConnectRate  string `yaml:"connect_rate"`
	ConnectBurst uint64 `yaml:"connect_burst"`
	TLSRate      string `yaml:"tls_rate"`
	// EgressBurst, IngressBurst (bytes) and TLSBurst (handshakes) size the
	// buckets; 0 picks the defaults described in docs/enforcement.md.
	EgressBurst  uint64 `yaml:"egress_burst"`
	IngressBurst uint64 `yaml:"ingress_burst"`
	TLSBurst     uint64 `yaml:"tls_burst"`
}

// Slice is one network slice.
type Slice struct {
	Name  string      `yaml:"name"`
	ID    uint32      `yaml:"id"`
	Rules []SliceRule `yaml:"rules"`
	// Egress is the slice's bandwidth limit, such as "50MiB/s".
	Egress string `yaml:"egress"`
	// EgressBurst is the slice's bucket size in bytes; 0 is the default.
	EgressBurst uint64 `yaml:"egress_burst"`
}

// SliceRule matches traffic of a tenant to a destination.
type SliceRule struct {
	Tenant string `yaml:"tenant"`
	// CIDR is a destination network, such as "10.1.0.0/16" or "fd00::/8".
	CIDR string `yaml:"cidr"`
	// Ports is a destination port or range, such as "443" or "8000-8999".
	Ports string `yaml:"ports"`
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a config document.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty document (io.EOF) is an empty config.
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w (see docs/config.md for the keys kmeter knows)", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.BillInterval < 0 {
		errs = append(errs, fmt.Errorf("bill_interval %v is negative: give a window length such as 60s, or leave it out to bill every read interval", c.BillInterval))
	}
	names := map[string]bool{}
	owner := map[string]string{}
	for i, t := range c.Tenants {
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("tenants[%d]: name is empty", i))
		}
		if names[t.Name] {
			errs = append(errs, fmt.Errorf("tenants[%d]: tenant %q is listed twice", i, t.Name))
		}
		names[t.Name] = true
		if len(t.Cgroups) == 0 {
			errs = append(errs, fmt.Errorf("tenant %q: cgroups is empty", t.Name))
		}
		for _, cg := range t.Cgroups {
			if !strings.HasPrefix(cg, "/") {
				errs = append(errs, fmt.Errorf("tenant %q: cgroup %q must start with / (a path relative to the cgroup2 mount)", t.Name, cg))
			}
			if o, ok := owner[cg]; ok {
				errs = append(errs, fmt.Errorf("tenant %q: cgroup %q already belongs to tenant %q", t.Name, cg, o))
			}
			owner[cg] = t.Name
		}
		switch t.Account {
		case "", "prepaid", "postpaid":
		default:
			errs = append(errs, fmt.Errorf("tenant %q: account %q is not prepaid or postpaid", t.Name, t.Account))
		}
		switch t.OnEmpty {
		case "", "block_connections", "floor_bandwidth":
		default:
			errs = append(errs, fmt.Errorf("tenant %q: on_empty %q is not block_connections or floor_bandwidth", t.Name, t.OnEmpty))
		}
	}
	for i, p := range c.Pricing {
		if p.Plugin == "" {
			errs = append(errs, fmt.Errorf("pricing[%d]: plugin is empty", i))
		}
	}
	return errors.Join(errs...)
}
