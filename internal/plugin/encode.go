package plugin

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

// encoder builds a batch of [pricing.Record]s in the ABI v1 layout
// (sdk/go/abi) in one pass over the records. The header and the
// fixed-size records go into a buffer the caller provides (normally the
// guest's input buffer itself, so the bulk of the batch is written once,
// in place); the attribute entries and the string area, small because
// they are deduplicated, go into buffers the encoder reuses and the caller
// places after the records. A string value is stored once when the
// records share it (same backing memory, as tenant and meter names from
// the config do), an attribute map once per run of records sharing it,
// and attribute keys are sorted, so decoding is deterministic. An encoder
// is used by one instance at a time.
type encoder struct {
	head  []byte // header and records when they cannot go straight into guest memory
	attrs []byte
	strs  []byte
	// seen is a direct-mapped cache from a string's data pointer to
	// where it was stored in this batch; used lists the slots to clear
	// before the next batch.
	seen [strSlots]strSlot
	used []uint32
	// runs remembers each attribute map's sorted entries across batches,
	// so a tenant's map is iterated and sorted once, not once per batch;
	// recent is a direct-mapped cache in front of it.
	runs   map[unsafe.Pointer]*attrRun
	recent [runSlots]*attrRun
	now    int64 // latest window end in the batch
}

// strSlots is the size of the string cache: a power of two comfortably
// above the distinct meters and tenants of a typical batch, small enough
// to stay in L1 (12 KiB).
const (
	strBits  = 9
	strSlots = 1 << strBits
)

// strSlot remembers where a string was stored. ptr is an address kept
// as an integer: the strings outlive the encode call that compares it, and
// no write barrier is needed.
type strSlot struct {
	ptr uintptr
	n   int
	off uint32
}

// intern stores s in the string area (or finds it stored in this batch)
// and returns its offset.
func (e *encoder) intern(s string) uint32 {
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	// Fibonacci hashing spreads the aligned addresses of Go strings over
	// the table.
	i := (p * 0x9E3779B97F4A7C15) >> (64 - strBits)
	if slot := &e.seen[i]; slot.ptr == p && slot.n == len(s) {
		return slot.off
	}
	return e.store(s, i)
}

// store appends s to the string area and remembers it in slot i.
//
//go:noinline
func (e *encoder) store(s string, i uintptr) uint32 {
	off := uint32(len(e.strs))
	e.strs = append(e.strs, s...)
	if e.seen[i].ptr == 0 {
		e.used = append(e.used, uint32(i))
	}
	e.seen[i] = strSlot{ptr: uintptr(unsafe.Pointer(unsafe.StringData(s))), n: len(s), off: off}
	return off
}

// attrRun is one attribute map's entries, sorted by key.
type attrRun struct {
	id         unsafe.Pointer // the map's identity, see mapID
	keys, vals []string
}

// runSlots is the size of the direct-mapped attribute run cache.
const (
	runBits  = 9
	runSlots = 1 << runBits
)

// maxAttrRuns bounds the attribute cache; past it the cache starts over.
const maxAttrRuns = 4096

// matches reports whether m still holds exactly the run's entries: the
// same number of keys, each present with the same value.
func (r *attrRun) matches(m map[string]string) bool {
	if len(m) != len(r.keys) {
		return false
	}
	for i, k := range r.keys {
		if v, ok := m[k]; !ok || v != r.vals[i] {
			return false
		}
	}
	return true
}

// mapID identifies an attribute map by its header pointer, so records
// sharing one map share one attribute run. A nil map has a nil ID.
func mapID(m map[string]string) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&m))
}

// headSize returns the length of the header and records of n records.
func headSize(n int) int { return abi.BatchHeader + n*abi.RecordSize }

