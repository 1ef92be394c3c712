package pricing

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// perUnit charges price micro-USD per unit and implements only Pricer.
type perUnit struct {
	price int64
	err   error
}

func (p perUnit) Price(_ context.Context, recs []Record) (Result, error) {
	if p.err != nil {
		return Result{}, p.err
	}
	res := Result{PluginSHA256: "per-unit"}
	for _, r := range recs {
		res.Charges = append(res.Charges, Charge{AmountMicro: p.price * int64(r.Quantity), Currency: "USD"})
	}
	return res, nil
}

// appending is perUnit with its own PriceAppend, marked by its sha.
type appending struct{ perUnit }

func (p appending) PriceAppend(ctx context.Context, recs []Record, dst []Charge) (Result, error) {
	res, err := p.Price(ctx, recs)
	if err != nil {
		return Result{}, err
	}
	return Result{Charges: append(dst, res.Charges...), PluginSHA256: "appender"}, nil
}

func TestPriceAppend(t *testing.T) {
	recs := []Record{{Tenant: "a", Meter: "m", Quantity: 3}, {Tenant: "b", Meter: "m", Quantity: 0}}
	prior := Charge{AmountMicro: 1, Currency: "EUR"}
	boom := errors.New("boom")
	tests := []struct {
		name    string
		p       Pricer
		wantSHA string
		wantErr error
	}{
		{"Pricer only: Price, then appended", perUnit{price: 2}, "per-unit", nil},
		{"Appender: its own PriceAppend", appending{perUnit{price: 2}}, "appender", nil},
		{"error from Price", perUnit{err: boom}, "", boom},
		{"error from PriceAppend", appending{perUnit{err: boom}}, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]Charge, 1, 8)
			dst[0] = prior
			res, err := PriceAppend(context.Background(), tt.p, recs, dst)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if res.Charges != nil || dst[0] != prior {
					t.Fatalf("failed batch: charges %+v, dst %+v", res.Charges, dst)
				}
				return
			}
			want := []Charge{prior, {AmountMicro: 6, Currency: "USD"}, {AmountMicro: 0, Currency: "USD"}}
			if !reflect.DeepEqual(res.Charges, want) || res.PluginSHA256 != tt.wantSHA {
				t.Fatalf("got %+v from %s, want %+v from %s", res.Charges, res.PluginSHA256, want, tt.wantSHA)
			}
			if &res.Charges[0] != &dst[0] {
				t.Fatal("charges were not appended in dst's backing array")
			}
		})
	}
}
