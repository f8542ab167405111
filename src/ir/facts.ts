// Facts derived from PolicyIR that more than one stage needs (the evaluator,
// the nft and bpf backends, manifests): written once here.
import { DIRECTIONS, L3_PATHS, type InterfacePolicy, type L3Rule } from './types.js';
import { L4_HEADER_SIZE } from './values.js';

/** An interface's rule counts: L2 root entries (rules and jumps) plus sub-chain rules, and L3 rules over the three paths. */
export function ruleCounts(p: InterfacePolicy): { l2Rules: number; l3Rules: number } {
  return {
    l2Rules: DIRECTIONS.reduce((n, d) => n + p.l2[d].root.length + p.l2[d].chains.reduce((m, c) => m + c.rules.length, 0), 0),
    l3Rules: L3_PATHS.reduce((n, k) => n + p.l3[k].length, 0),
  };
}

/**
 * Size of the protocol header the iptables match of an L3 rule's port,
 * TCP-flag, TCP-option or ICMP-type test reads, or undefined when the rule
 * has no such test. iptables drops a packet whose header is shorter.
 */
export function l4MatchHeaderSize(r: L3Rule): number | undefined {
  if (!(r.srcPort || r.dstPort || r.tcpFlags || r.tcpOption || r.icmp) || r.protocol === 'all') return undefined;
  return L4_HEADER_SIZE[r.protocol];
}
