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
import { appendAll, deepFreeze } from '../util/arrays.js';
import type { Expansion } from './expansion.js';
import { origin, type RuleInstance } from './walk.js';

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
  const dash = chain.indexOf('-');
  const g = GUARDS[dash < 0 ? chain : chain.slice(0, dash)];
  if (!g) throw new InternalError(`chain without protocol prefix: ${chain}`);
  return g;
}

/** The L2 rules of one expanded rule in one direction, and their root-chain entries (cached on the expansion; frozen when shared). */
function l2Rules(e: Expansion, dir: Direction, iface: string): { rules: L2Rule[]; entries: L2Entry[] } {
  const cached = e.l2[dir];
  if (cached) return cached;
  const { inst } = e;
  const t = inst.rule.direction;
  const isRoot = inst.filter.chain === 'root';
  const priority = !isRoot && inst.filter.chainPriority > inst.rule.priority ? inst.filter.chainPriority : inst.rule.priority;
  const reverse = dir === 'out' && t === 'inout';
  const element = inst.rule.protocol?.element as L2Element | undefined;
  const neg = inst.rule.protocol ? !inst.rule.protocol.match : false;
  const verdict = l2Verdict(inst.rule.action);
  const rules = e.combos.map(
    (c): L2Rule => ({
      id: c.id,
      verdict,
      match: buildL2Match(element, c.attrs, neg, reverse, inst, iface),
      priority,
      origin: origin(inst, c.combo),
    }),
  );
  const out = { rules, entries: isRoot ? rules.map((rule): L2Entry => ({ kind: 'rule', rule })) : [] };
  if (e.shared) deepFreeze(out);
  return (e.l2[dir] = out);
}

function inDirection(inst: RuleInstance, dir: Direction): boolean {
  const t = inst.rule.direction;
  return dir === 'out' ? t === 'out' || t === 'inout' : t === 'in' || t === 'inout';
}

/**
 * The shape of one direction's layout, which depends only on the rules
 * reached (their chains and priorities), not on the values of their
 * variables: the root chain as jumps (shared, frozen) and positions of root
 * rules in the rule list, and each sub-chain with the positions of its rules.
 */
interface DirectionPlan {
  root: (L2Entry | number)[];
  chains: { name: string; priority: number; members: number[] }[];
}

export type L2Plan = Record<Direction, DirectionPlan>;

/** The plan of an interface whose L2 rules are `sorted` (in libvirt's order): see DirectionPlan. */
export function planL2(sorted: readonly RuleInstance[]): L2Plan {
  const plan = {} as L2Plan;
  for (const dir of ['out', 'in'] as const) {
    const rootRules: number[] = [];
    const chains = new Map<string, DirectionPlan['chains'][number]>();
    // seen occurrences (per the same walk over all rules, as libvirt's hash update)
    sorted.forEach((inst, i) => {
      if (!inDirection(inst, dir)) return;
      if (inst.filter.chain === 'root') rootRules.push(i);
      else {
        let ch = chains.get(inst.filter.chain);
        if (!ch) chains.set(inst.filter.chain, (ch = { name: inst.filter.chain, priority: inst.filter.chainPriority, members: [] }));
        // libvirt records the chain priority of every rule it sees: the last one wins.
        ch.priority = inst.filter.chainPriority;
        ch.members.push(i);
      }
    });
    const chainList = [...chains.values()].sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const jump = (ch: DirectionPlan['chains'][number]): L2Entry => deepFreeze({ kind: 'jump', chain: ch.name, guard: chainGuard(ch.name), priority: ch.priority });
    const root: DirectionPlan['root'] = [];
    let j = 0;
    for (const i of rootRules) {
      // All rules of one instance have its priority: jumps go between instances.
      const priority = (sorted[i] as RuleInstance).rule.priority;
      while (j < chainList.length && (chainList[j] as DirectionPlan['chains'][number]).priority <= priority) root.push(jump(chainList[j++] as DirectionPlan['chains'][number]));
      root.push(i);
    }
    for (; j < chainList.length; j++) root.push(jump(chainList[j] as DirectionPlan['chains'][number]));
    plan[dir] = { root, chains: chainList };
  }
  return plan;
}

/** The L2 layout of one interface from its plan and its expanded rules (in the order the plan was made for). */
export function layoutL2(plan: L2Plan, sorted: readonly Expansion[], iface: string): Record<Direction, L2Policy> {
  const result = {} as Record<Direction, L2Policy>;
  for (const dir of ['out', 'in'] as const) {
    // Build the rules in libvirt's order first, so that errors come in that order.
    for (const e of sorted) if (inDirection(e.inst, dir)) l2Rules(e, dir, iface);
    const p = plan[dir];
    const root: L2Entry[] = [];
    for (const x of p.root) {
      if (typeof x === 'number') appendAll(root, l2Rules(sorted[x] as Expansion, dir, iface).entries);
      else root.push(x);
    }
    const chains = p.chains.map((c): L2Chain => {
      const rules: L2Rule[] = [];
      for (const i of c.members) appendAll(rules, l2Rules(sorted[i] as Expansion, dir, iface).rules);
      return { name: c.name, priority: c.priority, rules };
    });
    result[dir] = { root, chains };
  }
  return result;
}
