/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Frame parsing into struct nwf_pkt, mirroring the byte layout each ebtables
 * match reads (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp; see
 * src/ir/eval.ts). Only what the policy shape needs is parsed: the generated
 * header sets NWF_USE_* to 0 or 1. Every function takes the program's context
 * and its kind (NWF_KIND_TC or NWF_KIND_XDP, a constant): see nwf_load.h.
 *
 * The frame's first bytes, as many as the shape's fixed-offset fields need
 * (NWF_HEAD_LEN), are read once into an aligned block (struct nwf_head):
 * straight from the packet when the linear data holds them (XDP, and tc for
 * linear skbs), else with one helper call (nwf_load) for min(frame, block).
 * Headers at offsets that depend on the frame (IPv4 options, ARP with other
 * address lengths, IPv6 extension headers) are read with nwf_load.
 */
#ifndef NWF_PARSE_H
#define NWF_PARSE_H

#include "nwf_common.h"
#include "nwf_load.h"

#ifndef NWF_IP6_EXT_MAX
#define NWF_IP6_EXT_MAX 64 /* the evaluator's guard on the extension header walk */
#endif

#define NWF_MAX(a, b) ((a) > (b) ? (a) : (b))
/* The fixed-offset reads of each part (XDP untags from the block: the tag and 2 more bytes). */
#define NWF_NEED_BASE (NWF_ETH_HLEN + NWF_VLAN_HLEN + 2)
#define NWF_NEED_IP4 (NWF_USE_IP4 ? NWF_ETH_HLEN + 20 + (NWF_USE_IP4_L4 ? 4 : 0) : 0)
#define NWF_NEED_IP6 (NWF_USE_IP6 ? NWF_ETH_HLEN + 40 : 0)
#define NWF_NEED_ARP (NWF_USE_ARP ? NWF_ETH_HLEN + 8 + (NWF_USE_ARP_IPS || NWF_USE_ARP_MACS ? 20 : 0) : 0)
/* STP sits after a tag XDP still sees in the data: 4 bytes further. */
#define NWF_NEED_STP (NWF_USE_STP ? NWF_ETH_HLEN + NWF_VLAN_HLEN + 6 + (NWF_USE_STP_CFG ? 31 : 0) : 0)
#define NWF_NEED NWF_MAX(NWF_MAX(NWF_NEED_BASE, NWF_NEED_IP4), NWF_MAX(NWF_MAX(NWF_NEED_IP6, NWF_NEED_ARP), NWF_NEED_STP))
/* Bytes of the frame read up front: a whole number of __u64 words. */
#define NWF_HEAD_LEN ((NWF_NEED + 7) & ~7)

struct nwf_head {
	__u64 w[NWF_HEAD_LEN / 8];
	__u32 n; /* bytes of the frame in w: min(frame length, NWF_HEAD_LEN) */
};

#define NWF_HB(h) ((const __u8 *)(h)->w)

/* Copy the block straight from linear packet data [data, end); false when the linear part is shorter. */
static __always_inline bool nwf_head_direct(struct nwf_head *h, const void *data, const void *end)
{
	const __u64 *q = data;

	if (data + NWF_HEAD_LEN > end)
		return false;
	/* word loads (the JIT's loads need no alignment on the architectures nwf-fast supports) */
#pragma unroll
	for (int i = 0; i < NWF_HEAD_LEN / 8; i++)
		h->w[i] = q[i];
	h->n = NWF_HEAD_LEN;
	return true;
}

/*
 * Fill the block. False for a frame shorter than an Ethernet header (cannot
 * happen for a frame the kernel delivers; fail closed).
 */
static __always_inline bool nwf_head_read(void *ctx, const int kind, struct nwf_head *h)
{
	__u32 len;

	if (kind == NWF_KIND_XDP) {
		struct xdp_md *x = ctx;

		if (nwf_head_direct(h, (const void *)(long)x->data, (const void *)(long)x->data_end))
			return true;
		len = bpf_xdp_get_buff_len(x);
	} else {
		struct __sk_buff *skb = ctx;

		if (nwf_head_direct(h, (const void *)(long)skb->data, (const void *)(long)skb->data_end))
			return true;
		len = skb->len;
	}
	if (len < NWF_ETH_HLEN)
		return false;
	if (len > NWF_HEAD_LEN)
		len = NWF_HEAD_LEN;
	h->n = len;
	return nwf_load(ctx, kind, 0, h->w, len);
}

