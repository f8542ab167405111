/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * IP learning (docs/design/ip-learning.md 2.2, 3), for shapes whose policy
 * learns $IP (NWF_LEARN_ANY set by the generated nwf_policy.h).
 *
 * nwf_lrn_any: tap ifindex -> the learned address. Pinned by name under
 * nwf-fast's pin directory and shared by every learning shape's object, so
 * reloading programs keeps it; user space seeds an entry before the tap is
 * enabled, reads entries back and deletes a departed tap's entry.
 *
 * Before the lock, libvirt's learning table: from the VM the right MAC with
 * IPv4 or ARP passes, everything else drops; to the VM everything passes.
 * The first IPv4 frame from the VM with a source outside 0.0.0.0 and
 * 224.0.0.0/3 locks the port: bpf_map_update_elem(BPF_NOEXIST) under the
 * hash map's bucket lock, so exactly one writer wins; a frame that lost
 * (-EEXIST) reads the winner. Either way the frame then takes the policy,
 * whose learned $IP tests compare with the winner. A full map learns
 * nothing and drops (fail closed).
 */
#ifndef NWF_LEARN_H
#define NWF_LEARN_H

#include "nwf_common.h"

#ifndef NWF_LEARN_ANY
#define NWF_LEARN_ANY 0
#endif

#if NWF_LEARN_ANY
#define NWF_LRN_MAX 65536

/* The learned address of an `any` port. */
struct nwf_lrn_any_val {
	__u64 addr;	  /* memory image of the IPv4 address (4 bytes, zero-extended) */
	__u64 learned_ns; /* bpf_ktime_get_boot_ns() when learned; 0: seeded by user space */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NWF_LRN_MAX);
	__type(key, __u32);
	__type(value, struct nwf_lrn_any_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nwf_lrn_any SEC(".maps");

/* libvirt learns from IPv4 sources other than 0.0.0.0 and 224.0.0.0/3. */
static __always_inline bool nwf_lrn_teaches(const struct nwf_pkt *p)
{
	const __u8 *b = (const __u8 *)&p->ip4_src;

	return (p->has & NWF_HAS_IP4) && p->ip4_src != 0 && (b[0] & 0xe0) != 0xe0;
}

#define NWF_LRN_POLICY (-1) /* go on with the policy (the port is locked) */

/*
 * Before the policy: the learned address into p (the policy's learned tests
 * read p->lrn_ip), or the learning table's verdict while the port learns.
 */
static __always_inline int nwf_learn(struct nwf_pkt *p, const struct nwf_config *c, const int dir, __u32 ifindex)
{
	struct nwf_lrn_any_val *w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);

	if (!w) {
		if (dir == NWF_DIR_IN)
			return NWF_STAT_ACCEPT; /* learning: everything to the VM passes */
		if (p->src != c->lrn_mac)
			return NWF_DROP_MAC_SPOOF;
		if (p->proto == NWF_ETH_P_ARP)
			return NWF_STAT_ACCEPT;
		if (p->proto != NWF_ETH_P_IPV4)
			return NWF_DROP_OTHER_L2;
		if (!nwf_lrn_teaches(p))
			return NWF_STAT_ACCEPT;
		{
			struct nwf_lrn_any_val v = { .addr = p->ip4_src, .learned_ns = bpf_ktime_get_boot_ns() };

			bpf_map_update_elem(&nwf_lrn_any, &ifindex, &v, BPF_NOEXIST);
		}
		/* this frame won, or another CPU did first: the winner is in the map */
		w = bpf_map_lookup_elem(&nwf_lrn_any, &ifindex);
		if (!w)
			return NWF_DROP_INTERNAL; /* map full: nothing learned, fail closed */
	}
	p->lrn_ip = w->addr;
	p->has |= NWF_HAS_LEARNED;
	return NWF_LRN_POLICY;
}
#endif

#endif
