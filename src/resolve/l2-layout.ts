// The L2 layout of one interface: per direction, the root chain's rules and
// the jumps to sub-chains (placed before the first root rule whose priority
// is at least the chain's, each guarded by the chain's protocol), and the
// sub-chains with their raised priorities, as libvirt builds them.
import { InternalError } from '../util/errors.js';
import type { Direction, JumpGuard, L2Chain, L2Entry, L2Policy, L2Rule } from '../ir/types.js';
import { ETHERTYPE_OF } from '../ir/values.js';
import type { RuleNode } from '../xml/ast.js';
import type { L2Element } from '../xml/schema.js';
import { buildL2Match } from './tests.js';
import { origin, type Expanded } from './walk.js';

function l2Verdict(action: RuleNode['action']): L2Rule['verdict'] {
  return action === 'reject' ? 'drop' : action;
}

/** The guard of a jump to a sub-chain, by the chain name's protocol prefix. */
const GUARDS: Readonly<Record<string, JumpGuard>> = {
  mac: { kind: 'none' },
  stp: { kind: 'stp' },
  ...Object.fromEntries(Object.entries(ETHERTYPE_OF).map(([name, etherType]) => [name, { kind: 'ethertype', etherType }])),
};

function chainGuard(chain: string): JumpGuard {
  const g = GUARDS[chain.split('-')[0] as string];
  if (!g) throw new InternalError(`chain without protocol prefix: ${chain}`);
  return g;
}

export function layoutL2(sorted: readonly Expanded[], iface: string): Record<Direction, L2Policy> {
  const result = {} as Record<Direction, L2Policy>;
  for (const dir of ['out', 'in'] as const) {
    const rootRules: L2Rule[] = [];
    const chains = new Map<string, L2Chain>();
    // seen occurrences (per the same walk over all rules, as libvirt's hash update)
    for (const { inst, combos } of sorted) {
      const t = inst.rule.direction;
      const inDir = dir === 'out' ? t === 'out' || t === 'inout' : t === 'in' || t === 'inout';
      if (!inDir) continue;
      const isRoot = inst.filter.chain === 'root';
      const priority = !isRoot && inst.filter.chainPriority > inst.rule.priority ? inst.filter.chainPriority : inst.rule.priority;
      const reverse = dir === 'out' && t === 'inout';
      const element = inst.rule.protocol?.element as L2Element | undefined;
      const neg = inst.rule.protocol ? !inst.rule.protocol.match : false;
      const rules = combos.map(
        (c): L2Rule => ({
          id: c.id,
          verdict: l2Verdict(inst.rule.action),
          match: buildL2Match(element, c.attrs, neg, reverse, inst, iface),
          priority,
          origin: origin(inst, c.combo),
        }),
      );
      if (isRoot) rootRules.push(...rules);
      else {
        let ch = chains.get(inst.filter.chain);
        if (!ch) chains.set(inst.filter.chain, (ch = { name: inst.filter.chain, priority: inst.filter.chainPriority, rules: [] }));
        // libvirt records the chain priority of every rule it sees: the last one wins.
        ch.priority = inst.filter.chainPriority;
        ch.rules.push(...rules);
      }
    }
    const chainList = [...chains.values()].sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const root: L2Entry[] = [];
    let j = 0;
    for (const r of rootRules) {
      while (j < chainList.length && (chainList[j] as L2Chain).priority <= r.priority) {
        const ch = chainList[j++] as L2Chain;
        root.push({ kind: 'jump', chain: ch.name, guard: chainGuard(ch.name), priority: ch.priority });
      }
      root.push({ kind: 'rule', rule: r });
    }
    for (; j < chainList.length; j++) {
      const ch = chainList[j] as L2Chain;
      root.push({ kind: 'jump', chain: ch.name, guard: chainGuard(ch.name), priority: ch.priority });
    }
    result[dir] = { root, chains: chainList };
  }
  return result;
}
