// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * syscalls: counts every syscall entry per cgroup and per syscall number.
 *
 * Two ways to count, each on two hooks; the loader loads only what it
 * attaches:
 *
 * - cgroup storage (kernel 6.2+, preferred): every cgroup v2 cgroup gets
 *   one struct sys_nrs (a counter per syscall number) in BPF cgroup local
 *   storage, created on its first syscall. The hot path is one storage
 *   lookup (a per-cgroup cache slot, no hashing) and one atomic add.
 *   Storage has no keys to iterate, so user space reads it through the
 *   cgroup iterator kmeter_cgs_walk, which writes every live cgroup's
 *   used counters as records into sys_walk, an array user space maps;
 *   kmeter_cgs_rmdir copies a cgroup's final counters into sys_totals
 *   when it is removed, before its storage is freed.
 * - per-CPU hash (fallback, older kernels): {cgroup id, syscall nr} ->
 *   count in sys_counts, incremented in place. The storage path counts
 *   here too when a cgroup's storage cannot be created.
 *
 * Each way runs on tp_btf/sys_enter where the kernel has BTF (cheapest:
 * no tracefs, no perf event) or on the classic tracepoint
 * raw_syscalls/sys_enter. Readers add sys_totals and sys_counts, so
 * counts survive a switch between the two ways (an upgrade from a kmeter
 * that only had the hash keeps the hash's counts).
 */
#include "kmeter.h"

/* Keep in sync with MaxEntries in internal/meter/syscalls/syscalls.go. */
#define SYSCALLS_MAX_ENTRIES 262144

/*
 * Syscall numbers 0..SYS_NR_SLOTS-1 get their own counter (x86-64 and
 * ia32 numbers end below 470 in 6.18); anything else (x32's bit 30, the
 * -1 of a syscall skipped by ptrace) goes to the last slot and is
 * reported as SYS_NR_OTHER. The counters and the touched bitmap
 * (SYS_NR_SLOTS + 1 + 8 words) keep one storage element (128-byte header
 * + value + allocator header) within a 4 KiB slab; store_totals needs
 * SYS_NR_SLOTS to be a multiple of 8.
 * Keep in sync with NumberSlots and OtherNumber in
 * internal/meter/syscalls/syscalls.go.
 */
#define SYS_NR_SLOTS 472
#define SYS_NR_OTHER 0xffffffffu
#define SYS_TOUCHED_WORDS ((SYS_NR_SLOTS + 1 + 63) / 64)

/*
 * One cgroup's counters, in its cgroup local storage. touched has bit
 * slot set once by_nr[slot] has counted: a cgroup uses a handful of the
 * numbers, and the walk reads its 64-byte bitmap instead of 3.8 KiB of
 * mostly-zero counters (10,000 cgroups: 38 MiB of memory per read). It
 * comes first, next to the storage header the walk reads anyway, and
 * before the low (most used) numbers' counters: a walk's cache misses
 * are most of its time.
 */
struct sys_nrs {
	__u64 touched[SYS_TOUCHED_WORDS];
	__u64 by_nr[SYS_NR_SLOTS + 1];
};

/*
 * A walk record, written by kmeter_cgs_walk only for a cgroup some of
 * whose counters did not fit in sys_walk: dropped syscalls of cgroup_id
 * are then not visible to the reader.
 */
struct sys_dropped {
	__u64 cgroup_id;
	__u64 dropped;
};

/* Puts struct sys_dropped in the BTF, for bpf2go -type. */
const struct sys_dropped *unused_sys_dropped __attribute__((unused));

/* One live cgroup's count of one syscall number, as a walk saw it. */
struct sys_rec {
	__u64 cgroup_id;
	__u32 nr;
	__u32 pad;
	__u64 count;
};

/* {cgroup id, syscall nr} -> count, per CPU: the hash hot path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SYSCALLS_MAX_ENTRIES);
	/* Entries are allocated when a cgroup is first seen, not all at load:
	 * sized for tens of thousands of tenants without pinning that much
	 * kernel memory on hosts with few. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kmeter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sys_counts SEC(".maps");

/*
 * Syscalls attributed to no cgroup, per CPU: sys_counts was full, or a
 * removed cgroup's counters did not fit in sys_totals.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sys_overflow SEC(".maps");

/* Live counters of each cgroup: the cgroup-storage hot path. */
struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sys_nrs);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sys_store SEC(".maps");

