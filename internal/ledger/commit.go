package ledger

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"time"
)

// commitGroup is a usage entry of a commit: its windows share tenant,
// line key (line is its id) and seq (normally all windows of a commit
// do): it is the entry's window_seq.
type commitGroup struct {
	tenant string
	line   uint32
	seq    uint64
}

type groupSums struct{ amount, vendor int64 }

// commitScratch is a commit's working memory, kept on the Ledger between
// commits (see Ledger.scratch): per window two int32s, per entry a few
// words, and the node state's buffer. Made anew every commit, such
// slices and maps were some 4 MB of garbage per window at 70,000 series.
type commitScratch struct {
	// ref[i] is window i's series: its index in the node's seriesTable,
	// or -(j+1) for fresh[j].
	ref     []int32
	entryOf []int32
	bySid   []int32
	missing []int32
	fresh   []newSeries
	order   []commitGroup
	totals  []groupSums
	groups  map[commitGroup]int32
	// stateBuf holds the node state a commit builds, which becomes the
	// node's cached state; the one it replaces comes back as the next
	// commit's stateBuf. The commit blob's buffer is made anew, sized
	// by commitSize (the last one's): kept, it would be 1 MB of the live
	// heap for a moment's use every window.
	stateBuf   []byte
	commitSize int
	state      stateWriter
	old        stateReader
}

// takeScratch returns the ledger's scratch, or a new one while another
// commit uses it.
func (l *Ledger) takeScratch() *commitScratch {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := l.scratch
	l.scratch = nil
	if sc == nil {
		sc = &commitScratch{}
	}
	return sc
}

func (l *Ledger) putScratch(sc *commitScratch) {
	// The blobs the readers and writers were last at are not the
	// scratch's to keep alive.
	sc.old.r, sc.state.dst = reader{}, nil
	l.mu.Lock()
	defer l.mu.Unlock()
	l.scratch = sc
}

