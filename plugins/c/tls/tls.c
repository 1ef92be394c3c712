/* tls: the serverless payment gateway scenario, 0.01 USD per 10,000 TLS
 * server handshakes: 10,000 micro-USD / 10,000 = exactly 1 micro-USD per
 * handshake, so no rounding happens. Other meters are free. */
#include "kmeter.h"

static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out) {
	if (!kmeter_meter_is(b, i, "tls_server_handshakes"))
		return KMETER_OK;
	return kmeter_mul(b->recs[i].quantity, 1, &out->amount_micro);
}

/* kmeter_on_event prices one streamed TLS event (ABI v1, optional
 * export): the host passes a batch of exactly one record and skips the
 * batch loop. A streamed event is one handshake, so its quantity must be
 * 1; anything else is malformed input (counted handshakes go through
 * kmeter_price). One server handshake costs 1 micro-USD, as in
 * kmeter_price_record; other events are free. */
KMETER_EXPORT("kmeter_on_event") int64_t kmeter_on_event(uint32_t in, uint32_t len) {
	const unsigned char *p = (const unsigned char *)(uintptr_t)in;
	const uint32_t *h = (const uint32_t *)p;
	if (len < 16 || h[0] != KMETER_BATCH_MAGIC || h[1] != 1)
		return KMETER_ERR_MALFORMED;
	kmeter_batch b;
	b.n = 1;
	b.n_attrs = h[2];
	b.strings_len = h[3];
	if ((uint64_t)16 + 48 + (uint64_t)b.n_attrs * 16 + b.strings_len != len)
		return KMETER_ERR_MALFORMED;
	b.recs = (const kmeter_record *)(p + 16);
	b.attrs = (const kmeter_attr *)(p + 16 + 48);
	b.strings = (const char *)(p + 16 + 48 + b.n_attrs * 16);
	if (b.recs[0].quantity != 1)
		return KMETER_ERR_MALFORMED;

	kmeter_heap_top = kmeter_input_end;
	uint32_t *out = (uint32_t *)kmeter_bump(8 + 24);
	if (!out)
		return KMETER_ERR_NOMEM;
	out[0] = KMETER_CHARGES_MAGIC;
	out[1] = 1;
	kmeter_charge *c = (kmeter_charge *)(out + 2);
	c->amount_micro = kmeter_meter_is(&b, 0, "tls_server_handshakes") ? 1 : 0;
	c->vendor_micro = 0;
	kmeter_set_currency(c, "USD");
	return ((int64_t)(uintptr_t)out << 32) | (8 + 24);
}