/*
 * {cgroup id, syscall nr} -> the cgroup's count as last seen in its
 * storage: by the latest walk for a live cgroup, final for a removed one.
 * Both writers run under cgroup_mutex, so they never race, and a value
 * only grows.
 *
 * Preallocated (about 16 MiB): kmeter_cgs_rmdir runs with interrupts off
 * and inserts a removed cgroup's 30 to 60 keys at once, which drains the
 * per-CPU cache an on-demand hash allocates from (it refills from an
 * interrupt); a test lost most removed cgroups' counts that way.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SYSCALLS_MAX_ENTRIES);
	__type(key, struct kmeter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sys_totals SEC(".maps");

/*
 * What the latest walk saw: records 0 to n-1 and, at n, a record with
 * cgroup id 0 ending them. User space maps it (BPF_F_MMAPABLE) and reads
 * it in place, where copying the counts into sys_totals and reading them
 * back in batches cost a hash update and a copy per counter. Not pinned:
 * each loaded walk (each agent) has its own. One slot more than records,
 * for the end mark. Keep in sync with walkRecords in
 * internal/meter/syscalls/syscalls.go.
 */
#define SYS_WALK_RECS SYSCALLS_MAX_ENTRIES
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SYS_WALK_RECS + 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sys_rec);
} sys_walk SEC(".maps");

/* Records written so far by the running walk. */
__u32 walk_len;

static __always_inline void add_overflow(__u64 n)
{
	__u32 slot = 0;
	__u64 *v = bpf_map_lookup_elem(&sys_overflow, &slot);

	if (v)
		__sync_fetch_and_add(v, n); /* rare: no need to save the atomic */
}

static __always_inline void count_hash(long nr)
{
	struct kmeter_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.kind = (__u32)nr,
	};

	kmeter_add(&sys_counts, &key, 1, &sys_overflow, 0, false);
}

static __always_inline void count_storage(long nr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct sys_nrs *s;
	__u32 slot = (unsigned long)nr < SYS_NR_SLOTS ? (__u32)nr : SYS_NR_SLOTS;

	s = bpf_cgrp_storage_get(&sys_store, task->cgroups->dfl_cgrp, 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		/* The storage could not be created now (its allocator's per-CPU
		 * cache runs dry when many new cgroups start at once) or its
		 * lock was busy on this CPU: count in the hash, which readers
		 * add, rather than lose the syscall. */
		count_hash(nr);
		return;
	}
	/* The bit goes first, so a walk that sees a count sees its bit
	 * (or finds it on its next read). Tested before the atomic OR: set
	 * after a cgroup's first few syscalls, it is only read after that. */
	if (!(s->touched[slot / 64] & (1ULL << (slot % 64))))
		__sync_fetch_and_or(&s->touched[slot / 64], 1ULL << (slot % 64));
	/* Atomic: threads of one cgroup on other CPUs add to the same
	 * counters. */
	__sync_fetch_and_add(&s->by_nr[slot], 1);
}

/*
 * store_totals copies the non-zero counters of s (cgroup id) into
 * sys_totals and returns the sum of those that did not fit.
 */
static __always_inline __u64 store_total(struct kmeter_key *key, __u64 n)
{
	__u64 *v;

	if (!n)
		return 0;
	v = bpf_map_lookup_elem(&sys_totals, key);
	if (v) {
		if (*v != n) /* most cgroups did not move: keep their lines clean */
			*v = n;
		return 0;
	}
	return bpf_map_update_elem(&sys_totals, key, &n, BPF_NOEXIST) ? n : 0;
}

static __always_inline __u64 store_totals(__u64 id, struct sys_nrs *s)
{
	struct kmeter_key key = { .cgroup_id = id };
	__u64 dropped = 0;

	/* Most of a cgroup's counters were never used: skip them 8 at a
	 * time by their touched bits, so a walk over thousands of cgroups
	 * reads their bitmaps, not their zeros. */
	for (__u32 g = 0; g < SYS_NR_SLOTS; g += 8) {
		__u64 *c = &s->by_nr[g];

		if (!((s->touched[g / 64] >> (g % 64)) & 0xff))
			continue;
#pragma unroll
		for (__u32 j = 0; j < 8; j++) {
			key.kind = g + j;
			dropped += store_total(&key, c[j]);
		}
	}
	key.kind = SYS_NR_OTHER;
	return dropped + store_total(&key, s->by_nr[SYS_NR_SLOTS]);
}