#if NWF_USE_VLAN
/* A tag still in the data (tc egress without VLAN offload): ebt_vlan reads it after the Ethernet header. */
static __always_inline void nwf_parse_vlan(const struct nwf_head *h, struct nwf_pkt *p)
{
	const __u8 *b = NWF_HB(h) + NWF_ETH_HLEN;

	if (p->proto != NWF_ETH_P_VLAN || (p->has & NWF_HAS_VLAN) || h->n < NWF_ETH_HLEN + NWF_VLAN_HLEN)
		return;
	p->vlan_tci = nwf_be16(b);
	p->vlan_encap = nwf_be16(b + 2);
	p->has |= NWF_HAS_VLAN;
}
#endif

#if NWF_USE_IP4
static __always_inline void nwf_parse_ip4(void *ctx, const int kind, const struct nwf_head *h, struct nwf_pkt *p)
{
	const __u8 *ip = NWF_HB(h) + NWF_ETH_HLEN;

	if (h->n < NWF_ETH_HLEN + 20)
		return;
	p->has |= NWF_HAS_IP4;
	p->ip4_tos = ip[1];
	p->ip_proto = ip[9];
	__builtin_memcpy(&p->ip4_src, ip + 12, 4);
	__builtin_memcpy(&p->ip4_dst, ip + 16, 4);
#if NWF_USE_IP4_L4
	/* ebt_ip: ports only in the first fragment, at the IHL offset (whatever the IHL). */
	if ((nwf_be16(ip + 6) & 0x1fff) == 0) {
		__u8 l4[4];
		const __u8 *q = l4;
		bool ok;

		if ((ip[0] & 0x0f) == 5) {
			ok = h->n >= NWF_ETH_HLEN + 24;
			q = ip + 20;
		} else {
			ok = nwf_load(ctx, kind, NWF_ETH_HLEN + (ip[0] & 0x0f) * 4, l4, sizeof(l4));
		}
		if (ok) {
			p->l4_a = nwf_be16(q);
			p->l4_b = nwf_be16(q + 2);
			p->has |= NWF_HAS_IP4_L4;
		}
	}
#endif
}
#endif

#if NWF_USE_IP6
#if NWF_USE_IP6_UP
static __always_inline bool nwf_ip6_is_ext(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 59 || nh == 60;
}

struct nwf_ip6_walk {
	void *ctx;
	__u32 off;	/* offset of the current header, from the network header */
	__u8 nh;	/* its protocol */
	__u8 ok;	/* 0 when the walk failed (no upper-layer header) */
};

/* One step of the walk (a bpf_loop callback: verified once, whatever the number of headers). */
static __always_inline long nwf_ip6_step(struct nwf_ip6_walk *w, const int kind)
{
	__u8 h[4];
	__u32 size;

	if (!nwf_ip6_is_ext(w->nh))
		return 1;
	if (w->nh == 59) { /* no next header */
		w->ok = 0;
		return 1;
	}
	if (!nwf_load(w->ctx, kind, NWF_ETH_HLEN + w->off, h, 2)) {
		w->ok = 0;
		return 1;
	}
	if (w->nh == 44) {
		if (!nwf_load(w->ctx, kind, NWF_ETH_HLEN + w->off + 2, h + 2, 2)) {
			w->ok = 0;
			return 1;
		}
		if (nwf_be16(h + 2) & ~0x7) /* a non-first fragment: stop here */
			return 1;
		size = 8;
	} else if (w->nh == 51) {
		size = ((__u32)h[1] + 2) << 2;
	} else {
		size = ((__u32)h[1] + 1) << 3;
	}
	w->nh = h[0];
	w->off += size;
	return 0;
}

/* The callbacks, one per kind (a callback cannot take the kind as a constant). */
static long nwf_ip6_step_tc(__u64 index, void *w)
{
	return nwf_ip6_step(w, NWF_KIND_TC);
}

static long nwf_ip6_step_xdp(__u64 index, void *w)
{
	return nwf_ip6_step(w, NWF_KIND_XDP);
}

/* The kernel's ipv6_skip_exthdr as ebt_ip6 uses it: the upper-layer protocol and its offset. */
static __always_inline void nwf_parse_ip6_up(void *ctx, const int kind, struct nwf_pkt *p, __u8 next)
{
	struct nwf_ip6_walk w = { .ctx = ctx, .off = 40, .nh = next, .ok = 1 };

	bpf_loop(NWF_IP6_EXT_MAX, kind == NWF_KIND_XDP ? nwf_ip6_step_xdp : nwf_ip6_step_tc, &w, 0);
	if (!w.ok)
		return;
	p->ip_proto = w.nh;
	p->has |= NWF_HAS_IP6_UP;
#if NWF_USE_IP6_L4
	{
		__u8 h[4];

		if (nwf_load(ctx, kind, NWF_ETH_HLEN + w.off, h, sizeof(h))) {
			p->l4_a = nwf_be16(h);
			p->l4_b = nwf_be16(h + 2);
			p->has |= NWF_HAS_IP6_L4;
		}
	}
#endif
}
#endif

