package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Account types.
const (
	Prepaid  = "prepaid"
	Postpaid = "postpaid"
)

// Tenant is a tenant as the ledger knows it.
type Tenant struct {
	Name string `json:"name"`
	// Account is "prepaid" (the default) or "postpaid".
	Account string `json:"account"`
	// LowBalanceMicro is the prepaid balance below which the tenant is
	// reported low; 0 means "below zero".
	LowBalanceMicro int64     `json:"low_balance_micro"`
	Created         time.Time `json:"created"`
}

// SyncTenants records the tenants of the config (account type and
// low-balance threshold); tenants not listed keep what they had.
func (l *Ledger) SyncTenants(ctx context.Context, ts []Tenant) error {
	var errs []error
	rows := make([][]any, 0, len(ts))
	now := l.now().UnixMicro()
	for _, t := range ts {
		acct := t.Account
		if acct == "" {
			acct = Prepaid
		}
		if t.Name == "" {
			errs = append(errs, errors.New("tenant name is empty"))
		}
		if acct != Prepaid && acct != Postpaid {
			errs = append(errs, fmt.Errorf("tenant %q: account %q is not prepaid or postpaid", t.Name, t.Account))
		}
		rows = append(rows, []any{t.Name, acct, t.LowBalanceMicro, now})
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sync tenants: %w", err)
	}
	if len(rows) == 0 {
		return nil
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sync tenants: %w", err)
	}
	defer tx.Rollback()
	if err := l.d.insertRows(ctx, tx, `INSERT INTO tenants (name, account_type, low_balance_micro, created_us)`, 4, rows,
		` ON CONFLICT (name) DO UPDATE SET account_type = excluded.account_type, low_balance_micro = excluded.low_balance_micro`); err != nil {
		return fmt.Errorf("sync tenants: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sync tenants: %w", err)
	}
	return nil
}

// Tenants lists every tenant, by name.
func (l *Ledger) Tenants(ctx context.Context) ([]Tenant, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT name, account_type, low_balance_micro, created_us FROM tenants ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	var ts []Tenant
	for rows.Next() {
		var t Tenant
		var created int64
		if err := rows.Scan(&t.Name, &t.Account, &t.LowBalanceMicro, &created); err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		t.Created = time.UnixMicro(created).UTC()
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return ts, nil
}

// Balance is a tenant's balance in one currency.
type Balance struct {
	Tenant   string `json:"tenant"`
	Account  string `json:"account"`
	Currency string `json:"currency"`
	// BalanceMicro is top-ups minus charges; negative is debt.
	BalanceMicro int64 `json:"balance_micro"`
	// ChargedMicro is every charge ever made, net of reversals.
	ChargedMicro    int64 `json:"charged_micro"`
	LowBalanceMicro int64 `json:"low_balance_micro"`
	// Low is set for a prepaid account below its threshold (or below
	// zero when no threshold is set).
	Low bool `json:"low"`
}

// Balances returns tenant's balance per currency (none before its first
// charge or top-up), or [ErrUnknownTenant].
func (l *Ledger) Balances(ctx context.Context, tenant string) ([]Balance, error) {
	// One snapshot: the balances row and the node states' charges.
	tx, err := l.readTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("balance of %q: %w", tenant, err)
	}
	defer tx.Rollback()
	var t Tenant
	var created int64
	err = tx.QueryRowContext(ctx, l.d.rebind(`SELECT name, account_type, low_balance_micro, created_us FROM tenants WHERE name = ?`), tenant).
		Scan(&t.Name, &t.Account, &t.LowBalanceMicro, &created)
	if err != nil {
		if isNoRows(err) {
			return nil, fmt.Errorf("balance of %q: %w", tenant, ErrUnknownTenant)
		}
		return nil, fmt.Errorf("balance of %q: %w", tenant, err)
	}
	rows, err := tx.QueryContext(ctx, l.d.rebind(`SELECT currency, balance_micro, charged_micro FROM balances WHERE account = ? ORDER BY currency`), TenantAccount(tenant))
	if err != nil {
		return nil, fmt.Errorf("balance of %q: %w", tenant, err)
	}
	defer rows.Close()
	bs := []Balance{}
	for rows.Next() {
		b := Balance{Tenant: tenant, Account: t.Account, LowBalanceMicro: t.LowBalanceMicro}
		if err := rows.Scan(&b.Currency, &b.BalanceMicro, &b.ChargedMicro); err != nil {
			return nil, fmt.Errorf("balance of %q: %w", tenant, err)
		}
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("balance of %q: %w", tenant, err)
	}
	rows.Close()
	charges, err := l.tenantCharges(ctx, tx, tenant)
	if err != nil {
		return nil, fmt.Errorf("balance of %q: %w", tenant, err)
	}
	for cur, c := range charges {
		i := slices.IndexFunc(bs, func(b Balance) bool { return b.Currency == cur })
		if i < 0 {
			bs = append(bs, Balance{Tenant: tenant, Account: t.Account, Currency: cur, LowBalanceMicro: t.LowBalanceMicro})
			i = len(bs) - 1
		}
		bs[i].BalanceMicro -= c
		bs[i].ChargedMicro += c
	}
	slices.SortFunc(bs, func(a, b Balance) int { return strings.Compare(a.Currency, b.Currency) })
	for i := range bs {
		bs[i].Low = t.Account == Prepaid && bs[i].BalanceMicro < t.LowBalanceMicro
	}
	return bs, nil
}