/* emit_rec appends one record to sys_walk; it returns n if it did not fit. */
static __always_inline __u64 emit_rec(__u64 id, __u32 nr, __u64 n)
{
	__u32 i = walk_len;
	struct sys_rec *r;

	if (!n)
		return 0;
	if (i >= SYS_WALK_RECS)
		return n;
	r = bpf_map_lookup_elem(&sys_walk, &i);
	if (!r)
		return n;
	r->cgroup_id = id;
	r->nr = nr;
	r->count = n;
	walk_len = i + 1;
	return 0;
}

/* end_recs marks the end of the records written so far. */
static __always_inline void end_recs(void)
{
	__u32 i = walk_len;
	struct sys_rec *r = bpf_map_lookup_elem(&sys_walk, &i);

	if (r)
		r->cgroup_id = 0;
}

/*
 * emit_recs writes a record for each used counter of s (cgroup id) and
 * returns the sum of those that did not fit.
 */
static __always_inline __u64 emit_recs(__u64 id, struct sys_nrs *s)
{
	__u64 dropped = 0;

	/*
	 * Walk the touched bits, 64 then 8 at a time, in loops left rolled:
	 * half the instructions of the unrolled walk, and a 10,000-cgroup
	 * walk 0.87 instead of 0.98 us per cgroup (medians of 3, noisy).
	 */
#pragma clang loop unroll(disable)
	for (__u32 w = 0; w < SYS_NR_SLOTS / 64 + 1; w++) {
		__u64 bits = s->touched[w];

		if (!bits)
			continue;
#pragma clang loop unroll(disable)
		for (__u32 b = 0; b < 64; b += 8) {
			if (!((bits >> b) & 0xff))
				continue;
#pragma clang loop unroll(disable)
			for (__u32 j = b; j < b + 8; j++) {
				__u32 slot = w * 64 + j;

				if ((bits >> j) & 1 && slot < SYS_NR_SLOTS)
					dropped += emit_rec(id, slot, s->by_nr[slot]);
			}
		}
	}
	if (s->touched[SYS_NR_SLOTS / 64] & (1ULL << (SYS_NR_SLOTS % 64)))
		dropped += emit_rec(id, SYS_NR_OTHER, s->by_nr[SYS_NR_SLOTS]);
	end_recs();
	return dropped;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(kmeter_cgs_btf, struct pt_regs *regs, long id)
{
	count_storage(id);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int kmeter_cgs_tp(struct trace_event_raw_sys_enter *ctx)
{
	count_storage(ctx->id);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(kmeter_sys_btf, struct pt_regs *regs, long id)
{
	count_hash(id);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int kmeter_sys_tp(struct trace_event_raw_sys_enter *ctx)
{
	count_hash(ctx->id);
	return 0;
}

/*
 * A removed cgroup's storage is freed with it: keep its final counters.
 * No task is left in it, so they no longer change.
 */
SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(kmeter_cgs_rmdir, struct cgroup *cgrp, const char *path)
{
	struct sys_nrs *s = bpf_cgrp_storage_get(&sys_store, cgrp, 0, 0);

	if (s)
		add_overflow(store_totals(cgrp->kn->id, s));
	return 0;
}

/*
 * Read side: write every live cgroup's counters into sys_walk. The walk
 * runs under cgroup_mutex, like kmeter_cgs_rmdir, and skips dead
 * cgroups: a cgroup is in the walk or (removed before it) in sys_totals,
 * or (removed after it) in both, which the reader tells by its id.
 */
SEC("iter/cgroup")
int kmeter_cgs_walk(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	struct sys_dropped rec;
	struct sys_nrs *s;

	if (!cgrp)
		return 0;
	if (ctx->meta->seq_num == 0) {
		/* The first cgroup of a walk (the root): start afresh. */
		walk_len = 0;
		end_recs();
	}
	s = bpf_cgrp_storage_get(&sys_store, cgrp, 0, 0);
	if (!s)
		return 0;
	rec.cgroup_id = cgrp->kn->id;
	rec.dropped = emit_recs(rec.cgroup_id, s);
	if (rec.dropped)
		bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

KMETER_LICENSE;
