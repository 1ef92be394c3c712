/* tls: the serverless payment gateway scenario, 0.01 USD per 10,000 TLS
 * server handshakes: 10,000 micro-USD / 10,000 = exactly 1 micro-USD per
 * handshake, so no rounding happens. Other meters are free. */
#include "kmeter.h"

static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out) {
	if (!kmeter_meter_is(b, i, "tls_server_handshakes"))
		return KMETER_OK;
	return kmeter_mul(b->recs[i].quantity, 1, &out->amount_micro);
}
