package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/kmeter/kmeter/internal/pricing"
)

// Window is the billed usage of one (node, tenant, meter) between two
// checkpoints. (Node, Tenant, Meter, Seq) is its idempotency key: the
// ledger accepts it once, for ever.
type Window struct {
	Node   string
	Tenant string
	Meter  string
	// Seq is the previous checkpoint's Seq + 1; the first window is 1.
	Seq uint64
	// FromCounter and ToCounter are the cumulative kernel counter at the
	// previous checkpoint and now; ToCounter becomes the new checkpoint.
	FromCounter uint64
	ToCounter   uint64
	// Rebased is set when the counter went backwards (its maps were
	// re-created): the counter restarted at zero, so Quantity is ToCounter
	// and FromCounter records the value that was lost track of.
	Rebased bool
	// Quantity is ToCounter-FromCounter, or ToCounter when Rebased.
	Quantity uint64
	Start    time.Time
	End      time.Time
	// Charge is the priced amount; PluginSHA256 the plugin that priced it.
	Charge       pricing.Charge
	PluginSHA256 string
}

func (w Window) validate() error {
	var errs []error
	if w.Node == "" || w.Tenant == "" || w.Meter == "" {
		errs = append(errs, errors.New("node, tenant and meter must be set"))
	}
	if w.Seq == 0 {
		errs = append(errs, errors.New("seq must start at 1"))
	}
	if w.ToCounter > math.MaxInt64 || w.FromCounter > math.MaxInt64 {
		errs = append(errs, errors.New("counter exceeds the int64 range"))
	}
	want := w.ToCounter - w.FromCounter
	if w.Rebased {
		want = w.ToCounter
	} else if w.ToCounter < w.FromCounter {
		errs = append(errs, fmt.Errorf("counter went backwards (%d -> %d) without a rebase", w.FromCounter, w.ToCounter))
	}
	if w.Quantity != want {
		errs = append(errs, fmt.Errorf("quantity %d does not match counters %d -> %d", w.Quantity, w.FromCounter, w.ToCounter))
	}
	c := w.Charge
	if c.AmountMicro < 0 {
		errs = append(errs, fmt.Errorf("amount %d is negative: corrections are reversal entries", c.AmountMicro))
	}
	if c.VendorMicro < 0 || c.VendorMicro > c.AmountMicro {
		errs = append(errs, fmt.Errorf("vendor share %d is outside 0..amount (%d)", c.VendorMicro, c.AmountMicro))
	}
	if c.AmountMicro != 0 || c.Currency != "" {
		if err := checkCurrency(c.Currency); err != nil {
			errs = append(errs, err)
		}
	}
	if c.VendorMicro > 0 && w.PluginSHA256 == "" {
		errs = append(errs, errors.New("a vendor share needs the plugin sha256 that names the vendor"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("window %s/%s/%s#%d: %w", w.Node, w.Tenant, w.Meter, w.Seq, err)
	}
	return nil
}

// Checkpoint is the last committed window of one series.
type Checkpoint struct {
	Tenant  string
	Meter   string
	Seq     uint64
	Counter uint64
	End     time.Time
}

// Checkpoints returns node's checkpoint of every series it has billed.
func (l *Ledger) Checkpoints(ctx context.Context, node string) ([]Checkpoint, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`
		SELECT e.tenant, e.meter, e.seq, e.to_counter, e.end_us FROM entries e
		WHERE e.kind = 'usage' AND e.node = ? AND e.seq = (
			SELECT MAX(m.seq) FROM entries m
			WHERE m.kind = 'usage' AND m.node = e.node AND m.tenant = e.tenant AND m.meter = e.meter)`), node)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	defer rows.Close()
	var cps []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var seq, counter, end int64
		if err := rows.Scan(&c.Tenant, &c.Meter, &seq, &counter, &end); err != nil {
			return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
		}
		c.Seq, c.Counter, c.End = uint64(seq), uint64(counter), time.UnixMicro(end)
		cps = append(cps, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	return cps, nil
}

// CommitWindows writes windows, their charges, postings and balance
// changes in one transaction: all of them or none. A window already in
// the ledger fails the whole commit with [ErrDuplicateWindow].
func (l *Ledger) CommitWindows(ctx context.Context, ws []Window) error {
	if len(ws) == 0 {
		return nil
	}
	var errs []error
	for _, w := range ws {
		if err := w.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("commit windows: begin: %w", err)
	}
	defer tx.Rollback()
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	ids, err := l.d.allocIDs(ctx, tx, len(ws))
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	tenants := make([]string, 0, len(ws))
	for _, w := range ws {
		tenants = append(tenants, w.Tenant)
	}
	fresh, err := l.ensureTenants(ctx, tx, tenants)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	now := l.now().UnixMicro()
	entries := make([][]any, len(ws))
	postings := make([][]any, 0, 3*len(ws))
	deltas := map[balanceKey]balanceDelta{}
	add := func(account, currency string, balance, charged int64) {
		k := balanceKey{account, currency}
		d := deltas[k]
		d.balance += balance
		d.charged += charged
		deltas[k] = d
	}
	for i, w := range ws {
		period, late := openPeriod(PeriodOf(w.End), closed)
		c := w.Charge
		entries[i] = []any{ids[i], "usage", w.Tenant, c.Currency, c.AmountMicro, period, b2i(late), now,
			w.Node, w.Meter, int64(w.Seq), int64(w.Quantity), int64(w.FromCounter), int64(w.ToCounter), b2i(w.Rebased),
			w.Start.UnixMicro(), w.End.UnixMicro(), w.PluginSHA256}
		if c.AmountMicro == 0 {
			continue
		}
		platform := c.AmountMicro - c.VendorMicro
		postings = append(postings, []any{ids[i], TenantAccount(w.Tenant), c.Currency, -c.AmountMicro})
		add(TenantAccount(w.Tenant), c.Currency, -c.AmountMicro, c.AmountMicro)
		if platform != 0 {
			postings = append(postings, []any{ids[i], PlatformAccount, c.Currency, platform})
			add(PlatformAccount, c.Currency, platform, 0)
		}
		if c.VendorMicro != 0 {
			postings = append(postings, []any{ids[i], VendorAccount(w.PluginSHA256), c.Currency, c.VendorMicro})
			add(VendorAccount(w.PluginSHA256), c.Currency, c.VendorMicro, 0)
		}
	}
	err = l.d.insertRows(ctx, tx, `INSERT INTO entries (id, kind, tenant, currency, amount_micro, period, late, created_us,
		node, meter, seq, quantity, from_counter, to_counter, rebased, start_us, end_us, plugin_sha256)`, 18, entries, "")
	if err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("commit windows: %w (%v)", ErrDuplicateWindow, err)
		}
		return fmt.Errorf("commit windows: insert entries: %w", err)
	}
	if err := l.d.insertRows(ctx, tx, `INSERT INTO postings (entry_id, account, currency, amount_micro)`, 4, postings, ""); err != nil {
		return fmt.Errorf("commit windows: insert postings: %w", err)
	}
	if len(deltas) > 0 {
		if err := l.applyBalances(ctx, tx, deltas); err != nil {
			return fmt.Errorf("commit windows: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("commit windows: %w (%v)", ErrDuplicateWindow, err)
		}
		return fmt.Errorf("commit windows: %w", err)
	}
	l.remember(fresh)
	return nil
}

func sortBalanceKeys(keys []balanceKey) {
	slices.SortFunc(keys, func(a, b balanceKey) int {
		if c := strings.Compare(a.account, b.account); c != 0 {
			return c
		}
		return strings.Compare(a.currency, b.currency)
	})
}

func sortStrings(s []string) { slices.Sort(s) }
