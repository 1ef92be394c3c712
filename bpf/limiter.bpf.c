// SPDX-License-Identifier: GPL-2.0
//
// limiter enforces per-tenant limits in the kernel: token buckets for
// egress and ingress bytes (cgroup_skb), new TCP connections
// (cgroup/connect4, cgroup/connect6) and TLS handshakes, plus network
// slices matched by destination. User space (internal/enforce) writes the
// limits; the programs never need reloading to change them.
//
// A tenant is a cgroup subtree. The programs walk the ancestors of the
// packet's or task's cgroup, from the top down, and the first ancestor
// listed in `tenants` names the tenant. New child cgroups are therefore
// covered the moment they are created.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tls.h"

char LICENSE[] SEC("license") = "GPL";

// Cgroup levels walked to find a tenant; a tenant root deeper than this is
// never found. Documented in docs/enforcement.md ("at most 16 levels").
#define MAX_DEPTH 16
// Keep in sync with slicePorts in internal/enforce/slices.go.
#define SLICE_PORTS 8
#define NANO 1000000000ULL

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define SOL_SOCKET_ 1
#define SO_MAX_PACING_RATE_ 47

// Bucket kinds. Keep in sync with the kind constants in
// internal/enforce/enforce.go.
enum kind {
	KIND_EGRESS = 0,
	KIND_INGRESS = 1,
	KIND_CONNECT = 2,
	KIND_TLS = 3,
	KIND_SLICE_EGRESS = 4,
	NUM_LIMIT_KINDS = 4,
};

// rate is one limit. Tokens are counted in nano-tokens (1e-9 of a byte or
// of an event), so refill is elapsed_ns * rate exactly, with no rounding.
struct rate {
	__u64 rate;       // tokens per second; 0 with on=1 denies everything
	__u64 burst_n;    // bucket size in nano-tokens
	__u64 max_idle_ns; // idle time after which the bucket is full: burst_n / rate
	__u64 batch;      // bytes a subtree root pre-takes into its credit; 0 = none
	__u32 on;         // 1 when this kind is limited
	__u32 _pad;
};

// tenant_limits are the effective limits of one tenant (configured limit
// with the money policy applied by user space), stored under each of the
// tenant's subtree roots, so that finding the tenant finds its limits.
struct tenant_limits {
	__u64 key; // tenant key: keys buckets and counters across all roots
	struct rate k[NUM_LIMIT_KINDS];
	__u32 sliced; // 1 when slice rules name this tenant
	__u32 _pad;
	// What user space configured, before the money policy; the programs
	// never read it, it lets a restarted agent read its state back.
	__u64 cfg_rate[NUM_LIMIT_KINDS];
	__u64 cfg_burst[NUM_LIMIT_KINDS];
	__u64 policy_floor;
	__u32 policy; // Keep in sync with policyCode in internal/enforce/enforce.go.
	__u32 _pad2;
	// Bytes this subtree root already took from the tenant's egress and
	// ingress buckets and may still send or receive: a packet covered by
	// its credit passes with one atomic add, without the bucket's lookup,
	// clock read and lock. User space writes 0 with every limit change,
	// so a new limit applies to the next packet.
	__s64 credit[2];
};

// settings are switches for the whole host.
struct host_settings {
	__u32 wildcard_slices; // 1 when slice rules for every tenant exist
	__u32 _pad;
};

struct bucket_key {
	__u64 id;   // tenant key, or slice id for KIND_SLICE_EGRESS
	__u32 kind;
	__u32 _pad;
};

// bucket is the state of one token bucket. The spin lock makes refill,
// test and take one atomic step on every CPU: the step reads and writes two
// fields (tokens and last_ns), which atomic adds alone cannot keep
// consistent, and a CAS loop cannot be written without a bounded retry
// count that would have to fail open or closed under contention.
struct tbucket {
	struct bpf_spin_lock lock;
	__u32 _pad;
	__s64 tokens;    // nano-tokens; may go below zero after an oversize packet
	__u64 last_ns;   // bpf_ktime_get_coarse_ns of the last refill
	__u64 since_ns;  // when the bucket was created full
	__u64 passed;    // events (or bytes) let through or handed to a root's credit
	__u64 refilled_n; // nano-tokens added by refills, after the cap at burst
};

// Counter kinds. Keep in sync with the counter kinds in
// internal/enforce/collector.go.
enum counter {
	C_EGRESS_DROP = 0,
	C_INGRESS_DROP = 1,
	C_CONNECT_DENIED = 2,
	C_TLS_DROP = 3,
	C_SLICE_DROP = 4,
};

