// The filterref walk: which rules an interface's filter reaches, with the
// variables in scope, in libvirt's order (root-chain rules first, then by
// priority, ties in walk order), and each rule expanded into one instance per
// combination of its variables' values.
import { CODES, NwfError, type SourceLocation } from '../util/errors.js';
import { EXPECTED, parseTypedValue, type TypedValue } from '../ir/typed-value.js';
import type { RuleOrigin } from '../ir/types.js';
import type { FilterDef, FilterRefNode, InterfaceBinding, RuleNode } from '../xml/ast.js';
import { expandCombinations, valueOf, type VarMap } from './vars.js';

/** A rule reached by the filterref walk, with the variables in scope. */
export interface RuleInstance {
  rule: RuleNode;
  filter: FilterDef;
  vars: VarMap;
  /** Walk order, used to keep document order among equal priorities. */
  seq: number;
}

export type Attrs = ReadonlyMap<string, TypedValue>;

/** Walks the filterref tree depth first, in document order. */
export function walkFilterTree(filters: ReadonlyMap<string, FilterDef>, top: FilterRefNode, topVars: VarMap, iface: string): RuleInstance[] {
  const out: RuleInstance[] = [];
  const visit = (ref: FilterRefNode, callerVars: VarMap | undefined, stack: readonly string[]): void => {
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
    // The referenced filter sees the filterref's parameters overlaid by the caller's variables.
    const vars = new Map<string, readonly string[]>(ref.params);
    if (callerVars) for (const [k, v] of callerVars) vars.set(k, v);
    for (const e of f.entries) {
      if (e.kind === 'rule') out.push({ rule: e, filter: f, vars, seq: out.length });
      else visit(e, vars, [...stack, f.name]);
    }
  };
  visit(top, topVars, []);
  return out;
}

/** libvirt's order: root-chain rules first, then by priority; ties keep walk order. */
export function sortInstances(list: readonly RuleInstance[]): RuleInstance[] {
  return [...list].sort((a, b) => {
    const ra = a.filter.chain === 'root' ? 0 : 1;
    const rb = b.filter.chain === 'root' ? 0 : 1;
    return ra - rb || a.rule.priority - b.rule.priority || a.seq - b.seq;
  });
}

export function ruleLoc(inst: RuleInstance): SourceLocation {
  return inst.rule.protocol?.loc ?? inst.rule.loc;
}

/** Attribute values of one combination, typed; variable values validated here. */
function concreteAttrs(inst: RuleInstance, combo: ReadonlyMap<string, string>, iface: string): Attrs {
  const out = new Map<string, TypedValue>();
  const p = inst.rule.protocol;
  if (!p) return out;
  for (const [name, { type, value }] of p.attrs) {
    if (value.kind === 'literal') {
      out.set(name, value.value);
      continue;
    }
    const raw = valueOf(value, combo);
    const tv = parseTypedValue(type, raw);
    if (!tv) {
      throw new NwfError(CODES.VALUE_INVALID, `variable ${value.ref.text} has value '${raw}', which is not valid for attribute '${name}'`, {
        location: { ...p.loc, path: `${p.loc.path ?? ''}@${name}` },
        filter: inst.filter.name,
        iface,
        expected: EXPECTED[type],
      });
    }
    out.set(name, tv);
  }
  return out;
}

export function origin(inst: RuleInstance, combo: ReadonlyMap<string, string>): RuleOrigin {
  const o: RuleOrigin = {
    filter: inst.filter.name,
    rule: inst.rule.index,
    file: inst.rule.loc.file,
    action: inst.rule.action,
    direction: inst.rule.direction,
  };
  if (inst.rule.loc.line !== undefined) o.line = inst.rule.loc.line;
  if (combo.size) o.bindings = Object.fromEntries(combo);
  return o;
}

export interface Expanded {
  inst: RuleInstance;
  combos: { attrs: Attrs; combo: ReadonlyMap<string, string>; id: string }[];
}

export function expand(inst: RuleInstance, binding: InterfaceBinding, ipLearning: string | undefined): Expanded {
  const values = inst.rule.protocol ? [...inst.rule.protocol.attrs.values()].map((x) => x.value) : [];
  const combos = expandCombinations(values, inst.vars, {
    filter: inst.filter.name,
    iface: binding.iface,
    loc: ruleLoc(inst),
    ...(ipLearning !== undefined ? { ipLearning } : {}),
  });
  const base = `${inst.filter.name}/${inst.rule.index}`;
  return {
    inst,
    combos: combos.map((combo, k) => ({ attrs: concreteAttrs(inst, combo, binding.iface), combo, id: combos.length > 1 ? `${base}#${k}` : base })),
  };
}
