package window

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/pricing"
)

// ErrNoPricer means no pricing rule matches a series; its usage is held
// (and shown as unbilled) until a rule is added.
var ErrNoPricer = errors.New("no pricing rule matches")

// Factory makes the pricer of a plugin path, normally by loading and
// verifying the signed Wasm plugin.
type Factory func(plugin string) (pricing.Pricer, error)

// Router picks each series' pricer from the config's pricing rules: the
// most specific rule wins - tenant and meter, then tenant, then meter,
// then the rule with neither. It is safe for concurrent use.
type Router struct {
	rules   map[config.PricingRule]Route // Plugin field zeroed: the match key
	pricers []pricing.Pricer

	mu     sync.Mutex
	closed bool
}

// NewRouter makes one pricer per distinct plugin with f. Two rules for the
// same tenant and meter are an error, as is any pricer f fails to make;
// pricers made before a failure are closed.
func NewRouter(rules []config.PricingRule, f Factory) (*Router, error) {
	r := &Router{rules: map[config.PricingRule]Route{}}
	byPlugin := map[string]pricing.Pricer{}
	var errs []error
	for i, rule := range rules {
		key := config.PricingRule{Tenant: rule.Tenant, Meter: rule.Meter}
		if prev, ok := r.rules[key]; ok {
			errs = append(errs, fmt.Errorf("pricing[%d]: tenant %q meter %q already priced by %s", i, rule.Tenant, rule.Meter, prev.Name))
			continue
		}
		p, ok := byPlugin[rule.Plugin]
		if !ok {
			var err error
			if p, err = f(rule.Plugin); err != nil {
				errs = append(errs, fmt.Errorf("pricing[%d]: load plugin %s: %w", i, rule.Plugin, err))
				continue
			}
			byPlugin[rule.Plugin] = p
			r.pricers = append(r.pricers, p)
		}
		r.rules[key] = Route{Name: rule.Plugin, Pricer: p}
	}
	if err := errors.Join(errs...); err != nil {
		r.Close()
		return nil, fmt.Errorf("pricing rules: %w", err)
	}
	return r, nil
}

// PricerFor implements [Pricers].
func (r *Router) PricerFor(tenant, meter string) (Route, error) {
	for _, k := range []config.PricingRule{{Tenant: tenant, Meter: meter}, {Tenant: tenant}, {Meter: meter}, {}} {
		if rt, ok := r.rules[k]; ok {
			return rt, nil
		}
	}
	return Route{}, fmt.Errorf("tenant %q meter %q: %w (add a pricing rule to the config)", tenant, meter, ErrNoPricer)
}

// Close closes the pricers that implement io.Closer. It is idempotent.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	for _, p := range r.pricers {
		if c, ok := p.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
