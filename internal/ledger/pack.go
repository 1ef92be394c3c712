package ledger

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// The packed forms of schema version 4 (see docs/ledger.md): a window
// commit's windows and usage entries are one window_commits row, and a
// node's checkpoints, open usage lines and tenant charges are one
// node_state row. Rows, not bytes, are what a commit costs SQLite (about
// 1 us per row bound and stepped), so some 180,000 rows became two.
//
// Both blobs start with a format version byte and are otherwise varints
// (encoding/binary): unsigned for what cannot be negative, zigzag
// (AppendVarint) for differences. Series ids are delta-coded in ascending
// order. Decoders never panic on bad input: they return an error saying
// where the blob broke.

// Format versions. A new layout is a new version; decoders keep reading
// the old ones for as long as ledgers may hold them.
const (
	commitFormat1 = 1
	stateFormat1  = 1
)

// Flags of a commit blob: which values all its windows share, stored
// once in the header instead of once per window.
const (
	sharedSeq = 1 << iota
	sharedPrev
	sharedStart
	sharedEnd
	sharedRebased
	rebasedFlag // the shared rebase flag's value
)

// packedWindow is one window of a packed commit, as stored.
type packedWindow struct {
	sid            int64
	seq, prev      uint64
	from, to, qty  uint64
	rebased        bool
	startUS, endUS int64
	amount, vendor int64
	// entry is the usage entry's id: the window's line item.
	entry int64
}

// commitEntry is a usage entry of a packed commit: its row is in the
// blob, not in entries. Its amount is the sum of its windows', its node,
// time and window the commit's and its windows'.
type commitEntry struct {
	id     int64
	tenant string
	// key is the entry's period, currency, plugin and late flag.
	key lineKey
}

// sharedValues finds which values all windows of a commit share (see
// the shared* flags), one window at a time.
type sharedValues struct {
	w0    packedWindow
	flags byte
	n     int
}

// add takes w into account; only its seq, prev, start, end and rebase
// flag are looked at.
func (sh *sharedValues) add(w *packedWindow) {
	if sh.n == 0 {
		sh.w0 = *w
		sh.flags = sharedSeq | sharedPrev | sharedStart | sharedEnd | sharedRebased
	}
	sh.n++
	w0 := &sh.w0
	if w.seq != w0.seq {
		sh.flags &^= sharedSeq
	}
	if w.prev != w0.prev {
		sh.flags &^= sharedPrev
	}
	if w.startUS != w0.startUS {
		sh.flags &^= sharedStart
	}
	if w.endUS != w0.endUS {
		sh.flags &^= sharedEnd
	}
	if w.rebased != w0.rebased {
		sh.flags &^= sharedRebased
	}
}

// commitWriter writes a commit blob window by window: begin, add each
// window in ascending series id order, finish.
type commitWriter struct {
	dst       []byte
	flags     byte
	n, added  int
	prevSid   int64
	prevEntry int
	// entry(k) is entry k of ne, in ascending id order.
	ne    int
	entry func(k int) commitEntry
	// first and last are the entries' ids; contiguous when they are
	// first..last with no gap (as SQLite allocates them).
	first, last int64
	contiguous  bool
	err         error
}

