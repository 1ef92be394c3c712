// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * sockstate: counts TCP opens per cgroup from socket state changes.
 *
 *   SYN_SENT -> ESTABLISHED  an active open (connect) completed
 *   SYN_RECV -> ESTABLISHED  a passive open (accept side) completed
 *
 * The cgroup comes from the socket (sk->sk_cgrp_data, set when the socket
 * was created, and copied from the listener to accepted sockets), never
 * from the current task: both transitions usually happen in softirq
 * context, where the current task is whatever the CPU was running.
 */
#include "kmeter.h"

/* Keep in sync with kindConnect/kindAccept in internal/meter/sockstate/sockstate.go. */
#define KIND_CONNECT 0
#define KIND_ACCEPT 1
/* Keep in sync with MaxEntries in internal/meter/sockstate/sockstate.go. */
#define SOCKSTATE_MAX_ENTRIES 65536

/* {cgroup id, KIND_*} -> count, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SOCKSTATE_MAX_ENTRIES);
	/* Entries are allocated when a cgroup is first seen, not all at load:
	 * sized for tens of thousands of tenants without pinning that much
	 * kernel memory on hosts with few. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct kmeter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_counts SEC(".maps");

/* Opens not counted in sock_counts because it was full, per KIND_*, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_overflow SEC(".maps");

static __always_inline void count_open(const struct sock *sk, int oldstate, int newstate)
{
	struct kmeter_key key = {};

	if (newstate != TCP_ESTABLISHED)
		return;
	if (oldstate == TCP_SYN_SENT)
		key.kind = KIND_CONNECT;
	else if (oldstate == TCP_SYN_RECV)
		key.kind = KIND_ACCEPT;
	else
		return;
	key.cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	/* Atomic: a process-context update can be interrupted by a softirq one. */
	kmeter_add(&sock_counts, &key, 1, &sock_overflow, key.kind, true);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kmeter_sock_btf, const struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	count_open(sk, oldstate, newstate);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int kmeter_sock_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	count_open(ctx->skaddr, ctx->oldstate, ctx->newstate);
	return 0;
}

KMETER_LICENSE;
