// Package quota closes the money loop: once per interval it reads each
// tenant's prepaid balance and monthly volume from the ledger and moves the
// tenant to the policy its config names (block new connections, or a floor
// bandwidth) in the kernel, or lifts it after a top-up.
package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/enforce"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/meter"
)

// Ledger is what the loop reads.
type Ledger interface {
	Balances(ctx context.Context, tenant string) ([]ledger.Balance, error)
	UsageLines(ctx context.Context, tenant, period string) ([]ledger.UsageLine, error)
}

// Enforcer is what the loop writes.
type Enforcer interface {
	SetTenantPolicy(tenant string, p enforce.Policy) error
}

// Loop applies quota policies. It is not safe for concurrent use: one
// goroutine calls Apply once per interval.
type Loop struct {
	ledger   Ledger
	enforcer Enforcer
	rules    map[string]enforce.QuotaRule
	applied  map[string]enforce.Policy
	log      *slog.Logger
	now      func() time.Time
}

// New returns a Loop for the configured tenants that have an on_empty
// policy or a monthly quota; other tenants are never throttled by money.
func New(l Ledger, e Enforcer, tenants []config.Tenant, log *slog.Logger) (*Loop, error) {
	if log == nil {
		log = slog.Default()
	}
	q := &Loop{ledger: l, enforcer: e, rules: map[string]enforce.QuotaRule{}, applied: map[string]enforce.Policy{}, log: log, now: time.Now}
	var errs []error
	for _, t := range tenants {
		if t.OnEmpty == "" && t.MonthlyQuotaBytes == 0 {
			continue
		}
		r, err := enforce.QuotaRuleFor(t, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", t.Name, err))
			continue
		}
		q.rules[t.Name] = r
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("quota rules: %w", err)
	}
	return q, nil
}

// Tenants is the number of tenants the loop watches.
func (q *Loop) Tenants() int { return len(q.rules) }

// Apply decides every watched tenant's policy from the ledger and applies
// the ones that changed. A tenant whose state cannot be read keeps its
// current policy.
func (q *Loop) Apply(ctx context.Context) error {
	var errs []error
	period := ledger.PeriodOf(q.now())
	for name, rule := range q.rules {
		st, err := q.state(ctx, name, period)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := enforce.Decide(rule, st)
		if old, ok := q.applied[name]; ok && old == p {
			continue
		}
		if err := q.enforcer.SetTenantPolicy(name, p); err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: set policy: %w", name, err))
			continue
		}
		q.applied[name] = p
		q.log.Info("tenant policy", "tenant", name, "policy", p.Kind, "balance_micro", st.BalanceMicro, "month_bytes", st.MonthBytes)
	}
	return errors.Join(errs...)
}

func (q *Loop) state(ctx context.Context, tenant, period string) (enforce.QuotaState, error) {
	bs, err := q.ledger.Balances(ctx, tenant)
	if err != nil {
		return enforce.QuotaState{}, fmt.Errorf("tenant %q: read balance: %w", tenant, err)
	}
	var st enforce.QuotaState
	for i, b := range bs {
		// With several currencies, the smallest balance decides.
		if i == 0 || b.BalanceMicro < st.BalanceMicro {
			st.BalanceMicro = b.BalanceMicro
		}
	}
	lines, err := q.ledger.UsageLines(ctx, tenant, period)
	if err != nil {
		return enforce.QuotaState{}, fmt.Errorf("tenant %q: read usage: %w", tenant, err)
	}
	for _, l := range lines {
		if l.Meter == meter.NetTxBytes || l.Meter == meter.NetRxBytes {
			st.MonthBytes += uint64(l.Quantity)
		}
	}
	return st, nil
}
