// Package abi is the wire format of kmeter's pricing plugin ABI v1
// (docs/plugin-abi.md): the batch of usage records the host writes into
// guest memory and the charges the guest hands back. It is pure Go with no
// dependencies so both the host and Go guests (GOOS=wasip1) share it.
//
// All integers are little-endian. Money is int64 micro-units, never floats.
package abi

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Version is the ABI version a plugin's kmeter_abi_version export must
// return. Keep in sync with KMETER_ABI_VERSION in sdk/c/kmeter.h and
// ABI_VERSION in sdk/assemblyscript/assembly/index.ts.
const Version = 1

// Wire sizes and magics. Keep in sync with sdk/c/kmeter.h and
// sdk/assemblyscript/assembly/index.ts.
const (
	BatchMagic    = 0x31424d4b // "KMB1" read as a little-endian uint32
	ChargesMagic  = 0x31434d4b // "KMC1"
	BatchHeader   = 16
	RecordSize    = 48
	AttrSize      = 16
	ChargesHeader = 8
	ChargeSize    = 24
	CurrencySize  = 8
	// MaxRecords bounds a batch so sizes always fit in 32 bits.
	MaxRecords = 1 << 20
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed abi data")

// Attr is one tenant attribute (plan, region...).
type Attr struct {
	Key, Value string
}

// Record is one usage record as a plugin sees it.
type Record struct {
	Tenant   string
	Meter    string
	Quantity uint64
	// StartUnixNano and EndUnixNano bound the usage window.
	StartUnixNano int64
	EndUnixNano   int64
	Attrs         []Attr
}

// Attr returns the value of the attribute key and whether it is set.
func (r *Record) Attr(key string) (string, bool) {
	for _, a := range r.Attrs {
		if a.Key == key {
			return a.Value, true
		}
	}
	return "", false
}

// Charge is the price of one record.
type Charge struct {
	// AmountMicro is what the tenant pays, in micro-units (>= 0).
	AmountMicro int64
	// VendorMicro is the plugin vendor's share of AmountMicro
	// (0 <= VendorMicro <= AmountMicro).
	VendorMicro int64
	// Currency is a three-letter ISO 4217 code such as "USD".
	Currency string
}

// BatchSize returns the encoded size of recs.
func BatchSize(recs []Record) int {
	n := BatchHeader + len(recs)*RecordSize
	for i := range recs {
		r := &recs[i]
		n += len(r.Tenant) + len(r.Meter) + len(r.Attrs)*AttrSize
		for _, a := range r.Attrs {
			n += len(a.Key) + len(a.Value)
		}
	}
	return n
}

// AppendBatch appends the encoding of recs to dst. Strings are stored
// once per distinct value of consecutive records (a batch is usually
// sorted by tenant), which keeps the encoding compact without a map.
func AppendBatch(dst []byte, recs []Record) ([]byte, error) {
	if len(recs) > MaxRecords {
		return dst, errorf(nil, "encode batch: ", len(recs), " records, more than the limit of ", MaxRecords, ": split the batch")
	}
	nAttrs := 0
	strLen := 0
	for i := range recs {
		r := &recs[i]
		nAttrs += len(r.Attrs)
		strLen += len(r.Tenant) + len(r.Meter)
		for _, a := range r.Attrs {
			strLen += len(a.Key) + len(a.Value)
		}
	}
	total := BatchHeader + len(recs)*RecordSize + nAttrs*AttrSize + strLen
	if total > 1<<31-1 {
		return dst, errorf(nil, "encode batch: ", total, " bytes, more than 2 GiB: split the batch")
	}
	base := len(dst)
	dst = grow(dst, total)
	b := dst[base : base+total]
	le := binary.LittleEndian
	le.PutUint32(b[0:], BatchMagic)
	le.PutUint32(b[4:], uint32(len(recs)))
	le.PutUint32(b[8:], uint32(nAttrs))
	strs := b[BatchHeader+len(recs)*RecordSize+nAttrs*AttrSize:]
	attrs := b[BatchHeader+len(recs)*RecordSize:]
	so, ai := 0, 0
	put := func(s string) (uint32, uint32) {
		off := so
		so += copy(strs[so:], s)
		return uint32(off), uint32(len(s))
	}
	var prevTenant, prevMeter string
	var tOff, tLen, mOff, mLen uint32
	for i := range recs {
		r := &recs[i]
		rb := b[BatchHeader+i*RecordSize : BatchHeader+(i+1)*RecordSize]
		if i == 0 || r.Tenant != prevTenant {
			tOff, tLen = put(r.Tenant)
			prevTenant = r.Tenant
		}
		if i == 0 || r.Meter != prevMeter {
			mOff, mLen = put(r.Meter)
			prevMeter = r.Meter
		}
		le.PutUint32(rb[0:], tOff)
		le.PutUint32(rb[4:], tLen)
		le.PutUint32(rb[8:], mOff)
		le.PutUint32(rb[12:], mLen)
		le.PutUint64(rb[16:], r.Quantity)
		le.PutUint64(rb[24:], uint64(r.StartUnixNano))
		le.PutUint64(rb[32:], uint64(r.EndUnixNano))
		le.PutUint32(rb[40:], uint32(ai))
		le.PutUint32(rb[44:], uint32(len(r.Attrs)))
		for _, a := range r.Attrs {
			ab := attrs[ai*AttrSize : (ai+1)*AttrSize]
			ko, kl := put(a.Key)
			vo, vl := put(a.Value)
			le.PutUint32(ab[0:], ko)
			le.PutUint32(ab[4:], kl)
			le.PutUint32(ab[8:], vo)
			le.PutUint32(ab[12:], vl)
			ai++
		}
	}
	// Shared strings make the string area shorter than reserved: record
	// its real length and trim.
	le.PutUint32(b[12:], uint32(so))
	used := BatchHeader + len(recs)*RecordSize + nAttrs*AttrSize + so
	return dst[:base+used], nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*len(b)+n)
	copy(nb, b)
	return nb
}

