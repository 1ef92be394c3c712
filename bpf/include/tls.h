/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tls.h: find TLS ClientHello and ServerHello messages in TCP segments.
 *
 * Reusable static inline functions for programs that see a struct
 * __sk_buff whose data starts at (or contains) the IP header: cgroup_skb
 * (l3_off 0) and tc (l3_off ETH_HLEN). Include vmlinux.h, bpf_helpers.h and
 * bpf_endian.h first.
 *
 * The functions only read the packet with bpf_skb_load_bytes, so they work
 * on non-linear and GSO skbs alike, and every loop is bounded. They look at
 * one segment: the caller decides which segment is the first payload of a
 * connection (see tlsmeter.bpf.c, which keeps that per socket in
 * sk_storage), because a hello is only a hello at the start of the stream.
 *
 * The signatures below are a contract with other programs (the limiter):
 * keep them stable.
 */
#ifndef KMETER_TLS_H
#define KMETER_TLS_H

/* Longest SNI host name kept, including the terminating NUL; longer names
 * are truncated to TLS_SNI_MAX - 1 bytes.
 * Keep in sync with SNIMax in internal/meter/tlsmeter/event.go. */
#define TLS_SNI_MAX 128

/* Extensions examined in a hello; later ones are ignored. */
#define TLS_MAX_EXTENSIONS 32
/* Versions examined in a ClientHello's supported_versions list. */
#define TLS_MAX_OFFERED_VERSIONS 8

#define TLS_CONTENT_HANDSHAKE 22
#define TLS_HS_CLIENT_HELLO 1
#define TLS_HS_SERVER_HELLO 2
#define TLS_EXT_SERVER_NAME 0
#define TLS_EXT_SUPPORTED_VERSIONS 43

/* A TLS record carries at most 2^14 bytes of plaintext (RFC 8446 5.1). */
#define TLS_MAX_RECORD 16384
/* Shortest hello body: version (2), random (32), session id length (1),
 * and at least 3 bytes of cipher suite/compression. */
#define TLS_MIN_HELLO 38

#define TLS_ETH_P_IP 0x0800
#define TLS_ETH_P_IPV6 0x86DD
#define TLS_IPPROTO_TCP 6

/* Kinds of hello, returned by tls_skb_hello_kind.
 * Keep in sync with Kind in internal/meter/tlsmeter/event.go. */
enum tls_hello_kind {
	TLS_HELLO_NONE = 0,
	TLS_HELLO_CLIENT = 1,
	TLS_HELLO_SERVER = 2,
};

/* Flags of struct tls_hello.
 * Keep in sync with FlagHelloRetry in internal/meter/tlsmeter/event.go. */
#define TLS_FLAG_HELLO_RETRY 1 /* the ServerHello is a HelloRetryRequest */
#define TLS_FLAG_SNI_TRUNCATED 2 /* the SNI was longer than TLS_SNI_MAX - 1 */

/* A TCP segment's addressing and where its payload starts. Addresses are in
 * network byte order; an IPv4 address fills the first 4 bytes. Ports are in
 * host byte order. */
struct tls_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 ip_version; /* 4 or 6 */
	__u8 pad[3];
	__u32 payload_off; /* offset of the TCP payload in the skb */
	__u32 payload_len; /* bytes of TCP payload (0 for a pure ACK/SYN) */
};

/* What a full parse of a hello found. */
struct tls_hello {
	/* Negotiated version for a ServerHello (supported_versions, else the
	 * legacy version), highest offered version for a ClientHello. */
	__u16 version;
	__u8 kind; /* enum tls_hello_kind */
	__u8 flags; /* TLS_FLAG_* */
	__u16 sni_len; /* bytes in sni, without the NUL */
	__u8 pad[2];
	char sni[TLS_SNI_MAX]; /* server_name host name, NUL terminated */
};

/* tls_skb_tcp_flow fills f for a TCP segment whose IP header starts at
 * l3_off. It returns 0 on success and -1 when the skb is not TCP over IPv4
 * or IPv6 (IPv6 extension headers are not followed; a TCP segment behind
 * one is treated as not TCP) or is a non-first IPv4 fragment. */