static __always_inline void nwf_parse_ip6(void *ctx, const int kind, const struct nwf_head *h, struct nwf_pkt *p)
{
	const __u8 *ip = NWF_HB(h) + NWF_ETH_HLEN;

	if (h->n < NWF_ETH_HLEN + 40)
		return;
	p->has |= NWF_HAS_IP6;
	__builtin_memcpy(p->ip6_src, ip + 8, 16);
	__builtin_memcpy(p->ip6_dst, ip + 24, 16);
#if NWF_USE_IP6_UP
	nwf_parse_ip6_up(ctx, kind, p, ip[6]);
#endif
}
#endif

#if NWF_USE_ARP
static __always_inline void nwf_parse_arp(void *ctx, const int kind, const struct nwf_head *h, struct nwf_pkt *p)
{
	const __u8 *a = NWF_HB(h) + NWF_ETH_HLEN;

	if (h->n < NWF_ETH_HLEN + 8)
		return;
	p->has |= NWF_HAS_ARP;
	p->arp_hrd = nwf_be16(a);
	p->arp_pro = nwf_be16(a + 2);
	p->arp_hln = a[4];
	p->arp_pln = a[5];
	p->arp_op = nwf_be16(a + 6);
#if NWF_USE_ARP_IPS || NWF_USE_ARP_MACS
	{
		/* Ethernet/IPv4 sizes: the addresses are in the block. */
		bool eth4 = p->arp_hln == 6 && p->arp_pln == 4;
#if NWF_USE_ARP_IPS
		/* ebt_arp: IPs only for plen 4 and ptype IPv4, at offsets that follow hlen. */
		if (p->arp_pln == 4 && p->arp_pro == NWF_ETH_P_IPV4) {
			if (eth4) {
				if (h->n >= NWF_ETH_HLEN + 28) {
					__builtin_memcpy(&p->arp_spa, a + 14, 4);
					__builtin_memcpy(&p->arp_tpa, a + 24, 4);
					p->has |= NWF_HAS_ARP_IPS;
				}
			} else {
				__u32 sip = NWF_ETH_HLEN + 8 + p->arp_hln;
				__u32 tip = NWF_ETH_HLEN + 8 + 2 * (__u32)p->arp_hln + 4;

				if (nwf_load(ctx, kind, sip, &p->arp_spa, 4) && nwf_load(ctx, kind, tip, &p->arp_tpa, 4))
					p->has |= NWF_HAS_ARP_IPS;
			}
		}
#endif
#if NWF_USE_ARP_MACS
		/* ebt_arp: MACs only for hlen 6 and htype Ethernet. */
		if (p->arp_hln == 6 && p->arp_hrd == 1) {
			if (h->n >= NWF_ETH_HLEN + 14) {
				__builtin_memcpy(&p->arp_sha, a + 8, 6);
				p->has |= NWF_HAS_ARP_SHA;
			}
			if (eth4) {
				if (h->n >= NWF_ETH_HLEN + 24) {
					__builtin_memcpy(&p->arp_tha, a + 18, 6);
					p->has |= NWF_HAS_ARP_THA;
				}
			} else if (nwf_load(ctx, kind, NWF_ETH_HLEN + 8 + 6 + p->arp_pln, &p->arp_tha, 6)) {
				p->has |= NWF_HAS_ARP_THA;
			}
		}
#endif
	}
#endif
}
#endif

#if NWF_USE_STP
/*
 * ebt_stp with the kernel's exact layout: 42 42 03 00 00 00, then the
 * configuration from byte 6, at the network header: byte 14, or 18 for a
 * frame whose VLAN tag XDP still sees in the data (`tagged`).
 */
