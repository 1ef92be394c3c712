/*
 * kmeter.h - C guest SDK for kmeter pricing plugins, ABI v1.
 * See docs/plugin-abi.md. Freestanding: needs no libc.
 *
 * Usage: in exactly one .c file,
 *
 *   #include "kmeter.h"
 *   static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out) {
 *       out->amount_micro = ...;   // integer micro-units, never floats
 *       kmeter_set_currency(out, "USD");
 *       return KMETER_OK;          // or a negative KMETER_ERR_* code to fail the batch
 *   }
 *
 * Build (see plugins/build.sh):
 *   clang --target=wasm32 -O2 -nostdlib -fno-builtin -I sdk/c -Wl,--no-entry \
 *     -Wl,--export=kmeter_abi_version -Wl,--export=kmeter_alloc -Wl,--export=kmeter_price \
 *     -Wl,-z,stack-size=8192 -Wl,--initial-memory=65536 -o plugin.wasm plugin.c
 */
#ifndef KMETER_H
#define KMETER_H

#include <stdint.h>
#include <stddef.h>

/* Keep in sync with Version in sdk/go/abi/abi.go. */
#define KMETER_ABI_VERSION 1

/* Wire constants. Keep in sync with sdk/go/abi/abi.go. */
#define KMETER_BATCH_MAGIC 0x31424d4bu   /* "KMB1" */
#define KMETER_CHARGES_MAGIC 0x31434d4bu /* "KMC1" */

/* Error codes a plugin returns from kmeter_price_record; the host fails
 * the whole batch (no partial charges) and reports the code. */
#define KMETER_OK 0
#define KMETER_ERR_MALFORMED (-1)
#define KMETER_ERR_REFUSED (-2)
#define KMETER_ERR_NOMEM (-3)
#define KMETER_ERR_OVERFLOW (-4)

#define KMETER_EXPORT(name) __attribute__((export_name(name)))
#define KMETER_IMPORT(name) __attribute__((import_module("kmeter"), import_name(name)))

/* One record, 48 bytes, exactly as the host writes it. */
typedef struct {
	uint32_t tenant_off, tenant_len;
	uint32_t meter_off, meter_len;
	uint64_t quantity;
	int64_t start_unix_nano, end_unix_nano;
	uint32_t attr_first, attr_count;
} kmeter_record;

typedef struct {
	uint32_t key_off, key_len, val_off, val_len;
} kmeter_attr;

/* One charge, 24 bytes, exactly as the host reads it. */
typedef struct {
	int64_t amount_micro;
	int64_t vendor_micro; /* 0 <= vendor_micro <= amount_micro */
	char currency[8];     /* three capital letters, NUL padded */
} kmeter_charge;

typedef struct {
	uint32_t n, n_attrs;
	const kmeter_record *recs;
	const kmeter_attr *attrs;
	const char *strings;
	uint32_t strings_len;
} kmeter_batch;

/* Host imports (module "kmeter"); declared here, linked only if used. */
/* log writes a message to the host's log, tagged with the plugin sha256. */
KMETER_IMPORT("log") void kmeter_log(int32_t level, const char *msg, uint32_t len);
/* now returns the end of the batch's latest window (unix ns): a clock
 * that keeps pricing deterministic. */
KMETER_IMPORT("now") int64_t kmeter_now(void);

static inline void kmeter_set_currency(kmeter_charge *c, const char *code) {
	for (int i = 0; i < 8; i++)
		c->currency[i] = 0;
	for (int i = 0; i < 3 && code[i]; i++)
		c->currency[i] = code[i];
}

/* kmeter_streq reports whether the string at off/len equals s. */
static inline int kmeter_streq(const kmeter_batch *b, uint32_t off, uint32_t len, const char *s) {
	const char *p = b->strings + off;
	uint32_t i = 0;
	for (; i < len; i++)
		if (s[i] == 0 || s[i] != p[i])
			return 0;
	return s[i] == 0;
}

static inline int kmeter_meter_is(const kmeter_batch *b, uint32_t i, const char *s) {
	return kmeter_streq(b, b->recs[i].meter_off, b->recs[i].meter_len, s);
}

/* kmeter_attr_is reports whether record i has attribute key equal to val. */
static inline int kmeter_attr_is(const kmeter_batch *b, uint32_t i, const char *key, const char *val) {
	const kmeter_record *r = &b->recs[i];
	for (uint32_t j = 0; j < r->attr_count; j++) {
		const kmeter_attr *a = &b->attrs[r->attr_first + j];
		if (kmeter_streq(b, a->key_off, a->key_len, key))
			return kmeter_streq(b, a->val_off, a->val_len, val);
	}
	return 0;
}

/* kmeter_mul multiplies quantity by a non-negative per-unit price,
 * failing on int64 overflow rather than wrapping money. */
static inline int kmeter_mul(uint64_t q, uint64_t unit, int64_t *out) {
	if (unit != 0 && q > (uint64_t)INT64_MAX / unit)
		return KMETER_ERR_OVERFLOW;
	*out = (int64_t)(q * unit);
	return KMETER_OK;
}