// tenantCharges sums what the packed usage entries of every node that
// bills tenant charged it, per currency (see charge).
func (l *Ledger) tenantCharges(ctx context.Context, q queryer, tenant string) (map[string]int64, error) {
	nodes, err := queryStrings(ctx, q, l.d.rebind(`SELECT DISTINCT node FROM series WHERE tenant = ?`), tenant)
	if err != nil {
		return nil, fmt.Errorf("read nodes of %s: %w", tenant, err)
	}
	sums := map[string]int64{}
	for _, n := range nodes {
		st, err := l.loadState(ctx, q, n, false)
		if err != nil {
			return nil, err
		}
		i, _ := slices.BinarySearchFunc(st.charges, charge{tenant: tenant}, compareCharges)
		for ; i < len(st.charges) && st.charges[i].tenant == tenant; i++ {
			sums[st.charges[i].currency] += st.charges[i].amount
		}
	}
	return sums, nil
}

// queryStrings returns the one text column of query's rows.
func queryStrings(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// allCharges sums the charges in every node's state per tenant account.
func (l *Ledger) allCharges(ctx context.Context, q queryer) (map[balanceKey]int64, error) {
	nodes, err := queryStrings(ctx, q, `SELECT node FROM node_state`)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	sums := map[balanceKey]int64{}
	for _, n := range nodes {
		st, err := l.loadState(ctx, q, n, false)
		if err != nil {
			return nil, err
		}
		for _, c := range st.charges {
			sums[balanceKey{TenantAccount(c.tenant), c.currency}] += c.amount
		}
	}
	return sums, nil
}

// allBalances returns every tenant balance, for metrics: the balances
// rows less the charges in the node states, with each tenant's account
// type and threshold.
func (l *Ledger) allBalances(ctx context.Context) ([]Balance, error) {
	tx, err := l.readTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	defer tx.Rollback()
	type info struct {
		account string
		low     int64
	}
	tenants := map[string]info{}
	trows, err := tx.QueryContext(ctx, `SELECT name, account_type, low_balance_micro FROM tenants`)
	if err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	for trows.Next() {
		var name string
		var in info
		if err := trows.Scan(&name, &in.account, &in.low); err != nil {
			trows.Close()
			return nil, fmt.Errorf("read balances: %w", err)
		}
		tenants[name] = in
	}
	trows.Close()
	if err := trows.Err(); err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	// The balances are kept in one slice, indexed by key, rather than one
	// allocation each: at 10,000 tenants the map and its pointers were
	// much of the cost of a scrape. Most tenants have one currency, so
	// the tenant count sizes both.
	bs := make([]Balance, 0, len(tenants))
	bal := make(map[balanceKey]int, len(tenants))
	get := func(k balanceKey) *Balance {
		i, ok := bal[k]
		if !ok {
			b := Balance{Tenant: k.account[len(tenantPrefix):], Currency: k.currency, Account: Prepaid}
			if in, ok := tenants[b.Tenant]; ok {
				b.Account, b.LowBalanceMicro = in.account, in.low
			}
			i = len(bs)
			bs = append(bs, b)
			bal[k] = i
		}
		return &bs[i]
	}
	rows, err := tx.QueryContext(ctx, l.d.rebind(`SELECT account, currency, balance_micro, charged_micro FROM balances WHERE account LIKE ?`),
		tenantPrefix+"%")
	if err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k balanceKey
		var b, c int64
		if err := rows.Scan(&k.account, &k.currency, &b, &c); err != nil {
			return nil, fmt.Errorf("read balances: %w", err)
		}
		x := get(k)
		x.BalanceMicro += b
		x.ChargedMicro += c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	rows.Close()
	charges, err := l.allCharges(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("read balances: %w", err)
	}
	for k, c := range charges {
		x := get(k)
		x.BalanceMicro -= c
		x.ChargedMicro += c
	}
	// Every account has the tenant prefix, so ordering by tenant is
	// ordering by account, as sortBalanceKeys does.
	slices.SortFunc(bs, func(a, b Balance) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return strings.Compare(a.Currency, b.Currency)
	})
	for i := range bs {
		b := &bs[i]
		b.Low = b.Account == Prepaid && b.BalanceMicro < b.LowBalanceMicro
	}
	return bs, nil
}