static __always_inline void nwf_parse_stp(const struct nwf_head *h, struct nwf_pkt *p, bool tagged)
{
	const __u32 l3 = tagged ? NWF_ETH_HLEN + NWF_VLAN_HLEN : NWF_ETH_HLEN;
	const __u8 *s = NWF_HB(h) + (tagged ? NWF_ETH_HLEN + NWF_VLAN_HLEN : NWF_ETH_HLEN);

	if (h->n < l3 + 6)
		return;
	if (s[0] != 0x42 || s[1] != 0x42 || s[2] != 0x03 || s[3] != 0 || s[4] != 0 || s[5] != 0)
		return;
	p->has |= NWF_HAS_STP;
	p->stp_type = s[5];
#if NWF_USE_STP_CFG
	{
		const __u8 *c = s + 6;

		if (h->n < l3 + 6 + 31)
			return;
		p->has |= NWF_HAS_STP_CFG;
		p->stp_flags = c[0];
		p->stp_root_prio = nwf_be16(c + 1);
		__builtin_memcpy(&p->stp_root_addr, c + 3, 6);
		p->stp_root_cost = nwf_be32(c + 9);
		p->stp_sender_prio = nwf_be16(c + 13);
		__builtin_memcpy(&p->stp_sender_addr, c + 15, 6);
		p->stp_port = nwf_be16(c + 21);
		p->stp_age = nwf_be16(c + 23);
		p->stp_max_age = nwf_be16(c + 25);
		p->stp_hello = nwf_be16(c + 27);
		p->stp_fwd = nwf_be16(c + 29);
	}
#endif
}
#endif

/*
 * What the receive path's skb_vlan_untag does to an 802.1Q/802.1ad frame
 * before tc ingress and the bridge see it, applied to XDP's view (the tag
 * still in the data): the frame must hold the tag and 2 more bytes (or the
 * kernel drops it: false), the tag moves to metadata (ebtables then sees
 * protocol 0x8100), the encapsulated protocol becomes skb->protocol as
 * vlan_set_encap_proto sets it (an 802.3 length field gives 0x0001 for
 * Novell raw 802.3, 0x0004 for 802.2 LLC) and the network header moves past
 * the tag.
 */
static __always_inline bool nwf_untag_xdp(const struct nwf_head *h, struct nwf_pkt *p)
{
	const __u8 *t = NWF_HB(h) + NWF_ETH_HLEN;
	__u16 inner;

	if (h->n < NWF_ETH_HLEN + NWF_VLAN_HLEN + 2)
		return false;
	inner = nwf_be16(t + 2);
	p->proto = NWF_ETH_P_VLAN;
	p->vlan_tci = nwf_be16(t);
	if (inner >= 0x0600)
		p->vlan_encap = inner;
	else
		p->vlan_encap = nwf_be16(t + 4) == 0xffff ? NWF_ETH_P_802_3 : NWF_ETH_P_802_2;
	p->has |= NWF_HAS_VLAN;
	return true;
}

/*
 * Parse what the policy needs. False when the frame is one the kernel would
 * not hand to ebtables at all (an Ethernet header that cannot be read, a VLAN
 * header too short to untag): fail closed.
 */
static __always_inline bool nwf_parse(void *ctx, const int kind, struct nwf_pkt *p)
{
	struct nwf_head h;
	bool tagged __attribute__((unused)) = false; /* read by the STP parser only */

	if (!nwf_head_read(ctx, kind, &h))
		return false;
	__builtin_memcpy(&p->dst, NWF_HB(&h), 6);
	__builtin_memcpy(&p->src, NWF_HB(&h) + 6, 6);
	p->proto = nwf_be16(NWF_HB(&h) + 12);
	if (kind == NWF_KIND_TC) {
		struct __sk_buff *skb = ctx;

		if (skb->vlan_present) {
			/*
			 * The tag was moved out of the frame (always so at tc ingress:
			 * the receive path untags before tc). ebtables then sees
			 * protocol 0x8100, the tag from the metadata and the
			 * encapsulated protocol in skb->protocol; byte 14 on is the
			 * inner payload, as for ebtables.
			 */
			p->proto = NWF_ETH_P_VLAN;
			p->vlan_tci = (__u16)skb->vlan_tci;
			p->vlan_encap = bpf_ntohs((__u16)skb->protocol);
			p->has |= NWF_HAS_VLAN;
		}
	} else if (p->proto == NWF_ETH_P_VLAN || p->proto == NWF_ETH_P_8021AD) {
		if (!nwf_untag_xdp(&h, p))
			return false;
		tagged = true;
	}
#if NWF_USE_VLAN
	if (p->proto == NWF_ETH_P_VLAN)
		nwf_parse_vlan(&h, p); /* no-op when the tag came from the metadata */
#endif
#if NWF_USE_IP4
	if (p->proto == NWF_ETH_P_IPV4)
		nwf_parse_ip4(ctx, kind, &h, p);
#endif
#if NWF_USE_IP6
	if (p->proto == NWF_ETH_P_IPV6)
		nwf_parse_ip6(ctx, kind, &h, p);
#endif
#if NWF_USE_ARP
	if (p->proto == NWF_ETH_P_ARP || p->proto == NWF_ETH_P_RARP)
		nwf_parse_arp(ctx, kind, &h, p);
#endif
#if NWF_USE_STP
	nwf_parse_stp(&h, p, tagged);
#endif
	return true;
}

#endif
