/* split: a marketplace plugin whose revenue is split platform:vendor 3:7.
 * Every meter costs 13 micro-USD per unit; VendorMicro is
 * floor(amount * 7 / 10) and the platform keeps the rest, so the two
 * shares always sum to the amount and rounding favours the platform by
 * less than one micro-unit per charge. */
#include "kmeter.h"

static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out) {
	int rc = kmeter_mul(b->recs[i].quantity, 13, &out->amount_micro);
	if (rc != KMETER_OK)
		return rc;
	kmeter_split(out, 7, 10);
	return KMETER_OK;
}
