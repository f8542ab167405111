// One rule instance expanded for an interface: every combination of its
// variables' values (vars.ts), with typed attribute values, and the IR rules
// built from them by the L2 layout and the L3 placement, cached here.
import { CODES, NwfError } from '../util/errors.js';
import { EXPECTED, parseTypedValue, type TypedValue } from '../ir/typed-value.js';
import type { L2Entry, L2Rule, L3Path, L3Rule } from '../ir/types.js';
import { expandCombinations, valueOf, type VarMap } from './vars.js';
import { ruleLoc, type Attrs, type RuleInstance } from './walk.js';
import type { VarRef } from '../xml/ast.js';
import { firstIndex, noteTyped, rec, type Sym } from './shape.js';

/** One combination of a rule's variable values, typed. */
export interface Combo {
  attrs: Attrs;
  combo: ReadonlyMap<string, string>;
  id: string;
}

/** A slot expanded for one interface (or for all, when shared): its combinations and, lazily, its IR rules. */
export interface Expansion {
  inst: RuleInstance;
  combos: Combo[];
  /** L2 rules per direction (and their root-chain entries), built by layoutL2 on first use. */
  l2: { out?: { rules: L2Rule[]; entries: L2Entry[] }; in?: { rules: L2Rule[]; entries: L2Entry[] } };
  /** L3 rules per path, built by layoutL3 on first use. */
  l3?: Record<L3Path, L3Rule[]>;
  /** Expanded once for every interface of the template: its rules are frozen and shared. */
  shared: boolean;
}

/** Attribute values of one combination, typed; variable values validated here. */
function concreteAttrs(inst: RuleInstance, combo: ReadonlyMap<string, string>, iface: string, learnIp: boolean, topVars?: VarMap): Attrs {
  const out = new Map<string, TypedValue & { port?: true; learned?: true }>();
  const p = inst.rule.protocol;
  if (!p) return out;
  for (const [name, { type, value }] of p.attrs) {
    if (value.kind === 'literal') {
      out.set(name, value.value);
      continue;
    }
    if (learnIp && value.ref.name === LEARNED_VAR && inst.sources.get(LEARNED_VAR)?.kind === 'top') {
      if (rec.on) rec.unsafe = true;
      // the port's learned address: only plain $IP, an IPv4 address (libvirt learns nothing else)
      if (value.ref.key !== `${LEARNED_VAR}[@0]` || type !== 'ipv4') {
        throw new NwfError(CODES.VARIABLE_MISSING, `variable 'IP' has no value and ${value.ref.text} in attribute '${name}' cannot take a learned address (libvirt learns one IPv4 address, for plain $IP)`, {
          location: { ...p.loc, path: `${p.loc.path ?? ''}@${name}` },
          filter: inst.filter.name,
          iface,
          hint: "give the address in the interface's filterref: <parameter name='IP' value='10.0.0.2'/>",
        });
      }
      out.set(name, { ...(parseTypedValue('ipv4', LEARNED_PLACEHOLDER) as TypedValue), learned: true });
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
    // a value of the interface's own parameters differs between interfaces (backends look it up per interface)
    if (inst.sources.get(value.ref.name)?.kind === 'top') {
      const ptv = { ...tv, port: true as const };
      if (rec.on) noteTyped(ptv, name, value.ref.name, topVars?.get(value.ref.name) ?? [], raw);
      out.set(name, ptv);
    } else out.set(name, tv);
  }
  return out;
}

/** Expands one slot (walk.ts) with the interface's parameters `topVars`. */
/** The variable a learning port learns, and its place-holder value while resolving. */
export const LEARNED_VAR = 'IP';
export const LEARNED_PLACEHOLDER = '0.0.0.0';

/**
 * Expands one slot (walk.ts) with the interface's parameters `topVars`.
 * `learnIp`: the port learns `$IP` (topVars holds the place-holder): its
 * values become `learned` tests.
 */
export function expandSlot(inst: RuleInstance, topVars: VarMap, iface: string, ipLearning: string | undefined, shared: boolean, learnIp = false): Expansion {
  const vars = new Map<string, readonly string[]>();
  for (const [name, src] of inst.sources) {
    const v = src.kind === 'top' ? topVars.get(name) : src.values;
    if (v) vars.set(name, v);
  }
  const values = [];
  if (inst.rule.protocol) for (const x of inst.rule.protocol.attrs.values()) values.push(x.value);
  const combos = expandCombinations(values, vars, {
    filter: inst.filter.name,
    iface,
    loc: ruleLoc(inst),
    ...(ipLearning !== undefined ? { ipLearning } : {}),
  });
  const base = `${inst.filter.name}/${inst.rule.index}`;
  if (rec.on) {
    // the combination's keys that hold the interface's own values
    const top: VarRef[] = [];
    for (const v of values) if (v.kind === 'variable' && inst.sources.get(v.ref.name)?.kind === 'top') top.push(v.ref);
    if (top.length) {
      for (const c of combos) {
        const m = new Map<string, Sym>();
        for (const r of top) {
          const raw = c.get(r.key) as string;
          m.set(r.key, { name: r.name, idx: firstIndex(topVars.get(r.name) as readonly string[], raw), form: 'raw' });
        }
        rec.combos.set(c, m);
      }
    }
  }
  return {
    inst,
    combos: combos.map((combo, k) => ({ attrs: concreteAttrs(inst, combo, iface, learnIp, topVars), combo, id: combos.length > 1 ? `${base}#${k}` : base })),
    l2: {},
    shared,
  };
}

