package plugin

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"unsafe"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

// encoder writes a batch of [pricing.Record]s in the ABI v1 layout
// (sdk/go/abi) straight into guest memory. It stores a string once per run
// of equal consecutive values and an attribute map once per run of records
// sharing it, and sorts attribute keys so the same batch always encodes to
// the same bytes. An encoder is reused by one instance at a time.
type encoder struct {
	keys  []string // sorted keys of each distinct attribute map, in order
	first []uint32 // per record: index of its first attribute
	now   int64    // latest window end in the batch
}

func mapID(m map[string]string) unsafe.Pointer {
	if len(m) == 0 {
		return nil
	}
	return reflect.ValueOf(m).UnsafePointer()
}

// size validates recs, plans the attribute table and returns the encoded
// length.
func (e *encoder) size(recs []pricing.Record) (int, error) {
	e.keys = e.keys[:0]
	e.first = slices.Grow(e.first[:0], len(recs))[:len(recs)]
	strLen := 0
	var prev unsafe.Pointer
	var prevFirst uint32
	e.now = 0
	for i := range recs {
		r := &recs[i]
		if r.End.Before(r.Start) {
			return 0, fmt.Errorf("record %d (tenant %q, meter %q): window ends before it starts", i, r.Tenant, r.Meter)
		}
		if end := r.End.UnixNano(); i == 0 || end > e.now {
			e.now = end
		}
		if i == 0 || r.Tenant != recs[i-1].Tenant {
			strLen += len(r.Tenant)
		}
		if i == 0 || r.Meter != recs[i-1].Meter {
			strLen += len(r.Meter)
		}
		id := mapID(r.Attrs)
		switch {
		case id == nil:
			e.first[i] = 0
		case id == prev:
			e.first[i] = prevFirst
		default:
			prev, prevFirst = id, uint32(len(e.keys))
			e.first[i] = prevFirst
			start := len(e.keys)
			for k, v := range r.Attrs {
				e.keys = append(e.keys, k)
				strLen += len(k) + len(v)
			}
			slices.Sort(e.keys[start:])
		}
	}
	total := abi.BatchHeader + len(recs)*abi.RecordSize + len(e.keys)*abi.AttrSize + strLen
	if total > 1<<31-1 {
		return 0, fmt.Errorf("batch encodes to %d bytes, more than 2 GiB: split it", total)
	}
	return total, nil
}

// write encodes recs into b, which must be exactly size(recs) long; size
// must have been called with the same recs just before.
func (e *encoder) write(b []byte, recs []pricing.Record) {
	le := binary.LittleEndian
	nk := len(e.keys)
	attrs := b[abi.BatchHeader+len(recs)*abi.RecordSize:]
	strs := attrs[nk*abi.AttrSize:]
	le.PutUint32(b[0:], abi.BatchMagic)
	le.PutUint32(b[4:], uint32(len(recs)))
	le.PutUint32(b[8:], uint32(nk))
	le.PutUint32(b[12:], uint32(len(strs)))
	so := 0
	var tOff, tLen, mOff, mLen uint32
	written := 0 // attribute entries already written
	for i := range recs {
		r := &recs[i]
		if i == 0 || r.Tenant != recs[i-1].Tenant {
			tOff, tLen = uint32(so), uint32(len(r.Tenant))
			so += copy(strs[so:], r.Tenant)
		}
		if i == 0 || r.Meter != recs[i-1].Meter {
			mOff, mLen = uint32(so), uint32(len(r.Meter))
			so += copy(strs[so:], r.Meter)
		}
		rb := b[abi.BatchHeader+i*abi.RecordSize : abi.BatchHeader+(i+1)*abi.RecordSize]
		le.PutUint32(rb[0:], tOff)
		le.PutUint32(rb[4:], tLen)
		le.PutUint32(rb[8:], mOff)
		le.PutUint32(rb[12:], mLen)
		le.PutUint64(rb[16:], r.Quantity)
		le.PutUint64(rb[24:], uint64(r.Start.UnixNano()))
		le.PutUint64(rb[32:], uint64(r.End.UnixNano()))
		le.PutUint32(rb[40:], e.first[i])
		le.PutUint32(rb[44:], uint32(len(r.Attrs)))
		if len(r.Attrs) > 0 && int(e.first[i]) == written {
			for _, k := range e.keys[written : written+len(r.Attrs)] {
				v := r.Attrs[k]
				ab := attrs[written*abi.AttrSize:]
				le.PutUint32(ab[0:], uint32(so))
				le.PutUint32(ab[4:], uint32(len(k)))
				so += copy(strs[so:], k)
				le.PutUint32(ab[8:], uint32(so))
				le.PutUint32(ab[12:], uint32(len(v)))
				so += copy(strs[so:], v)
				written++
			}
		}
	}
}