struct counter_key {
	__u64 id; // tenant key, or slice id for C_SLICE_DROP
	__u32 kind;
	__u32 _pad;
};

struct slice_key {
	__u32 prefixlen;
	__u8 tenant[8]; // tenant key in host order; all zero matches every tenant
	__u8 addr[16];  // IPv6, or IPv4 mapped into ::ffff:0:0/96
};

struct slice_port {
	__u16 lo;
	__u16 hi;
	__u32 slice; // 0 marks an unused entry
	__u32 limited; // 1 when the slice has an egress limit in slice_limits
};

struct slice_val {
	struct slice_port p[SLICE_PORTS];
};

struct slice_counts {
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 rx_bytes;
	__u64 rx_packets;
};

// tenants: cgroup id of a tenant subtree root -> the tenant's limits.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct tenant_limits);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tenants SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

// slice_limits: slice id -> egress limit of the slice.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slice_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bucket_key);
	__type(value, struct tbucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct counter_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct slice_key);
	__type(value, struct slice_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct slice_counts);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} slice_stats SEC(".maps");

// Handshake states of a TCP socket of a TLS-limited tenant.
enum hs_state {
	HS_UNSEEN = 0, // no payload sent yet
	HS_PASSED = 1, // first payload was no hello, or a hello within the rate
	HS_DENIED = 2, // first payload was a hello beyond the rate
};

// handshakes: per socket, whether its first payload was judged. A denied
// hello stays denied: its retransmissions are dropped too (without taking
// tokens or counting again), so the handshake fails once and is counted
// once, instead of passing on a later retransmission.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} handshakes SEC(".maps");

static __always_inline void count(__u64 id, __u32 kind)
{
	struct counter_key k = {.id = id, .kind = kind};
	__u64 one = 1, *v;

	v = bpf_map_lookup_elem(&counters, &k);
	if (v) {
		*v += 1; // this CPU's slot: no other CPU writes it
		return;
	}
	// A new per-CPU entry holds 1 on this CPU and 0 elsewhere. If another
	// CPU created it in between, NOEXIST fails and this CPU's slot is 0.
	if (!bpf_map_update_elem(&counters, &k, &one, BPF_NOEXIST))
		return;
	v = bpf_map_lookup_elem(&counters, &k);
	if (v)
		*v += 1;
}

// take_batch takes cost tokens (in whole units) from bucket (id, kind)
// limited by r and reports whether the event may pass. With credit, it
// also moves r->batch more tokens into *credit when the bucket holds them
// after this event, so that the next packets of that root pass on the
// credit alone; a bucket running low hands out nothing, and then every
// packet is judged here exactly as without credit.
static __always_inline int take_batch(__u64 id, __u32 kind, const struct rate *r, __u64 cost, __s64 *credit)
{
	struct bucket_key k = {.id = id, .kind = kind};
	struct tbucket *b;
	__u64 now, elapsed, cost_n, extra = 0;
	__s64 full;
	int ok = 0;

	if (r->rate == 0)
		return 0;
	// The coarse clock (one tick, 1-4 ms) costs a few ns where
	// bpf_ktime_get_ns costs about 25 ns in a VM; refill stays exact in
	// tick units, and bursts are at least 1 MiB or one event.
	now = bpf_ktime_get_coarse_ns();
	b = bpf_map_lookup_elem(&buckets, &k);
	if (!b) {
		struct tbucket nb = {};
		nb.tokens = r->burst_n;
		nb.last_ns = now;
		nb.since_ns = now;
		bpf_map_update_elem(&buckets, &k, &nb, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&buckets, &k);
		if (!b)
			return 1; // map full: fail open, user space sees it in stats
	}
	cost_n = cost * NANO;
	full = (__s64)r->burst_n;

	bpf_spin_lock(&b->lock);
	if (now > b->last_ns) {
		elapsed = now - b->last_ns;
		// elapsed * rate < burst_n here, and full - tokens stays below
		// 2^63 (debt is at most one packet), so nothing overflows even
		// with an 8 GiB burst.
		if (elapsed >= r->max_idle_ns || b->tokens >= full ||
		    elapsed * r->rate >= (__u64)(full - b->tokens)) {
			if (b->tokens < full)
				b->refilled_n += full - b->tokens;
			b->tokens = full;
		} else {
			b->tokens += (__s64)(elapsed * r->rate);
			b->refilled_n += elapsed * r->rate;
		}
		b->last_ns = now;
	}
	// A full bucket always lets one event through, even one larger than
	// the burst (a 64 KiB GSO packet against a small burst), and goes
	// into debt, so the long-run rate stays exact and nothing starves.
	if (b->tokens >= (__s64)cost_n || b->tokens == full) {
		// batch <= burst, so batch * NANO fits like burst_n does.
		if (credit && r->batch && b->tokens - (__s64)cost_n >= (__s64)(r->batch * NANO))
			extra = r->batch;
		b->tokens -= (__s64)(cost_n + extra * NANO);
		b->passed += cost + extra;
		ok = 1;
	}
	bpf_spin_unlock(&b->lock);
	if (extra)
		__sync_fetch_and_add(credit, (__s64)extra);
	return ok;
}

