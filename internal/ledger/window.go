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
	"strconv"
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

var (
	usageCols = []string{"series_id", "seq", "prev_seq", "entry_id", "amount_micro",
		"vendor_micro", "quantity", "from_counter", "to_counter", "rebased", "start_us", "end_us"}
	entryCols   = []string{"id", "kind", "tenant", "currency", "amount_micro", "period", "late", "created_us", "node", "plugin_sha256", "window_seq"}
	postingCols = []string{"entry_id", "account", "currency", "amount_micro"}
)

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
		SELECT s.tenant, s.meter, c.last_seq, c.last_counter, c.last_end_us FROM series s JOIN checkpoints c ON c.series_id = s.id
		WHERE s.node = ? AND c.last_seq > 0`), node)
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
//
// The windows of one tenant (per currency, period and pricing plugin)
// form one journal entry: the tenant is debited the sum, the platform
// and the plugin's vendor credited their shares; the windows are its line
// items.
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
	// The transaction runs on a dedicated connection, so that the bulk
	// of the rows can go in on that same connection below database/sql:
	// with COPY on PostgreSQL, with driver-level statements on SQLite.
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
	insert := func(table string, cols []string, n int, row rowFunc) error {
		switch {
		case l.d == postgres && n >= 64:
			return copyFunc(ctx, conn, table, cols, n, row)
		case l.d == postgres:
			return l.d.insertFunc(ctx, tx, "INSERT INTO "+table+" ("+strings.Join(cols, ", ")+")", len(cols), n, row, "")
		}
		tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
		head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES "
		query := func(k int) string { return head + strings.TrimSuffix(strings.Repeat(tuple+",", k), ",") }
		return execBatches(ctx, tx, dc, query, nil, len(cols), n, row, nil)
	}
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// A usage entry's windows share their seq (normally all windows of
	// a commit do): Reverse finds them by it (see schema version 3). line
	// is the id of the entry's line key (period, currency, plugin, late).
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
	// In key order: SQLite stores usage in its (seq, series_id) key, and
	// rows that arrive in order fill each page before the next.
	byKey := make([]int32, len(ws))
	for i := range byKey {
		byKey[i] = int32(i)
	}
	slices.SortFunc(byKey, func(a, b int32) int {
		if c := cmp.Compare(ws[a].Seq, ws[b].Seq); c != 0 {
			return c
		}
		return cmp.Compare(sids[a], sids[b])
	})
	if i, ok := twoOfOneSeries(ws, sids, byKey); ok {
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
	table := l.lineKeyTable()
	rolled, err := l.openLines(ctx, tx, sids, ws, keys)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// Series ids are bound twice, by the checkpoint update and the usage
	// insert: converted to bind values once.
	sidArgs := make([]any, len(sids))
	for i, id := range sids {
		sidArgs[i] = id
	}
	if err := l.moveCheckpoints(ctx, tx, dc, sids, sidArgs, ws); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	if err := l.rollLines(ctx, tx, dc, sids, ws, keys, rolled); err != nil {
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
	now := l.now().UnixMicro()
	node := ws[0].Node
	// Each value bound goes in as an any: an int64 above 255 or a string
	// made at run time allocates when converted. Entry ids are converted
	// once, not per row that binds them.
	idArgs := make([]any, len(ids))
	for i, id := range ids {
		idArgs[i] = id
	}
	// side says whose posting it is, for the statement below that
	// names the account in SQL.
	const (
		tenantSide = iota
		vendorSide
		platformSide
	)
	type posting struct {
		entry    any // int64
		account  string
		currency string
		amount   int64
		side     int
	}
	sameEntry := true
	for _, g := range order {
		if g.line != order[0].line || g.seq != order[0].seq {
			sameEntry = false
			break
		}
	}
	// usual: on SQLite, the usual commit (one entry per tenant, all with
	// the same line key and seq) binds what the entries share once, and
	// takes tenant accounts and balances from the entries (see below).
	usual := l.d == sqliteDialect && sameEntry
	postings := make([]posting, 0, 3*len(order))
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
		id := idArgs[i]
		tenant := TenantAccount(g.tenant)
		postings = append(postings, posting{id, tenant, k.currency, -s.amount, tenantSide})
		if !usual {
			add(tenant, k.currency, -s.amount, s.amount)
		}
		if s.vendor != 0 {
			if vendor == "" || k.plugin != vendorOf {
				vendorOf, vendor = k.plugin, VendorAccount(k.plugin)
			}
			postings = append(postings, posting{id, vendor, k.currency, s.vendor, vendorSide})
			add(vendor, k.currency, s.vendor, 0)
		}
		if platform := s.amount - s.vendor; platform != 0 {
			postings = append(postings, posting{id, PlatformAccount, k.currency, platform, platformSide})
			add(PlatformAccount, k.currency, platform, 0)
		}
	}
	if usual {
		// The usual commit: the entries differ only in tenant and amount.
		g := &order[0]
		k := &table[g.line]
		shared := []any{now, node, int64(g.seq), k.currency, k.period, k.plugin, b2i(k.late)}
		query := func(k int) string {
			return `INSERT INTO entries (kind, created_us, node, window_seq, currency, period, plugin_sha256, late, id, tenant, amount_micro)
				SELECT 'usage', ?1, ?2, ?3, ?4, ?5, ?6, ?7, * FROM (VALUES ` + tuples(3, k) + `)`
		}
		err = execBatches(ctx, tx, dc, query, shared, 3, len(order), func(i int, dst []any) []any {
			return append(dst, idArgs[i], order[i].tenant, totals[i].amount)
		}, nil)
	} else {
		err = insert("entries", entryCols, len(order), func(i int, dst []any) []any {
			g := &order[i]
			k := &table[g.line]
			return append(dst, idArgs[i], "usage", g.tenant, k.currency, totals[i].amount, k.period, b2i(k.late), now, node, k.plugin, int64(g.seq))
		})
	}
	if err != nil {
		return fmt.Errorf("commit windows: insert entries: %w", err)
	}
	if l.d == sqliteDialect && sameWindow(ws, true) {
		// The usual commit: one window number and time span for all.
		w := &ws[0]
		shared := []any{int64(w.Seq), int64(w.PrevSeq), b2i(w.Rebased), w.Start.UnixMicro(), w.End.UnixMicro()}
		query := func(k int) string {
			return `INSERT INTO usage (seq, prev_seq, rebased, start_us, end_us, series_id, entry_id, amount_micro, vendor_micro,
				quantity, from_counter, to_counter) SELECT ?1, ?2, ?3, ?4, ?5, * FROM (VALUES ` + tuples(7, k) + `)`
		}
		err = execBatches(ctx, tx, dc, query, shared, 7, len(ws), func(j int, dst []any) []any {
			i := byKey[j]
			w := &ws[i]
			return append(dst, sidArgs[i], idArgs[entryOf[i]], w.Charge.AmountMicro, w.Charge.VendorMicro,
				int64(w.Quantity), int64(w.FromCounter), int64(w.ToCounter))
		}, nil)
	} else {
		err = insert("usage", usageCols, len(ws), func(j int, dst []any) []any {
			i := byKey[j]
			w := &ws[i]
			return append(dst, sidArgs[i], int64(w.Seq), int64(w.PrevSeq), idArgs[entryOf[i]], w.Charge.AmountMicro, w.Charge.VendorMicro,
				int64(w.Quantity), int64(w.FromCounter), int64(w.ToCounter), b2i(w.Rebased), w.Start.UnixMicro(), w.End.UnixMicro())
		})
	}
	if err != nil {
		if l.d.isUnique(err) {
			return fmt.Errorf("commit windows: %w (%v)", ErrDuplicateWindow, err)
		}
		return fmt.Errorf("commit windows: insert usage: %w", err)
	}
	if usual {
		// The accounts are named in SQL, not bound per row: the entries
		// share their plugin, so their vendor, and the tenant's account
		// is its entry's tenant, just inserted. A bound string costs
		// the driver a C copy and a record to free it: 30,000 a commit.
		k := &table[order[0].line]
		query := func(n int) string {
			return `INSERT INTO postings (currency, entry_id, account, amount_micro)
				SELECT ?1, v.column1, CASE v.column2 WHEN ` + strconv.Itoa(tenantSide) + ` THEN (SELECT ?2 || e.tenant FROM entries e WHERE e.id = v.column1)
					WHEN ` + strconv.Itoa(vendorSide) + ` THEN ?3 ELSE ?4 END, v.column3
				FROM (VALUES ` + tuples(3, n) + `) AS v`
		}
		shared := []any{k.currency, tenantPrefix, VendorAccount(k.plugin), PlatformAccount}
		err = execBatches(ctx, tx, dc, query, shared, 3, len(postings), func(i int, dst []any) []any {
			p := &postings[i]
			return append(dst, p.entry, p.side, p.amount)
		}, nil)
	} else {
		err = insert("postings", postingCols, len(postings), func(i int, dst []any) []any {
			p := &postings[i]
			return append(dst, p.entry, p.account, p.currency, p.amount)
		})
	}
	if err != nil {
		return fmt.Errorf("commit windows: insert postings: %w", err)
	}
	if usual {
		// The entries just inserted hold each tenant's charge: their
		// ids are ids[0]..ids[len-1] (allocIDs). In account order, as
		// applyBalances writes them; no tenant account string is bound.
		if _, err := tx.ExecContext(ctx, `INSERT INTO balances (account, currency, balance_micro, charged_micro)
			SELECT ? || tenant, currency, -amount_micro, amount_micro FROM entries
			WHERE id BETWEEN ? AND ? AND amount_micro <> 0 ORDER BY 1`+balanceUpsert,
			tenantPrefix, ids[0], ids[len(ids)-1]); err != nil {
			return fmt.Errorf("commit windows: update balances: %w", err)
		}
	}
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
	l.rememberLines(sids, ws, keys)
	return nil
}

// moveCheckpoints sets each window's series checkpoint to the window,
// if it still is the window's PrevSeq: a compare-and-swap per series. The
// same update adds the window to the series' open usage line (see
// usage_lines in schema.go): the row is written anyway. A
// series whose checkpoint moved meanwhile (another writer with the same
// node id, or a retry of a landed commit) fails the whole commit. sids
// are the windows' series ids, sidArgs the same as bind values; SQLite's
// statements run on conn, tx's connection, below database/sql (see
// execBatches).
func (l *Ledger) moveCheckpoints(ctx context.Context, tx *sql.Tx, conn *driverConn, sids []int64, sidArgs []any, ws []Window) error {
	const ncols = 7
	if l.d == postgres && sameWindow(ws, false) {
		// The usual commit: seq, previous seq and end time are the same
		// for all, bound once; four arrays, not seven, to encode.
		w0 := &ws[0]
		cols := make([][]int64, 4)
		for c := range cols {
			cols[c] = make([]int64, len(ws))
		}
		for i := range ws {
			w := &ws[i]
			cols[0][i], cols[1][i], cols[2][i], cols[3][i] = sids[i], int64(w.ToCounter), int64(w.Quantity), w.Charge.AmountMicro
		}
		res, err := tx.ExecContext(ctx, `UPDATE checkpoints SET last_seq = $5, last_counter = v.counter, last_end_us = $6,
			line_quantity = checkpoints.line_quantity + v.q, line_amount_micro = checkpoints.line_amount_micro + v.a
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v(id, counter, q, a)
			WHERE checkpoints.series_id = v.id AND checkpoints.last_seq = $7`,
			cols[0], cols[1], cols[2], cols[3], int64(w0.Seq), w0.End.UnixMicro(), int64(w0.PrevSeq))
		return checkMoved(res, err, len(ws), w0.Node)
	}
	if l.d == postgres {
		// One statement of seven arrays: no per-row parameters to bind.
		cols := make([][]int64, ncols)
		for c := range cols {
			cols[c] = make([]int64, len(ws))
		}
		for i, w := range ws {
			cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i] = sids[i], int64(w.PrevSeq), int64(w.Seq), int64(w.ToCounter), w.End.UnixMicro()
			cols[5][i], cols[6][i] = int64(w.Quantity), w.Charge.AmountMicro
		}
		res, err := tx.ExecContext(ctx, `UPDATE checkpoints SET last_seq = v.seq, last_counter = v.counter, last_end_us = v.end_us,
			line_quantity = checkpoints.line_quantity + v.q, line_amount_micro = checkpoints.line_amount_micro + v.a
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
				AS v(id, prev, seq, counter, end_us, q, a)
			WHERE checkpoints.series_id = v.id AND checkpoints.last_seq = v.prev`, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
		return checkMoved(res, err, len(ws), ws[0].Node)
	}
	check := func(res result, n int) error { return checkMoved(res, nil, n, ws[0].Node) }
	if sameWindow(ws, false) {
		// The usual commit: one window number, previous one and end time
		// for all, bound once per statement.
		w := &ws[0]
		shared := []any{int64(w.Seq), w.End.UnixMicro(), int64(w.PrevSeq)}
		query := func(k int) string {
			return `UPDATE checkpoints SET last_seq = ?1, last_end_us = ?2, last_counter = v.column2,
				line_quantity = line_quantity + v.column3, line_amount_micro = line_amount_micro + v.column4
				FROM (SELECT ?3 AS prev, * FROM (VALUES ` + tuples(4, k) + `)) AS v
				WHERE checkpoints.series_id = v.column1 AND checkpoints.last_seq = v.prev`
		}
		row := func(i int, dst []any) []any {
			w := &ws[i]
			return append(dst, sidArgs[i], int64(w.ToCounter), int64(w.Quantity), w.Charge.AmountMicro)
		}
		if err := execBatches(ctx, tx, conn, query, shared, 4, len(ws), row, check); err != nil {
			if errors.Is(err, ErrDuplicateWindow) {
				return err
			}
			return fmt.Errorf("move checkpoints: %w", err)
		}
		return nil
	}
	query := func(n int) string {
		var b strings.Builder
		b.WriteString(`UPDATE checkpoints SET last_seq = v.column3, last_counter = v.column4, last_end_us = v.column5,
			line_quantity = line_quantity + v.column6, line_amount_micro = line_amount_micro + v.column7 FROM (VALUES `)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?,?)")
		}
		b.WriteString(`) AS v WHERE checkpoints.series_id = v.column1 AND checkpoints.last_seq = v.column2`)
		return b.String()
	}
	row := func(i int, dst []any) []any {
		w := &ws[i]
		return append(dst, sidArgs[i], int64(w.PrevSeq), int64(w.Seq), int64(w.ToCounter), w.End.UnixMicro(), int64(w.Quantity), w.Charge.AmountMicro)
	}
	if err := execBatches(ctx, tx, conn, query, nil, ncols, len(ws), row, check); err != nil {
		if errors.Is(err, ErrDuplicateWindow) {
			return err
		}
		return fmt.Errorf("move checkpoints: %w", err)
	}
	return nil
}

// sameWindow reports whether all of ws share their seq, previous seq and
// end time, and with span also their start time and rebase flag: then
// those are bound once per statement, not per row (see execBatches).
func sameWindow(ws []Window, span bool) bool {
	w0 := &ws[0]
	end, start := w0.End.UnixMicro(), w0.Start.UnixMicro()
	for i := range ws {
		w := &ws[i]
		if w.Seq != w0.Seq || w.PrevSeq != w0.PrevSeq || w.End.UnixMicro() != end ||
			span && (w.Start.UnixMicro() != start || w.Rebased != w0.Rebased) {
			return false
		}
	}
	return true
}

// tuples is k comma-separated tuples of n plain placeholders.
func tuples(n, k int) string {
	t := "(" + strings.Repeat("?,", n-1) + "?)"
	return strings.TrimSuffix(strings.Repeat(t+",", k), ",")
}

// checkMoved checks that a checkpoint update moved all n series.
func checkMoved(res result, err error, n int, node string) error {
	if err != nil {
		return fmt.Errorf("move checkpoints: %w", err)
	}
	moved, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("move checkpoints: %w", err)
	}
	if moved != int64(n) {
		return fmt.Errorf("%w: %d of %d series are no longer at the window's starting checkpoint (another writer with node id %s?)",
			ErrDuplicateWindow, int64(n)-moved, n, node)
	}
	return nil
}

// twoOfOneSeries returns the index of a window whose series has another
// window in ws, if any. byKey orders ws by (seq, series id): when all
// share their seq, the usual commit, such windows are neighbours in it.
func twoOfOneSeries(ws []Window, sids []int64, byKey []int32) (int, bool) {
	if ws[byKey[0]].Seq == ws[byKey[len(byKey)-1]].Seq {
		for j := 1; j < len(byKey); j++ {
			if sids[byKey[j]] == sids[byKey[j-1]] {
				return int(byKey[j]), true
			}
		}
		return 0, false
	}
	seen := make(map[int64]struct{}, len(ws))
	for i, id := range sids {
		if _, dup := seen[id]; dup {
			return i, true
		}
		seen[id] = struct{}{}
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
	// Each series has its checkpoint row (see checkpoints in schema.go).
	if _, err := tx.ExecContext(ctx, l.d.rebind(`INSERT INTO checkpoints (series_id)
		SELECT s.id FROM series s WHERE s.node = ? AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.series_id = s.id)
		ON CONFLICT (series_id) DO NOTHING`), ws[0].Node); err != nil {
		return nil, nil, fmt.Errorf("record checkpoints: %w", err)
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

// openLine is a series' open line as of its checkpoint seq: key is its
// line key's id (see Ledger.lineKeys).
type openLine struct {
	seq uint64
	key uint32
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

// openLines returns, for each window, whether its line differs from its
// series' open line (rolled). The cache answers when it holds the
// window's starting checkpoint; otherwise the node's series are read in
// tx (after a restart, or when another writer moved them: then the
// compare-and-swap fails the commit anyway).
func (l *Ledger) openLines(ctx context.Context, tx *sql.Tx, sids []int64, ws []Window, keys []uint32) ([]bool, error) {
	rolled := make([]bool, len(ws))
	var unknown []int
	l.mu.Lock()
	for i := range ws {
		if c, ok := l.lines[sids[i]]; ok && c.seq == ws[i].PrevSeq {
			rolled[i] = c.key != keys[i]
		} else {
			unknown = append(unknown, i)
		}
	}
	l.mu.Unlock()
	if len(unknown) == 0 {
		return rolled, nil
	}
	rows, err := tx.QueryContext(ctx, l.d.rebind(`SELECT id, line_period, line_currency, line_plugin_sha256, line_late
		FROM series WHERE node = ?`), ws[0].Node)
	if err != nil {
		return nil, fmt.Errorf("read open usage lines: %w", err)
	}
	defer rows.Close()
	open := map[int64]lineKey{}
	for rows.Next() {
		var id int64
		var k lineKey
		var late int
		if err := rows.Scan(&id, &k.period, &k.currency, &k.plugin, &late); err != nil {
			return nil, fmt.Errorf("read open usage lines: %w", err)
		}
		k.late = late == 1
		open[id] = k
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read open usage lines: %w", err)
	}
	table := l.lineKeyTable()
	for _, i := range unknown {
		k, ok := open[sids[i]]
		rolled[i] = !ok || k.period == "" || k != table[keys[i]]
	}
	return rolled, nil
}

// rollLines closes the open line of every rolled window's series (adds
// it to usage_lines) and opens the window's line instead, holding the
// window's quantity and amount: the checkpoint update before it added
// them to the old line. This runs once a month per series, or when the
// plugin or the late flag changes.
func (l *Ledger) rollLines(ctx context.Context, tx *sql.Tx, conn *driverConn, sids []int64, ws []Window, keys []uint32, rolled []bool) error {
	var idx []int
	for i, r := range rolled {
		if r {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	ids := make([]int64, len(idx))
	for j, i := range idx {
		ids[j] = sids[i]
	}
	// The old line is read before the update below; its quantity holds
	// this window too, taken off here.
	q := make([]int64, len(idx))
	a := make([]int64, len(idx))
	for j, i := range idx {
		q[j], a[j] = int64(ws[i].Quantity), ws[i].Charge.AmountMicro
	}
	flush := `INSERT INTO usage_lines (` + strings.Join(rollupCols, ", ") + `)
		SELECT s.tenant, s.line_period, s.meter, s.line_currency, s.line_plugin_sha256, s.line_late,
			c.line_quantity - v.q, c.line_amount_micro - v.a
		FROM %s CROSS JOIN series s JOIN checkpoints c ON c.series_id = s.id
		WHERE s.id = v.id AND s.line_period <> ''
		ORDER BY s.tenant, s.line_period, s.meter, s.line_currency, s.line_plugin_sha256, s.line_late` + rollupUpsert
	if l.d == postgres {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(flush, `unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, q, a)`), ids, q, a); err != nil {
			return fmt.Errorf("close usage lines: %w", err)
		}
		n := len(idx)
		period, currency, plugin := make([]string, n), make([]string, n), make([]string, n)
		late := make([]int64, n)
		table := l.lineKeyTable()
		for j, i := range idx {
			k := table[keys[i]]
			period[j], currency[j], plugin[j], late[j] = k.period, k.currency, k.plugin, int64(b2i(k.late))
		}
		if _, err := tx.ExecContext(ctx, `UPDATE series SET line_period = v.period, line_currency = v.currency,
			line_plugin_sha256 = v.plugin, line_late = v.late
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::smallint[])
				AS v(id, period, currency, plugin, late)
			WHERE series.id = v.id`, ids, period, currency, plugin, late); err != nil {
			return fmt.Errorf("open usage lines: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE checkpoints SET line_quantity = v.q, line_amount_micro = v.a
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, q, a)
			WHERE checkpoints.series_id = v.id`, ids, q, a); err != nil {
			return fmt.Errorf("open usage lines: %w", err)
		}
		return nil
	}
	// SQLite: the ids go in as one JSON array, not one parameter each.
	// CROSS JOIN keeps it the outer loop: one series lookup per id, not
	// a scan of the array per series.
	var b strings.Builder
	b.WriteByte('[')
	for j := range idx {
		if j > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "[%d,%d,%d]", ids[j], q[j], a[j])
	}
	b.WriteByte(']')
	v := `(SELECT value ->> 0 AS id, value ->> 1 AS q, value ->> 2 AS a FROM json_each(?)) v`
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(flush, v), b.String()); err != nil {
		return fmt.Errorf("close usage lines: %w", err)
	}
	query := func(n int) string {
		return `UPDATE series SET line_period = v.column2, line_currency = v.column3, line_plugin_sha256 = v.column4,
			line_late = v.column5 FROM (VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?),", n), ",") + `) AS v WHERE series.id = v.column1`
	}
	table := l.lineKeyTable()
	row := func(j int, dst []any) []any {
		k := table[keys[idx[j]]]
		return append(dst, ids[j], k.period, k.currency, k.plugin, b2i(k.late))
	}
	if err := execBatches(ctx, tx, conn, query, nil, 5, len(idx), row, nil); err != nil {
		return fmt.Errorf("open usage lines: %w", err)
	}
	sums := func(n int) string {
		return `UPDATE checkpoints SET line_quantity = v.column2, line_amount_micro = v.column3 FROM (VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?),", n), ",") + `) AS v WHERE checkpoints.series_id = v.column1`
	}
	sumRow := func(j int, dst []any) []any { return append(dst, ids[j], q[j], a[j]) }
	if err := execBatches(ctx, tx, conn, sums, nil, 3, len(idx), sumRow, nil); err != nil {
		return fmt.Errorf("open usage lines: %w", err)
	}
	return nil
}

func (l *Ledger) rememberLines(sids []int64, ws []Window, keys []uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ws {
		l.lines[sids[i]] = openLine{seq: ws[i].Seq, key: keys[i]}
	}
}
