// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * syscalls: counts every syscall entry per cgroup and per syscall number.
 *
 * Two programs, one per hook; the loader loads only the one it attaches:
 * tp_btf/sys_enter where the kernel has BTF (cheapest: no tracefs, no perf
 * event), the classic tracepoint raw_syscalls/sys_enter otherwise.
 */
#include "kmeter.h"

/* Keep in sync with MaxEntries in internal/meter/syscalls/syscalls.go. */
#define SYSCALLS_MAX_ENTRIES 262144

/* {cgroup id, syscall nr} -> count, per CPU. */
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

/* Syscalls not counted in sys_counts because it was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sys_overflow SEC(".maps");

static __always_inline void count_syscall(long nr)
{
	struct kmeter_key key = {
		.cgroup_id = bpf_get_current_cgroup_id(),
		.kind = (__u32)nr,
	};

	kmeter_add(&sys_counts, &key, 1, &sys_overflow, 0, false);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(kmeter_sys_btf, struct pt_regs *regs, long id)
{
	count_syscall(id);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int kmeter_sys_tp(struct trace_event_raw_sys_enter *ctx)
{
	count_syscall(ctx->id);
	return 0;
}

KMETER_LICENSE;
