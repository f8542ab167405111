// The reference evaluator: what libvirt's rules would do with one frame.
//
// It follows the semantics doc literally and is written to be obviously
// right, not fast: each L2 test mirrors the kernel ebtables match libvirt
// uses (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp and the basic -s/-d/-p
// match), including their behaviour on frames too short to hold the field
// (no match, whatever the negation). L3/L4 rules mirror the iptables rules
// libvirt writes, seen through br_netfilter after the L2 verdict.
// Every backend is tested against this.
//
// This file is the entry point; the parts live in eval/: frame decoding
// (frame.ts), comparisons (compare.ts), the ebtables matches (ebtables.ts),
// the L2 chain runner (chains.ts), the iptables rules (iptables.ts) and
// connection tracking (conntrack.ts).
import { dropReason, type DropReason } from './reasons.js';
import type { Direction, InterfacePolicy, L2Rule, L3Rule } from './types.js';
import { ETHERTYPES } from './values.js';
import { evalL2 } from './eval/chains.js';
import { hasStatefulRules } from './eval/conntrack.js';
import { decodeFrame, ipv4HeaderOk, ipv6HeaderOk, isFragment } from './eval/frame.js';
import { evalL3, type L3Options } from './eval/iptables.js';
import type { TraceStep } from './eval/trace.js';

export type { ConnInfo } from './eval/conntrack.js';
export type { TraceStep };

export interface EvalOptions extends L3Options {
  /** Model br_netfilter (on by default in a new network namespace): IP frames pass iptables, bad headers are dropped. */
  brNetfilter?: boolean;
}

export interface EvalResult {
  verdict: 'accept' | 'drop';
  /** Set when dropped. */
  reason?: DropReason | 'host';
  /** The rule that decided, if a rule did. */
  decidedBy?: { stage: 'l2' | 'l3'; ruleId: string; filter: string; rule: number };
  trace: TraceStep[];
}

/** The verdict libvirt's rules give `frame` on `policy`'s interface in `direction`. */
export function evaluate(policy: InterfacePolicy, direction: Direction, frame: Uint8Array, opts: EvalOptions = {}): EvalResult {
  const trace: TraceStep[] = [];
  const f = decodeFrame(frame);
  if (!f) {
    trace.push({ stage: 'host', chain: '-', event: 'drop', note: 'runt frame: shorter than an Ethernet header; the kernel never delivers it' });
    return { verdict: 'drop', reason: 'host', trace };
  }
  const l2 = evalL2(policy, direction, f, trace);
  if (l2.verdict === 'drop') {
    const r = l2.rule as L2Rule;
    return { verdict: 'drop', reason: dropReason(r.origin), decidedBy: { stage: 'l2', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule }, trace };
  }
  const brnf = opts.brNetfilter ?? true;
  // br_netfilter hands forwarded ARP to arptables and drops ARP too short for its 8-byte header.
  if (brnf && f.proto === ETHERTYPES.ARP && opts.path !== 'host' && !f.net.has(0, 8)) {
    trace.push({ stage: 'host', chain: 'br_netfilter', event: 'drop', note: 'ARP shorter than its header (br_netfilter drops it before arptables)' });
    return { verdict: 'drop', reason: 'host', trace };
  }
  const isIp = f.proto === ETHERTYPES.IPV4 || f.proto === ETHERTYPES.IPV6;
  if (isIp && brnf) {
    const ok = f.proto === ETHERTYPES.IPV4 ? ipv4HeaderOk(f.net) : ipv6HeaderOk(f.net);
    if (!ok) {
      trace.push({ stage: 'host', chain: 'br_netfilter', event: 'drop', note: 'invalid IP header (br_netfilter validates it before iptables)' });
      return { verdict: 'drop', reason: 'host', trace };
    }
    if (hasStatefulRules(policy, f.proto === ETHERTYPES.IPV4 ? 'ipv4' : 'ipv6') && isFragment(f)) {
      // Connection tracking (in use for this family's stateful rules) reassembles fragments first; a lone fragment never passes.
      trace.push({ stage: 'host', chain: 'conntrack', event: 'drop', note: 'IP fragment held for reassembly by connection tracking' });
      return { verdict: 'drop', reason: 'host', trace };
    }
    const l3 = evalL3(policy, direction, f, opts, trace);
    if (l3.verdict === 'drop') {
      const r = l3.rule as L3Rule;
      return { verdict: 'drop', reason: l3.hotdrop ? 'host' : dropReason(r.origin), decidedBy: { stage: 'l3', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule }, trace };
    }
  }
  const res: EvalResult = { verdict: 'accept', trace };
  if (l2.rule) res.decidedBy = { stage: 'l2', ruleId: l2.rule.id, filter: l2.rule.origin.filter, rule: l2.rule.origin.rule };
  return res;
}
