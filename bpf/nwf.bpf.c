// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * nwf-fast programs: libvirt's L2 nwfilter semantics for one interface.
 *
 *   nwf_from_vm      tc/tcx ingress on the tap: traffic from the VM ('out', libvirt-I-TAP)
 *   nwf_from_vm_xdp  the same policy as an XDP program on the tap (the frames
 *                    the guest writes, before an skb exists)
 *   nwf_to_vm        tc/tcx egress on the tap: traffic to the VM ('in', libvirt-O-TAP)
 *
 * The entry points are thin: the logic is in lib/ and the policy's rule
 * structure comes from the generated nwf_policy.h (one per policy shape);
 * the values (MACs, IPs, ...) come from the nwf_cfg map, so every interface
 * with the same shape shares this object. L3/L4 rules are not enforced here:
 * the nftables backend does them (--backend both; see src/backends/bpf/compile.ts).
 * Accept is TC_ACT_OK / XDP_PASS (the frame goes on to the bridge, where
 * netfilter and so the nft L3 path still see it), drop TC_ACT_SHOT / XDP_DROP.
 */
#include "nwf_common.h"
#include "nwf_policy.h"
#include "nwf_run.h"

SEC("tc")
int nwf_from_vm(struct __sk_buff *skb)
{
	return nwf_run(skb, NWF_KIND_TC, NWF_DIR_OUT, skb->ifindex) == NWF_STAT_ACCEPT ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int nwf_to_vm(struct __sk_buff *skb)
{
	return nwf_run(skb, NWF_KIND_TC, NWF_DIR_IN, skb->ifindex) == NWF_STAT_ACCEPT ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("xdp.frags")
int nwf_from_vm_xdp(struct xdp_md *xdp)
{
	return nwf_run(xdp, NWF_KIND_XDP, NWF_DIR_OUT, xdp->ingress_ifindex) == NWF_STAT_ACCEPT ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
