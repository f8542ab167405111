// The L2 chain runner: libvirt's root chain and its sub-chains in one
// direction, with ebtables' RETURN and fall-off (user chains ACCEPT) rules.
import { assertNever } from '../../util/errors.js';
import type { Direction, InterfacePolicy, L2Chain, L2Rule } from '../types.js';
import { guardHolds, matchL2 } from './ebtables.js';
import type { Frame } from './frame.js';
import type { TraceStep } from './trace.js';

type ChainOutcome = { kind: 'verdict'; verdict: 'accept' | 'drop'; rule: L2Rule } | { kind: 'return'; rule: L2Rule } | { kind: 'fall-off' };

function runChain(f: Frame, chainName: string, rules: readonly L2Rule[], trace: TraceStep[]): ChainOutcome {
  for (const r of rules) {
    if (!matchL2(f, r.match)) continue;
    trace.push({ stage: 'l2', chain: chainName, event: 'match', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, verdict: r.verdict });
    switch (r.verdict) {
      case 'accept':
        return { kind: 'verdict', verdict: 'accept', rule: r };
      case 'drop':
        return { kind: 'verdict', verdict: 'drop', rule: r };
      case 'return':
        return { kind: 'return', rule: r };
      case 'continue':
        continue;
      default:
        return assertNever(r.verdict, 'L2 verdict');
    }
  }
  return { kind: 'fall-off' };
}

export function l2ChainName(dir: Direction, iface: string, chain?: string): string {
  const p = dir === 'out' ? 'I' : 'O';
  return chain ? `${p}-${iface}-${chain}` : `libvirt-${p}-${iface}`;
}

export function evalL2(p: InterfacePolicy, dir: Direction, f: Frame, trace: TraceStep[]): { verdict: 'accept' | 'drop'; rule?: L2Rule } {
  const pol = p.l2[dir];
  const rootName = l2ChainName(dir, p.iface);
  if (pol.root.length === 0) {
    trace.push({ stage: 'l2', chain: rootName, event: 'not-hooked', note: 'no L2 rules in this direction' });
    return { verdict: 'accept' };
  }
  const chains = new Map<string, L2Chain>(pol.chains.map((c) => [c.name, c]));
  for (const e of pol.root) {
    if (e.kind === 'rule') {
      const o = runChain(f, rootName, [e.rule], trace);
      if (o.kind === 'verdict') return { verdict: o.verdict, rule: o.rule };
      // RETURN from the root chain goes back to PREROUTING/POSTROUTING, whose policy accepts.
      if (o.kind === 'return') return { verdict: 'accept', rule: o.rule };
      continue;
    }
    if (!guardHolds(f, e.guard)) continue;
    const ch = chains.get(e.chain) as L2Chain;
    const sub = l2ChainName(dir, p.iface, e.chain);
    trace.push({ stage: 'l2', chain: rootName, event: 'jump', note: sub });
    const o = runChain(f, sub, ch.rules, trace);
    if (o.kind === 'verdict') return { verdict: o.verdict, rule: o.rule };
    if (o.kind === 'return') {
      trace.push({ stage: 'l2', chain: sub, event: 'return', note: `back to ${rootName}` });
      continue;
    }
    // Falling off a user chain: ebtables user chains have policy ACCEPT.
    trace.push({ stage: 'l2', chain: sub, event: 'fall-off', verdict: 'accept', note: 'end of chain: policy ACCEPT' });
    return { verdict: 'accept' };
  }
  trace.push({ stage: 'l2', chain: rootName, event: 'fall-off', verdict: 'accept', note: 'end of chain: policy ACCEPT' });
  return { verdict: 'accept' };
}
