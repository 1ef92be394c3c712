package enforce

import (
	"fmt"

	"github.com/kmeter/kmeter/internal/config"
)

// PolicyKind says what happens to a tenant that ran out of money or quota.
type PolicyKind string

// Policies. The strings are the config file's on_empty values.
const (
	// PolicyNone enforces only the configured limits.
	PolicyNone PolicyKind = ""
	// PolicyBlockConnections makes every new outbound TCP connect() of the
	// tenant fail with EPERM. Established connections keep working.
	PolicyBlockConnections PolicyKind = "block_connections"
	// PolicyFloorBandwidth caps egress and ingress at Policy.Floor.
	PolicyFloorBandwidth PolicyKind = "floor_bandwidth"
)

// Policy is applied on top of a tenant's configured limit by
// [Enforcer.SetPolicy].
type Policy struct {
	Kind PolicyKind `json:"kind,omitempty"`
	// Floor is the bandwidth in bytes per second each way under
	// PolicyFloorBandwidth.
	Floor uint64 `json:"floor,omitempty"`
}

// Validate reports a policy the kernel cannot apply.
func (p Policy) Validate() error {
	switch p.Kind {
	case PolicyNone, PolicyBlockConnections:
		if p.Floor != 0 {
			return fmt.Errorf("policy %q takes no floor bandwidth", p.Kind)
		}
	case PolicyFloorBandwidth:
		if p.Floor == 0 || p.Floor > MaxByteRate {
			return fmt.Errorf("policy floor_bandwidth needs a floor between 1 B/s and 1 TiB/s, got %d", p.Floor)
		}
	default:
		return fmt.Errorf("unknown policy %q: use block_connections or floor_bandwidth", p.Kind)
	}
	return nil
}

// apply returns the limit the kernel enforces while p is in force.
func (p Policy) apply(l Limit) Limit {
	switch p.Kind {
	case PolicyBlockConnections:
		l.ConnectRate, l.ConnectBurst = 0, 0
	case PolicyFloorBandwidth:
		if l.Egress == 0 || l.Egress > p.Floor {
			l.Egress, l.EgressBurst = p.Floor, DefaultByteBurst(p.Floor)
		}
		if l.Ingress == 0 || l.Ingress > p.Floor {
			l.Ingress, l.IngressBurst = p.Floor, DefaultByteBurst(p.Floor)
		}
	}
	return l
}

// QuotaRule is what a tenant's config says about money and volume.
type QuotaRule struct {
	// Prepaid tenants are throttled when their balance reaches zero.
	Prepaid bool
	// OnEmpty is the policy for an empty balance or a used-up quota;
	// PolicyNone means PolicyBlockConnections.
	OnEmpty Policy
	// MonthlyQuotaBytes caps egress+ingress bytes per calendar month; 0
	// means no cap.
	MonthlyQuotaBytes uint64
}

// QuotaState is what the agent knows about a tenant at the end of an
// interval.
type QuotaState struct {
	// BalanceMicro is the prepaid balance in micro-units.
	BalanceMicro int64
	// MonthBytes are the egress+ingress bytes used this calendar month.
	MonthBytes uint64
}

// Decide returns the policy a tenant must be under now. The agent calls
// it once per interval for each tenant and passes the result to
// [Enforcer.SetPolicy], so an empty balance throttles the tenant within
// one interval and a top-up lifts it within one interval.
func Decide(r QuotaRule, s QuotaState) Policy {
	empty := r.Prepaid && s.BalanceMicro <= 0
	over := r.MonthlyQuotaBytes > 0 && s.MonthBytes >= r.MonthlyQuotaBytes
	if !empty && !over {
		return Policy{}
	}
	if r.OnEmpty.Kind == PolicyNone {
		return Policy{Kind: PolicyBlockConnections}
	}
	return r.OnEmpty
}

// DefaultFloor is the floor_bandwidth used when the config names none:
// 128 KiB/s each way, enough for a tenant to reach its billing page and
// top up.
const DefaultFloor = 128 << 10

// QuotaRuleFor builds a tenant's QuotaRule from its config entry; floor
// is the floor bandwidth in bytes/s for on_empty "floor_bandwidth" (0
// means DefaultFloor).
func QuotaRuleFor(t config.Tenant, floor uint64) (QuotaRule, error) {
	r := QuotaRule{Prepaid: t.Account == "" || t.Account == "prepaid", MonthlyQuotaBytes: t.MonthlyQuotaBytes}
	switch PolicyKind(t.OnEmpty) {
	case PolicyNone, PolicyBlockConnections:
		r.OnEmpty = Policy{Kind: PolicyBlockConnections}
	case PolicyFloorBandwidth:
		if floor == 0 {
			floor = DefaultFloor
		}
		r.OnEmpty = Policy{Kind: PolicyFloorBandwidth, Floor: floor}
	default:
		return QuotaRule{}, fmt.Errorf("tenant %q: on_empty %q is not block_connections or floor_bandwidth", t.Name, t.OnEmpty)
	}
	if err := r.OnEmpty.Validate(); err != nil {
		return QuotaRule{}, fmt.Errorf("tenant %q: %w", t.Name, err)
	}
	return r, nil
}
