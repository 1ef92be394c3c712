//go:build wasip1

// Command tiered is a Go pricing plugin with a free tier: for each record
// the first FreeUnits units of a window are free, the next units up to
// 100,000 cost 5 micro-USD each, and every unit above costs 3 micro-USD.
// Tenants whose "plan" attribute is "pro" get a free tier ten times larger.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o tiered.wasm ./plugins/go/tiered
package main

import (
	"errors"
	"math/bits"

	"github.com/kmeter/kmeter/sdk/go/kmeter"
)

const (
	freeUnits    = 1_000
	tier1Limit   = 100_000
	tier1Micro   = 5
	tier2Micro   = 3
	proFreeMulti = 10
)

var errOverflow = errors.New("tiered: charge overflows int64")

func init() { kmeter.Handle(price) }

func price(recs []kmeter.Record) ([]kmeter.Charge, error) {
	out := make([]kmeter.Charge, len(recs))
	for i := range recs {
		free := uint64(freeUnits)
		if plan, _ := recs[i].Attr("plan"); plan == "pro" {
			free *= proFreeMulti
		}
		amt, err := tiered(recs[i].Quantity, free)
		if err != nil {
			return nil, err
		}
		out[i] = kmeter.Charge{AmountMicro: amt, Currency: "USD"}
	}
	return out, nil
}

// tiered prices q units with the first free units free.
func tiered(q, free uint64) (int64, error) {
	if q <= free {
		return 0, nil
	}
	var t1, t2 uint64
	if q <= tier1Limit {
		t1 = q - free
	} else {
		t1 = tier1Limit - min(free, tier1Limit)
		t2 = q - max(free, tier1Limit)
	}
	hi, lo := bits.Mul64(t2, tier2Micro)
	sum := lo + t1*tier1Micro
	if hi != 0 || sum < lo || sum > 1<<63-1 {
		return 0, errOverflow
	}
	return int64(sum), nil
}

func main() {}