// DecodeBatch decodes and fully validates a batch. Strings in the result
// are copies, independent of b.
func DecodeBatch(b []byte) ([]Record, error) {
	v, err := ParseBatch(b)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, v.Len())
	for i := range recs {
		recs[i] = v.Record(i)
	}
	return recs, nil
}

// BatchView is a validated batch that reads fields in place, without
// allocating; guests use it to price large batches quickly.
type BatchView struct {
	b              []byte
	n, nAttrs      int
	attrs, strings int
}

// ParseBatch validates b and returns a view of it. Every offset and
// length is checked, so the accessors never go out of bounds.
func ParseBatch(b []byte) (BatchView, error) {
	le := binary.LittleEndian
	if len(b) < BatchHeader {
		return BatchView{}, errorf(ErrMalformed, len(b), " bytes, shorter than the ", BatchHeader, "-byte header")
	}
	if m := le.Uint32(b); m != BatchMagic {
		return BatchView{}, errorf(ErrMalformed, "magic ", hex(m), ", want ", hex(BatchMagic), " (KMB1)")
	}
	n := uint64(le.Uint32(b[4:]))
	na := uint64(le.Uint32(b[8:]))
	ns := uint64(le.Uint32(b[12:]))
	if n > MaxRecords {
		return BatchView{}, errorf(ErrMalformed, n, " records, more than ", MaxRecords)
	}
	want := BatchHeader + n*RecordSize + na*AttrSize + ns
	if want != uint64(len(b)) {
		return BatchView{}, errorf(ErrMalformed, "header says ", want, " bytes, got ", len(b))
	}
	v := BatchView{b: b, n: int(n), nAttrs: int(na), attrs: BatchHeader + int(n)*RecordSize}
	v.strings = v.attrs + int(na)*AttrSize
	inStrings := func(off, l uint32) bool { return uint64(off)+uint64(l) <= ns }
	for i := 0; i < v.n; i++ {
		r := b[BatchHeader+i*RecordSize:]
		if !inStrings(le.Uint32(r[0:]), le.Uint32(r[4:])) || !inStrings(le.Uint32(r[8:]), le.Uint32(r[12:])) {
			return BatchView{}, errorf(ErrMalformed, "record ", i, ": string out of bounds")
		}
		if int64(le.Uint64(r[24:])) > int64(le.Uint64(r[32:])) {
			return BatchView{}, errorf(ErrMalformed, "record ", i, ": window starts after it ends")
		}
		if uint64(le.Uint32(r[40:]))+uint64(le.Uint32(r[44:])) > na {
			return BatchView{}, errorf(ErrMalformed, "record ", i, ": attributes out of bounds")
		}
	}
	for i := 0; i < v.nAttrs; i++ {
		a := b[v.attrs+i*AttrSize:]
		if !inStrings(le.Uint32(a[0:]), le.Uint32(a[4:])) || !inStrings(le.Uint32(a[8:]), le.Uint32(a[12:])) {
			return BatchView{}, errorf(ErrMalformed, "attribute ", i, ": string out of bounds")
		}
	}
	return v, nil
}

