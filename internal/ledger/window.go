package ledger

import (
	"cmp"
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
	st, err := l.loadState(ctx, tx, node, false)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	names, err := l.seriesNames(ctx, tx, `WHERE node = ?`, node)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of node %s: %w", node, err)
	}
	var cps []Checkpoint
	for _, s := range st.series {
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

// CommitWindows writes windows, their charges, postings and balance
// changes in one transaction: all of them or none. A window already in
// the ledger fails the whole commit with [ErrDuplicateWindow].
//
// The windows of one tenant (per currency, period and pricing plugin)
// form one journal entry: the tenant is debited the sum, the platform
// and the plugin's vendor credited their shares; the windows are its line
// items. The windows themselves are one packed window_commits row and the
// node's checkpoints one node_state row (schema version 4): a commit's
// cost is in rows, not bytes.
func (l *Ledger) CommitWindows(ctx context.Context, ws []Window) error {
	if len(ws) == 0 {
		return nil
	}
	var errs []error
	for _, w := range ws {
		if err := w.Validate(); err != nil {
			errs = append(errs, err)
		}
		if w.Node != ws[0].Node {
			errs = append(errs, fmt.Errorf("windows of nodes %s and %s in one commit: commit each node's windows separately", ws[0].Node, w.Node))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// The transaction runs on a dedicated connection, so that the
	// balance rows can go in on that same connection below database/sql.
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("commit windows: connect: %w", err)
	}
	defer conn.Close()
	// dc binds every statement of the commit from one set of buffers.
	dc := &driverConn{Conn: conn}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("commit windows: begin: %w", err)
	}
	defer tx.Rollback()
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// A usage entry's windows share their seq (normally all windows of
	// a commit do): it is the entry's window_seq. line is the id of the
	// entry's line key (period, currency, plugin, late).
	type group struct {
		tenant string
		line   uint32
		seq    uint64
	}
	type sums struct{ amount, vendor int64 }
	// groups[g] is g's index in order and totals.
	groups := map[group]int32{}
	var order []group
	var totals []sums
	sids, fresh, err := l.seriesIDs(ctx, tx, ws)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// In series id order: the order of the packed commit and of the
	// node's state, merged in one pass.
	bySid := make([]int32, len(ws))
	for i := range bySid {
		bySid[i] = int32(i)
	}
	// Usually already so: the biller sends a node's series in one order,
	// the one they were created in.
	if !slices.IsSorted(sids) {
		slices.SortFunc(bySid, func(a, b int32) int { return cmp.Compare(sids[a], sids[b]) })
	}
	if i, ok := twoOfOneSeries(sids, bySid); ok {
		w := ws[i]
		return fmt.Errorf("commit windows: two windows of %s/%s/%s in one commit", w.Node, w.Tenant, w.Meter)
	}
	// entryOf[i] is the index in order of window i's entry. Windows
	// come grouped by tenant, so the last group is tried before the map;
	// they share their end time, currency and plugin, so the line key is
	// worked out once.
	entryOf := make([]int32, len(ws))
	var last group
	lastEntry := int32(-1)
	var lastEnd time.Time
	var period, currency, plugin string
	var late bool
	var line uint32
	for i := range ws {
		w := &ws[i]
		if i == 0 || !w.End.Equal(lastEnd) || w.Charge.Currency != currency || w.PluginSHA256 != plugin {
			if i == 0 || !w.End.Equal(lastEnd) {
				period, late = openPeriod(PeriodOf(w.End), closed)
				lastEnd = w.End
			}
			currency, plugin = w.Charge.Currency, w.PluginSHA256
			line = l.lineID(lineKey{period, currency, plugin, late})
		}
		g := group{w.Tenant, line, w.Seq}
		e := lastEntry
		if e < 0 || g != last {
			var ok bool
			if e, ok = groups[g]; !ok {
				e = int32(len(order))
				groups[g] = e
				order = append(order, g)
				totals = append(totals, sums{})
			}
			last, lastEntry = g, e
		}
		s := &totals[e]
		if s.amount > math.MaxInt64-w.Charge.AmountMicro {
			return fmt.Errorf("commit windows: charges of tenant %s overflow int64: commit fewer windows at once", w.Tenant)
		}
		s.amount += w.Charge.AmountMicro
		s.vendor += w.Charge.VendorMicro
		entryOf[i] = e
	}
	ids, err := l.d.allocIDs(ctx, tx, len(order))
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// keys[i] is window i's line key id (see Ledger.lineKeys).
	keys := make([]uint32, len(ws))
	for i, e := range entryOf {
		keys[i] = order[e].line
	}
	node := ws[0].Node
	st, err := l.loadState(ctx, tx, node, true)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	table := l.lineKeyTable()
	// Each tenant's charges go into the node's state, not into 10,000
	// balance rows (see charge).
	charged := make([]charge, 0, len(order))
	for i, g := range order {
		if a := totals[i].amount; a != 0 {
			charged = append(charged, charge{tenant: g.tenant, currency: table[g.line].currency, amount: a})
		}
	}
	if !slices.IsSortedFunc(charged, compareCharges) {
		slices.SortFunc(charged, compareCharges)
	}
	n := 0
	for _, c := range charged {
		if n > 0 && compareCharges(charged[n-1], c) == 0 {
			charged[n-1].amount += c.amount // an entry per plugin or seq
			continue
		}
		charged[n] = c
		n++
	}
	charged = charged[:n]
	next, closing, err := nextState(st, ws, sids, bySid, keys, table, charged)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	if err := l.closeLines(ctx, tx, closing); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	entries := make([]commitEntry, len(order))
	for i, g := range order {
		entries[i] = commitEntry{id: ids[i], tenant: g.tenant, key: table[g.line]}
	}
	if err := l.writeCommit(ctx, tx, st, next, ws, sids, bySid, ids, entryOf, entries); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	tenants := make([]string, len(order))
	for i, g := range order {
		tenants[i] = g.tenant
	}
	freshTenants, err := l.ensureTenants(ctx, tx, tenants)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	deltas := make(map[balanceKey]balanceDelta, len(order)+2)
	add := func(account, currency string, balance, charged int64) {
		k := balanceKey{account, currency}
		d := deltas[k]
		d.balance += balance
		d.charged += charged
		deltas[k] = d
	}
	// The entries of a commit share their plugin, mostly: its vendor
	// account is built once, not once per tenant.
	var vendorOf, vendor string
	for i, g := range order {
		s := &totals[i]
		if s.amount == 0 {
			continue
		}
		k := &table[g.line]
		if s.vendor != 0 {
			if vendor == "" || k.plugin != vendorOf {
				vendorOf, vendor = k.plugin, VendorAccount(k.plugin)
			}
			add(vendor, k.currency, s.vendor, 0)
		}
		if platform := s.amount - s.vendor; platform != 0 {
			add(PlatformAccount, k.currency, platform, 0)
		}
	}
	// The entries and their postings are not rows: they are in the
	// commit blob (see commitEntry), the postings follow from each entry
	// and its windows (tenant debit = the sum of its windows' amounts,
	// vendor credit = their vendor shares, platform credit = the rest; see
	// packedPostings). 10,000 entry and 30,000 posting rows were half of a
	// commit's CPU.
	if len(deltas) > 0 {
		if err := l.applyBalances(ctx, tx, dc, deltas); err != nil {
			return fmt.Errorf("commit windows: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("commit windows: %w (%v)", ErrDuplicateWindow, err)
		}
		return fmt.Errorf("commit windows: %w", err)
	}
	l.remember(freshTenants)
	l.rememberSeries(node, fresh)
	l.cacheState(node, next)
	return nil
}

// tuples is k comma-separated tuples of n plain placeholders.
func tuples(n, k int) string {
	t := "(" + strings.Repeat("?,", n-1) + "?)"
	return strings.TrimSuffix(strings.Repeat(t+",", k), ",")
}

// twoOfOneSeries returns the index of a window whose series has another
// window in the commit, if any: such windows are neighbours in bySid.
func twoOfOneSeries(sids []int64, bySid []int32) (int, bool) {
	for j := 1; j < len(bySid); j++ {
		if sids[bySid[j]] == sids[bySid[j-1]] {
			return int(bySid[j]), true
		}
	}
	return 0, false
}

// seriesCacheKey appends the key of (tenant, meter) in a node's series
// cache to dst: the tenant's length, the tenant and the meter, so that no
// two pairs share a key whatever bytes their names hold. The names come as
// strings from windows and as bytes from a scan of the series table.
func seriesCacheKey[T string | []byte](dst []byte, tenant, meter T) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(tenant)))
	return append(append(dst, tenant...), meter...)
}

