// The filterref walk: which rules an interface's filter reaches, and where
// each of their variables takes its values from, in libvirt's order
// (root-chain rules first, then by priority, ties in walk order).
//
// The walk depends only on the filters, the interface's top filter and the
// NAMES of its parameters, never on their values: a referenced filter sees
// the filterref's parameters overlaid by its caller's variables (the caller
// wins), so a variable's values come either from the interface's own
// parameters ('top') or from one filterref's parameters ('fixed'). The result
// of one walk (a Template, resolve.ts) therefore serves every interface with
// the same top filter and parameter names; per interface only values are
// filled in.
//
// Within one walk, a filter reached again with the same bindings of the
// variables its sub-tree uses is walked once (memoized), so a filterref
// "diamond" costs its number of distinct bindings, not its number of paths.
// Depth and size are bounded (ir/limits.ts) and checked before anything is
// materialized.
import { CODES, NwfError, type SourceLocation } from '../util/errors.js';
import { LIMITS } from '../ir/limits.js';
import type { TypedValue } from '../ir/typed-value.js';
import type { RuleOrigin } from '../ir/types.js';
import type { FilterDef, FilterRefNode, RuleNode } from '../xml/ast.js';
import { noteBindings, rec } from './shape.js';

/** Where the values of one variable come from: the interface's parameters, or one filterref's. */
export type VarSource = { kind: 'top' } | { kind: 'fixed'; values: readonly string[] };

const TOP: VarSource = { kind: 'top' };

/** A rule reached by the filterref walk, with the source of every variable it uses. */
export interface RuleInstance {
  rule: RuleNode;
  filter: FilterDef;
  /** For each variable the rule references: where its values come from (absent: no value anywhere). */
  sources: ReadonlyMap<string, VarSource>;
  /** Walk order, used to keep document order among equal priorities. */
  seq: number;
  /**
   * Instances of the same rule with the same sources share a slot: they
   * expand to the same rules, computed once per interface (once per
   * template when no source is 'top').
   */
  slot: number;
}

/**
 * Typed attribute values; `port` marks a value taken from the interface's
 * own parameters, `learned` the place-holder of a learned `$IP`.
 */
export type Attrs = ReadonlyMap<string, TypedValue & { port?: true; learned?: true }>;

/** The variable names a rule references (in attribute order). */
export function ruleVarNames(rule: RuleNode): string[] {
  const names: string[] = [];
  if (rule.protocol) for (const { value } of rule.protocol.attrs.values()) if (value.kind === 'variable' && !names.includes(value.ref.name)) names.push(value.ref.name);
  return names;
}

/** A walked filter: its rules and walked sub-filters in document order, with its size and height. */
interface WalkNode {
  items: (RuleItem | WalkNode)[];
  /** Rule instances below (with multiplicity). */
  count: number;
  /** Levels of filterrefs below. */
  height: number;
}

interface RuleItem {
  rule: RuleNode;
  filter: FilterDef;
  sources: ReadonlyMap<string, VarSource>;
  slot: number;
}

type Env = ReadonlyMap<string, VarSource>;

export interface WalkResult {
  /** Rule instances in libvirt's order. */
  sorted: RuleInstance[];
  /** One representative instance per slot. */
  slots: RuleInstance[];
}

export interface WalkOptions {
  /** Memoize sub-trees (default true; false walks every path, for tests). */
  memo?: boolean;
}

/**
 * Walks the filterref tree of `top` depth first, in document order, for an
 * interface whose parameters have the names `topNames` (MAC included).
 * `iface` names the first interface of this shape, for messages.
 */