// begin starts the blob of n windows, whose shared values sh has seen,
// billed to the ne entries entry(0..ne-1) returns (ascending ids), at
// the end of dst.
func (cw *commitWriter) begin(dst []byte, sh *sharedValues, n, ne int, entry func(k int) commitEntry) {
	*cw = commitWriter{n: n, ne: ne, entry: entry}
	if n == 0 || ne == 0 {
		cw.err = errors.New("pack window commit: no windows")
		return
	}
	flags, w0 := sh.flags, &sh.w0
	if flags&sharedRebased != 0 && w0.rebased {
		flags |= rebasedFlag
	}
	cw.flags = flags
	dst = append(dst, commitFormat1, flags)
	if flags&sharedSeq != 0 {
		dst = binary.AppendUvarint(dst, w0.seq)
	}
	if flags&sharedPrev != 0 {
		dst = binary.AppendUvarint(dst, w0.prev)
	}
	if flags&sharedStart != 0 {
		dst = binary.AppendVarint(dst, w0.startUS)
	}
	if flags&sharedEnd != 0 {
		dst = binary.AppendVarint(dst, w0.endUS)
	}
	// The entries' line keys once: a commit has a handful, found by a
	// scan from the last one added (neighbouring entries mostly share
	// theirs).
	var keys []lineKey
	indexOf := func(k lineKey) uint64 {
		for i := len(keys) - 1; i >= 0; i-- {
			if keys[i] == k {
				return uint64(i)
			}
		}
		keys = append(keys, k)
		return uint64(len(keys) - 1)
	}
	for i := range ne {
		e := entry(i)
		indexOf(e.key)
	}
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = appendLineKey(dst, k)
	}
	dst = binary.AppendUvarint(dst, uint64(ne))
	var last, first int64
	ki := uint64(0)
	for i := range ne {
		e := entry(i)
		if i == 0 {
			first = e.id
		}
		if e.id <= last && i > 0 || e.id <= 0 {
			cw.err = fmt.Errorf("pack window commit: entry ids not ascending at %d", e.id)
			return
		}
		dst = binary.AppendUvarint(dst, uint64(e.id-last))
		dst = appendString(dst, e.tenant)
		if keys[ki] != e.key {
			ki = indexOf(e.key)
		}
		dst = binary.AppendUvarint(dst, ki)
		last = e.id
	}
	cw.first, cw.last = first, last
	cw.contiguous = last-cw.first == int64(ne-1)
	cw.dst = binary.AppendUvarint(dst, uint64(n))
}

// index is the index of the entry with id id.
func (cw *commitWriter) index(id int64) (int, bool) {
	if cw.contiguous {
		return int(id - cw.first), id >= cw.first && id <= cw.last
	}
	lo, hi := 0, cw.ne
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cw.entry(m).id < id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < cw.ne && cw.entry(lo).id == id
}

// add appends window w, the next in ascending series id order.
func (cw *commitWriter) add(w *packedWindow) error {
	if cw.err != nil {
		return cw.err
	}
	if cw.added == cw.n {
		cw.err = fmt.Errorf("pack window commit: more than the %d windows announced", cw.n)
		return cw.err
	}
	if w.sid <= cw.prevSid {
		cw.err = fmt.Errorf("pack window commit: series ids not ascending at %d", w.sid)
		return cw.err
	}
	if w.amount < 0 || w.vendor < 0 || w.from > math.MaxInt64 || w.to > math.MaxInt64 {
		cw.err = fmt.Errorf("pack window commit: series %d: negative amount or counter out of range", w.sid)
		return cw.err
	}
	e, ok := cw.index(w.entry)
	if !ok {
		cw.err = fmt.Errorf("pack window commit: series %d: entry %d is not one of the commit's", w.sid, w.entry)
		return cw.err
	}
	flags, dst := cw.flags, cw.dst
	dst = binary.AppendUvarint(dst, uint64(w.sid-cw.prevSid))
	cw.prevSid = w.sid
	if flags&sharedSeq == 0 {
		dst = binary.AppendUvarint(dst, w.seq)
	}
	if flags&sharedPrev == 0 {
		dst = binary.AppendUvarint(dst, w.prev)
	}
	if flags&sharedStart == 0 {
		dst = binary.AppendVarint(dst, w.startUS)
	}
	if flags&sharedEnd == 0 {
		dst = binary.AppendVarint(dst, w.endUS)
	}
	if flags&sharedRebased == 0 {
		dst = append(dst, byte(b2i(w.rebased)))
	}
	dst = binary.AppendUvarint(dst, w.from)
	dst = binary.AppendVarint(dst, int64(w.to)-int64(w.from))
	dst = binary.AppendUvarint(dst, w.qty)
	dst = binary.AppendUvarint(dst, uint64(w.amount))
	dst = binary.AppendUvarint(dst, uint64(w.vendor))
	dst = binary.AppendVarint(dst, int64(e-cw.prevEntry))
	cw.prevEntry = e
	cw.dst = dst
	cw.added++
	return nil
}

