/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One frame through one direction's policy: find the tap and its active
 * config, parse, walk the generated chains, and count a drop. The outcome is
 * NWF_STAT_ACCEPT or a drop reason; the entry programs turn it into their
 * hook's verdict. Anything unexpected (a frame on an interface this object
 * does not know, no config, a config of another shape) fails closed: dropped,
 * counted as NWF_DROP_INTERNAL where the tap is known.
 *
 * The accept path is kept short: one lookup for the tap (an array for the
 * usual ifindexes), two array lookups for its values, one read of the
 * headers the policy needs; no counter is written for an accepted frame.
 */
#ifndef NWF_RUN_H
#define NWF_RUN_H

#include "nwf_common.h"
#include "nwf_maps.h"
#include "nwf_parse.h"
#include "nwf_learn.h"

#define NWF_NO_TAP (~0U)

/* Count a drop in the tap's per-CPU slot; returns the reason. */
static __always_inline __u32 nwf_drop(__u32 idx, const int dir, __u32 reason)
{
	__u32 r = reason >= NWF_DROP_MIN && reason < NWF_STAT_END ? reason : NWF_DROP_INTERNAL;
	__u32 key = (idx * 2 + (__u32)dir) * NWF_NSTATS + (r - NWF_DROP_MIN);
	__u64 *cnt = bpf_map_lookup_elem(&nwf_stats, &key);

	if (cnt)
		*cnt += 1;
	return r;
}

/* The tap's index in this object, from the ifindex the frame passes; NWF_NO_TAP when unknown. */
static __always_inline __u32 nwf_index(__u32 ifindex)
{
	__u32 *d = bpf_map_lookup_elem(&nwf_ifx_dir, &ifindex);
	__u32 *h;

	if (d)
		return *d ? *d - 1 : NWF_NO_TAP;
	h = bpf_map_lookup_elem(&nwf_ifx, &ifindex);
	return h ? *h : NWF_NO_TAP;
}

static __always_inline const struct nwf_config *nwf_config(__u32 idx)
{
	__u32 *sel = bpf_map_lookup_elem(&nwf_slot, &idx);
	const struct nwf_config *c;
	__u32 key;

	if (!sel)
		return 0;
	key = idx * 2 + (*sel & 1);
	c = bpf_map_lookup_elem(&nwf_cfg, &key);
	if (!c || c->shape != NWF_SHAPE_TAG)
		return 0;
	return c;
}

/* NWF_STAT_ACCEPT or the (counted) drop reason of the frame in `ctx`, a program of `kind`. */
static __always_inline __u32 nwf_run(void *ctx, const int kind, const int dir, __u32 ifindex)
{
	struct nwf_pkt p;
	const struct nwf_config *c;
	__u32 idx;
	int v;

	if (dir == NWF_DIR_OUT ? !NWF_HOOKED_OUT : !NWF_HOOKED_IN)
		return NWF_STAT_ACCEPT; /* no L2 rules: nothing hooked, all accepted */
	idx = nwf_index(ifindex);
	c = nwf_config(idx);
	if (!c)
		return nwf_drop(idx, dir, NWF_DROP_INTERNAL);
	__builtin_memset(&p, 0, sizeof(p));
	if (!nwf_parse(ctx, kind, &p))
		return nwf_drop(idx, dir, NWF_DROP_INTERNAL);
#if NWF_LEARN_ANY
	v = nwf_learn(&p, c, dir, ifindex);
	if (v == NWF_STAT_ACCEPT)
		return NWF_STAT_ACCEPT;
	if (v != NWF_LRN_POLICY)
		return nwf_drop(idx, dir, (__u32)v);
#endif
#if NWF_LEARN_DHCP
	{
		struct nwf_lrn_dhcp_val *ls = bpf_map_lookup_elem(&nwf_lrn_dhcp, &ifindex);

		if (!ls) {
			/*
			 * User space creates the entry (with its seeded leases) before the
			 * tap is enabled; a tap re-created since starts with free slots
			 * (the DHCP-only table), one writer winning as for `any`.
			 */
			bpf_map_update_elem(&nwf_lrn_dhcp, &ifindex, &nwf_lrn_dhcp_free, BPF_NOEXIST);
			ls = bpf_map_lookup_elem(&nwf_lrn_dhcp, &ifindex);
			if (!ls)
				return nwf_drop(idx, dir, NWF_DROP_INTERNAL); /* map full: fail closed */
		}
		v = nwf_dhcp_before(&p, c, dir, ls);
		if (v == NWF_LRN_POLICY)
			v = dir == NWF_DIR_OUT ? nwf_policy_out(&p, c) : nwf_policy_in(&p, c);
		if (v == NWF_STAT_ACCEPT) {
			/* only a frame the policy (or the DHCP-only table) accepts teaches or releases */
			nwf_dhcp_after(ctx, kind, &p, c, dir, ls);
			return NWF_STAT_ACCEPT;
		}
		return nwf_drop(idx, dir, v > 0 ? (__u32)v : NWF_DROP_INTERNAL);
	}
#endif
	v = dir == NWF_DIR_OUT ? nwf_policy_out(&p, c) : nwf_policy_in(&p, c);
	if (v == NWF_STAT_ACCEPT)
		return NWF_STAT_ACCEPT;
	/* a negative v cannot happen: the root chain maps return and fall-off to accept */
	return nwf_drop(idx, dir, v > 0 ? (__u32)v : NWF_DROP_INTERNAL);
}

#endif