/* kmeter_split sets vendor_micro to floor(amount * num / den): the vendor
 * share rounds down and the platform keeps the remainder, so the two
 * always add up to the amount exactly. */
static inline void kmeter_split(kmeter_charge *c, int64_t num, int64_t den) {
	int64_t a = c->amount_micro;
	/* (a/den)*num + (a%den)*num/den avoids overflowing a*num. */
	c->vendor_micro = (a / den) * num + (a % den) * num / den;
}

/* Provided by the plugin. */
static int kmeter_price_record(const kmeter_batch *b, uint32_t i, kmeter_charge *out);

/* A bump allocator over linear memory. kmeter_alloc frees everything and
 * reserves the input buffer; the host may write several later batches
 * into that same buffer without calling kmeter_alloc again (ABI v1,
 * "Memory"), so kmeter_price frees only what lies after it. */
extern unsigned char __heap_base;
static uintptr_t kmeter_heap_top;
static uintptr_t kmeter_input_end;

static void *kmeter_bump(uint32_t size) {
	uintptr_t p = (kmeter_heap_top + 7) & ~(uintptr_t)7;
	uintptr_t end = p + size;
	uintptr_t have = __builtin_wasm_memory_size(0) * 65536u;
	if (end < p)
		return 0;
	if (end > have) {
		uintptr_t pages = (end - have + 65535u) / 65536u;
		if (__builtin_wasm_memory_grow(0, pages) == (uintptr_t)-1)
			return 0;
	}
	kmeter_heap_top = end;
	return (void *)p;
}

/* kmeter_price_one starts record i's charge at zero USD, one 8-byte
 * store for the currency rather than eight byte stores, and prices it. */
static inline int kmeter_price_one(const kmeter_batch *b, uint32_t i, kmeter_charge *c) {
	static const uint64_t usd = 'U' | 'S' << 8 | 'D' << 16;
	c->amount_micro = 0;
	c->vendor_micro = 0;
	__builtin_memcpy(c->currency, &usd, 8);
	return kmeter_price_record(b, i, c);
}

KMETER_EXPORT("kmeter_abi_version") int32_t kmeter_abi_version(void) { return KMETER_ABI_VERSION; }

KMETER_EXPORT("kmeter_alloc") uint32_t kmeter_alloc(uint32_t size) {
	kmeter_heap_top = (uintptr_t)&__heap_base;
	void *p = kmeter_bump(size);
	kmeter_input_end = kmeter_heap_top;
	return (uint32_t)(uintptr_t)p;
}

KMETER_EXPORT("kmeter_price") int64_t kmeter_price(uint32_t in, uint32_t len) {
	const unsigned char *p = (const unsigned char *)(uintptr_t)in;
	if (len < 16)
		return KMETER_ERR_MALFORMED;
	const uint32_t *h = (const uint32_t *)p;
	if (h[0] != KMETER_BATCH_MAGIC)
		return KMETER_ERR_MALFORMED;
	kmeter_batch b;
	b.n = h[1];
	b.n_attrs = h[2];
	b.strings_len = h[3];
	if ((uint64_t)16 + (uint64_t)b.n * 48 + (uint64_t)b.n_attrs * 16 + b.strings_len != len)
		return KMETER_ERR_MALFORMED;
	b.recs = (const kmeter_record *)(p + 16);
	b.attrs = (const kmeter_attr *)(p + 16 + b.n * 48);
	b.strings = (const char *)(p + 16 + b.n * 48 + b.n_attrs * 16);

	kmeter_heap_top = kmeter_input_end;
	uint32_t out_len = 8 + b.n * 24;
	uint32_t *out = (uint32_t *)kmeter_bump(out_len);
	if (!out)
		return KMETER_ERR_NOMEM;
	out[0] = KMETER_CHARGES_MAGIC;
	out[1] = b.n;
	kmeter_charge *cs = (kmeter_charge *)(out + 2);
	/* The host checks its deadline on every loop iteration, and under
	 * wazero (WithCloseOnContextDone) each check is an exit from compiled
	 * code to Go costing ~70 ns, several times the price of a record. So
	 * records are priced 64 per iteration, then 8, then 1: at most
	 * n/64 + 14 checks per batch (16 for 1024 records). */
	uint32_t i = 0;
	for (; b.n - i >= 64; i += 64) {
#pragma clang loop unroll(full)
		for (uint32_t j = 0; j < 64; j++) {
			int rc = kmeter_price_one(&b, i + j, &cs[i + j]);
			if (rc != KMETER_OK)
				return rc;
		}
	}
	for (; b.n - i >= 8; i += 8) {
#pragma clang loop unroll(full)
		for (uint32_t j = 0; j < 8; j++) {
			int rc = kmeter_price_one(&b, i + j, &cs[i + j]);
			if (rc != KMETER_OK)
				return rc;
		}
	}
	for (; i < b.n; i++) {
		int rc = kmeter_price_one(&b, i, &cs[i]);
		if (rc != KMETER_OK)
			return rc;
	}
	return ((int64_t)(uintptr_t)out << 32) | out_len;
}

#endif /* KMETER_H */
