// Resolution: from parsed filters and interface bindings to PolicyIR, with
// libvirt's semantics (../shared/docs/nwfilter-semantics.md, sections 3-5):
// filterref walk and variable scoping, iterator expansion, root-first then
// priority ordering, raised sub-chain priorities, jump placement, inout
// swapping, reject-as-drop at L2 and libvirt's three iptables placements
// with their connection-state defaults for L3/L4 rules.
//
// The steps live next to this file: walk.ts (the filterref walk and
// ordering), vars.ts (variable expansion), tests.ts (attribute values -> IR
// tests and L2 matches), l2-layout.ts (root chain, jumps, sub-chains) and
// l3-placement.ts (the iptables placements).
//
// At fleet scale: the walk is done once per template (top filter and the
// names of the interface's parameters) and serves every interface of that
// shape; per interface only the rules whose variables come from its own
// parameters are expanded, and a rule whose variables all come from filters
// (or that has none) is expanded once per template and its IR rules shared
// (frozen) by every interface. The result is the same PolicyIR as resolving
// each interface on its own (test/unit/resolve-memo.test.ts).
import type { FilterDef, InterfaceBinding } from '../xml/ast.js';
import { CODES, NwfError } from '../util/errors.js';
import { LIMITS, policyRuleCost } from '../ir/limits.js';
import { ruleCounts } from '../ir/facts.js';
import type { InterfacePolicy, PolicyIR } from '../ir/types.js';
import { isL2Element } from '../xml/schema.js';
import { layoutL2, planL2, type L2Plan } from './l2-layout.js';
import { layoutL3 } from './l3-placement.js';
import { expandSlot, LEARNED_PLACEHOLDER, LEARNED_VAR, type Expansion } from './expansion.js';
import { parseIpLearning } from './learning.js';
import type { PortLearning } from '../ir/types.js';
import { ruleLoc, walkFilterTree, type RuleInstance, type WalkOptions } from './walk.js';
import { compileSkeleton, fromSkeleton, rec, recStart, recStop, shapeKey, valuesOf, type Skeleton } from './shape.js';
import { stampShape } from '../ir/shape-stamp.js';

/** The walk of one (top filter, parameter names) shape, and what is shared by its interfaces. */
export interface Template {
  sorted: RuleInstance[];
  slots: RuleInstance[];
  /** Whether a slot's variables all come from filters (expanded once for all interfaces). */
  fixed: boolean[];
  /** Expansions of the fixed slots, filled by the first interface that needs them. */
  sharedExpansions: (Expansion | undefined)[];
  /** The L2 instances of `sorted`, and the shape of their layout. */
  l2: RuleInstance[];
  l2Plan: L2Plan;
  /** The interface's parameter names (MAC included), sorted. */
  names: string[];
  /** Per parameter shape (shape.ts): the first interface's policy and the places of its values; null: the full path. */
  shapes: Map<string, Skeleton | null>;
}

export interface ResolveOptions extends WalkOptions {
  /** Share templates and fixed expansions between interfaces (default true; false resolves each interface on its own). */
  share?: boolean;
  /** With share: build later interfaces of one parameter shape from the first one's policy (default true; shape.ts). */
  byShape?: boolean;
  /**
   * An interface whose policy fails to resolve is handed to this (and left
   * out) instead of failing the whole policy: a partial policy, where that
   * interface fails closed. Errors of the whole (the total-rules limit, an
   * interface bound twice) still throw.
   */
  onInterfaceError?: (binding: InterfaceBinding, error: NwfError) => void;
}

function topVarsOf(binding: InterfaceBinding): Map<string, readonly string[]> {
  const topVars = new Map<string, readonly string[]>(binding.filterref.params);
  topVars.set('MAC', [binding.mac]);
  return topVars;
}

export function resolveTemplate(filters: ReadonlyMap<string, FilterDef>, binding: InterfaceBinding, opts: WalkOptions = {}): Template {
  const { sorted, slots } = walkFilterTree(filters, binding.filterref, topVarsOf(binding).keys(), binding.iface, opts);
  const fixed = slots.map((s) => [...s.sources.values()].every((v) => v.kind === 'fixed'));
  const l2 = sorted.filter((inst) => !inst.rule.protocol || isL2Element(inst.rule.protocol.element));
  const names = [...topVarsOf(binding).keys()].sort();
  return { sorted, slots, fixed, sharedExpansions: slots.map(() => undefined), l2, l2Plan: planL2(l2), names, shapes: new Map() };
}