// seriesIDs returns the series id of every window (ids[i] is ws[i]'s)
// inside tx, creating the missing series, and the node's ids (by
// [seriesCacheKey]) to cache once tx commits.
func (l *Ledger) seriesIDs(ctx context.Context, tx *sql.Tx, ws []Window) ([]int64, map[string]int64, error) {
	// The biller sends a node's series in the same order every window:
	// comparing names with the last commit's costs a fraction of hashing
	// 70,000 of them.
	l.mu.Lock()
	o := l.orders[ws[0].Node]
	l.mu.Unlock()
	if o != nil && len(o.ids) == len(ws) {
		same := true
		for i := range ws {
			if ws[i].Tenant != o.tenants[i] || ws[i].Meter != o.meters[i] {
				same = false
				break
			}
		}
		if same {
			return slices.Clone(o.ids), nil, nil
		}
	}
	ids := make([]int64, len(ws))
	var missing []int // indexes into ws
	var key []byte
	l.mu.Lock()
	cache := l.series[ws[0].Node]
	for i := range ws {
		w := &ws[i]
		key = seriesCacheKey(key[:0], w.Tenant, w.Meter)
		// m[string(b)] looks up without making the string.
		if id, ok := cache[string(key)]; ok {
			ids[i] = id
		} else {
			missing = append(missing, i)
		}
	}
	l.mu.Unlock()
	if len(missing) == 0 {
		// All committed series: the order is safe to keep.
		o := &seriesOrder{tenants: make([]string, len(ws)), meters: make([]string, len(ws)), ids: slices.Clone(ids)}
		for i := range ws {
			o.tenants[i], o.meters[i] = ws[i].Tenant, ws[i].Meter
		}
		l.mu.Lock()
		l.orders[ws[0].Node] = o
		l.mu.Unlock()
		return ids, nil, nil
	}
	rows := make([][]any, len(missing))
	for j, i := range missing {
		rows[j] = []any{ws[i].Node, ws[i].Tenant, ws[i].Meter}
	}
	if err := l.d.bulkInsert(ctx, tx, "series", []string{"node", "tenant", "meter"}, []string{"text", "text", "text"}, rows,
		` ON CONFLICT (node, tenant, meter) DO NOTHING`); err != nil {
		return nil, nil, fmt.Errorf("record series: %w", err)
	}
	// A node's series are read back all at once: this happens when
	// tenants or meters appear, not every window.
	fresh := map[string]int64{}
	r, err := tx.QueryContext(ctx, l.d.rebind(`SELECT id, tenant, meter FROM series WHERE node = ?`), ws[0].Node)
	if err != nil {
		return nil, nil, fmt.Errorf("read series: %w", err)
	}
	defer r.Close()
	for r.Next() {
		var id int64
		var tenant, meter []byte
		if err := r.Scan(&id, &tenant, &meter); err != nil {
			return nil, nil, fmt.Errorf("read series: %w", err)
		}
		key = seriesCacheKey(key[:0], tenant, meter)
		fresh[string(key)] = id
	}
	if err := r.Err(); err != nil {
		return nil, nil, fmt.Errorf("read series: %w", err)
	}
	for _, i := range missing {
		w := &ws[i]
		key = seriesCacheKey(key[:0], w.Tenant, w.Meter)
		id, ok := fresh[string(key)]
		if !ok {
			return nil, nil, fmt.Errorf("series %s/%s/%s was not recorded", w.Node, w.Tenant, w.Meter)
		}
		ids[i] = id
	}
	return ids, fresh, nil
}

// seriesOrder is the (tenant, meter) order of a node's last commit with
// its series ids.
type seriesOrder struct {
	tenants, meters []string
	ids             []int64
}

func (l *Ledger) rememberSeries(node string, m map[string]int64) {
	if len(m) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cache := l.series[node]
	if cache == nil {
		l.series[node] = m
		return
	}
	for k, id := range m {
		cache[k] = id
	}
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
