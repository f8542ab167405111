// Variable expansion with libvirt's iterator semantics:
//  - `$V` is `$V[@0]`; `$V[@K]` walks all elements of V with iterator K;
//    `$V[N]` is element N.
//  - variables sharing an iterator are walked in parallel (equal lengths
//    required); different iterators form a cartesian product, iterator of
//    first appearance changing fastest;
//  - within one iterator, an index whose values repeat an earlier index is
//    skipped (duplicate suppression).
import type { AttrValue, VarRef } from '../xml/ast.js';
import { CODES, NwfError, type SourceLocation } from '../util/errors.js';
import { LIMITS } from '../ir/limits.js';
import { IP_LEARNING_VAR, parseLearningMode } from './learning.js';

export type VarMap = ReadonlyMap<string, readonly string[]>;

export interface ExpandContext {
  filter: string;
  iface: string;
  loc: SourceLocation;
  /** Value of CTRL_IP_LEARNING at the top level, for the missing-$IP message. */
  ipLearning?: string;
}

/** One combination: for each variable reference text, the value chosen. */
export type Combination = ReadonlyMap<string, string>;

export function missingVariableError(name: string, ctx: ExpandContext): NwfError {
  // libvirt reads CTRL_IP_LEARNING only when it would learn: an invalid value is an error only here
  const mode = name === 'IP' ? parseLearningMode(ctx.ipLearning, ctx) : undefined;
  if (mode === 'none') {
    return new NwfError(CODES.IP_LEARNING_UNSUPPORTED, `variable 'IP' has no value and ${IP_LEARNING_VAR}=${ctx.ipLearning} turns IP address learning off`, {
      location: ctx.loc,
      filter: ctx.filter,
      iface: ctx.iface,
      hint: "give the address in the interface's filterref: <parameter name='IP' value='10.0.0.2'/> (repeat the parameter for several addresses)",
    });
  }
  if (mode) {
    return new NwfError(
      CODES.IP_LEARNING_UNSUPPORTED,
      `variable 'IP' has no value: libvirt would learn this interface's IP address from its traffic (${IP_LEARNING_VAR}=${mode}), and nwf-fast does not support IP address learning yet`,
      {
        location: ctx.loc,
        filter: ctx.filter,
        iface: ctx.iface,
        hint: "give the address in the interface's filterref: <parameter name='IP' value='10.0.0.2'/> (repeat the parameter for several addresses)",
      },
    );
  }
  return new NwfError(CODES.VARIABLE_MISSING, `variable '${name}' has no value`, {
    location: ctx.loc,
    filter: ctx.filter,
    iface: ctx.iface,
    hint: `pass it as <parameter name='${name}' value='...'/> in the filterref that references this filter (or one of its callers)`,
  });
}

/**
 * All combinations of values for the variable references used in one rule,
 * in libvirt's order. A rule without variables yields one empty combination.
 */
export function expandCombinations(values: readonly AttrValue[], vars: VarMap, ctx: ExpandContext): Combination[] {
  const refs: VarRef[] = [];
  for (const v of values) if (v.kind === 'variable') refs.push(v.ref);
  if (refs.length === 0) return [new Map()];

  for (const r of refs) {
    const list = vars.get(r.name);
    if (!list || list.length === 0) throw missingVariableError(r.name, ctx);
    if (r.access.kind === 'index' && r.access.index >= list.length) {
      throw new NwfError(CODES.VARIABLE_INDEX, `'${r.text}' is out of bounds: variable '${r.name}' has ${list.length} element(s)`, {
        location: ctx.loc,
        filter: ctx.filter,
        iface: ctx.iface,
        expected: `an index from 0 to ${list.length - 1}`,
      });
    }
  }

  // Iterators in order of first appearance, each with its distinct variables.
  const iterators: { id: number; names: string[] }[] = [];
  for (const r of refs) {
    if (r.access.kind !== 'iterator') continue;
    const id = r.access.iterator;
    let it = iterators.find((i) => i.id === id);
    if (!it) iterators.push((it = { id, names: [] }));
    if (!it.names.includes(r.name)) it.names.push(r.name);
  }
  // Per iterator: the indices to visit (equal lengths, duplicates dropped).
  const visits: number[][] = iterators.map((it) => {
    const lens = it.names.map((n) => (vars.get(n) as readonly string[]).length);
    const len = lens[0] as number;
    if (lens.some((l) => l !== len)) {
      throw new NwfError(
        CODES.VARIABLE_LIST_LENGTH,
        `variables iterated together with iterator @${it.id} have different numbers of elements: ${it.names.map((n, i) => `${n} (${lens[i]})`).join(', ')}`,
        { location: ctx.loc, filter: ctx.filter, iface: ctx.iface, hint: 'give them lists of equal length, or use different iterators ($A[@1], $B[@2]) for a cartesian product' },
      );
    }
    // Values never hold '\0' (parameter values are [A-Za-z0-9_.:]+): a safe separator.
    const lists = it.names.map((n) => vars.get(n) as readonly string[]);
    const seen = new Set<string>();
    const idx: number[] = [];
    for (let i = 0; i < len; i++) {
      const key = lists.length === 1 ? ((lists[0] as readonly string[])[i] as string) : lists.map((l) => l[i]).join('\0');
      if (seen.has(key)) continue;
      seen.add(key);
      idx.push(i);
    }
    return idx;
  });

  // Refuse before generating anything: the number of combinations is the product of the iterators' visits.
  let total = 1;
  for (const v of visits) total *= v.length;
  if (total > LIMITS.ruleExpansions.max) {
    throw new NwfError(
      CODES.LIMIT_RULE_EXPANSIONS,
      `this rule expands to ${total} combinations of variable values (${iterators.map((it, k) => `${it.names.join(', ')} ${(visits[k] as number[]).length}`).join(' x ')})`,
      {
        location: ctx.loc,
        filter: ctx.filter,
        iface: ctx.iface,
        expected: `at most ${LIMITS.ruleExpansions.max} ${LIMITS.ruleExpansions.what}`,
        hint: 'iterators with different ids ($A[@1], $B[@2]) multiply: iterate lists together ($A, $B) or split the rule',
      },
    );
  }

  // Per reference: its list, and its iterator's position in `iterators` (-1 for an index).
  const lists = refs.map((r) => vars.get(r.name) as readonly string[]);
  const iterOf = refs.map((r) => (r.access.kind === 'index' ? -1 : iterators.findIndex((it) => it.id === (r.access as { iterator: number }).iterator)));
  const out: Combination[] = [];
  const pos = iterators.map(() => 0);
  for (;;) {
    const combo = new Map<string, string>();
    for (let j = 0; j < refs.length; j++) {
      const r = refs[j] as VarRef;
      const k = iterOf[j] as number;
      const i = k < 0 ? (r.access as { index: number }).index : ((visits[k] as number[])[pos[k] as number] as number);
      combo.set(r.key, (lists[j] as readonly string[])[i] as string);
    }
    out.push(combo);
    // odometer: first iterator fastest
    let k = 0;
    for (; k < iterators.length; k++) {
      pos[k] = (pos[k] as number) + 1;
      if ((pos[k] as number) < (visits[k] as number[]).length) break;
      pos[k] = 0;
    }
    if (k === iterators.length) break;
  }
  return out;
}

export function valueOf(v: AttrValue, combo: Combination): string {
  return v.kind === 'literal' ? v.raw : (combo.get(v.ref.key) as string);
}