// encode validates recs and encodes their header and records into head,
// which is headSize(len(recs)) bytes long, and their attribute entries
// and strings into e.attrs and e.strs. The complete batch is head,
// e.attrs and e.strs, in that order (see place).
func (e *encoder) encode(head []byte, recs []pricing.Record) error {
	le := binary.LittleEndian
	n := len(recs)
	if len(head) != headSize(n) {
		return fmt.Errorf("encode: head buffer of %d bytes for %d records", len(head), n)
	}
	for _, i := range e.used {
		e.seen[i] = strSlot{}
	}
	e.used = e.used[:0]
	attrs := e.attrs[:0]
	e.strs = e.strs[:0]
	// State of the current run of records: their tenant and attribute
	// map, where those were stored, and the latest window end so far.
	var (
		now          int64 = math.MinInt64
		tPtr         *byte
		tLen         int
		tOff         uint32
		mapPtr       unsafe.Pointer
		first, count uint32
	)
	for i := 0; i < n; {
		// Fast path: same tenant and attribute map as the run, meter
		// already stored. It makes no calls, so the loop state stays in
		// registers.
		for ; i < n; i++ {
			r := &recs[i]
			if unsafe.StringData(r.Tenant) != tPtr || len(r.Tenant) != tLen || mapID(r.Attrs) != mapPtr {
				break
			}
			p := uintptr(unsafe.Pointer(unsafe.StringData(r.Meter)))
			slot := &e.seen[(p*0x9E3779B97F4A7C15)>>(64-strBits)]
			if slot.ptr != p || slot.n != len(r.Meter) {
				break
			}
			start, end := r.Start.UnixNano(), r.End.UnixNano()
			if end < start {
				break
			}
			now = max(now, end)
			putRecord(head, i, tOff, uint32(tLen), slot.off, uint32(len(r.Meter)), r.Quantity, start, end, first, count)
		}
		if i == n {
			break
		}
		// Slow path: record i starts a new tenant or attribute map, names
		// a meter not stored yet, or is invalid.
		r := &recs[i]
		start, end := r.Start.UnixNano(), r.End.UnixNano()
		if end < start {
			return fmt.Errorf("record %d (tenant %q, meter %q): window ends before it starts", i, r.Tenant, r.Meter)
		}
		now = max(now, end)
		if p := unsafe.StringData(r.Tenant); p != tPtr || len(r.Tenant) != tLen {
			tPtr, tLen, tOff = p, len(r.Tenant), 0
			if tLen != 0 {
				tOff = e.intern(r.Tenant)
			}
		}
		if id := mapID(r.Attrs); id != mapPtr {
			mapPtr, first, count = id, 0, 0
			if len(r.Attrs) != 0 {
				first, count = uint32(len(attrs)/abi.AttrSize), uint32(len(r.Attrs))
				attrs = e.writeAttrs(attrs, id, r.Attrs)
			}
		}
		var mOff uint32
		if len(r.Meter) != 0 {
			mOff = e.intern(r.Meter)
		}
		putRecord(head, i, tOff, uint32(tLen), mOff, uint32(len(r.Meter)), r.Quantity, start, end, first, count)
		i++
	}
	if n == 0 {
		now = 0
	}
	e.attrs, e.now = attrs, now
	if size := e.size(n); size > 1<<31-1 {
		return fmt.Errorf("batch encodes to %d bytes, more than 2 GiB: split it", size)
	}
	le.PutUint32(head[0:], abi.BatchMagic)
	le.PutUint32(head[4:], uint32(n))
	le.PutUint32(head[8:], uint32(len(attrs)/abi.AttrSize))
	le.PutUint32(head[12:], uint32(len(e.strs)))
	return nil
}

// putRecord writes record i of a batch into head.
func putRecord(head []byte, i int, tOff, tLen, mOff, mLen uint32, q uint64, start, end int64, first, count uint32) {
	le := binary.LittleEndian
	rb := (*[abi.RecordSize]byte)(head[abi.BatchHeader+i*abi.RecordSize:])
	le.PutUint32(rb[0:], tOff)
	le.PutUint32(rb[4:], tLen)
	le.PutUint32(rb[8:], mOff)
	le.PutUint32(rb[12:], mLen)
	le.PutUint64(rb[16:], q)
	le.PutUint64(rb[24:], uint64(start))
	le.PutUint64(rb[32:], uint64(end))
	le.PutUint32(rb[40:], first)
	le.PutUint32(rb[44:], count)
}

// writeAttrs appends one attribute run to attrs, keys sorted, and its
// strings to the string area. The sorted entries of a map are cached by its identity
// and checked against its content, so a map changed in place is re-read.
func (e *encoder) writeAttrs(attrs []byte, id unsafe.Pointer, m map[string]string) []byte {
	p := uintptr(id)
	slot := &e.recent[(p*0x9E3779B97F4A7C15)>>(64-runBits)]
	run := *slot
	if run == nil || run.id != id {
		run = e.runs[id]
	}
	if run == nil || !run.matches(m) {
		run = &attrRun{id: id, keys: make([]string, 0, len(m)), vals: make([]string, len(m))}
		for k := range m {
			run.keys = append(run.keys, k)
		}
		slices.Sort(run.keys)
		for i, k := range run.keys {
			run.vals[i] = m[k]
		}
		if e.runs == nil || len(e.runs) >= maxAttrRuns {
			e.runs = make(map[unsafe.Pointer]*attrRun)
		}
		e.runs[id] = run
	}
	*slot = run
	le := binary.LittleEndian
	for i, k := range run.keys {
		v := run.vals[i]
		var ko, vo uint32
		if len(k) != 0 {
			ko = e.intern(k)
		}
		if len(v) != 0 {
			vo = e.intern(v)
		}
		attrs = le.AppendUint32(attrs, ko)
		attrs = le.AppendUint32(attrs, uint32(len(k)))
		attrs = le.AppendUint32(attrs, vo)
		attrs = le.AppendUint32(attrs, uint32(len(v)))
	}
	return attrs
}

// size returns the length of the encoded batch of n records.
func (e *encoder) size(n int) int { return headSize(n) + len(e.attrs) + len(e.strs) }

// place writes the attribute entries and strings after the records:
// batch is the whole batch, size(n) bytes, whose first headSize(n)
// bytes already hold the header and records.
func (e *encoder) place(batch []byte, n int) {
	k := copy(batch[headSize(n):], e.attrs)
	copy(batch[headSize(n)+k:], e.strs)
}

// bytes encodes recs into a new slice holding the whole batch.
func (e *encoder) bytes(recs []pricing.Record) ([]byte, error) {
	head := make([]byte, headSize(len(recs)))
	if err := e.encode(head, recs); err != nil {
		return nil, err
	}
	b := make([]byte, e.size(len(recs)))
	copy(b, head)
	e.place(b, len(recs))
	return b, nil
}
