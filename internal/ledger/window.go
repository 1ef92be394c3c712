package ledger

import (
	"context"
	"database/sql"
	"encoding/binary"
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
	// Seq is the node's window number: above every earlier one of the
	// node, and the same for all series of one commit (see the usage
	// table in schema.go for why).
	Seq uint64
	// PrevSeq is the Seq of the checkpoint the window starts from (0 for
	// a series' first window). The commit fails with [ErrDuplicateWindow]
	// unless it is still the series' checkpoint: two windows never start
	// from the same checkpoint.
	PrevSeq uint64
	// FromCounter and ToCounter are the cumulative kernel counter at the
	// previous checkpoint and now; ToCounter becomes the new checkpoint.
	FromCounter uint64
	ToCounter   uint64
	// Rebased is set when the counter went backwards (maps re-created, or
	// a tenant's sum lost a cgroup): the window bills nothing and moves
	// the checkpoint down to ToCounter. Growth from there is billed as
	// usual. Billing ToCounter instead could bill usage twice.
	Rebased bool
	// Quantity is ToCounter-FromCounter, or 0 when Rebased.
	Quantity uint64
	Start    time.Time
	End      time.Time
	// Charge is the priced amount; PluginSHA256 the plugin that priced it.
	Charge       pricing.Charge
	PluginSHA256 string
}

// Validate reports what makes w unfit for the ledger: an inconsistent
// counter range or quantity, a negative amount, a vendor share outside the
// amount, a bad currency. [Ledger.CommitWindows] refuses such windows.
func (w Window) Validate() error {
	var errs []error
	if w.Node == "" || w.Tenant == "" || w.Meter == "" {
		errs = append(errs, errors.New("node, tenant and meter must be set"))
	}
	if w.Seq <= w.PrevSeq {
		errs = append(errs, fmt.Errorf("seq %d must be above the previous window's %d", w.Seq, w.PrevSeq))
	}
	if w.ToCounter > math.MaxInt64 || w.FromCounter > math.MaxInt64 {
		errs = append(errs, errors.New("counter exceeds the int64 range"))
	}
	want := w.ToCounter - w.FromCounter
	if w.Rebased {
		want = 0
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

// Checkpoints returns node's checkpoint of every series it has billed,
// in series id order.
func (l *Ledger) Checkpoints(ctx context.Context, node string) ([]Checkpoint, error) {
	tx, err := l.readTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	defer tx.Rollback()
	series, err := l.loadSeries(ctx, tx, node)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	names, err := l.seriesNames(ctx, tx, `WHERE node = ?`, node)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	var cps []Checkpoint
	for _, s := range series {
		if s.seq == 0 {
			continue
		}
		n, ok := names[s.sid]
		if !ok {
			return nil, fmt.Errorf("read checkpoints of node %s: its state holds series %d, which is not the node's", node, s.sid)
		}
		cps = append(cps, Checkpoint{Tenant: n.tenant, Meter: n.meter, Seq: s.seq, Counter: s.counter, End: time.UnixMicro(s.endUS)})
	}
	return cps, nil
}

// seriesCacheKey appends the key of (tenant, meter) to dst: the tenant's
// length, the tenant and the meter, so that no two pairs share a key
// whatever bytes their names hold. The names come as strings from windows
// and as bytes from a scan of the series table.
func seriesCacheKey[T string | []byte](dst []byte, tenant, meter T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(tenant)))
	return append(append(dst, tenant...), meter...)
}

