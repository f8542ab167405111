/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One frame through one direction's policy: find the active config, parse,
 * walk the generated chains, count, and turn the outcome into a tc verdict:
 * TC_ACT_OK for accept (the frame goes on; tc stops here, netfilter, and so
 * the nft L3 path, still sees it), TC_ACT_SHOT for drop. Anything unexpected
 * (no config, a config of another shape) fails closed: dropped, counted as
 * NWF_DROP_INTERNAL.
 */
#ifndef NWF_RUN_H
#define NWF_RUN_H

#include "nwf_common.h"
#include "nwf_maps.h"
#include "nwf_parse.h"

static __always_inline int nwf_finish(__u32 idx, int dir, __u32 stat)
{
	__u32 key = (idx * 2 + (__u32)dir) * NWF_STAT_MAX + (stat < NWF_STAT_MAX ? stat : NWF_DROP_INTERNAL);
	__u64 *cnt = bpf_map_lookup_elem(&nwf_stats, &key);

	if (cnt)
		*cnt += 1; /* per-CPU slot */
	return stat == NWF_STAT_ACCEPT ? TC_ACT_OK : TC_ACT_SHOT;
}

/* The tap's index in this object, from the ifindex the frame passes; ~0 when unknown. */
static __always_inline __u32 nwf_index(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *idx = bpf_map_lookup_elem(&nwf_ifx, &ifindex);

	return idx ? *idx : ~0U;
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

static __always_inline int nwf_run(struct __sk_buff *skb, const int dir)
{
	struct nwf_pkt p;
	const struct nwf_config *c;
	int v;

	__u32 idx = nwf_index(skb);

	if (dir == NWF_DIR_OUT ? !NWF_HOOKED_OUT : !NWF_HOOKED_IN)
		return nwf_finish(idx, dir, NWF_STAT_ACCEPT); /* no L2 rules: nothing hooked, all accepted */
	c = nwf_config(idx);
	if (!c)
		return nwf_finish(idx, dir, NWF_DROP_INTERNAL);
	__builtin_memset(&p, 0, sizeof(p));
	if (!nwf_parse(skb, &p))
		return nwf_finish(idx, dir, NWF_DROP_INTERNAL);
	v = dir == NWF_DIR_OUT ? nwf_policy_out(&p, c) : nwf_policy_in(&p, c);
	if (v < 0) /* cannot happen: the root chain maps return and fall-off to accept */
		v = NWF_DROP_INTERNAL;
	return nwf_finish(idx, dir, (__u32)v);
}

#endif
