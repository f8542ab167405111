/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Maps of one loaded instance (one interface):
 *  - nwf_cfg: the policy values (MACs, addresses, ports, ...) as the generated
 *    struct nwf_config, in two slots for atomic updates: userspace writes the
 *    slot that is not active, then flips nwf_sel.
 *  - nwf_sel: key 0 = the active nwf_cfg slot (0 or 1).
 *  - nwf_stats: per-CPU counters, key = dir * NWF_STAT_MAX + stat.
 */
#ifndef NWF_MAPS_H
#define NWF_MAPS_H

#include "nwf_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct nwf_config);
} nwf_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nwf_sel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * NWF_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} nwf_stats SEC(".maps");

#endif
