// Package pricing is the contract between usage windows and whatever turns
// usage into money (normally a Wasm plugin from internal/plugin). Money is
// always integer micro-units of a currency: 1 USD = 1,000,000 micro-USD.
package pricing

import (
	"context"
	"time"
)

// Record is the usage of one tenant on one meter during one window.
type Record struct {
	Tenant   string
	Meter    string
	Quantity uint64
	Start    time.Time
	End      time.Time
	// Attrs are the tenant's attributes from the config (plan, region...).
	Attrs map[string]string
}

// Charge is the price of one [Record].
type Charge struct {
	// AmountMicro is what the tenant is charged, in micro-units.
	AmountMicro int64
	// Currency is an ISO 4217 code such as "USD".
	Currency string
	// VendorMicro is the part of AmountMicro credited to the plugin's
	// vendor; the rest is credited to the platform.
	VendorMicro int64
}

// Result is the outcome of pricing one batch: one charge per record, in
// the same order, and the sha256 (hex) of the plugin that priced it.
type Result struct {
	Charges      []Charge
	PluginSHA256 string
}

// Pricer prices batches of records. Implementations are safe for
// concurrent use. Pricing is deterministic: the same batch yields the same
// charges. A failed batch returns an error and no charges; callers hold
// the batch and retry it, so usage is neither lost nor charged twice.
type Pricer interface {
	Price(ctx context.Context, recs []Record) (Result, error)
}

// Appender is a [Pricer] that can append a batch's charges to a slice the
// caller owns. A caller pricing batch after batch passes the same buffer
// back each time and so allocates nothing per batch, where Price hands
// out a fresh slice. The usual way to call it is [PriceAppend].
type Appender interface {
	Pricer
	// PriceAppend is Price with one charge per record appended to dst:
	// Result.Charges is dst extended by len(recs) charges, in record
	// order, and may share dst's backing array. On error it returns no
	// charges and dst's contents are unchanged.
	PriceAppend(ctx context.Context, recs []Record, dst []Charge) (Result, error)
}

// PriceAppend prices recs with p and appends the charges to dst, using
// [Appender] when p implements it and Price (then a copy) otherwise.
// Result.Charges is dst extended by len(recs) charges.
func PriceAppend(ctx context.Context, p Pricer, recs []Record, dst []Charge) (Result, error) {
	if a, ok := p.(Appender); ok {
		return a.PriceAppend(ctx, recs, dst)
	}
	res, err := p.Price(ctx, recs)
	if err != nil {
		return res, err
	}
	res.Charges = append(dst, res.Charges...)
	return res, nil
}
