// Package kmeter is the Go guest SDK for kmeter pricing plugins (ABI v1,
// docs/plugin-abi.md). A plugin registers its pricing function in init
// and is built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm ./myplugin
//
// The SDK exports kmeter_abi_version, kmeter_alloc and kmeter_price. Keep
// plugins free of os, fmt and other packages that reach for files: the
// host refuses modules that import WASI file or network functions.
package kmeter

import (
	"errors"

	"github.com/kmeter/kmeter/sdk/go/abi"
)

// Record is one usage record: a tenant's quantity on one meter in one
// window, with the tenant's attributes.
type Record = abi.Record

// Charge is the price of one record in integer micro-units.
type Charge = abi.Charge

// PriceFunc prices one batch: it must return exactly one charge per
// record, in order, and be deterministic. Returning an error fails the
// whole batch; the host keeps the usage and retries later.
type PriceFunc func(recs []Record) ([]Charge, error)

// Handle registers the plugin's pricing function. Call it from init.
func Handle(f PriceFunc) { handler = f }

// handler is the one pricing function of this module. A Wasm instance is
// single-threaded and the host calls it once per batch, so a package
// variable set once in init is the simplest correct shape here.
var handler PriceFunc

// ErrNoHandler is returned when the plugin never called Handle.
var ErrNoHandler = errors.New("kmeter: no pricing function registered: call kmeter.Handle in init")

// Split returns floor(amount*num/den), the vendor share rule of ABI v1:
// the vendor's share rounds down and the platform keeps the remainder.
func Split(amount, num, den int64) int64 {
	return (amount/den)*num + (amount%den)*num/den
}

// priceBatch decodes in, prices it and encodes the charges into out.
func priceBatch(in []byte, out []byte) ([]byte, error) {
	if handler == nil {
		return nil, ErrNoHandler
	}
	recs, err := abi.DecodeBatch(in)
	if err != nil {
		return nil, err
	}
	cs, err := handler(recs)
	if err != nil {
		return nil, err
	}
	if len(cs) != len(recs) {
		return nil, errors.New("kmeter: pricing function returned a charge count different from the record count")
	}
	return abi.AppendCharges(out[:0], cs)
}
