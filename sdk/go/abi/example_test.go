package abi_test

import (
	"fmt"

	"github.com/kmeter/kmeter/sdk/go/abi"
)

// A batch of records round-trips through the wire format; a guest reads
// it in place with ParseBatch.
func ExampleParseBatch() {
	b, err := abi.AppendBatch(nil, []abi.Record{
		{Tenant: "acme", Meter: "tls_server_handshakes", Quantity: 25_000, EndUnixNano: 60e9,
			Attrs: []abi.Attr{{Key: "plan", Value: "pro"}}},
	})
	if err != nil {
		panic(err)
	}
	v, err := abi.ParseBatch(b)
	if err != nil {
		panic(err)
	}
	r := v.Record(0)
	plan, _ := r.Attr("plan")
	fmt.Println(len(b), "bytes:", r.Tenant, r.Meter, v.Quantity(0), plan)
	// Output: 112 bytes: acme tls_server_handshakes 25000 pro
}

// Charges are integer micro-units; the vendor's 70% share rounds down.
func ExampleAppendCharges() {
	amount := int64(91)
	vendor := (amount/10)*7 + (amount%10)*7/10
	b, err := abi.AppendCharges(nil, []abi.Charge{{AmountMicro: amount, VendorMicro: vendor, Currency: "USD"}})
	if err != nil {
		panic(err)
	}
	cs, err := abi.DecodeCharges(b, 1, nil, nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d bytes: %+v\n", len(b), cs[0])
	// Output: 32 bytes: {AmountMicro:91 VendorMicro:63 Currency:USD}
}
