package kmeter

import (
	"errors"
	"reflect"
	"testing"

	"github.com/kmeter/kmeter/sdk/go/abi"
)

func TestSplit(t *testing.T) {
	tests := []struct{ amount, want int64 }{{0, 0}, {1, 0}, {9, 6}, {10, 7}, {91, 63}, {13_000_039, 9_100_027}, {1<<63 - 1, 6456360425798343064}}
	for _, tt := range tests {
		if got := Split(tt.amount, 7, 10); got != tt.want {
			t.Errorf("Split(%d, 7, 10) = %d, want %d", tt.amount, got, tt.want)
		}
	}
}

// TestPriceBatch runs the SDK's batch path on the host: decode, call the
// registered function, encode, and the checks on its answer.
func TestPriceBatch(t *testing.T) {
	in, err := abi.AppendBatch(nil, []abi.Record{{Tenant: "a", Meter: "m", Quantity: 3}, {Tenant: "b", Meter: "m", Quantity: 4}})
	if err != nil {
		t.Fatal(err)
	}
	handler = nil
	if _, err := priceBatch(in, nil); !errors.Is(err, ErrNoHandler) {
		t.Fatalf("no handler: %v", err)
	}
	Handle(func(recs []Record) ([]Charge, error) {
		out := make([]Charge, len(recs))
		for i, r := range recs {
			out[i] = Charge{AmountMicro: int64(r.Quantity) * 10, VendorMicro: Split(int64(r.Quantity)*10, 7, 10), Currency: "USD"}
		}
		return out, nil
	})
	b, err := priceBatch(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := abi.DecodeCharges(b, 2, nil, nil)
	want := []abi.Charge{{AmountMicro: 30, VendorMicro: 21, Currency: "USD"}, {AmountMicro: 40, VendorMicro: 28, Currency: "USD"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("charges %+v, %v; want %+v", got, err, want)
	}
	Handle(func(recs []Record) ([]Charge, error) { return nil, nil })
	if _, err := priceBatch(in, nil); err == nil {
		t.Fatal("a handler returning no charges for 2 records was accepted")
	}
}
