// Resolution: from parsed filters and interface bindings to PolicyIR, with
// libvirt's semantics (../shared/docs/nwfilter-semantics.md, sections 3-5):
// filterref walk and variable scoping, iterator expansion, root-first then
// priority ordering, raised sub-chain priorities, jump placement, inout
// swapping, reject-as-drop at L2 and libvirt's three iptables placements
// with their connection-state defaults for L3/L4 rules.
//
// The steps live next to this file: walk.ts (the filterref walk, ordering,
// variable expansion), tests.ts (attribute values -> IR tests and L2 matches),
// l2-layout.ts (root chain, jumps, sub-chains) and l3-placement.ts (the
// iptables placements).
import type { FilterDef, InterfaceBinding } from '../xml/ast.js';
import { CODES, NwfError } from '../util/errors.js';
import type { InterfacePolicy, PolicyIR } from '../ir/types.js';
import { isL2Element } from '../xml/schema.js';
import { layoutL2 } from './l2-layout.js';
import { layoutL3 } from './l3-placement.js';
import { expand, sortInstances, walkFilterTree } from './walk.js';

export function resolveInterface(filters: ReadonlyMap<string, FilterDef>, binding: InterfaceBinding): InterfacePolicy {
  const topVars = new Map<string, readonly string[]>(binding.filterref.params);
  topVars.set('MAC', [binding.mac]);
  const ipLearning = topVars.get('CTRL_IP_LEARNING')?.[0];
  const instances = walkFilterTree(filters, binding.filterref, topVars, binding.iface);
  const sorted = sortInstances(instances).map((inst) => expand(inst, binding, ipLearning));
  const l2 = sorted.filter((e) => !e.inst.rule.protocol || isL2Element(e.inst.rule.protocol.element));
  const l3 = sorted.filter((e) => e.inst.rule.protocol && !isL2Element(e.inst.rule.protocol.element));
  return {
    iface: binding.iface,
    mac: binding.mac,
    owner: binding.owner,
    source: binding.source,
    filter: binding.filterref.filter,
    vars: Object.fromEntries([...topVars].map(([k, v]) => [k, [...v]])),
    l2: layoutL2(l2, binding.iface),
    l3: layoutL3(l3, binding.iface),
    file: binding.loc.file,
  };
}

export function resolvePolicy(filters: ReadonlyMap<string, FilterDef>, bindings: readonly InterfaceBinding[], notes: readonly string[] = []): PolicyIR {
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
  const interfaces = [...bindings].sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0)).map((b) => resolveInterface(filters, b));
  return { version: 1, interfaces, notes: [...notes] };
}
