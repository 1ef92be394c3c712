package plugin

import (
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

// FuzzEncoder encodes batches built from the fuzz input, with names and
// attribute maps drawn from small pools so records share them (string
// cache hits, runs of one tenant, maps changed between batches) and
// some empty, and checks that the reference decoder reads back exactly
// the records, twice on the same encoder.
func FuzzEncoder(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7})
	f.Add([]byte{7, 255, 128, 3, 3, 3, 9, 0, 1})
	f.Add([]byte{})
	names := []string{"", "a", "tenant-1", "tenant-1"[:6], "syscalls", "bytes", strings.Repeat("z", 300), "é"}
	maps := []map[string]string{nil, {}, {"plan": "pro"}, {"plan": "pro", "region": "eu", "": "empty key"}}
	f.Fuzz(func(t *testing.T, in []byte) {
		var enc encoder
		for round := 0; round < 2; round++ {
			var recs []pricing.Record
			var want []abi.Record
			for i := 0; i+2 < len(in) && len(recs) < 300; i += 3 {
				tenant, meter := names[int(in[i])%len(names)], names[int(in[i+1])%len(names)]
				m := maps[int(in[i+2])%len(maps)]
				start := t0.Add(time.Duration(in[i]) * time.Second)
				end := start.Add(time.Duration(in[i+1]) * time.Millisecond)
				recs = append(recs, pricing.Record{Tenant: tenant, Meter: meter, Quantity: uint64(in[i+2]) << 40, Start: start, End: end, Attrs: m})
				var attrs []abi.Attr
				for k, v := range m {
					attrs = append(attrs, abi.Attr{Key: k, Value: v})
				}
				slices.SortFunc(attrs, func(a, b abi.Attr) int { return strings.Compare(a.Key, b.Key) })
				want = append(want, abi.Record{Tenant: tenant, Meter: meter, Quantity: uint64(in[i+2]) << 40,
					StartUnixNano: start.UnixNano(), EndUnixNano: end.UnixNano(), Attrs: attrs})
			}
			b, err := enc.bytes(recs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := abi.DecodeBatch(b)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
				t.Fatalf("round %d: decoded\n got %+v\nwant %+v", round, got, want)
			}
			maps[2]["plan"] = string(in) // changed in place: must be re-read
		}
	})
}

// rawCharge is one charge as a guest may write it, valid or not.
type rawCharge struct {
	amount, vendor int64
	currency       string // up to 8 bytes, zero padded
}

func chargesBlock(magic uint32, count int, cs []rawCharge) []byte {
	b := binary.LittleEndian.AppendUint32(nil, magic)
	b = binary.LittleEndian.AppendUint32(b, uint32(count))
	for _, c := range cs {
		b = binary.LittleEndian.AppendUint64(b, uint64(c.amount))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.vendor))
		var cur [8]byte
		copy(cur[:], c.currency)
		b = append(b, cur[:]...)
	}
	return b
}

// TestDecodeCharges checks the host's charge decoder on valid blocks
// (currency changes included) and on every kind of bad charge, at the
// start of a block and after valid charges, where the decoder's fast
// path runs: a bad charge fails the whole block and leaves dst alone.
func TestDecodeCharges(t *testing.T) {
	usd3, eur := rawCharge{3, 1, "USD"}, rawCharge{5, 5, "EUR"}
	tests := []struct {
		name    string
		block   []byte
		n       int
		want    []pricing.Charge // nil: must fail with ErrBadOutput
		wantErr string
	}{
		{"empty", chargesBlock(abi.ChargesMagic, 0, nil), 0, []pricing.Charge{}, ""},
		{"one currency", chargesBlock(abi.ChargesMagic, 3, []rawCharge{usd3, usd3, {0, 0, "USD"}}), 3,
			[]pricing.Charge{usd(3, 1), usd(3, 1), usd(0, 0)}, ""},
		{"currency changes", chargesBlock(abi.ChargesMagic, 4, []rawCharge{usd3, eur, eur, usd3}), 4,
			[]pricing.Charge{usd(3, 1), {AmountMicro: 5, Currency: "EUR", VendorMicro: 5}, {AmountMicro: 5, Currency: "EUR", VendorMicro: 5}, usd(3, 1)}, ""},
		{"negative amount after valid", chargesBlock(abi.ChargesMagic, 3, []rawCharge{usd3, usd3, {-1, 0, "USD"}}), 3, nil, "charge 2"},
		{"negative vendor after valid", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {3, -1, "USD"}}), 2, nil, "charge 1"},
		{"vendor above amount after valid", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {3, 4, "USD"}}), 2, nil, "charge 1"},
		{"vendor above amount first", chargesBlock(abi.ChargesMagic, 1, []rawCharge{{3, 4, "USD"}}), 1, nil, "charge 0"},
		{"zero currency first", chargesBlock(abi.ChargesMagic, 1, []rawCharge{{1, 0, ""}}), 1, nil, "charge 0"},
		{"zero currency after valid", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {1, 0, ""}}), 2, nil, "charge 1"},
		{"lower case", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {1, 0, "usd"}}), 2, nil, "charge 1"},
		{"bytes after the code", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {1, 0, "USDX"}}), 2, nil, "charge 1"},
		{"all ones currency", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, {1, 0, "\xff\xff\xff\xff\xff\xff\xff\xff"}}), 2, nil, "charge 1"},
		{"count differs", chargesBlock(abi.ChargesMagic, 2, []rawCharge{usd3, usd3}), 3, nil, "KMC1"},
		{"bad magic", chargesBlock(abi.BatchMagic, 1, []rawCharge{usd3}), 1, nil, "KMC1"},
		{"trailing byte", append(chargesBlock(abi.ChargesMagic, 1, []rawCharge{usd3}), 0), 1, nil, "KMC1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cur abi.CurrencyCache
			prior := usd(9, 9)
			dst := make([]pricing.Charge, 1, 8)
			dst[0] = prior
			got, err := decodeCharges(tt.block, tt.n, &cur, dst)
			if tt.want == nil {
				if !errors.Is(err, ErrBadOutput) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want ErrBadOutput naming %q", err, tt.wantErr)
				}
				if len(got) != 1 || got[0] != prior {
					t.Fatalf("failed block changed dst: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, append([]pricing.Charge{prior}, tt.want...)) {
				t.Fatalf("got %+v, want %+v after the prior charge", got, tt.want)
			}
		})
	}
}
