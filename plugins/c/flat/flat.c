/* flat: a flat per-unit price for every meter.
 * PRICE_MICRO micro-USD per unit (default 2); build with -DPRICE_MICRO=N
 * to make a different version. Build: see plugins/build.sh. */
#include "kmeter.h"

#ifndef PRICE_MICRO
#define PRICE_MICRO 2
#endif

static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out) {
	return kmeter_mul(b->recs[i].quantity, PRICE_MICRO, &out->amount_micro);
}
