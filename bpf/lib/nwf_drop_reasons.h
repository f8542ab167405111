/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Drop reasons, in one place (the BPF side of src/ir/reasons.ts).
 *
 * A policy walk ends in NWF_STAT_ACCEPT or one of the reasons. The stats map
 * (nwf_stats) counts drops only: one slot per direction and reason, key =
 * dir * NWF_NSTATS + reason - NWF_DROP_MIN. The order of the reasons 1..6 is
 * the order of DROP_REASONS in src/ir/reasons.ts (a unit test checks it).
 */
#ifndef NWF_DROP_REASONS_H
#define NWF_DROP_REASONS_H

enum nwf_stat {
	NWF_STAT_ACCEPT = 0,		/* accepted (not counted) */
	NWF_DROP_MAC_SPOOF = 1,		/* mac-spoof: no-mac-spoofing */
	NWF_DROP_IP_SPOOF = 2,		/* ip-spoof: no-ip-spoofing, no-ipv6-spoofing */
	NWF_DROP_ARP_SPOOF = 3,		/* arp-spoof: no-arp-mac-spoofing, no-arp-ip-spoofing */
	NWF_DROP_RARP = 4,		/* rarp: no-other-rarp-traffic */
	NWF_DROP_OTHER_L2 = 5,		/* other-l2: no-other-l2-traffic */
	NWF_DROP_POLICY = 6,		/* policy: any other drop rule */
	NWF_DROP_INTERNAL = 7,		/* internal: no or wrong config, a frame the kernel would not hand to ebtables (fail closed) */
	NWF_STAT_END = 8,
};

#define NWF_DROP_MIN NWF_DROP_MAC_SPOOF
#define NWF_NSTATS (NWF_STAT_END - NWF_DROP_MIN) /* counter slots per direction */

#endif
