/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Maps of one loaded object, shared by every tap of one policy shape. Each
 * tap has an index (0..N-1, N set by the loader before loading), found from
 * the ifindex the frame passes:
 *  - nwf_ifx_dir: ifindex -> index + 1 (0: not a tap of this object), an
 *    array for the ifindexes below its size (the loader sizes it from the
 *    taps' ifindexes, up to a cap): the lookup is a bounds check and a load;
 *  - nwf_ifx: ifindex -> index, a hash for the ifindexes beyond the array;
 *  - nwf_slot: index -> the active nwf_cfg slot (0 or 1);
 *  - nwf_cfg: index * 2 + slot -> the tap's policy values (MACs, addresses,
 *    ports, ...) as the generated struct nwf_config; userspace writes the slot
 *    that is not active, then flips nwf_slot (atomic updates);
 *  - nwf_stats: per-CPU drop counters, key = (index * 2 + dir) * NWF_NSTATS
 *    + reason - 1 (accepted frames are not counted: the accept path writes
 *    nothing).
 */
#ifndef NWF_MAPS_H
#define NWF_MAPS_H

#include "nwf_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nwf_ifx_dir SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nwf_ifx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nwf_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct nwf_config);
} nwf_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * NWF_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} nwf_stats SEC(".maps");

#endif
