// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * nwf-fast tc programs: libvirt's L2 nwfilter semantics for one interface.
 *
 *   nwf_from_vm  tc ingress on the tap: traffic from the VM ('out', libvirt-I-TAP)
 *   nwf_to_vm    tc egress on the tap: traffic to the VM ('in', libvirt-O-TAP)
 *
 * The entry points are thin: the logic is in lib/ and the policy's rule
 * structure comes from the generated nwf_policy.h (one per policy shape);
 * the values (MACs, IPs, ...) come from the nwf_cfg map, so every interface
 * with the same shape shares this object. L3/L4 rules are not enforced here:
 * the nftables backend does them (--backend both; see src/backends/bpf/compile.ts).
 */
#include "nwf_common.h"
#include "nwf_policy.h"
#include "nwf_run.h"

SEC("tc")
int nwf_from_vm(struct __sk_buff *skb)
{
	return nwf_run(skb, NWF_DIR_OUT);
}

SEC("tc")
int nwf_to_vm(struct __sk_buff *skb)
{
	return nwf_run(skb, NWF_DIR_IN);
}

char LICENSE[] SEC("license") = "GPL";