static __always_inline int tls_skb_tcp_flow(struct __sk_buff *skb, __u32 l3_off, struct tls_flow *f)
{
	__u32 l4_off;
	__u8 tcp[14];

	if (skb->protocol == bpf_htons(TLS_ETH_P_IP)) {
		__u8 ip[20];

		if (bpf_skb_load_bytes(skb, l3_off, ip, sizeof(ip)))
			return -1;
		if ((ip[0] >> 4) != 4 || ip[9] != TLS_IPPROTO_TCP)
			return -1;
		if (((ip[6] & 0x1f) | ip[7]) != 0) /* fragment offset */
			return -1;
		l4_off = l3_off + (ip[0] & 0x0f) * 4;
		__builtin_memset(f->saddr, 0, sizeof(f->saddr));
		__builtin_memset(f->daddr, 0, sizeof(f->daddr));
		__builtin_memcpy(f->saddr, &ip[12], 4);
		__builtin_memcpy(f->daddr, &ip[16], 4);
		f->ip_version = 4;
	} else if (skb->protocol == bpf_htons(TLS_ETH_P_IPV6)) {
		__u8 ip6[40];

		if (bpf_skb_load_bytes(skb, l3_off, ip6, sizeof(ip6)))
			return -1;
		if ((ip6[0] >> 4) != 6 || ip6[6] != TLS_IPPROTO_TCP)
			return -1;
		l4_off = l3_off + 40;
		__builtin_memcpy(f->saddr, &ip6[8], 16);
		__builtin_memcpy(f->daddr, &ip6[24], 16);
		f->ip_version = 6;
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, l4_off, tcp, sizeof(tcp)))
		return -1;
	f->sport = ((__u16)tcp[0] << 8) | tcp[1];
	f->dport = ((__u16)tcp[2] << 8) | tcp[3];
	f->payload_off = l4_off + (tcp[12] >> 4) * 4;
	f->payload_len = skb->len > f->payload_off ? skb->len - f->payload_off : 0;
	return 0;
}

/* tls_skb_hello_kind checks the record and handshake headers at off (the
 * start of a TCP payload of len bytes) and says whether they begin a
 * ClientHello or a ServerHello (TLS 1.0 to 1.3). It reads 11 bytes and is
 * cheap enough for every first segment. */
static __always_inline enum tls_hello_kind tls_skb_hello_kind(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 h[11];
	__u32 rec_len, hs_len;

	if (len < sizeof(h))
		return TLS_HELLO_NONE;
	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
		return TLS_HELLO_NONE;
	/* Record: content type, legacy record version 3.0-3.4, length. */
	if (h[0] != TLS_CONTENT_HANDSHAKE || h[1] != 3 || h[2] > 4)
		return TLS_HELLO_NONE;
	rec_len = ((__u32)h[3] << 8) | h[4];
	if (rec_len < 4 + TLS_MIN_HELLO || rec_len > TLS_MAX_RECORD + 2048)
		return TLS_HELLO_NONE;
	/* Handshake: type, 24-bit length, then the hello's legacy version. */
	if (h[5] != TLS_HS_CLIENT_HELLO && h[5] != TLS_HS_SERVER_HELLO)
		return TLS_HELLO_NONE;
	hs_len = ((__u32)h[6] << 16) | ((__u32)h[7] << 8) | h[8];
	if (hs_len < TLS_MIN_HELLO)
		return TLS_HELLO_NONE;
	/* A hello may continue in the next record only when this one is full. */
	if (hs_len + 4 > rec_len && rec_len < TLS_MAX_RECORD)
		return TLS_HELLO_NONE;
	if (h[9] != 3 || h[10] > 4)
		return TLS_HELLO_NONE;
	return h[5] == TLS_HS_CLIENT_HELLO ? TLS_HELLO_CLIENT : TLS_HELLO_SERVER;
}

static __always_inline __u16 tls__load_u16(struct __sk_buff *skb, __u32 off, int *err)
{
	__u8 b[2];

	if (bpf_skb_load_bytes(skb, off, b, 2)) {
		*err = 1;
		return 0;
	}
	return ((__u16)b[0] << 8) | b[1];
}

static __always_inline __u8 tls__load_u8(struct __sk_buff *skb, __u32 off, int *err)
{
	__u8 b;

	if (bpf_skb_load_bytes(skb, off, &b, 1)) {
		*err = 1;
		return 0;
	}
	return b;
}

/* tls__is_version says whether v is SSL 3.0 or TLS 1.0-1.3 (not GREASE). */
static __always_inline int tls__is_version(__u16 v)
{
	return (v >> 8) == 3 && (v & 0xff) <= 4;
}

/* SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest
 * (RFC 8446 4.1.3), as four big-endian 64-bit words. */
#define TLS_HRR_RANDOM_0 0xCF21AD74E59A6111ULL
#define TLS_HRR_RANDOM_1 0xBE1D8C021E65B891ULL
#define TLS_HRR_RANDOM_2 0xC2A211167ABB8C5EULL
#define TLS_HRR_RANDOM_3 0x079E09E2C8A8339CULL

/* tls_skb_parse_hello parses the hello at off (the start of a TCP payload
 * of len bytes, already accepted by tls_skb_hello_kind as kind) into h:
 * version, HelloRetryRequest flag and, for a ClientHello, the SNI host
 * name. Only bytes inside this segment are read: a hello split over
 * several segments keeps the fields found in the first one. It returns 0,
 * or -1 when the hello is malformed (h then keeps what was found). */