// Len returns the number of records.
func (v BatchView) Len() int { return v.n }

func (v BatchView) rec(i int) []byte {
	return v.b[BatchHeader+i*RecordSize : BatchHeader+(i+1)*RecordSize]
}

func (v BatchView) str(off, l uint32) []byte {
	s := v.b[v.strings+int(off):]
	return s[:l:l]
}

// Quantity returns record i's quantity.
func (v BatchView) Quantity(i int) uint64 { return binary.LittleEndian.Uint64(v.rec(i)[16:]) }

// MeterBytes returns record i's meter name without copying it.
func (v BatchView) MeterBytes(i int) []byte {
	r := v.rec(i)
	return v.str(binary.LittleEndian.Uint32(r[8:]), binary.LittleEndian.Uint32(r[12:]))
}

// Record returns a copy of record i.
func (v BatchView) Record(i int) Record {
	le := binary.LittleEndian
	r := v.rec(i)
	out := Record{
		Tenant:        string(v.str(le.Uint32(r[0:]), le.Uint32(r[4:]))),
		Meter:         string(v.str(le.Uint32(r[8:]), le.Uint32(r[12:]))),
		Quantity:      le.Uint64(r[16:]),
		StartUnixNano: int64(le.Uint64(r[24:])),
		EndUnixNano:   int64(le.Uint64(r[32:])),
	}
	first, cnt := int(le.Uint32(r[40:])), int(le.Uint32(r[44:]))
	if cnt > 0 {
		out.Attrs = make([]Attr, cnt)
		for j := range out.Attrs {
			a := v.b[v.attrs+(first+j)*AttrSize:]
			out.Attrs[j] = Attr{
				Key:   string(v.str(le.Uint32(a[0:]), le.Uint32(a[4:]))),
				Value: string(v.str(le.Uint32(a[8:]), le.Uint32(a[12:]))),
			}
		}
	}
	return out
}

// ChargesSize returns the encoded size of n charges.
func ChargesSize(n int) int { return ChargesHeader + n*ChargeSize }

// AppendCharges appends the encoding of cs to dst. It validates each
// charge the same way the host does.
func AppendCharges(dst []byte, cs []Charge) ([]byte, error) {
	base := len(dst)
	dst = grow(dst, ChargesSize(len(cs)))
	b := dst[base:]
	le := binary.LittleEndian
	le.PutUint32(b[0:], ChargesMagic)
	le.PutUint32(b[4:], uint32(len(cs)))
	for i, c := range cs {
		if err := checkCharge(c.AmountMicro, c.VendorMicro); err != nil {
			return dst[:base], errorf(nil, "encode charge ", i, ": ", err)
		}
		if !validCurrency(c.Currency) {
			return dst[:base], errorf(nil, "encode charge ", i, ": currency ", []byte(c.Currency), " is not a three-letter ISO 4217 code")
		}
		cb := b[ChargesHeader+i*ChargeSize:]
		le.PutUint64(cb[0:], uint64(c.AmountMicro))
		le.PutUint64(cb[8:], uint64(c.VendorMicro))
		clear(cb[16:24])
		copy(cb[16:24], c.Currency)
	}
	return dst, nil
}