// finish returns the blob, or why it cannot be made.
func (cw *commitWriter) finish() ([]byte, error) {
	if cw.err == nil && cw.added != cw.n {
		cw.err = fmt.Errorf("pack window commit: %d windows announced, %d added", cw.n, cw.added)
	}
	if cw.err != nil {
		return nil, cw.err
	}
	return cw.dst, nil
}

// reader reads varints from a blob, remembering the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s at byte %d of %d: the blob is truncated or corrupt", what, r.off, len(r.b))
	}
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad " + what)
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad " + what)
		return 0
	}
	r.off += n
	return v
}

// int63 reads an unsigned varint that must fit an int64.
func (r *reader) int63(what string) int64 {
	v := r.uvarint(what)
	if v > math.MaxInt64 {
		r.fail(what + " out of range")
		return 0
	}
	return int64(v)
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("missing " + what)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// flag reads a byte that must be 0 or 1.
func (r *reader) flag(what string) bool {
	switch r.byte(what + " flag") {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bad " + what + " flag")
	return false
}

// lineKey reads what appendLineKey writes.
func (r *reader) lineKey() lineKey {
	return lineKey{period: r.str("line period"), currency: r.str("line currency"), plugin: r.str("line plugin"), late: r.flag("late")}
}

func (r *reader) str(what string) string {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(what + " longer than the blob")
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

// count reads a number of items each taking at least min bytes: a
// corrupt count cannot make the decoder allocate more than the blob holds.
func (r *reader) count(what string, min int) int {
	n := r.uvarint(what)
	if r.err == nil && n > uint64((len(r.b)-r.off)/min) {
		r.fail(what + " larger than the blob")
		return 0
	}
	return int(n)
}

// decodeCommit reads the blob of commit commitSeq of node (named in
// errors).
func decodeCommit(node string, commitSeq int64, data []byte) ([]packedWindow, []commitEntry, error) {
	ws, es, err := decodeCommitBlob(data)
	if err != nil {
		return nil, nil, fmt.Errorf("window commit %d of node %s: %w", commitSeq, node, err)
	}
	return ws, es, nil
}

func decodeCommitBlob(data []byte) ([]packedWindow, []commitEntry, error) {
	r := &reader{b: data}
	if v := r.byte("format version"); r.err == nil && v != commitFormat1 {
		return nil, nil, fmt.Errorf("unknown format version %d (this kmeter reads %d): upgrade kmeter", v, commitFormat1)
	}
	flags := r.byte("flags")
	var w0 packedWindow
	if flags&sharedSeq != 0 {
		w0.seq = r.uvarint("seq")
	}
	if flags&sharedPrev != 0 {
		w0.prev = r.uvarint("previous seq")
	}
	if flags&sharedStart != 0 {
		w0.startUS = r.varint("start")
	}
	if flags&sharedEnd != 0 {
		w0.endUS = r.varint("end")
	}
	w0.rebased = flags&rebasedFlag != 0
	// A line key takes at least 4 bytes.
	keys := make([]lineKey, r.count("line key count", 4))
	for i := range keys {
		keys[i] = r.lineKey()
	}
	// An entry takes at least 3 bytes: id, tenant, key.
	entries := make([]commitEntry, r.count("entry count", 3))
	var last int64
	for i := range entries {
		d := r.int63("entry id")
		if r.err == nil && (d == 0 && i > 0 || last > math.MaxInt64-d) {
			r.fail("entry ids not ascending")
		}
		last += d
		entries[i].id = last
		entries[i].tenant = r.str("entry tenant")
		if ki := r.uvarint("entry line key"); r.err == nil && ki >= uint64(len(keys)) {
			r.fail("entry line key out of range")
		} else if r.err == nil {
			entries[i].key = keys[ki]
		}
	}
	// A window takes at least 7 bytes: series, 5 values, entry.
	ws := make([]packedWindow, r.count("window count", 7))
	var sid int64
	e := 0
	for i := range ws {
		w := w0
		d := r.int63("series id")
		if r.err == nil && (d == 0 || sid > math.MaxInt64-d) {
			r.fail("series ids not ascending")
		}
		sid += d
		w.sid = sid
		if flags&sharedSeq == 0 {
			w.seq = r.uvarint("seq")
		}
		if flags&sharedPrev == 0 {
			w.prev = r.uvarint("previous seq")
		}
		if flags&sharedStart == 0 {
			w.startUS = r.varint("start")
		}
		if flags&sharedEnd == 0 {
			w.endUS = r.varint("end")
		}
		if flags&sharedRebased == 0 {
			w.rebased = r.flag("rebase")
		}
		from := r.int63("from counter")
		to := from + r.varint("counter change")
		if r.err == nil && (to < 0 || to < from && !w.rebased) {
			r.fail("counter out of range")
		}
		w.from, w.to = uint64(from), uint64(to)
		w.qty = r.uvarint("quantity")
		w.amount = r.int63("amount")
		w.vendor = r.int63("vendor share")
		e += int(r.varint("entry index"))
		if r.err == nil && (e < 0 || e >= len(entries)) {
			r.fail("entry index out of range")
		}
		if r.err != nil {
			return nil, nil, r.err
		}
		w.entry = entries[e].id
		ws[i] = w
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if r.off != len(data) {
		return nil, nil, fmt.Errorf("%d bytes after the last window: the blob is corrupt", len(data)-r.off)
	}
	return ws, entries, nil
}

// seriesState is one series' checkpoint and open usage line in a node's
// state.
type seriesState struct {
	sid     int64
	seq     uint64
	counter uint64
	endUS   int64
	// line is the open line's key id (Ledger.lineKeys), or noLine.
	line           uint32
	qty, amountSum int64
}

// noLine marks a series without an open usage line.
const noLine = math.MaxUint32

// charge is what a node's packed usage entries have charged one tenant in
// one currency, ever: the tenant's balance is its balances row minus its
// charges on every node (the commit does not upsert 10,000 balance rows).
type charge struct {
	tenant, currency string
	amount           int64
}

func compareCharges(a, b charge) int {
	return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.currency, b.currency))
}

// encodeState appends the state blob of series (ascending ids) and
// charges (ascending tenant and currency) to dst; keys resolves the
// series' line ids.
func encodeState(dst []byte, series []seriesState, charges []charge, keys []lineKey) ([]byte, error) {
	var sw stateWriter
	sw.begin(dst, keys)
	for i := range series {
		if err := sw.add(&series[i]); err != nil {
			return nil, err
		}
	}
	return sw.finish(charges)
}

// stateWriter writes a state blob series by series (begin, add in
// ascending series id order, finish with the charges): a commit streams
// the node's next state from the last one and its windows, with no
// second copy of 70,000 decoded series.
type stateWriter struct {
	dst  []byte
	keys []lineKey
	// start is where the series begin in dst: the line table and series
	// count go before them once they are known (finish).
	start int
	// order are the line ids of the blob's line table: a node has a
	// handful, in the order the series first use them.
	order            []uint32
	lastID           uint32
	lastLocal        uint64
	n                int
	prevSid, prevEnd int64
	prevSeq          uint64
	head             []byte
}

// begin starts a blob at the end of dst; keys resolves line ids.
func (sw *stateWriter) begin(dst []byte, keys []lineKey) {
	sw.dst, sw.keys, sw.start = dst, keys, len(dst)
	sw.order, sw.lastID, sw.lastLocal, sw.n = sw.order[:0], noLine, 0, 0
	sw.prevSid, sw.prevEnd, sw.prevSeq = 0, 0, 0
}

// add appends series s, whose id must be above the last one's.
func (sw *stateWriter) add(s *seriesState) error {
	if s.sid <= sw.prevSid {
		return fmt.Errorf("pack node state: series ids not ascending at %d", s.sid)
	}
	var li uint64
	if s.line != noLine {
		if s.line == sw.lastID {
			li = sw.lastLocal
		} else {
			for j, id := range sw.order {
				if id == s.line {
					li = uint64(j) + 1
					break
				}
			}
			if li == 0 {
				if int(s.line) >= len(sw.keys) {
					return fmt.Errorf("pack node state: unknown line key id %d", s.line)
				}
				sw.order = append(sw.order, s.line)
				li = uint64(len(sw.order))
			}
			sw.lastID, sw.lastLocal = s.line, li
		}
	}
	dst := sw.dst
	dst = binary.AppendUvarint(dst, uint64(s.sid-sw.prevSid))
	dst = binary.AppendVarint(dst, int64(s.seq-sw.prevSeq))
	dst = binary.AppendUvarint(dst, s.counter)
	dst = binary.AppendVarint(dst, s.endUS-sw.prevEnd)
	dst = binary.AppendUvarint(dst, li)
	dst = binary.AppendVarint(dst, s.qty)
	dst = binary.AppendVarint(dst, s.amountSum)
	sw.dst = dst
	sw.prevSid, sw.prevSeq, sw.prevEnd = s.sid, s.seq, s.endUS
	sw.n++
	return nil
}

// finish puts the format version, line table and series count before the
// series, appends charges (ascending tenant and currency) and returns the
// blob.
func (sw *stateWriter) finish(charges []charge) ([]byte, error) {
	head := append(sw.head[:0], stateFormat1)
	head = binary.AppendUvarint(head, uint64(len(sw.order)))
	for _, id := range sw.order {
		head = appendLineKey(head, sw.keys[id])
	}
	head = binary.AppendUvarint(head, uint64(sw.n))
	sw.head = head
	// The series move up by the head's few bytes (a memmove of about
	// 1 MB at 70,000 series).
	end := len(sw.dst)
	dst := append(sw.dst, head...)
	copy(dst[sw.start+len(head):], dst[sw.start:end])
	copy(dst[sw.start:], head)
	dst = binary.AppendUvarint(dst, uint64(len(charges)))
	for i, c := range charges {
		if i > 0 && compareCharges(charges[i-1], c) >= 0 {
			return nil, fmt.Errorf("pack node state: charges not in tenant order at %s %s", c.tenant, c.currency)
		}
		dst = appendString(dst, c.tenant)
		dst = appendString(dst, c.currency)
		dst = binary.AppendVarint(dst, c.amount)
	}
	sw.dst = dst
	return dst, nil
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// appendLineKey appends k: its period, currency and plugin, then its late
// flag as a byte.
func appendLineKey(dst []byte, k lineKey) []byte {
	dst = appendString(dst, k.period)
	dst = appendString(dst, k.currency)
	dst = appendString(dst, k.plugin)
	return append(dst, byte(b2i(k.late)))
}

// decodeState reads a state blob; intern turns each line key into its id.
func decodeState(node string, data []byte, intern func(lineKey) uint32) ([]seriesState, []charge, error) {
	ss, cs, err := decodeStateBlob(data, intern)
	if err != nil {
		return nil, nil, fmt.Errorf("state of node %s: %w", node, err)
	}
	return ss, cs, nil
}

func decodeStateBlob(data []byte, intern func(lineKey) uint32) ([]seriesState, []charge, error) {
	var sr stateReader
	if err := sr.begin(data, intern); err != nil {
		return nil, nil, err
	}
	ss := make([]seriesState, sr.n)
	for i := range ss {
		if !sr.next(&ss[i]) {
			return nil, nil, sr.r.err
		}
	}
	cs, err := sr.charges()
	if err != nil {
		return nil, nil, err
	}
	return ss, cs, nil
}

// stateReader reads a state blob series by series: begin, next until it
// returns false, then charges (which also checks the blob's end).
type stateReader struct {
	r   reader
	ids []uint32
	// n is the number of series, i how many next has returned.
	n, i     int
	sid, end int64
	seq      uint64
}

// begin reads the blob's version, line table (intern turns each line key
// into its id) and series count.
func (sr *stateReader) begin(data []byte, intern func(lineKey) uint32) error {
	*sr = stateReader{r: reader{b: data}, ids: sr.ids[:0]}
	r := &sr.r
	if v := r.byte("format version"); r.err == nil && v != stateFormat1 {
		return fmt.Errorf("unknown format version %d (this kmeter reads %d): upgrade kmeter", v, stateFormat1)
	}
	// A line key takes at least 4 bytes.
	n := r.count("line count", 4)
	for range n {
		k := r.lineKey()
		if r.err != nil {
			return r.err
		}
		sr.ids = append(sr.ids, intern(k))
	}
	sr.n = r.count("series count", 7)
	return r.err
}

// next reads the next series into s; false at the end or on an error
// (then in sr.r.err).
func (sr *stateReader) next(s *seriesState) bool {
	r := &sr.r
	if sr.i >= sr.n || r.err != nil {
		return false
	}
	d := r.int63("series id")
	if r.err == nil && (d == 0 || sr.sid > math.MaxInt64-d) {
		r.fail("series ids not ascending")
	}
	sr.sid += d
	sr.seq += uint64(r.varint("seq"))
	*s = seriesState{sid: sr.sid, seq: sr.seq, counter: r.uvarint("counter")}
	sr.end += r.varint("end")
	s.endUS = sr.end
	s.line = noLine
	if li := r.uvarint("line"); li > 0 {
		if r.err == nil && li > uint64(len(sr.ids)) {
			r.fail("line out of range")
		} else if r.err == nil {
			s.line = sr.ids[li-1]
		}
	}
	s.qty = r.varint("line quantity")
	s.amountSum = r.varint("line amount")
	if r.err != nil {
		return false
	}
	sr.i++
	return true
}

// charges skips the series next has not read and reads the charges.
func (sr *stateReader) charges() ([]charge, error) {
	var s seriesState
	for sr.next(&s) {
	}
	r := &sr.r
	if r.err != nil {
		return nil, r.err
	}
	// A charge takes at least 3 bytes.
	cs := make([]charge, r.count("charge count", 3))
	for i := range cs {
		cs[i] = charge{tenant: r.str("charged tenant"), currency: r.str("charge currency"), amount: r.varint("charge")}
		if r.err == nil && i > 0 && compareCharges(cs[i-1], cs[i]) >= 0 {
			r.fail("charges not in tenant order")
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.off != len(r.b) {
		return nil, fmt.Errorf("%d bytes after the last charge: the blob is corrupt", len(r.b)-r.off)
	}
	return cs, nil
}

// posting is one posting of an entry: credit positive, debit negative.
type posting struct {
	account, currency string
	amount            int64
}

// packedPostings are the postings of a usage entry whose windows are in a
// window commit (schema version 4): they are not rows, they follow from
// the entry's amount and its windows' vendor shares, as a commit would
// have written them - the tenant debited the amount, the plugin's vendor
// credited its share, the platform the rest, each only when not zero.
func packedPostings(tenant, currency, plugin string, amount, vendor int64) []posting {
	var ps []posting
	if amount == 0 {
		return nil
	}
	ps = append(ps, posting{TenantAccount(tenant), currency, -amount})
	if vendor != 0 {
		ps = append(ps, posting{VendorAccount(plugin), currency, vendor})
	}
	if platform := amount - vendor; platform != 0 {
		ps = append(ps, posting{PlatformAccount, currency, platform})
	}
	return ps
}