export function walkFilterTree(filters: ReadonlyMap<string, FilterDef>, top: FilterRefNode, topNames: Iterable<string>, iface: string, opts: WalkOptions = {}): WalkResult {
  const memoOn = opts.memo !== false;
  const maxDepth = LIMITS.filterrefDepth.max;
  const maxRules = LIMITS.interfaceRules.max;
  const ruleIds = new Map<RuleNode, number>();
  const slotOf = new Map<string, number>();
  const slots: RuleItem[] = [];
  const memo = new Map<string, WalkNode>();
  const usedMemo = new Map<string, ReadonlySet<string>>();

  /**
   * Variable names used by the rules of a filter's sub-tree, or undefined
   * when that is not known because the sub-tree has a cycle or is deeper than
   * the limit (the walk then reports it; nothing is memoized on the way).
   */
  const used = (name: string, depth: number, onPath: Set<string>): ReadonlySet<string> | undefined => {
    const known = usedMemo.get(name);
    if (known) return known;
    const f = filters.get(name);
    if (!f) return new Set();
    if (onPath.has(name) || depth > maxDepth) return undefined;
    const out = new Set<string>();
    onPath.add(name);
    try {
      for (const e of f.entries) {
        if (e.kind === 'rule') for (const v of ruleVarNames(e)) out.add(v);
        else {
          const sub = used(e.filter, depth + 1, onPath);
          if (!sub) return undefined;
          for (const v of sub) out.add(v);
        }
      }
    } finally {
      onPath.delete(name);
    }
    usedMemo.set(name, out);
    return out;
  };

  const sourceKey = (s: VarSource | undefined): string => (s === undefined ? '-' : s.kind === 'top' ? 'T' : `=${s.values.join(',')}`);

  const ruleItem = (rule: RuleNode, f: FilterDef, env: Env): RuleItem => {
    const sources = new Map<string, VarSource>();
    let key = `${ruleIds.get(rule) ?? ruleIds.set(rule, ruleIds.size).size - 1}`;
    for (const n of ruleVarNames(rule)) {
      const s = env.get(n);
      if (s) sources.set(n, s);
      key += `\0${n}${sourceKey(s)}`;
    }
    let slot = slotOf.get(key);
    if (slot === undefined) {
      slot = slots.length;
      slotOf.set(key, slot);
      slots.push({ rule, filter: f, sources, slot });
    }
    return slots[slot] as RuleItem;
  };

  const tooMany = (ref: FilterRefNode, f: FilterDef, count: number): NwfError =>
    new NwfError(CODES.LIMIT_INTERFACE_RULES, `filter '${f.name}' expands to more than ${maxRules} rule instances (${count > 1e15 ? 'far more' : count} through its filterrefs)`, {
      location: ref.loc,
      filter: f.name,
      iface,
      expected: `at most ${maxRules} ${LIMITS.interfaceRules.what}`,
      hint: 'a filter referenced many times from filters that are themselves referenced many times multiplies its rules: reference it once',
    });

  const visit = (ref: FilterRefNode, callerEnv: Env, stack: readonly string[]): WalkNode => {
    const f = filters.get(ref.filter);
    if (!f) {
      throw new NwfError(CODES.FILTER_UNKNOWN, `unknown filter '${ref.filter}'`, {
        location: ref.loc,
        ...(stack.length ? { filter: stack[stack.length - 1] as string } : {}),
        iface,
        hint: 'define it in a --filters directory, or check the name (the bundled library has the 24 standard filters)',
      });
    }
    if (stack.includes(f.name)) {
      const path = [...stack.slice(stack.indexOf(f.name)), f.name].join(' -> ');
      throw new NwfError(CODES.FILTER_CYCLE, `filterref cycle: ${path}`, { location: ref.loc, filter: stack[stack.length - 1] as string, iface });
    }
    // stack holds the filters above this one: the interface's filter is at depth 0.
    if (stack.length > maxDepth) {
      throw new NwfError(CODES.LIMIT_FILTERREF_DEPTH, `filterrefs nested more than ${maxDepth} levels deep: ${[...stack.slice(0, 3), '...', ...stack.slice(-2), f.name].join(' -> ')}`, {
        location: ref.loc,
        filter: stack[stack.length - 1] as string,
        iface,
        expected: `at most ${maxDepth} ${LIMITS.filterrefDepth.what}`,
      });
    }
    // The referenced filter sees the filterref's parameters overlaid by the caller's variables.
    const env = new Map<string, VarSource>();
    for (const [k, v] of ref.params) env.set(k, { kind: 'fixed', values: v });
    for (const [k, v] of callerEnv) env.set(k, v);

    let key: string | undefined;
    const names = memoOn ? used(f.name, 0, new Set()) : undefined;
    if (names) {
      key = f.name;
      for (const n of [...names].sort()) key += `\0${n}${sourceKey(env.get(n))}`;
      const hit = memo.get(key);
      // A sub-tree walked before at a shallower depth may be too deep here: then it is walked
      // again (its own sub-trees still memoized) down to where it exceeds the limit.
      if (hit && stack.length + hit.height <= maxDepth) return hit;
    }
    const node: WalkNode = { items: [], count: 0, height: 0 };
    const below = [...stack, f.name];
    for (const e of f.entries) {
      if (e.kind === 'rule') {
        node.items.push(ruleItem(e, f, env));
        node.count++;
      } else {
        const child = visit(e, env, below);
        node.items.push(child);
        node.count += child.count;
        node.height = Math.max(node.height, child.height + 1);
      }
      if (node.count > maxRules) throw tooMany(ref, f, node.count);
    }
    if (key !== undefined) memo.set(key, node);
    return node;
  };

  const topEnv = new Map<string, VarSource>();
  for (const n of topNames) topEnv.set(n, TOP);
  const root = visit(top, topEnv, []);

  // Flatten (at most maxRules instances, checked above; sub-trees without rules are skipped,
  // however many paths they have) and sort once.
  const flat: RuleInstance[] = [];
  const flatten = (n: WalkNode): void => {
    for (const it of n.items) {
      if ('items' in it) {
        if (it.count) flatten(it);
      }
      else flat.push({ rule: it.rule, filter: it.filter, sources: it.sources, seq: flat.length, slot: it.slot });
    }
  };
  flatten(root);
  return { sorted: sortInstances(flat), slots: slots.map((s) => ({ rule: s.rule, filter: s.filter, sources: s.sources, seq: 0, slot: s.slot })) };
}

/** libvirt's order: root-chain rules first, then by priority; ties keep walk order. */
export function sortInstances(list: readonly RuleInstance[]): RuleInstance[] {
  return list.slice().sort((a, b) => {
    const ra = a.filter.chain === 'root' ? 0 : 1;
    const rb = b.filter.chain === 'root' ? 0 : 1;
    return ra - rb || a.rule.priority - b.rule.priority || a.seq - b.seq;
  });
}

export function ruleLoc(inst: Pick<RuleInstance, 'rule'>): SourceLocation {
  return inst.rule.protocol?.loc ?? inst.rule.loc;
}

export function origin(inst: Pick<RuleInstance, 'rule' | 'filter'>, combo: ReadonlyMap<string, string>): RuleOrigin {
  const o: RuleOrigin = {
    filter: inst.filter.name,
    rule: inst.rule.index,
    file: inst.rule.loc.file,
    action: inst.rule.action,
    direction: inst.rule.direction,
  };
  if (inst.rule.loc.line !== undefined) o.line = inst.rule.loc.line;
  if (combo.size) {
    o.bindings = Object.fromEntries(combo);
    if (rec.on) noteBindings(o.bindings, combo);
  }
  return o;
}
