package plugin

import (
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
