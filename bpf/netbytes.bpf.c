// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * netbytes: counts network bytes sent and received per cgroup.
 *
 * Attached at the root of the cgroup v2 hierarchy, the programs run for
 * every socket of every cgroup below it. skb->len at these hooks starts at
 * the network header: it counts IP and transport headers plus payload.
 * The cgroup is the socket's (bpf_skb_cgroup_id), which is right even when
 * packets are received in softirq context. Packets are always allowed.
 */
#include "kmeter.h"

/* Keep in sync with kindTx/kindRx in internal/meter/netbytes/netbytes.go. */
#define KIND_TX 0
#define KIND_RX 1
/* Keep in sync with MaxEntries in internal/meter/netbytes/netbytes.go. */
#define NETBYTES_MAX_ENTRIES 65536

/* {cgroup id, KIND_*} -> bytes, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NETBYTES_MAX_ENTRIES);
	/* Entries are allocated when a cgroup is first seen, not all at load:
	 * sized for tens of thousands of tenants without pinning that much
	 * kernel memory on hosts with few. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kmeter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} net_counts SEC(".maps");

/* Bytes not counted in net_counts because it was full, per KIND_*, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} net_overflow SEC(".maps");

static __always_inline int count_bytes(struct __sk_buff *skb, __u32 kind)
{
	struct kmeter_key key = {
		.cgroup_id = bpf_skb_cgroup_id(skb),
		.kind = kind,
	};

	/* Atomic: egress in process context can be interrupted by softirq. */
	kmeter_add(&net_counts, &key, skb->len, &net_overflow, kind, true);
	return 1; /* allow */
}

SEC("cgroup_skb/egress")
int kmeter_net_egress(struct __sk_buff *skb)
{
	return count_bytes(skb, KIND_TX);
}

SEC("cgroup_skb/ingress")
int kmeter_net_ingress(struct __sk_buff *skb)
{
	return count_bytes(skb, KIND_RX);
}

KMETER_LICENSE;
