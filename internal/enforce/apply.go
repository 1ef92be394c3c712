package enforce

import (
	"errors"
	"fmt"

	"github.com/kmeter/kmeter/internal/config"
)

// ParseLimits validates the limits of a config file: tenant -> limit. Every
// problem is reported, each naming the entry.
func ParseLimits(ls []config.Limit) (map[string]Limit, error) {
	out := map[string]Limit{}
	var errs []error
	for i, c := range ls {
		where := fmt.Sprintf("limits[%d] (tenant %q)", i, c.Tenant)
		if c.Tenant == "" {
			errs = append(errs, fmt.Errorf("limits[%d]: tenant is empty", i))
			continue
		}
		if _, dup := out[c.Tenant]; dup {
			errs = append(errs, fmt.Errorf("%s: the tenant has two limits entries; merge them", where))
			continue
		}
		l, err := Spec{
			Egress: c.Egress, EgressBurst: c.EgressBurst,
			Ingress: c.Ingress, IngressBurst: c.IngressBurst,
			ConnectRate: c.ConnectRate, ConnectBurst: c.ConnectBurst,
			TLSRate: c.TLSRate, TLSBurst: c.TLSBurst,
		}.Parse()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if l == (Limit{}) {
			errs = append(errs, fmt.Errorf("%s: sets no rate", where))
			continue
		}
		out[c.Tenant] = l
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// ApplyConfig validates and applies the limits and slices of a config
// file. Nothing is applied when any entry is invalid; a tenant the
// resolver does not know is reported and the others are still applied.
func (e *Enforcer) ApplyConfig(c *config.Config) error {
	limits, lerr := ParseLimits(c.Limits)
	slices, serr := ParseSlices(c.Slices)
	if err := errors.Join(lerr, serr); err != nil {
		return fmt.Errorf("config limits: %w", err)
	}
	var errs []error
	for tenant, l := range limits {
		if err := e.SetLimit(tenant, l); err != nil {
			errs = append(errs, err)
		}
	}
	if err := e.SetSlices(slices); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