// take takes cost tokens from bucket (id, kind); see take_batch.
static __always_inline int take(__u64 id, __u32 kind, const struct rate *r, __u64 cost)
{
	return take_batch(id, kind, r, cost, 0);
}

// take_bytes takes cost bytes for a tenant's egress or ingress (kind), from
// the credit of the subtree root l when it covers them, else from the
// tenant's bucket. The credit is shared by all CPUs: a failed subtraction
// is given back, so credit is never spent twice, and a packet that found
// too little goes to the bucket.
static __always_inline int take_bytes(struct tenant_limits *l, __u32 kind, __u64 cost)
{
	__s64 *credit = &l->credit[kind & 1];

	if (*credit >= (__s64)cost) {
		if (__sync_fetch_and_add(credit, -(__s64)cost) >= (__s64)cost)
			return 1;
		__sync_fetch_and_add(credit, (__s64)cost);
	}
	return take_batch(l->key, kind, &l->k[kind], cost, credit);
}

static __always_inline struct tenant_limits *tenant_of_skb(struct __sk_buff *skb)
{
	struct tenant_limits *t;

	for (int lvl = 1; lvl <= MAX_DEPTH; lvl++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, lvl);
		if (!id)
			return 0;
		t = bpf_map_lookup_elem(&tenants, &id);
		if (t)
			return t;
	}
	return 0;
}

// tenant_of_current returns the limits of the current task's tenant and
// sets *root to the subtree root that named it.
static __always_inline struct tenant_limits *tenant_of_current(__u64 *root)
{
	struct tenant_limits *t;

	for (int lvl = 1; lvl <= MAX_DEPTH; lvl++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(lvl);
		if (!id)
			return 0;
		t = bpf_map_lookup_elem(&tenants, &id);
		if (t) {
			*root = id;
			return t;
		}
	}
	return 0;
}

struct flow {
	__u8 addr[16]; // the remote address
	__u16 port;    // the remote port, host order; 0 when not TCP/UDP
	__u8 proto;
	__u8 ok;
	__u32 l4off;   // offset of the L4 header
};

// parse_flow reads the remote address and port of skb: the destination on
// egress, the source on ingress. Headers are read in place when they are in
// the skb's linear data, as they are for nearly every packet (a helper call
// per header cost about 10 ns per packet), and copied out otherwise.
static __always_inline void parse_flow(struct __sk_buff *skb, int egress, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u16 ports[2], *pp;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr buf, *ip = data;
		if ((void *)(ip + 1) > end) {
			if (bpf_skb_load_bytes(skb, 0, &buf, sizeof(buf)))
				return;
			ip = &buf;
		}
		__builtin_memset(f->addr, 0, 10);
		f->addr[10] = 0xff;
		f->addr[11] = 0xff;
		__u32 a = egress ? ip->daddr : ip->saddr;
		__builtin_memcpy(&f->addr[12], &a, 4);
		f->proto = ip->protocol;
		f->l4off = (ip->ihl & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr buf, *ip6 = data;
		if ((void *)(ip6 + 1) > end) {
			if (bpf_skb_load_bytes(skb, 0, &buf, sizeof(buf)))
				return;
			ip6 = &buf;
		}
		if (egress)
			__builtin_memcpy(f->addr, &ip6->daddr, 16);
		else
			__builtin_memcpy(f->addr, &ip6->saddr, 16);
		f->proto = ip6->nexthdr; // extension headers are not followed
		f->l4off = sizeof(*ip6);
	} else {
		return;
	}
	f->ok = 1;
	if (f->proto != IPPROTO_TCP_ && f->proto != IPPROTO_UDP_)
		return;
	pp = data + f->l4off;
	if ((void *)(pp + 2) > end) {
		if (bpf_skb_load_bytes(skb, f->l4off, ports, sizeof(ports)))
			return;
		pp = ports;
	}
	f->port = bpf_ntohs(egress ? pp[1] : pp[0]);
}