/**
 * Whether the port learns its address: `$IP` is referenced somewhere in its
 * filter tree without a value anywhere (nwfilter-semantics.md 6, design 1.1),
 * and CTRL_IP_LEARNING is any (the default) or dhcp. `none` leaves `$IP`
 * missing (NWF1206 from the expansion); an invalid value is NWF1215.
 */
export function learningOf(t: Template, binding: InterfaceBinding): PortLearning | undefined {
  if (binding.filterref.params.has(LEARNED_VAR)) return undefined;
  const ref = t.sorted.find((inst) => !inst.sources.has(LEARNED_VAR) && [...(inst.rule.protocol?.attrs.values() ?? [])].some((a) => a.value.kind === 'variable' && a.value.ref.name === LEARNED_VAR));
  if (!ref) return undefined;
  const l = parseIpLearning(binding.filterref.params, { iface: binding.iface, filter: ref.filter.name, loc: ruleLoc(ref) });
  return l.mode === 'none' ? undefined : { mode: l.mode, dhcpServers: l.dhcpServers };
}

/** The binding of a learning port as the walk sees it: `$IP` is a parameter of its own (a place-holder). */
function learningBinding(binding: InterfaceBinding): InterfaceBinding {
  const params = new Map(binding.filterref.params);
  params.set(LEARNED_VAR, [LEARNED_PLACEHOLDER]);
  return { ...binding, filterref: { ...binding.filterref, params } };
}

/**
 * One interface's policy from its template: expands what depends on its
 * parameters, shares the rest. With `byShape`, an interface whose parameter
 * shape was seen is built from that shape's skeleton (shape.ts), and the
 * first one of a shape records its skeleton.
 */
function instantiate(t: Template, binding: InterfaceBinding, learning?: PortLearning, byShape = false): InterfacePolicy {
  const topVars = topVarsOf(binding);
  if (!byShape || learning) return instantiateFull(t, binding, topVars, learning);
  const key = shapeKey(t.names, topVars);
  if (key === undefined) return instantiateFull(t, binding, topVars, learning);
  const sk = t.shapes.get(key);
  if (sk) {
    const parts = fromSkeleton(sk, topVars);
    if (parts) {
      const policy = policyOf(binding, topVars, parts.l2, parts.l3);
      stampShape(policy, { id: sk.id, values: parts.values });
      return policy;
    }
  }
  if (sk !== undefined) return instantiateFull(t, binding, topVars, learning);
  recStart();
  let policy: InterfacePolicy;
  try {
    policy = instantiateFull(t, binding, topVars, learning);
  } finally {
    recStop();
  }
  const made = rec.unsafe ? undefined : compileSkeleton(policy, rec.patches, rec.read);
  t.shapes.set(key, made ?? null);
  const values = made && valuesOf(made, topVars);
  if (made && values) stampShape(policy, { id: made.id, values });
  return policy;
}

function policyOf(binding: InterfaceBinding, topVars: ReadonlyMap<string, readonly string[]>, l2: InterfacePolicy['l2'], l3: InterfacePolicy['l3'], learning?: PortLearning): InterfacePolicy {
  const vars: Record<string, string[]> = {};
  for (const [k, v] of topVars) vars[k] = v.slice();
  const policy: InterfacePolicy = {
    iface: binding.iface,
    mac: binding.mac,
    owner: binding.owner,
    source: binding.source,
    filter: binding.filterref.filter,
    vars,
    l2,
    l3,
    file: binding.loc.file,
  };
  if (binding.ownerUuid) policy.ownerUuid = binding.ownerUuid;
  if (learning) {
    policy.learning = learning;
    // the place-holder is not a value of the port's
    delete policy.vars[LEARNED_VAR];
  }
  return policy;
}

