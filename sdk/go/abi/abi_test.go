package abi

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func sampleBatch() []Record {
	return []Record{
		{Tenant: "acme", Meter: "tls_server_handshakes", Quantity: 25_000, StartUnixNano: 10, EndUnixNano: 20,
			Attrs: []Attr{{"plan", "pro"}, {"region", "eu"}}},
		{Tenant: "acme", Meter: "tls_server_handshakes", Quantity: 1, StartUnixNano: 20, EndUnixNano: 30},
		{Tenant: "globex", Meter: "syscalls", Quantity: 1 << 63, StartUnixNano: -5, EndUnixNano: 0,
			Attrs: []Attr{{"plan", ""}}},
	}
}

func TestAppendBatch_roundTrip(t *testing.T) {
	for _, recs := range [][]Record{nil, sampleBatch()} {
		b, err := AppendBatch([]byte("prefix"), recs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatch(b[len("prefix"):])
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, recs) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, recs)
		}
		if len(b)-len("prefix") > BatchSize(recs) {
			t.Fatalf("encoded %d bytes, BatchSize says at most %d", len(b), BatchSize(recs))
		}
	}
}

func TestParseBatch_malformed(t *testing.T) {
	good, err := AppendBatch(nil, sampleBatch())
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	mut := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:10]},
		{"bad magic", mut(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"too many records", mut(func(b []byte) []byte { le.PutUint32(b[4:], MaxRecords+1); return b })},
		{"tenant out of bounds", mut(func(b []byte) []byte { le.PutUint32(b[BatchHeader+0:], 1<<30); return b })},
		{"meter length overflow", mut(func(b []byte) []byte { le.PutUint32(b[BatchHeader+12:], 0xffffffff); return b })},
		{"window reversed", mut(func(b []byte) []byte { le.PutUint64(b[BatchHeader+24:], 99); return b })},
		{"attrs out of bounds", mut(func(b []byte) []byte { le.PutUint32(b[BatchHeader+44:], 9); return b })},
		{"attr key out of bounds", mut(func(b []byte) []byte {
			le.PutUint32(b[BatchHeader+3*RecordSize:], 1<<20)
			return b
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseBatch(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseBatch = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecodeCharges(t *testing.T) {
	cs := []Charge{{AmountMicro: 10, VendorMicro: 7, Currency: "USD"}, {AmountMicro: 0, VendorMicro: 0, Currency: "EUR"}}
	b, err := AppendCharges(nil, cs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCharges(b, 2, nil, nil)
	if err != nil || !reflect.DeepEqual(got, cs) {
		t.Fatalf("DecodeCharges = %+v, %v; want %+v", got, err, cs)
	}
	le := binary.LittleEndian
	bad := []struct {
		name string
		b    []byte
		want int
	}{
		{"count mismatch", b, 3},
		{"trailing", append(append([]byte(nil), b...), 0), 2},
		{"negative", func() []byte { c := append([]byte(nil), b...); le.PutUint64(c[8:], uint64(1<<63)); return c }(), 2},
		{"vendor above amount", func() []byte { c := append([]byte(nil), b...); le.PutUint64(c[16:], 11); return c }(), 2},
		{"lowercase currency", func() []byte { c := append([]byte(nil), b...); c[24] = 'u'; return c }(), 2},
		{"currency padding", func() []byte { c := append([]byte(nil), b...); c[24+4] = 'X'; return c }(), 2},
		{"bad magic", func() []byte { c := append([]byte(nil), b...); c[0] = 0; return c }(), 2},
	}
	for _, tt := range bad {
		if _, err := DecodeCharges(tt.b, tt.want, nil, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeCharges = %v, want ErrMalformed", tt.name, err)
		}
	}
	if _, err := AppendCharges(nil, []Charge{{AmountMicro: 1, VendorMicro: 2, Currency: "USD"}}); err == nil {
		t.Error("AppendCharges accepted a vendor share above the amount")
	}
}

// FuzzParseBatch feeds arbitrary bytes to the batch decoder: it must never
// panic, and whatever it accepts must re-encode to a batch that decodes to
// the same records.
func FuzzParseBatch(f *testing.F) {
	good, _ := AppendBatch(nil, sampleBatch())
	f.Add(good)
	empty, _ := AppendBatch(nil, nil)
	f.Add(empty)
	f.Add([]byte("KMB1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeBatch(b)
		if err != nil {
			return
		}
		again, err := AppendBatch(nil, recs)
		if err != nil {
			t.Fatalf("re-encode accepted batch: %v", err)
		}
		recs2, err := DecodeBatch(again)
		if err != nil {
			t.Fatalf("decode re-encoded batch: %v", err)
		}
		if len(recs) != len(recs2) || (len(recs) > 0 && !reflect.DeepEqual(recs, recs2)) {
			t.Fatalf("re-encoding changed the batch")
		}
	})
}

// FuzzDecodeCharges checks the host's output decoder never panics and
// never accepts a charge that breaks the money rules.
func FuzzDecodeCharges(f *testing.F) {
	b, _ := AppendCharges(nil, []Charge{{AmountMicro: 10, VendorMicro: 7, Currency: "USD"}})
	f.Add(b, 1)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		if want < 0 || want > 1<<16 {
			return
		}
		cs, err := DecodeCharges(b, want, nil, nil)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.AmountMicro < 0 || c.VendorMicro < 0 || c.VendorMicro > c.AmountMicro || len(c.Currency) != 3 {
				t.Fatalf("accepted bad charge %+v", c)
			}
		}
	})
}