// match_slice looks the flow up in the tenant's own rules (when own) and
// then in the rules for every tenant (when any): an LPM lookup costs tens
// of nanoseconds, so packets of tenants without slices skip it.
static __always_inline const struct slice_port *match_slice(__u64 tenant, struct flow *f, int own, int any)
{
	struct slice_key k = {};
	struct slice_val *v;

	__builtin_memcpy(k.addr, f->addr, 16);
	for (int pass = 0; pass < 2; pass++) {
		k.prefixlen = 64 + 128;
		if (pass == 0) {
			if (!own)
				continue;
			__builtin_memcpy(k.tenant, &tenant, 8);
		} else {
			if (!any)
				break;
			__builtin_memset(k.tenant, 0, 8);
		}
		v = bpf_map_lookup_elem(&slices, &k);
		if (!v)
			continue;
#pragma unroll
		for (int i = 0; i < SLICE_PORTS; i++) {
			if (!v->p[i].slice)
				break;
			if (f->port >= v->p[i].lo && f->port <= v->p[i].hi)
				return &v->p[i];
		}
	}
	return 0;
}

// tls_verdict applies the tenant's TLS handshake bucket to the first
// payload segment of each TCP socket: a ClientHello (the tenant is the
// client) or a ServerHello (the tenant is the server). It returns 0 to drop.
static __always_inline int tls_verdict(struct __sk_buff *skb, __u64 tenant, const struct rate *r)
{
	struct tls_flow flow;
	struct bpf_sock *sk;
	__u8 *st;

	if (tls_skb_tcp_flow(skb, 0, &flow) || flow.payload_len == 0)
		return 1;
	sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&handshakes, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 1;
	if (*st == HS_PASSED)
		return 1;
	if (*st == HS_DENIED)
		return 0;
	if (tls_skb_hello_kind(skb, flow.payload_off, flow.payload_len) == TLS_HELLO_NONE ||
	    take(tenant, KIND_TLS, r, 1)) {
		*st = HS_PASSED;
		return 1;
	}
	*st = HS_DENIED;
	count(tenant, C_TLS_DROP);
	return 0;
}

// skb_verdict applies the tenant's limits and the slices to skb.
// Egress returns 2 (drop and tell TCP "congestion") rather than 0 so that
// TCP reduces its window at once.
static __always_inline int skb_verdict(struct __sk_buff *skb, int egress)
{
	struct tenant_limits *l = tenant_of_skb(skb);
	__u64 tenant = l ? l->key : 0;
	const int drop = egress ? 2 : 0;
	__u32 kind = egress ? KIND_EGRESS : KIND_INGRESS;
	const struct slice_port *sp = 0;
	__u32 slice;
	struct flow f = {};

	if (l) {
		if (egress && l->k[KIND_TLS].on && !tls_verdict(skb, tenant, &l->k[KIND_TLS]))
			return drop; // counted once per socket in tls_verdict
		if (l->k[kind].on && !take_bytes(l, kind, skb->len)) {
			count(tenant, egress ? C_EGRESS_DROP : C_INGRESS_DROP);
			return drop;
		}
	}
	__u32 zero = 0;
	struct host_settings *g = bpf_map_lookup_elem(&settings, &zero);
	int own = l && l->sliced, any = g && g->wildcard_slices;
	if (!own && !any)
		return 1;
	parse_flow(skb, egress, &f);
	if (f.ok)
		sp = match_slice(tenant, &f, own, any);
	if (!sp)
		return 1;
	slice = sp->slice;
	struct slice_counts *st = bpf_map_lookup_elem(&slice_stats, &slice);
	if (!st) {
		struct slice_counts z = {};
		bpf_map_update_elem(&slice_stats, &slice, &z, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&slice_stats, &slice);
	}
	if (egress && sp->limited) {
		struct rate *sr = bpf_map_lookup_elem(&slice_limits, &slice);
		if (sr && sr->on && !take(slice, KIND_SLICE_EGRESS, sr, skb->len)) {
			count(slice, C_SLICE_DROP);
			return drop;
		}
	}
	if (st) {
		if (egress) {
			st->tx_bytes += skb->len;
			st->tx_packets++;
		} else {
			st->rx_bytes += skb->len;
			st->rx_packets++;
		}
	}
	return 1;
}