// resize returns s with length n, reusing its array when large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Commit writes the windows of src, their charges, postings and balance
// changes in one transaction: all of them or none. A window already in
// the ledger fails the whole commit with [ErrDuplicateWindow].
//
// The windows of one tenant (per currency, period and pricing plugin)
// form one journal entry: the tenant is debited the sum, the platform
// and the plugin's vendor credited their shares; the windows are its line
// items. The windows themselves are one packed window_commits row and the
// node's checkpoints one node_state row (schema version 4): a commit's
// cost is in rows, not bytes.
//
// Commit reads each window twice and keeps none: a node's windows in
// (tenant, meter) order, as the biller sends them, are matched to their
// series by a walk through the node's series in that order; other orders
// cost a binary search per tenant.
func (l *Ledger) Commit(ctx context.Context, src WindowSource) error {
	n := src.Len()
	if n == 0 {
		return nil
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("commit windows: %d windows in one commit: commit fewer at once", n)
	}
	node := src.Window(0).Node
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("commit windows: begin: %w", err)
	}
	defer tx.Rollback()
	closed, err := l.closedPeriods(ctx, tx)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	sc := l.takeScratch()
	defer l.putScratch(sc)
	l.mu.Lock()
	tbl := l.tables[node]
	l.mu.Unlock()

	// Pass 1, in the caller's order: validate, find each window's series
	// and entry, sum the entries, see which values the windows share.
	ref := resize(sc.ref, n)
	entryOf := resize(sc.entryOf, n)
	sc.ref, sc.entryOf = ref, entryOf
	missing := sc.missing[:0]
	order, totals := sc.order[:0], sc.totals[:0]
	groups := sc.groups
	clear(groups)
	useMap := false
	var errs []error
	var sh sharedValues
	cur := tbl.cursor()
	var last commitGroup
	lastEntry, tenantStart := int32(-1), 0
	var lastEnd time.Time
	var period, currency, plugin string
	var late bool
	var line uint32
	for i := range n {
		w := src.Window(i)
		if err := w.Validate(); err != nil {
			errs = append(errs, err)
		}
		if w.Node != node {
			errs = append(errs, fmt.Errorf("windows of nodes %s and %s in one commit: commit each node's windows separately", node, w.Node))
			break
		}
		if len(errs) > 0 {
			continue
		}
		if k, ok := cur.find(w.Tenant, w.Meter); ok {
			ref[i] = int32(k)
		} else {
			ref[i] = -1
			missing = append(missing, int32(i))
		}
		sh.add(&packedWindow{seq: w.Seq, prev: w.PrevSeq, startUS: w.Start.UnixMicro(), endUS: w.End.UnixMicro(), rebased: w.Rebased})
		// Windows share their end time, currency and plugin, so the line
		// key is worked out once.
		if i == 0 || !w.End.Equal(lastEnd) || w.Charge.Currency != currency || w.PluginSHA256 != plugin {
			if i == 0 || !w.End.Equal(lastEnd) {
				period, late = openPeriod(PeriodOf(w.End), closed)
				lastEnd = w.End
			}
			currency, plugin = w.Charge.Currency, w.PluginSHA256
			line = l.lineID(lineKey{period, currency, plugin, late})
		}
		// Windows come grouped by tenant, in tenant order: a tenant's
		// entries are the last few of order, found without a map. A
		// tenant seen before (other orders) moves the search to a map.
		g := commitGroup{w.Tenant, line, w.Seq}
		e := lastEntry
		if e < 0 || g != last {
			e = -1
			if !useMap && lastEntry >= 0 && g.tenant != last.tenant {
				if g.tenant > last.tenant {
					tenantStart = len(order)
				} else {
					useMap = true
					if groups == nil {
						groups = make(map[commitGroup]int32, len(order))
						sc.groups = groups
					}
					for x, og := range order {
						groups[og] = int32(x)
					}
				}
			}
			if useMap {
				if x, ok := groups[g]; ok {
					e = x
				}
			} else {
				for x := tenantStart; x < len(order); x++ {
					if order[x] == g {
						e = int32(x)
						break
					}
				}
			}
			if e < 0 {
				e = int32(len(order))
				order = append(order, g)
				totals = append(totals, groupSums{})
				if useMap {
					groups[g] = e
				}
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
	sc.missing, sc.order, sc.totals = missing, order, totals
	if len(groups) > 1024 {
		sc.groups = nil // only windows out of tenant order need it
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	fresh, err := l.newSeriesIDs(ctx, tx, src, node, missing, sc.fresh[:0])
	// A node's first commit (or the agent's) creates 70,000 series: the
	// scratch does not keep room for that many.
	if cap(fresh) <= 1024 {
		sc.fresh = fresh
	}
	if cap(missing) > 1024 {
		sc.missing = nil
	}
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	for j, i := range missing {
		ref[i] = -int32(j) - 1
	}
	sid := func(i int32) int64 {
		if r := ref[i]; r >= 0 {
			return tbl.ids[r]
		}
		return fresh[-ref[i]-1].id
	}
	// In series id order: the order of the packed commit and of the
	// node's state, merged in one pass. Usually already so: the biller
	// sends a node's series in one order, the one they were created in.
	// Two windows of one series are neighbours in series id order.
	twice := func(i int32) error {
		w := src.Window(int(i))
		return fmt.Errorf("commit windows: two windows of %s/%s/%s in one commit", w.Node, w.Tenant, w.Meter)
	}
	var bySid []int32
	for i := int32(1); i < int32(n); i++ {
		if s, prev := sid(i), sid(i-1); s == prev {
			return twice(i)
		} else if s < prev {
			bySid = resize(sc.bySid, n)
			sc.bySid = bySid
			for j := range bySid {
				bySid[j] = int32(j)
			}
			slices.SortFunc(bySid, func(a, b int32) int { return cmp.Compare(sid(a), sid(b)) })
			for j := 1; j < n; j++ {
				if sid(bySid[j]) == sid(bySid[j-1]) {
					return twice(bySid[j])
				}
			}
			break
		}
	}
	at := func(j int) int32 {
		if bySid != nil {
			return bySid[j]
		}
		return int32(j)
	}
	ids, err := l.d.allocIDs(ctx, tx, len(order))
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	st, err := l.loadState(ctx, tx, node, true)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	table := l.lineKeyTable()
	// Each tenant's charges go into the node's state, not into 10,000
	// balance rows (see charge).
	charges, err := mergeCharges(st.charges, commitCharges(order, totals, table), node)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// Entry k is order[k] with the k-th id: ascending, as the blob wants
	// them.
	slices.Sort(ids)
	entry := func(k int) commitEntry {
		return commitEntry{id: ids[k], tenant: order[k].tenant, key: table[order[k].line]}
	}

	// Pass 2, in series id order: check each window against its series'
	// checkpoint and write the commit blob and the node's next state,
	// streamed from the last one. The cached state is not touched: it is
	// still the node's if the transaction fails.
	var cw commitWriter
	cw.begin(make([]byte, 0, sc.commitSize+sc.commitSize/8), &sh, n, len(order), entry)
	sw := &sc.state
	sw.begin(sc.stateBuf[:0], table)
	old := &sc.old
	var cs seriesState
	have := false
	if st.exists {
		if err := old.begin(st.blob, l.lineID); err != nil {
			return fmt.Errorf("commit windows: state of node %s: %w", node, err)
		}
		have = old.next(&cs)
	}
	var closing []closedLine
	for j := range n {
		i := at(j)
		w := src.Window(int(i))
		id := sid(i)
		for have && cs.sid < id {
			if err := sw.add(&cs); err != nil {
				return fmt.Errorf("commit windows: %w", err)
			}
			have = old.next(&cs)
		}
		s := seriesState{sid: id, line: noLine}
		if have && cs.sid == id {
			s = cs
			have = old.next(&cs)
		}
		if w.PrevSeq != s.seq {
			// The window's seq is above PrevSeq, so above the series'
			// last window whenever this holds: (node, tenant, meter, seq)
			// is never billed twice.
			return fmt.Errorf("commit windows: %w: series %s/%s/%s is at window %d, not at the window's starting checkpoint %d (another writer with node id %s?)",
				ErrDuplicateWindow, w.Node, w.Tenant, w.Meter, s.seq, w.PrevSeq, w.Node)
		}
		q, a := int64(w.Quantity), w.Charge.AmountMicro
		key := order[entryOf[i]].line
		if s.line == key {
			s.qty += q
			s.amountSum += a
		} else {
			if s.line != noLine {
				closing = append(closing, closedLine{tenant: w.Tenant, meter: w.Meter, key: table[s.line], qty: s.qty, amount: s.amountSum})
			}
			s.line, s.qty, s.amountSum = key, q, a
		}
		endUS := w.End.UnixMicro()
		s.seq, s.counter, s.endUS = w.Seq, w.ToCounter, endUS
		if err := sw.add(&s); err != nil {
			return fmt.Errorf("commit windows: %w", err)
		}
		if err := cw.add(&packedWindow{sid: id, seq: w.Seq, prev: w.PrevSeq, from: w.FromCounter, to: w.ToCounter, qty: w.Quantity,
			rebased: w.Rebased, startUS: w.Start.UnixMicro(), endUS: endUS, amount: w.Charge.AmountMicro,
			vendor: w.Charge.VendorMicro, entry: ids[entryOf[i]]}); err != nil {
			return fmt.Errorf("commit windows: %w", err)
		}
	}
	for have {
		if err := sw.add(&cs); err != nil {
			return fmt.Errorf("commit windows: %w", err)
		}
		have = old.next(&cs)
	}
	if old.r.err != nil {
		return fmt.Errorf("commit windows: state of node %s: %w", node, old.r.err)
	}
	commitBlob, err := cw.finish()
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	sc.commitSize = len(commitBlob)
	stateBlob, err := sw.finish(charges)
	if err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	sc.stateBuf = stateBlob
	if err := l.closeLines(ctx, tx, closing); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	next := &nodeState{exists: true, commitSeq: st.commitSeq + 1, blob: stateBlob, charges: charges}
	if err := l.writeCommit(ctx, tx, node, st, next, n, ids[0], ids[len(ids)-1], commitBlob); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	// Tenants of series the node has committed before are in the
	// tenants table: only those of new series are looked up.
	var tenants []string
	for _, s := range fresh {
		tenants = append(tenants, s.tenant)
	}
	if err := l.ensureTenants(ctx, tx, tenants); err != nil {
		return fmt.Errorf("commit windows: %w", err)
	}
	deltas := make(map[balanceKey]balanceDelta, 4)
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
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(fresh) > 0 {
		// Copied: the table keeps no part of the scratch.
		l.tables[node] = l.tables[node].with(slices.Clone(fresh))
	}
	// The state this commit replaced is read by commits, which wait for
	// this one in the database, and by readers holding the mutex while it
	// is cached (see loadSeries): its blob is the next commit's buffer.
	sc.stateBuf = nil
	if c := l.states[node]; c == nil || c.commitSeq < next.commitSeq {
		l.states[node] = next
		if c == st || st.owned {
			sc.stateBuf = st.blob[:0]
		}
	} else {
		sc.stateBuf = stateBlob[:0]
	}
	return nil
}

// CommitWindows is [Ledger.Commit] of a slice of windows.
func (l *Ledger) CommitWindows(ctx context.Context, ws []Window) error {
	return l.Commit(ctx, Windows(ws))
}

// commitCharges returns what the entries order (with their totals)
// charge each tenant per currency, in tenant and currency order, one per
// pair, as a sequence. Entries in tenant order with one currency per
// tenant (the biller's) are that already; others are sorted into a slice.
func commitCharges(order []commitGroup, totals []groupSums, table []lineKey) iter.Seq[charge] {
	at := func(i int) charge {
		return charge{tenant: order[i].tenant, currency: table[order[i].line].currency, amount: totals[i].amount}
	}
	sorted := true
	var prev charge
	first := true
	for i := range order {
		if totals[i].amount == 0 {
			continue
		}
		c := at(i)
		if !first && compareCharges(prev, c) >= 0 {
			sorted = false
			break
		}
		prev, first = c, false
	}
	if sorted {
		return func(yield func(charge) bool) {
			for i := range order {
				if totals[i].amount != 0 && !yield(at(i)) {
					return
				}
			}
		}
	}
	var charged []charge
	for i := range order {
		if totals[i].amount != 0 {
			charged = append(charged, at(i))
		}
	}
	slices.SortFunc(charged, compareCharges)
	k := 0
	for _, c := range charged {
		if k > 0 && compareCharges(charged[k-1], c) == 0 {
			charged[k-1].amount += c.amount // an entry per plugin or seq
			continue
		}
		charged[k] = c
		k++
	}
	return slices.Values(charged[:k])
}

// mergeCharges returns the node's charges old plus a commit's charged
// (both in tenant and currency order, one per pair), as a new slice:
// readers may hold old.
func mergeCharges(old []charge, charged iter.Seq[charge], node string) ([]charge, error) {
	cs := make([]charge, 0, len(old)+16)
	j := 0
	for c := range charged {
		for j < len(old) && compareCharges(old[j], c) < 0 {
			cs = append(cs, old[j])
			j++
		}
		if j < len(old) && compareCharges(old[j], c) == 0 {
			if a := old[j].amount; a > math.MaxInt64-c.amount {
				return nil, fmt.Errorf("charges of tenant %s in %s on node %s overflow int64", c.tenant, c.currency, node)
			}
			c.amount += old[j].amount
			j++
		}
		cs = append(cs, c)
	}
	return append(cs, old[j:]...), nil
}
