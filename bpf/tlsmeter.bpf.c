// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tlsmeter counts TLS handshakes per cgroup: a ClientHello or a ServerHello
 * at the start of the first payload a TCP socket sends, on any port, IPv4
 * and IPv6. It runs at cgroup_skb/egress of the cgroup2 root, so it sees
 * every socket of every cgroup, and emits one ring buffer event per
 * handshake.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tls.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Counters per cgroup id. */
struct tls_counts {
	__u64 client;
	__u64 server;
};

/* Accounting: produced is every event the program tried to
 * emit, dropped every one the ring buffer had no room for, so a reader
 * that counts what it delivered can check delivered + dropped == produced. */
struct tls_stats {
	__u64 produced;
	__u64 dropped;
	/* Handshakes not counted: the handshakes map was full. */
	__u64 uncounted;
};

/* One handshake, as read from the ring buffer. */
struct tls_event {
	__u64 timestamp_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cgroup_id;
	__u32 pid; /* thread group id; 0 when not sent from the socket's task */
	char comm[16];
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 ip_version;
	__u8 pad[3];
	struct tls_hello hello;
};

/* Cgroups with counts; past this, handshakes of new cgroups are only
 * counted as uncounted.
 * Keep in sync with countsMaxEntries in internal/meter/tlsmeter/tlsmeter.go. */
#define COUNTS_MAX_ENTRIES 65536

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, COUNTS_MAX_ENTRIES);
	/* Entries are allocated when a cgroup is first seen, not all at load:
	 * sized for tens of thousands of tenants without pinning that much
	 * kernel memory on hosts with few. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct tls_counts);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} handshakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tls_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* Per socket that sent a hello: its handshake was counted. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sk_seen SEC(".maps");

/* Puts struct tls_event into BTF, for bpf2go -type (a ring buffer map has
 * no value type to carry it). */
const struct tls_event *unused_tls_event __attribute__((unused));

/* reserve_event counts the attempt and reserves room for one event, or
 * counts a drop and returns NULL. */
static __always_inline struct tls_event *reserve_event(void)
{
	__u32 zero = 0;
	struct tls_stats *st = bpf_map_lookup_elem(&stats, &zero);
	struct tls_event *e;

	/* Atomic even though per-CPU: a softirq may interrupt a program
	 * running in process context on the same CPU. */
	if (st)
		__sync_fetch_and_add(&st->produced, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e && st)
		__sync_fetch_and_add(&st->dropped, 1);
	return e;
}

SEC("cgroup_skb/egress")
int tls_egress(struct __sk_buff *skb)
{
	struct tls_flow flow;
	struct bpf_sock *sk;
	struct bpf_tcp_sock *tp;
	enum tls_hello_kind kind;
	struct tls_counts *c, zero_counts = {};
	struct tls_event *e;
	__u64 cgid, tgid;
	__u8 *seen;

	/* Cheapest checks first. The kernel counts the data segments a TCP
	 * socket sent (data_segs_out, retransmissions included) before the
	 * segment reaches this hook, so the first payload is the only one
	 * where the count equals this segment's own segment count: later
	 * data, a retransmission of the first payload, or the second
	 * ClientHello after a HelloRetryRequest all see a larger count. A
	 * socket that carried data before the program was attached never
	 * qualifies. Pure ACKs and SYNs have no payload and are skipped
	 * below. */
	sk = skb->sk;
	if (!sk)
		return 1;
	tp = bpf_tcp_sock(sk); /* NULL unless a full TCP socket */
	if (!tp || tp->data_segs_out != (skb->gso_segs > 1 ? skb->gso_segs : 1))
		return 1;
	if (tls_skb_tcp_flow(skb, 0, &flow) || flow.payload_len == 0)
		return 1;
	kind = tls_skb_hello_kind(skb, flow.payload_off, flow.payload_len);
	if (kind == TLS_HELLO_NONE)
		return 1;
	/* Count a socket's handshake once, whatever happens to the kernel's
	 * segment counter (a repaired or migrated socket starts again at 0).
	 * The mark is made only for sockets that sent a hello: creating
	 * socket storage costs microseconds, too much for every socket. */
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	seen = bpf_sk_storage_get(&sk_seen, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!seen || *seen)
		return 1;
	*seen = 1;

	cgid = bpf_skb_cgroup_id(skb);
	c = bpf_map_lookup_elem(&handshakes, &cgid);
	if (!c) {
		bpf_map_update_elem(&handshakes, &cgid, &zero_counts, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&handshakes, &cgid);
	}
	if (!c) {
		__u32 zero = 0;
		struct tls_stats *st = bpf_map_lookup_elem(&stats, &zero);

		if (st)
			__sync_fetch_and_add(&st->uncounted, 1);
	} else if (kind == TLS_HELLO_CLIENT)
		__sync_fetch_and_add(&c->client, 1);
	else
		__sync_fetch_and_add(&c->server, 1);

	e = reserve_event();
	if (!e)
		return 1;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->cgroup_id = cgid;
	/* Egress may run in softirq (a retransmit, a window opening), where
	 * the current task is unrelated: trust it only when it belongs to
	 * the socket's cgroup. */
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid && bpf_get_current_cgroup_id() == cgid) {
		e->pid = tgid;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	} else {
		e->pid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}
	__builtin_memcpy(e->saddr, flow.saddr, 16);
	__builtin_memcpy(e->daddr, flow.daddr, 16);
	e->sport = flow.sport;
	e->dport = flow.dport;
	e->ip_version = flow.ip_version;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	__builtin_memset(e->hello.pad, 0, sizeof(e->hello.pad));
	tls_skb_parse_hello(skb, flow.payload_off, flow.payload_len, kind, &e->hello);
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/* Benchmark producer, never attached: run with BPF_PROG_TEST_RUN, it emits
 * count events through the same reserve/submit path and record type, so
 * the Go reader can be measured at rates real handshakes cannot reach.
 * The meter never loads it. */
