/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * kmeter.h: small helpers shared by every kmeter BPF program.
 *
 * Counters live in one per-CPU hash per meter, keyed by struct kmeter_key
 * ({cgroup id, kind}), so the hot path never touches a cache line shared
 * with another CPU. User space sums the per-CPU slots when it reads.
 */
#ifndef KMETER_H
#define KMETER_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/* Helpers such as bpf_probe_read_kernel need a GPL-compatible licence. */
#define KMETER_LICENSE char __license[] SEC("license") = "Dual MIT/GPL"

#ifndef EEXIST
#define EEXIST 17
#endif

/*
 * kmeter_key identifies one counter: a cgroup (the cgroup v2 directory's
 * inode number, as bpf_get_current_cgroup_id() returns it) and a kind
 * whose meaning belongs to the meter (a syscall number, a direction...).
 */
struct kmeter_key {
	__u64 cgroup_id;
	__u32 kind;
	__u32 pad; /* always 0, so equal keys hash equally */
};

/*
 * kmeter_add adds delta to the per-CPU counter at key in counts, creating
 * it on first use with BPF_NOEXIST. When counts is full (or the insert
 * fails for any other reason) delta goes to slot overflow_slot of the
 * per-CPU array overflow instead: a full map never loses counts silently.
 *
 * atomic must be a compile-time constant. Per-CPU memory needs an atomic
 * add only where the same program can interrupt itself on one CPU
 * (process context interrupted by softirq, as in the network meters); a
 * syscall entry cannot, so the syscalls meter uses a plain add.
 */
static __always_inline void kmeter_add(void *counts, struct kmeter_key *key, __u64 delta,
				       void *overflow, __u32 overflow_slot, const bool atomic)
{
	__u64 *v = bpf_map_lookup_elem(counts, key);

	if (!v) {
		long err = bpf_map_update_elem(counts, key, &delta, BPF_NOEXIST);

		if (!err)
			return;
		/* Another CPU inserted the key between our lookup and insert. */
		if (err == -EEXIST)
			v = bpf_map_lookup_elem(counts, key);
		if (!v)
			v = bpf_map_lookup_elem(overflow, &overflow_slot);
		if (!v)
			return;
	}
	if (atomic)
		__sync_fetch_and_add(v, delta);
	else
		*v += delta;
}

#endif /* KMETER_H */