// newSeriesIDs records the series of windows missing (indexes into src)
// that the node's seriesTable does not hold, inside tx, and returns them
// with their ids, one per index of missing, appended to dst. Series of an
// earlier life of the node are in the table already and keep their ids.
func (l *Ledger) newSeriesIDs(ctx context.Context, tx *sql.Tx, src WindowSource, node string, missing []int32, dst []newSeries) ([]newSeries, error) {
	if len(missing) == 0 {
		return dst, nil
	}
	want := make(map[string]int64, len(missing))
	var key []byte
	rows := make([][]any, len(missing))
	for j, i := range missing {
		w := src.Window(int(i))
		rows[j] = []any{node, w.Tenant, w.Meter}
		key = seriesCacheKey(key[:0], w.Tenant, w.Meter)
		want[string(key)] = 0
		dst = append(dst, newSeries{tenant: w.Tenant, meter: w.Meter})
	}
	if err := l.d.bulkInsert(ctx, tx, "series", []string{"node", "tenant", "meter"}, []string{"text", "text", "text"}, rows,
		` ON CONFLICT (node, tenant, meter) DO NOTHING`); err != nil {
		return dst, fmt.Errorf("record series: %w", err)
	}
	// The ids are read back by tenant (ON CONFLICT DO NOTHING returns no
	// id for a series another writer made): on a host where tenants come
	// and go, some appear in most windows, and reading all of a node's
	// 70,000 series back each time cost about 100 ms. Many new tenants
	// (a node's first window) are read in one scan of the node's series.
	var tenants []string
	for _, s := range dst[len(dst)-len(missing):] {
		if len(tenants) == 0 || tenants[len(tenants)-1] != s.tenant {
			tenants = append(tenants, s.tenant)
		}
	}
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	read := func(query string, args ...any) error {
		r, err := tx.QueryContext(ctx, l.d.rebind(query), args...)
		if err != nil {
			return fmt.Errorf("read series: %w", err)
		}
		defer r.Close()
		for r.Next() {
			var id int64
			var tenant, meter []byte
			if err := r.Scan(&id, &tenant, &meter); err != nil {
				return fmt.Errorf("read series: %w", err)
			}
			key = seriesCacheKey(key[:0], tenant, meter)
			// m[string(b)] looks up without making the string.
			if _, ok := want[string(key)]; ok {
				want[string(key)] = id
			}
		}
		if err := r.Err(); err != nil {
			return fmt.Errorf("read series: %w", err)
		}
		return nil
	}
	if len(tenants) > maxTenantsLookedUp {
		if err := read(`SELECT id, tenant, meter FROM series WHERE node = ?`, node); err != nil {
			return dst, err
		}
	} else {
		for lo := 0; lo < len(tenants); lo += tenantsPerLookup {
			part := tenants[lo:min(lo+tenantsPerLookup, len(tenants))]
			args := make([]any, 0, len(part)+1)
			args = append(args, node)
			for _, t := range part {
				args = append(args, t)
			}
			q := `SELECT id, tenant, meter FROM series WHERE node = ? AND tenant IN (?` + strings.Repeat(",?", len(part)-1) + `)`
			if err := read(q, args...); err != nil {
				return dst, err
			}
		}
	}
	fresh := dst[len(dst)-len(missing):]
	for j := range fresh {
		s := &fresh[j]
		key = seriesCacheKey(key[:0], s.tenant, s.meter)
		if s.id = want[string(key)]; s.id == 0 {
			return dst, fmt.Errorf("series %s/%s/%s was not recorded", node, s.tenant, s.meter)
		}
	}
	return dst, nil
}

// Series new to a commit are read back by tenant, tenantsPerLookup
// tenants per query, when they belong to at most maxTenantsLookedUp
// tenants; more are read in one scan of the node's series.
const (
	tenantsPerLookup   = 200
	maxTenantsLookedUp = 2000
)

func sortBalanceKeys(keys []balanceKey) {
	slices.SortFunc(keys, func(a, b balanceKey) int {
		if c := strings.Compare(a.account, b.account); c != 0 {
			return c
		}
		return strings.Compare(a.currency, b.currency)
	})
}

var rollupCols = []string{"tenant", "period", "meter", "currency", "plugin_sha256", "late", "quantity", "amount_micro"}

const rollupUpsert = ` ON CONFLICT (tenant, period, meter, currency, plugin_sha256, late) DO UPDATE SET
	quantity = usage_lines.quantity + excluded.quantity,
	amount_micro = usage_lines.amount_micro + excluded.amount_micro`

// lineKey names a usage line of a series: the window's entry's period,
// currency, pricing plugin and late flag.
type lineKey struct {
	period, currency, plugin string
	late                     bool
}

// lineID returns k's id in the ledger's table of line keys, adding k.
func (l *Ledger) lineID(k lineKey) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lineIDLocked(k)
}

// lineIDLocked is lineID with l.mu held.
func (l *Ledger) lineIDLocked(k lineKey) uint32 {
	id, ok := l.lineIDs[k]
	if !ok {
		id = uint32(len(l.lineKeys))
		l.lineKeys = append(l.lineKeys, k)
		l.lineIDs[k] = id
	}
	return id
}

// lineKeyTable returns the table of line keys: ids index it. It is
// append-only, so the slice stays valid for the ids known now.
func (l *Ledger) lineKeyTable() []lineKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lineKeys
}
