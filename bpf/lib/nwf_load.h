/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one way nwf-fast reads frame bytes, for both kinds of program:
 *  - tc (struct __sk_buff): bpf_skb_load_bytes, bounds-checked against the
 *    whole frame and working on non-linear skbs (a sender such as trafgen
 *    leaves only the Ethernet header in the linear area, so direct packet
 *    access would see a 14-byte frame);
 *  - XDP (struct xdp_md): bpf_xdp_load_bytes, the same over the frame and its
 *    fragments (multi-buffer frames).
 * The kind is a compile-time constant of each entry program: the helper of
 * the other kind is never in its code. A failed read means "the frame is too
 * short for this field": the caller leaves the field's presence flag clear
 * and every test of the field then fails, as in ebtables.
 */
#ifndef NWF_LOAD_H
#define NWF_LOAD_H

#include "nwf_common.h"

/* Largest offset a read may start at (both helpers refuse more than 0xffff anyway). */
#define NWF_MAX_OFF 0xffffu

/* Copy `len` (a constant) bytes at frame offset `off` to `to`; false when the frame is shorter. */
static __always_inline bool nwf_load(void *ctx, const int kind, __u32 off, void *to, __u32 len)
{
	if (off > NWF_MAX_OFF)
		return false;
	if (kind == NWF_KIND_XDP)
		return bpf_xdp_load_bytes((struct xdp_md *)ctx, off, to, len) == 0;
	return bpf_skb_load_bytes(ctx, off, to, len) == 0;
}

static __always_inline __u16 nwf_be16(const __u8 *b)
{
	return ((__u16)b[0] << 8) | b[1];
}

static __always_inline __u32 nwf_be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

#endif
