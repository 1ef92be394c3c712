package window

import (
	"maps"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/ledger"
)

// LedgerTenants is the config's tenants as the ledger records them
// (account type and low-balance threshold), for [ledger.Ledger.SyncTenants].
func LedgerTenants(ts []config.Tenant) []ledger.Tenant {
	out := make([]ledger.Tenant, len(ts))
	for i, t := range ts {
		out[i] = ledger.Tenant{Name: t.Name, Account: t.Account, LowBalanceMicro: t.LowBalanceMicro}
	}
	return out
}

// AttrsFromConfig returns [Config.Attrs] for the config's tenants: each
// tenant's attributes, passed to pricing plugins (nil for tenants the
// config does not list). The maps are copied, so pricers cannot change
// the config.
func AttrsFromConfig(ts []config.Tenant) func(tenant string) map[string]string {
	attrs := make(map[string]map[string]string, len(ts))
	for _, t := range ts {
		attrs[t.Name] = maps.Clone(t.Attributes)
	}
	return func(tenant string) map[string]string { return maps.Clone(attrs[tenant]) }
}