function instantiateFull(t: Template, binding: InterfaceBinding, topVars: Map<string, readonly string[]>, learning?: PortLearning): InterfacePolicy {
  const ipLearning = topVars.get('CTRL_IP_LEARNING')?.[0];
  const mine: (Expansion | undefined)[] = new Array(t.slots.length);
  const l2: Expansion[] = [];
  const l3: Expansion[] = [];
  let count = 0;
  for (const inst of t.sorted) {
    let e = mine[inst.slot];
    if (!e) {
      const slot = t.slots[inst.slot] as RuleInstance;
      if (t.fixed[inst.slot]) e = t.sharedExpansions[inst.slot] ??= expandSlot(slot, topVars, binding.iface, ipLearning, true);
      else e = expandSlot(slot, topVars, binding.iface, ipLearning, false, learning !== undefined);
      mine[inst.slot] = e;
    }
    count += e.combos.length;
    if (count > LIMITS.interfaceRules.max) {
      throw new NwfError(CODES.LIMIT_INTERFACE_RULES, `interface '${binding.iface}' has more than ${LIMITS.interfaceRules.max} rule instances after variable expansion (reached at rule ${inst.rule.index} of filter '${inst.filter.name}')`, {
        location: ruleLoc(inst),
        filter: inst.filter.name,
        iface: binding.iface,
        expected: `at most ${LIMITS.interfaceRules.max} ${LIMITS.interfaceRules.what}`,
        hint: 'long value lists multiply the rules that use them: shorten the lists, or use fewer rules per list',
      });
    }
    // A slot reached twice (a filter referenced twice) is laid out twice, as libvirt does.
    const p = inst.rule.protocol;
    (!p || isL2Element(p.element) ? l2 : l3).push(e);
  }
  return policyOf(binding, topVars, layoutL2(t.l2Plan, l2, binding.iface), layoutL3(l3, binding.iface), learning);
}

/** The template of a binding and, for a learning port, its learning and the template it is resolved with. */
function templateFor(get: (b: InterfaceBinding) => Template, binding: InterfaceBinding): { t: Template; b: InterfaceBinding; learning?: PortLearning } {
  const t = get(binding);
  const learning = learningOf(t, binding);
  if (!learning) return { t, b: binding };
  const b = learningBinding(binding);
  return { t: get(b), b, learning };
}

export function resolveInterface(filters: ReadonlyMap<string, FilterDef>, binding: InterfaceBinding, opts: WalkOptions = {}): InterfacePolicy {
  const { t, b, learning } = templateFor((x) => resolveTemplate(filters, x, opts), binding);
  return instantiate(t, b, learning);
}

export function resolvePolicy(filters: ReadonlyMap<string, FilterDef>, bindings: readonly InterfaceBinding[], notes: readonly string[] = [], opts: ResolveOptions = {}): PolicyIR {
  const seen = new Map<string, InterfaceBinding>();
  for (const b of bindings) {
    const prev = seen.get(b.iface);
    if (prev) {
      throw new NwfError(CODES.INTERFACE_DUPLICATE, `interface '${b.iface}' is bound twice (also in ${prev.loc.file})`, {
        location: b.loc,
        iface: b.iface,
        hint: 'each tap device can carry one filterref; remove one of the bindings',
      });
    }
    seen.set(b.iface, b);
  }
  const share = opts.share !== false;
  const templates = new Map<string, Template>();
  const interfaces: InterfacePolicy[] = [];
  let total = 0;
  for (const b of bindings.slice().sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0))) {
    let policy: InterfacePolicy;
    try {
      const get = (x: InterfaceBinding): Template => {
        if (!share) return resolveTemplate(filters, x, opts);
        const key = `${x.filterref.filter}\0${[...x.filterref.params.keys(), 'MAC'].sort().join('\0')}`;
        let t = templates.get(key);
        if (!t) templates.set(key, (t = resolveTemplate(filters, x, opts)));
        return t;
      };
      const r = templateFor(get, b);
      policy = instantiate(r.t, r.b, r.learning, share && opts.byShape !== false);
    } catch (e) {
      if (!opts.onInterfaceError || !(e instanceof NwfError)) throw e;
      opts.onInterfaceError(b, e);
      continue;
    }
    total += policyRuleCost(ruleCounts(policy));
    if (total > LIMITS.policyRules.max) {
      throw new NwfError(CODES.LIMIT_POLICY_RULES, `the interfaces have more than ${LIMITS.policyRules.max} resolved rules together (reached at interface '${b.iface}', ${interfaces.length + 1} of ${bindings.length})`, {
        location: b.loc,
        iface: b.iface,
        expected: `at most ${LIMITS.policyRules.max} ${LIMITS.policyRules.what}`,
        hint: 'long value lists in L3 rules cost the most: shorten them; or protect these interfaces from more than one host',
      });
    }
    interfaces.push(policy);
  }
  return { version: 1, interfaces, notes: notes.slice() };
}
