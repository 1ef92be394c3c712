package plugin

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

// encoder builds a batch of [pricing.Record]s in the ABI v1 layout
// (sdk/go/abi) in one pass over the records, into buffers it reuses, then
// copies it into guest memory. A string value is stored once when the
// records share it (same backing memory, as tenant and meter names from
// the config do), an attribute map once per run of records sharing it,
// and attribute keys are sorted, so decoding is deterministic. An encoder
// is used by one instance at a time.
type encoder struct {
	head  []byte // header and fixed-size records
	attrs []byte
	strs  []byte
	seen  [256]strSlot // small direct-mapped cache: string data pointer -> offset
	// runs remembers each attribute map's sorted entries across batches,
	// so a tenant's map is iterated and sorted once, not once per batch.
	runs map[unsafe.Pointer]*attrRun
	now  int64 // latest window end in the batch
}

// strSlot remembers where a string was stored. ptr is an address kept
// as an integer: the strings outlive the encode call that compares it, and
// no write barrier is needed.
type strSlot struct {
	ptr uintptr
	n   int
	off uint32
}

// str stores s in the string area (or finds it stored) and returns its
// offset and length.
func (e *encoder) str(s string) (uint32, uint32) {
	if len(s) == 0 {
		return 0, 0
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	slot := &e.seen[(p>>4^p>>12)&255]
	if slot.ptr == p && slot.n == len(s) {
		return slot.off, uint32(len(s))
	}
	off := uint32(len(e.strs))
	e.strs = append(e.strs, s...)
	*slot = strSlot{ptr: p, n: len(s), off: off}
	return off, uint32(len(s))
}

// attrRun is one attribute map's entries, sorted by key.
type attrRun struct{ keys, vals []string }

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
// sharing one map share one attribute run.
func mapID(m map[string]string) unsafe.Pointer {
	if len(m) == 0 {
		return nil
	}
	return *(*unsafe.Pointer)(unsafe.Pointer(&m))
}

// encode validates recs and encodes them into the encoder's buffers;
// size and copyTo then place the batch in guest memory.
func (e *encoder) encode(recs []pricing.Record) error {
	le := binary.LittleEndian
	n := len(recs)
	e.head = slices.Grow(e.head[:0], abi.BatchHeader+n*abi.RecordSize)[:abi.BatchHeader+n*abi.RecordSize]
	e.attrs = e.attrs[:0]
	e.strs = e.strs[:0]
	e.seen = [256]strSlot{}
	e.now = 0
	var prevMap unsafe.Pointer
	var prevFirst uint32
	for i := range recs {
		r := &recs[i]
		start, end := r.Start.UnixNano(), r.End.UnixNano()
		if end < start {
			return fmt.Errorf("record %d (tenant %q, meter %q): window ends before it starts", i, r.Tenant, r.Meter)
		}
		if i == 0 || end > e.now {
			e.now = end
		}
		rb := (*[abi.RecordSize]byte)(e.head[abi.BatchHeader+i*abi.RecordSize:])
		tOff, tLen := e.str(r.Tenant)
		mOff, mLen := e.str(r.Meter)
		le.PutUint32(rb[0:], tOff)
		le.PutUint32(rb[4:], tLen)
		le.PutUint32(rb[8:], mOff)
		le.PutUint32(rb[12:], mLen)
		le.PutUint64(rb[16:], r.Quantity)
		le.PutUint64(rb[24:], uint64(start))
		le.PutUint64(rb[32:], uint64(end))
		first := uint32(0)
		if id := mapID(r.Attrs); id != nil {
			if id != prevMap {
				prevMap, prevFirst = id, uint32(len(e.attrs)/abi.AttrSize)
				e.writeAttrs(id, r.Attrs)
			}
			first = prevFirst
		}
		le.PutUint32(rb[40:], first)
		le.PutUint32(rb[44:], uint32(len(r.Attrs)))
	}
	if e.size() > 1<<31-1 {
		return fmt.Errorf("batch encodes to %d bytes, more than 2 GiB: split it", e.size())
	}
	le.PutUint32(e.head[0:], abi.BatchMagic)
	le.PutUint32(e.head[4:], uint32(n))
	le.PutUint32(e.head[8:], uint32(len(e.attrs)/abi.AttrSize))
	le.PutUint32(e.head[12:], uint32(len(e.strs)))
	return nil
}

// writeAttrs appends one attribute run, keys sorted. The sorted entries
// of a map are cached by its identity and checked against its content, so
// a map changed in place is re-read.
func (e *encoder) writeAttrs(id unsafe.Pointer, m map[string]string) {
	run := e.runs[id]
	if run == nil || !run.matches(m) {
		run = &attrRun{keys: make([]string, 0, len(m)), vals: make([]string, len(m))}
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
	for i, k := range run.keys {
		ko, kl := e.str(k)
		vo, vl := e.str(run.vals[i])
		e.attrs = binary.LittleEndian.AppendUint32(e.attrs, ko)
		e.attrs = binary.LittleEndian.AppendUint32(e.attrs, kl)
		e.attrs = binary.LittleEndian.AppendUint32(e.attrs, vo)
		e.attrs = binary.LittleEndian.AppendUint32(e.attrs, vl)
	}
}

// size returns the encoded batch's length.
func (e *encoder) size() int { return len(e.head) + len(e.attrs) + len(e.strs) }

// copyTo copies the encoded batch into dst, which is size() bytes long.
func (e *encoder) copyTo(dst []byte) {
	n := copy(dst, e.head)
	n += copy(dst[n:], e.attrs)
	copy(dst[n:], e.strs)
}
