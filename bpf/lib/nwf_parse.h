/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Frame parsing into struct nwf_pkt, mirroring the byte layout each ebtables
 * match reads (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp; see
 * src/ir/eval.ts). Only what the policy shape needs is parsed: the generated
 * header sets NWF_USE_* to 0 or 1.
 */
#ifndef NWF_PARSE_H
#define NWF_PARSE_H

#include "nwf_common.h"
#include "nwf_load.h"

#ifndef NWF_IP6_EXT_MAX
#define NWF_IP6_EXT_MAX 64 /* the evaluator's guard on the extension header walk */
#endif

#if NWF_USE_VLAN
static __always_inline void nwf_parse_vlan(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 tag[4];

	if (p->proto != NWF_ETH_P_VLAN || (p->has & NWF_HAS_VLAN))
		return;
	if (!nwf_load(skb, NWF_ETH_HLEN, tag, sizeof(tag)))
		return;
	p->vlan_tci = nwf_be16(tag);
	p->vlan_encap = nwf_be16(tag + 2);
	p->has |= NWF_HAS_VLAN;
}
#endif

#if NWF_USE_IP4
static __always_inline void nwf_parse_ip4(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 h[20];

	if (!nwf_load(skb, NWF_ETH_HLEN, h, sizeof(h)))
		return;
	p->has |= NWF_HAS_IP4;
	p->ip4_tos = h[1];
	p->ip_proto = h[9];
	__builtin_memcpy(&p->ip4_src, h + 12, 4);
	__builtin_memcpy(&p->ip4_dst, h + 16, 4);
#if NWF_USE_IP4_L4
	{
		__u8 l4[4];
		/* ebt_ip: ports only in the first fragment, at the IHL offset (whatever the IHL). */
		if ((nwf_be16(h + 6) & 0x1fff) == 0 && nwf_load(skb, NWF_ETH_HLEN + (h[0] & 0x0f) * 4, l4, sizeof(l4))) {
			p->l4_a = nwf_be16(l4);
			p->l4_b = nwf_be16(l4 + 2);
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
	struct __sk_buff *skb;
	__u32 off;	/* offset of the current header, from the network header */
	__u8 nh;	/* its protocol */
	__u8 ok;	/* 0 when the walk failed (no upper-layer header) */
};

/* One step of the walk (a bpf_loop callback: verified once, whatever the number of headers). */
static long nwf_ip6_step(__u64 index, void *ctx)
{
	struct nwf_ip6_walk *w = ctx;
	__u8 h[4];
	__u32 size;

	if (!nwf_ip6_is_ext(w->nh))
		return 1;
	if (w->nh == 59) { /* no next header */
		w->ok = 0;
		return 1;
	}
	if (!nwf_load(w->skb, NWF_ETH_HLEN + w->off, h, 2)) {
		w->ok = 0;
		return 1;
	}
	if (w->nh == 44) {
		if (!nwf_load(w->skb, NWF_ETH_HLEN + w->off + 2, h + 2, 2)) {
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

/* The kernel's ipv6_skip_exthdr as ebt_ip6 uses it: the upper-layer protocol and its offset. */
static __always_inline void nwf_parse_ip6_up(struct __sk_buff *skb, struct nwf_pkt *p, __u8 next)
{
	struct nwf_ip6_walk w = { .skb = skb, .off = 40, .nh = next, .ok = 1 };

	bpf_loop(NWF_IP6_EXT_MAX, nwf_ip6_step, &w, 0);
	if (!w.ok)
		return;
	p->ip_proto = w.nh;
	p->has |= NWF_HAS_IP6_UP;
#if NWF_USE_IP6_L4
	{
		__u8 h[4];

		if (nwf_load(skb, NWF_ETH_HLEN + w.off, h, sizeof(h))) {
			p->l4_a = nwf_be16(h);
			p->l4_b = nwf_be16(h + 2);
			p->has |= NWF_HAS_IP6_L4;
		}
	}
#endif
}
#endif

static __always_inline void nwf_parse_ip6(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 h[40];

	if (!nwf_load(skb, NWF_ETH_HLEN, h, sizeof(h)))
		return;
	p->has |= NWF_HAS_IP6;
	__builtin_memcpy(p->ip6_src, h + 8, 16);
	__builtin_memcpy(p->ip6_dst, h + 24, 16);
#if NWF_USE_IP6_UP
	nwf_parse_ip6_up(skb, p, h[6]);
#endif
}
#endif

#if NWF_USE_ARP
static __always_inline void nwf_parse_arp(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 h[8];

	if (!nwf_load(skb, NWF_ETH_HLEN, h, sizeof(h)))
		return;
	p->has |= NWF_HAS_ARP;
	p->arp_hrd = nwf_be16(h);
	p->arp_pro = nwf_be16(h + 2);
	p->arp_hln = h[4];
	p->arp_pln = h[5];
	p->arp_op = nwf_be16(h + 6);
#if NWF_USE_ARP_IPS
	/* ebt_arp: IPs only for plen 4 and ptype IPv4, at offsets that follow hlen. */
	if (p->arp_pln == 4 && p->arp_pro == NWF_ETH_P_IPV4) {
		__u32 sip = NWF_ETH_HLEN + 8 + p->arp_hln;
		__u32 tip = NWF_ETH_HLEN + 8 + 2 * (__u32)p->arp_hln + 4;

		if (nwf_load(skb, sip, &p->arp_spa, 4) && nwf_load(skb, tip, &p->arp_tpa, 4))
			p->has |= NWF_HAS_ARP_IPS;
	}
#endif
#if NWF_USE_ARP_MACS
	/* ebt_arp: MACs only for hlen 6 and htype Ethernet. */
	if (p->arp_hln == 6 && p->arp_hrd == 1) {
		if (nwf_load(skb, NWF_ETH_HLEN + 8, &p->arp_sha, 6))
			p->has |= NWF_HAS_ARP_SHA;
		if (nwf_load(skb, NWF_ETH_HLEN + 8 + 6 + p->arp_pln, &p->arp_tha, 6))
			p->has |= NWF_HAS_ARP_THA;
	}
#endif
}
#endif

#if NWF_USE_STP
/* ebt_stp with the kernel's exact layout: 42 42 03 00 00 00, then the configuration from byte 6. */
static __always_inline void nwf_parse_stp(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 h[6];

	if (!nwf_load(skb, NWF_ETH_HLEN, h, sizeof(h)))
		return;
	if (h[0] != 0x42 || h[1] != 0x42 || h[2] != 0x03 || h[3] != 0 || h[4] != 0 || h[5] != 0)
		return;
	p->has |= NWF_HAS_STP;
	p->stp_type = h[5];
#if NWF_USE_STP_CFG
	{
		__u8 c[31];

		if (!nwf_load(skb, NWF_ETH_HLEN + 6, c, sizeof(c)))
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
 * Parse what the policy needs. False only when the Ethernet header itself is
 * unreadable (cannot happen for a frame the kernel delivers; fail closed).
 */
static __always_inline bool nwf_parse(struct __sk_buff *skb, struct nwf_pkt *p)
{
	__u8 eth[NWF_ETH_HLEN];

	if (!nwf_load(skb, 0, eth, sizeof(eth)))
		return false;
	__builtin_memcpy(&p->dst, eth, 6);
	__builtin_memcpy(&p->src, eth + 6, 6);
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
	} else {
		p->proto = nwf_be16(eth + 12);
	}
#if NWF_USE_VLAN
	if (p->proto == NWF_ETH_P_VLAN)
		nwf_parse_vlan(skb, p); /* no-op when the tag came from the metadata */
#endif
#if NWF_USE_IP4
	if (p->proto == NWF_ETH_P_IPV4)
		nwf_parse_ip4(skb, p);
#endif
#if NWF_USE_IP6
	if (p->proto == NWF_ETH_P_IPV6)
		nwf_parse_ip6(skb, p);
#endif
#if NWF_USE_ARP
	if (p->proto == NWF_ETH_P_ARP || p->proto == NWF_ETH_P_RARP)
		nwf_parse_arp(skb, p);
#endif
#if NWF_USE_STP
	nwf_parse_stp(skb, p);
#endif
	return true;
}

#endif