struct bench_args {
	__u32 count;
	__u32 emitted;
};

static long bench_emit_one(__u64 i, void *ctx)
{
	struct bench_args *a = ctx;
	struct tls_event *e = reserve_event();

	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->timestamp_ns = bpf_ktime_get_ns();
	e->cgroup_id = 1;
	e->ip_version = 4;
	e->saddr[0] = 127;
	e->saddr[3] = 1;
	e->daddr[0] = 127;
	e->daddr[3] = 1;
	e->sport = (__u16)i;
	e->dport = 8443;
	e->hello.kind = TLS_HELLO_CLIENT;
	e->hello.version = 0x0304;
	e->hello.sni_len = 11;
	__builtin_memcpy(e->hello.sni, "example.com", 12);
	/* One wakeup per batch instead of one per event. */
	bpf_ringbuf_submit(e, i + 1 == a->count ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	a->emitted++;
	return 0;
}

SEC("syscall")
int tls_bench_emit(struct bench_args *args)
{
	struct bench_args a = {.count = args->count};

	bpf_loop(a.count, bench_emit_one, &a, 0);
	args->emitted = a.emitted;
	return 0;
}

/* Parser test harness, never attached: run with BPF_PROG_TEST_RUN on a
 * crafted Ethernet frame, it stores what bpf/include/tls.h finds in
 * parse_out, so Go tests can check the parser byte by byte. The loader
 * leaves it out of the meter. */
struct parse_result {
	struct tls_flow flow;
	struct tls_hello hello;
	__s32 flow_ret;
	__s32 parse_ret;
	__u32 kind;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct parse_result);
} parse_out SEC(".maps");

SEC("tc")
int tls_parse_test(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct parse_result *res = bpf_map_lookup_elem(&parse_out, &zero);

	if (!res)
		return 0;
	__builtin_memset(res, 0, sizeof(*res));
	res->flow_ret = tls_skb_tcp_flow(skb, 14 /* ETH_HLEN */, &res->flow);
	if (res->flow_ret)
		return 0;
	res->kind = tls_skb_hello_kind(skb, res->flow.payload_off, res->flow.payload_len);
	if (res->kind != TLS_HELLO_NONE)
		res->parse_ret = tls_skb_parse_hello(skb, res->flow.payload_off, res->flow.payload_len,
						     res->kind, &res->hello);
	return 0;
}

/* Retransmission test harness, never attached by the meter: on tc egress
 * of lo it drops every other TLS hello transmission to or from
 * test_drop_port (on a quiet connection: each hello's first transmission,
 * then lets its retransmission pass), after the meter has seen it
 * (cgroup_skb egress runs before tc egress), so TCP must retransmit. */
volatile const __u16 test_drop_port = 0;
__u64 test_hellos = 0;
__u64 test_drops = 0;

SEC("tc")
int tls_test_drop(struct __sk_buff *skb)
{
	struct tls_flow flow;

	if (tls_skb_tcp_flow(skb, 14 /* ETH_HLEN */, &flow))
		return 0; /* TC_ACT_OK */
	if (flow.sport != test_drop_port && flow.dport != test_drop_port)
		return 0;
	if (tls_skb_hello_kind(skb, flow.payload_off, flow.payload_len) == TLS_HELLO_NONE)
		return 0;
	if (__sync_fetch_and_add(&test_hellos, 1) % 2)
		return 0;
	__sync_fetch_and_add(&test_drops, 1);
	return 2; /* TC_ACT_SHOT */
}
