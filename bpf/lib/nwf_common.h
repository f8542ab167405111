/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Common definitions of the nwf-fast tc programs: includes, the parsed frame
 * (struct nwf_pkt), presence flags, and the test macros the generated policy
 * header (nwf_policy.h) uses.
 *
 * The frame model is ebtables' (see src/ir/eval.ts, the reference evaluator):
 *  - proto is ebtables' protocol: the EtherType field, or 0x8100 when the
 *    VLAN tag was taken out of the frame into skb metadata (vlan_present),
 *    which the receive path does to every 802.1Q/802.1ad frame before tc
 *    ingress and the bridge (XDP, which runs before that, does the same to
 *    its view of the frame: nwf_parse);
 *  - the "network header" starts at byte 14 of the frame (after the tag the
 *    receive path took out);
 *  - a test whose field lies beyond the end of the frame does not match,
 *    whatever its negation: every field has a presence flag (NWF_HAS_*).
 * Addresses are kept as memory images (the bytes as on the wire, zero-extended
 * in a __u64) so they compare with the config values whatever the byte order;
 * numbers are converted to host order.
 */
#ifndef NWF_COMMON_H
#define NWF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "nwf_drop_reasons.h"

typedef _Bool bool;
#define true 1
#define false 0

#define NWF_DIR_OUT 0 /* from the VM: tc ingress or XDP on the tap (libvirt-I-TAP) */
#define NWF_DIR_IN 1  /* to the VM: tc egress on the tap (libvirt-O-TAP) */

/* What an entry program receives: an skb (tc, tcx) or an xdp_buff (XDP). */
#define NWF_KIND_TC 0
#define NWF_KIND_XDP 1

#define NWF_ETH_HLEN 14
#define NWF_ETH_P_IPV4 0x0800
#define NWF_ETH_P_ARP 0x0806
#define NWF_ETH_P_RARP 0x8035
#define NWF_ETH_P_VLAN 0x8100
#define NWF_ETH_P_8021AD 0x88a8
#define NWF_ETH_P_802_3 0x0001
#define NWF_ETH_P_802_2 0x0004
#define NWF_VLAN_HLEN 4
#define NWF_ETH_P_IPV6 0x86dd

/* Presence flags: the frame is long enough (and of the right kind) for these fields. */
#define NWF_HAS_VLAN (1u << 0)	   /* proto 0x8100 and the tag (TCI, encapsulated proto) */
#define NWF_HAS_IP4 (1u << 1)	   /* proto 0x0800 and 20 bytes of IPv4 header */
#define NWF_HAS_IP4_L4 (1u << 2)   /* first fragment and 4 bytes at the IHL offset */
#define NWF_HAS_IP6 (1u << 3)	   /* proto 0x86dd and 40 bytes of IPv6 header */
#define NWF_HAS_IP6_UP (1u << 4)   /* the extension header walk found the upper-layer protocol */
#define NWF_HAS_IP6_L4 (1u << 5)   /* 4 bytes of the upper-layer header */
#define NWF_HAS_ARP (1u << 6)	   /* proto 0x0806 or 0x8035 and the 8-byte ARP header */
#define NWF_HAS_ARP_IPS (1u << 7)  /* plen 4, ptype 0x0800, sender and target IP present */
#define NWF_HAS_ARP_SHA (1u << 8)  /* hlen 6, htype 1, sender MAC present */
#define NWF_HAS_ARP_THA (1u << 9)  /* hlen 6, htype 1, target MAC present */
#define NWF_HAS_STP (1u << 10)	   /* 42 42 03 00 00 00 after the Ethernet header */
#define NWF_HAS_STP_CFG (1u << 11) /* and the 31 configuration bytes after it */
#define NWF_HAS_LEARNED (1u << 12) /* the port's learned IPv4 addresses are in lrn_ip (IP learning) */

/* Learned addresses a port can hold (an `any` address, or up to 4 dhcp leases). */
#define NWF_LRN_SLOTS 4
#define NWF_LRN_VALID (1ULL << 32)

struct nwf_pkt {
	__u64 dst;		/* destination MAC (memory image) */
	__u64 src;		/* source MAC (memory image) */
	__u32 has;		/* NWF_HAS_* */
	__u16 proto;		/* ebtables' protocol, host order */
	__u16 vlan_tci;
	__u16 vlan_encap;
	__u16 l4_a;		/* first two 16-bit words of the L4 header (ports; ICMPv6 type/code) */
	__u16 l4_b;
	__u8 ip4_tos;
	__u8 ip_proto;		/* IPv4 protocol, or IPv6 upper-layer protocol */
	__u64 ip4_src;		/* memory image */
	__u64 ip4_dst;
	__u64 ip6_src[2];	/* memory image, two halves */
	__u64 ip6_dst[2];
	__u16 arp_hrd;
	__u16 arp_pro;
	__u16 arp_op;
	__u8 arp_hln;
	__u8 arp_pln;
	__u64 arp_sha;		/* memory images */
	__u64 arp_tha;
	__u64 arp_spa;
	__u64 arp_tpa;
	__u64 stp_root_addr;	/* memory images */
	__u64 stp_sender_addr;
	__u32 stp_root_cost;
	__u16 stp_root_prio;
	__u16 stp_sender_prio;
	__u16 stp_port;
	__u16 stp_age;
	__u16 stp_max_age;
	__u16 stp_hello;
	__u16 stp_fwd;
	__u8 stp_type;
	__u8 stp_flags;
	/*
	 * The port's learned IPv4 addresses, with NWF_HAS_LEARNED: NWF_LRN_VALID |
	 * memory image per address (an `any` address, the live dhcp leases), 0 for
	 * an unused slot. The valid bit keeps 0.0.0.0 from matching an unused slot.
	 */
	__u64 lrn_ip[NWF_LRN_SLOTS];
};

/* Is the IPv4 address `x` (memory image) one of the port's learned addresses? */
static __always_inline bool nwf_lrn_match(const struct nwf_pkt *p, __u64 x)
{
	__u64 w = NWF_LRN_VALID | (x & 0xffffffffULL);

	if (!(p->has & NWF_HAS_LEARNED))
		return false;
#pragma unroll
	for (int i = 0; i < NWF_LRN_SLOTS; i++)
		if (p->lrn_ip[i] == w)
			return true;
	return false;
}

/* An ebtables/iptables inversion: `!` flips the comparison result. */
#define NWF_T(neg, cond) ((bool)(cond) != (bool)(neg))
/* Masked equality of memory images (the config holds addr & mask and mask). */
#define NWF_MASKED(x, addr, mask) ((((__u64)(x)) & (mask)) == (addr))
#define NWF_IN_RANGE(x, lo, hi) ((__u64)(x) >= (lo) && (__u64)(x) <= (hi))

/*
 * Rule groups that compare values are global functions: the verifier checks
 * each once, on its own, instead of once per path through the chains (which
 * grows with the number of rules). The call costs a few nanoseconds.
 */
#define NWF_GROUP_FN __attribute__((noinline))

/* Chain outcomes besides a terminal stat (NWF_STAT_ACCEPT or a drop reason). */
#define NWF_CHAIN_RETURN (-1)
#define NWF_CHAIN_FALLOFF (-2)

#endif