SEC("cgroup_skb/egress")
int limit_egress(struct __sk_buff *skb)
{
	return skb_verdict(skb, 1);
}

SEC("cgroup_skb/ingress")
int limit_ingress(struct __sk_buff *skb)
{
	return skb_verdict(skb, 0);
}

// paced: per TCP socket of a tenant, the subtree root that names its
// tenant and the pacing cap last applied. Cloned to accepted sockets from
// the listener.
struct paced {
	__u64 root;
	__u64 applied; // bytes/s; 0 = no cap applied
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct paced);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} paced SEC(".maps");

// pacing_rate is the cap for a socket of a tenant with limits l: the
// egress rate, or ~0 (no cap) when egress is unlimited or above what
// SO_MAX_PACING_RATE takes from BPF (a 32-bit value).
static __always_inline __u32 pacing_rate(const struct tenant_limits *l)
{
	const struct rate *r = l ? &l->k[KIND_EGRESS] : 0;

	if (!r || !r->on || r->rate == 0 || r->rate >= 0xffffffffULL)
		return 0xffffffff;
	return r->rate;
}

// pace caps the socket's pacing rate at the tenant's egress rate, so that
// one TCP flow spaces its packets itself (TCP paces internally without an
// fq qdisc) instead of running into the bucket and backing off after
// drops. The bucket still enforces the tenant's total over all its flows.
// The sockops program below updates the cap when the limit changes.
static __always_inline void pace(struct bpf_sock_addr *ctx, __u64 root, const struct tenant_limits *l)
{
	struct bpf_sock *sk = ctx->sk;
	struct paced *p;
	__u32 v = pacing_rate(l);

	if (!sk)
		return;
	p = bpf_sk_storage_get(&paced, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!p)
		return;
	p->root = root;
	p->applied = v;
	if (v != 0xffffffff)
		bpf_setsockopt(ctx, SOL_SOCKET_, SO_MAX_PACING_RATE_, &v, sizeof(v));
}

SEC("sockops")
int limit_sockops(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	struct paced *p;
	struct tenant_limits *l;
	__u32 v;

	if (!sk)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		// Only sockets of tenants pay for a callback on every RTT sample.
		if (bpf_sk_storage_get(&paced, sk, 0, 0))
			bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_RTT_CB:
		p = bpf_sk_storage_get(&paced, sk, 0, 0);
		if (!p)
			return 1;
		l = bpf_map_lookup_elem(&tenants, &p->root);
		v = pacing_rate(l);
		if (v != p->applied) {
			p->applied = v;
			bpf_setsockopt(ops, SOL_SOCKET_, SO_MAX_PACING_RATE_, &v, sizeof(v));
		}
		return 1;
	}
	return 1;
}

static __always_inline int connect_verdict(struct bpf_sock_addr *ctx)
{
	struct tenant_limits *l;
	__u64 root = 0;

	// Only TCP makes connections; a UDP connect() only sets a default
	// destination and is not limited.
	if (ctx->type != SOCK_STREAM)
		return 1;
	l = tenant_of_current(&root);
	if (!l)
		return 1;
	if (l->k[KIND_CONNECT].on && !take(l->key, KIND_CONNECT, &l->k[KIND_CONNECT], 1)) {
		count(l->key, C_CONNECT_DENIED);
		return 0; // connect() fails with EPERM
	}
	pace(ctx, root, l);
	return 1;
}

SEC("cgroup/connect4")
int limit_connect4(struct bpf_sock_addr *ctx)
{
	return connect_verdict(ctx);
}

SEC("cgroup/connect6")
int limit_connect6(struct bpf_sock_addr *ctx)
{
	return connect_verdict(ctx);
}

// bind_verdict paces listening sockets: accepted sockets inherit the cap.
static __always_inline int bind_verdict(struct bpf_sock_addr *ctx)
{
	struct tenant_limits *l;
	__u64 root = 0;

	if (ctx->type != SOCK_STREAM)
		return 1;
	l = tenant_of_current(&root);
	if (l)
		pace(ctx, root, l);
	return 1;
}

SEC("cgroup/bind4")
int limit_bind4(struct bpf_sock_addr *ctx)
{
	return bind_verdict(ctx);
}

SEC("cgroup/bind6")
int limit_bind6(struct bpf_sock_addr *ctx)
{
	return bind_verdict(ctx);
}