// DecodeCharges decodes exactly want charges from b, rejecting anything
// else: a wrong count, trailing bytes, negative amounts, a vendor share
// outside [0, amount], or a currency that is not three capital letters.
// cur interns currency strings across calls; pass nil if unused.
func DecodeCharges(b []byte, want int, dst []Charge, cur *CurrencyCache) ([]Charge, error) {
	le := binary.LittleEndian
	if len(b) < ChargesHeader {
		return dst, errorf(ErrMalformed, "charges: ", len(b), " bytes, shorter than the ", ChargesHeader, "-byte header")
	}
	if m := le.Uint32(b); m != ChargesMagic {
		return dst, errorf(ErrMalformed, "charges: magic ", hex(m), ", want ", hex(ChargesMagic), " (KMC1)")
	}
	if n := le.Uint32(b[4:]); uint64(n) != uint64(want) {
		return dst, errorf(ErrMalformed, "charges: ", n, " charges for ", want, " records, want one per record")
	}
	if len(b) != ChargesSize(want) {
		return dst, errorf(ErrMalformed, "charges: ", len(b), " bytes, want ", ChargesSize(want))
	}
	if cur == nil {
		cur = new(CurrencyCache)
	}
	for i := 0; i < want; i++ {
		cb := b[ChargesHeader+i*ChargeSize:]
		amt, ven := int64(le.Uint64(cb[0:])), int64(le.Uint64(cb[8:]))
		if err := checkCharge(amt, ven); err != nil {
			return dst, errorf(ErrMalformed, "charge ", i, ": ", err)
		}
		c, ok := cur.lookup(cb[16:24])
		if !ok {
			return dst, errorf(ErrMalformed, "charge ", i, ": currency ", cb[16:24], " is not a three-letter ISO 4217 code")
		}
		dst = append(dst, Charge{AmountMicro: amt, VendorMicro: ven, Currency: c})
	}
	return dst, nil
}

// CheckCharge reports why a charge breaks the ABI's money rules (a
// negative amount, or a vendor share outside [0, amount]), or nil.
func CheckCharge(amount, vendor int64) error { return checkCharge(amount, vendor) }

func checkCharge(amt, ven int64) error {
	if amt < 0 {
		return errorf(nil, "negative amount ", amt)
	}
	if ven < 0 || ven > amt {
		return errorf(nil, "vendor share ", ven, " outside [0, amount ", amt, "]")
	}
	return nil
}

// CurrencyCache turns currency fields into strings without allocating for
// codes seen before. The zero value is ready; it is not safe for
// concurrent use.
type CurrencyCache struct {
	raw  [CurrencySize]byte
	last string
}

// Parse returns the currency code in an 8-byte wire field, or false when
// it is not three capital letters followed by five zero bytes.
func (c *CurrencyCache) Parse(b []byte) (string, bool) { return c.lookup(b) }

func (c *CurrencyCache) lookup(b []byte) (string, bool) {
	if c.last != "" && string(b) == string(c.raw[:]) {
		return c.last, true
	}
	if b[3] != 0 || b[4] != 0 || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return "", false
	}
	s := string(b[:3])
	if !validCurrency(s) {
		return "", false
	}
	copy(c.raw[:], b)
	c.last = s
	return s, true
}

func validCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// hex marks a number to print in hexadecimal.
type hex uint32

// errorf builds an error from parts without fmt, which would pull os and
// WASI file imports into Go guests. A non-nil wrap prefixes the message and
// is matched by errors.Is.
func errorf(wrap error, parts ...any) error {
	var b []byte
	if wrap != nil {
		b = append(b, wrap.Error()...)
		b = append(b, ": "...)
	}
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b = append(b, v...)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case uint32:
			b = strconv.AppendUint(b, uint64(v), 10)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case hex:
			b = append(b, "0x"...)
			b = strconv.AppendUint(b, uint64(v), 16)
		case []byte:
			b = strconv.AppendQuote(b, string(v))
		case error:
			b = append(b, v.Error()...)
		}
	}
	return &abiError{msg: string(b), wrap: wrap}
}

type abiError struct {
	msg  string
	wrap error
}

func (e *abiError) Error() string { return e.msg }
func (e *abiError) Unwrap() error { return e.wrap }
