// The nftables ruleset as the second line (--backend both). The eBPF
// programs on the taps enforce the whole L2 (ebtables) layer, so nft may
// leave out an L2 test it cannot express, as long as what it leaves in force
// never drops a frame the full policy accepts: a frame is delivered only
// when both layers accept it, so nft accepting a superset keeps the result
// exact, while nft dropping more would not.
//
// A rule with a test nft cannot express becomes, in nft:
//   drop, continue        left out (the frame goes on, as if the test failed);
//   accept, root return   the same verdict without that test (accepts more);
//   sub-chain return      accept without that test: going back to the caller
//                         could end in a drop the full policy never reaches,
//                         accepting is always at least as permissive.
// Under `nft` alone the same tests are refused (NWF1402), never approximated.
import type { Direction, InterfacePolicy, L2Chain, L2Entry, L2Match, L2Rule } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';

/** An L2 test nft cannot express: what it is, and the match without it. */
export interface NftL2Gap {
  /** The test. */
  what: string;
  /** Why nft cannot express it. */
  why: string;
  without: L2Match;
}

/** The part of an L2 match nft cannot express, if any. */
export function nftL2Gap(m: L2Match): NftL2Gap | undefined {
  if ((m.proto === 'arp' || m.proto === 'rarp') && m.gratuitous) {
    const { gratuitous: _g, ...without } = m;
    return {
      what: 'the ARP gratuitous test (sender IP equal to target IP)',
      why: 'nft compares a packet field with constants only, never with another field',
      without,
    };
  }
  if (m.proto === 'ipv6' && m.icmpType?.neg) {
    const code = m.icmpCode;
    if (code && !(code.lo === 0 && code.hi === 255)) {
      const { icmpType: _t, icmpCode: _c, ...without } = m;
      return { what: 'a negated ICMPv6 type and code range', why: 'nft negates each field alone, not the pair', without };
    }
  }
  return undefined;
}

/** What nft does with a rule it cannot express (second line). */
export type SecondLineAction = 'leaves it out' | 'accepts without the test';

/** One rule instance nft does not enforce as written. */
export interface SecondLineGap {
  direction: Direction;
  rule: L2Rule;
  what: string;
  why: string;
  nft: SecondLineAction;
}

/** The rule as nft enforces it (undefined: left out). */
function approximate(rule: L2Rule, inRoot: boolean, gaps: SecondLineGap[], dir: Direction): L2Rule | undefined {
  const gap = nftL2Gap(rule.match);
  if (!gap) return rule;
  if (rule.verdict === 'drop' || rule.verdict === 'continue') {
    gaps.push({ direction: dir, rule, what: gap.what, why: gap.why, nft: 'leaves it out' });
    return undefined;
  }
  gaps.push({ direction: dir, rule, what: gap.what, why: gap.why, nft: 'accepts without the test' });
  return { ...rule, match: gap.without, verdict: rule.verdict === 'return' && inRoot ? 'return' : 'accept' };
}

/** Whether nft expresses every L2 test of the policy (then it can enforce the port alone). */
export function nftExpressesL2(p: InterfacePolicy): boolean {
  return !DIRECTIONS.some((d) => p.l2[d].root.some((e) => e.kind === 'rule' && nftL2Gap(e.rule.match)) || p.l2[d].chains.some((c) => c.rules.some((r) => nftL2Gap(r.match))));
}

/**
 * A port's policy as the nft second line enforces it, and the rules it does
 * not enforce as written. A policy nft expresses whole is returned as is.
 */
export function secondLinePolicy(p: InterfacePolicy): { policy: InterfacePolicy; gaps: SecondLineGap[] } {
  const gaps: SecondLineGap[] = [];
  if (nftExpressesL2(p)) return { policy: p, gaps };
  const l2 = { ...p.l2 };
  for (const dir of DIRECTIONS) {
    const root: L2Entry[] = [];
    for (const e of p.l2[dir].root) {
      if (e.kind !== 'rule') root.push(e);
      else {
        const r = approximate(e.rule, true, gaps, dir);
        if (r) root.push(r === e.rule ? e : { kind: 'rule', rule: r });
      }
    }
    const chains: L2Chain[] = p.l2[dir].chains.map((c) => {
      const rules: L2Rule[] = [];
      for (const r of c.rules) {
        const a = approximate(r, false, gaps, dir);
        if (a) rules.push(a);
      }
      return { ...c, rules };
    });
    l2[dir] = { root, chains };
  }
  return { policy: { ...p, l2 }, gaps };
}