static __always_inline int tls_skb_parse_hello(struct __sk_buff *skb, __u32 off, __u32 len,
					       enum tls_hello_kind kind, struct tls_hello *h)
{
	__u32 pos, end, ext_end;
	int err = 0;
	__u16 ext_len;
	__u8 sid_len;

	h->kind = kind;
	h->flags = 0;
	h->sni_len = 0;
	h->sni[0] = 0;
	end = off + len;
	pos = off + 9; /* record header (5) + handshake header (4) */
	h->version = tls__load_u16(skb, pos, &err);
	if (err)
		return -1;
	pos += 2;
	if (kind == TLS_HELLO_SERVER) {
		__u64 r[4];

		if (bpf_skb_load_bytes(skb, pos, r, sizeof(r)))
			return -1;
		if (r[0] == bpf_cpu_to_be64(TLS_HRR_RANDOM_0) && r[1] == bpf_cpu_to_be64(TLS_HRR_RANDOM_1) &&
		    r[2] == bpf_cpu_to_be64(TLS_HRR_RANDOM_2) && r[3] == bpf_cpu_to_be64(TLS_HRR_RANDOM_3))
			h->flags |= TLS_FLAG_HELLO_RETRY;
	}
	pos += 32; /* random */
	sid_len = tls__load_u8(skb, pos, &err);
	if (err || sid_len > 32)
		return -1;
	pos += 1 + sid_len;
	if (kind == TLS_HELLO_CLIENT) {
		__u16 cs_len = tls__load_u16(skb, pos, &err);
		__u8 cm_len;

		if (err)
			return -1;
		pos += 2 + cs_len;
		cm_len = tls__load_u8(skb, pos, &err);
		if (err)
			return -1;
		pos += 1 + cm_len;
	} else {
		pos += 2 + 1; /* cipher suite, compression method */
	}
	ext_len = tls__load_u16(skb, pos, &err);
	if (err)
		return 0; /* no extensions: legacy version stands */
	pos += 2;
	ext_end = pos + ext_len;
	if (ext_end > end)
		ext_end = end;

	for (int i = 0; i < TLS_MAX_EXTENSIONS; i++) {
		__u16 type, elen;
		__u32 data;

		__u8 eh[4]; /* type, length: one helper call, not two */

		if (pos + 4 > ext_end)
			break;
		if (bpf_skb_load_bytes(skb, pos, eh, sizeof(eh)))
			return -1;
		type = ((__u16)eh[0] << 8) | eh[1];
		elen = ((__u16)eh[2] << 8) | eh[3];
		data = pos + 4;
		pos = data + elen;

		if (type == TLS_EXT_SUPPORTED_VERSIONS) {
			if (kind == TLS_HELLO_SERVER) {
				__u16 v = tls__load_u16(skb, data, &err);

				if (!err && tls__is_version(v))
					h->version = v;
				err = 0;
				continue;
			}
			/* ClientHello: 1-byte list length, then versions;
			 * report the highest real (non-GREASE) one. */
			__u8 list = tls__load_u8(skb, data, &err);
			__u16 best = 0;

			for (int j = 0; j < TLS_MAX_OFFERED_VERSIONS; j++) {
				__u16 v;

				if (err || 1 + 2 * j + 2 > list || data + 1 + 2 * j + 2 > ext_end)
					break;
				v = tls__load_u16(skb, data + 1 + 2 * j, &err);
				if (!err && tls__is_version(v) && v > best)
					best = v;
			}
			if (best)
				h->version = best;
			err = 0;
			continue;
		}
		if (type == TLS_EXT_SERVER_NAME && kind == TLS_HELLO_CLIENT) {
			/* server_name_list length (2), name_type (1),
			 * host name length (2), host name. */
			__u8 nh[3];
			__u32 name = data + 5;
			__u64 n; /* 64-bit, so clang checks the register it passes */

			if (bpf_skb_load_bytes(skb, data + 2, nh, sizeof(nh)) || nh[0] != 0 || name >= ext_end)
				continue;
			n = ((__u16)nh[1] << 8) | nh[2];
			if (n > ext_end - name)
				n = ext_end - name;
			if (n > TLS_SNI_MAX - 1) {
				n = TLS_SNI_MAX - 1;
				h->flags |= TLS_FLAG_SNI_TRUNCATED;
			}
			/* Keep the verifier sure that 1 <= n < TLS_SNI_MAX:
			 * the barrier stops clang from checking a copy. */
			asm volatile("" : "+r"(n));
			if (n < 1 || n > TLS_SNI_MAX - 1)
				continue;
			if (bpf_skb_load_bytes(skb, name, h->sni, n) == 0) {
				h->sni_len = n;
				h->sni[n & (TLS_SNI_MAX - 1)] = 0;
			}
		}
	}
	return 0;
}

#endif /* KMETER_TLS_H */
