// Under --backend both, which rules only one layer enforces: L2 tests the
// nftables second line cannot express (the eBPF programs alone enforce
// them, nft/second-line.ts), and the L3/L4 rules (nftables alone: the
// programs implement the ebtables layer). `compile` and `status` show them.
import type { Direction, InterfacePolicy, L3Path, PolicyIR, RuleOrigin } from '../ir/types.js';
import { L3_PATHS } from '../ir/types.js';
import { secondLinePolicy } from './nft/second-line.js';

/** A rule of a filter that only one layer enforces. */
export interface OneLayerRule {
  /** The only layer that enforces it. */
  layer: 'ebpf' | 'nft';
  /** The filter's rule: `filter/N` (N counts the filter's rules from 1), all its expansions. */
  rule: string;
  file: string;
  /** Where it sits: fromVm (L2 `out`, and L3), toVm (L2 `in`, and L3), toHost (L3). */
  directions: L3Path[];
  /** Why the other layer does not enforce it. */
  why: string;
  /** What the other layer does instead. */
  other: string;
}

/** The rules of one policy that only one layer enforces, each with every port that has it. */
export interface OneLayerGroup extends OneLayerRule {
  interfaces: string[];
}

const L3_WHY = 'an L3/L4 rule: the eBPF programs enforce the L2 (ebtables) layer only';
const L3_OTHER = 'eBPF decides the frame by the L2 rules alone';

/** The name of an L2 direction in outputs (as the L3 paths). */
const PATH_OF: Readonly<Record<Direction, L3Path>> = { out: 'fromVm', in: 'toVm' };

const ruleKey = (o: RuleOrigin): string => `${o.filter}/${o.rule}`;

/** `rule` of the entry that stands for every L2 rule of a port nft enforces alone. */
export const ALL_L2_RULES = '*';

/**
 * The rules of a port that only one layer enforces under --backend both.
 * `nftOnly`: why the eBPF programs cannot hold the port's policy (a capacity
 * limit of the bpf backend): nft, which expresses it whole, enforces it alone.
 */
export function portOneLayerRules(p: InterfacePolicy, nftOnly?: string): OneLayerRule[] {
  const out = new Map<string, OneLayerRule>();
  const add = (layer: OneLayerRule['layer'], o: RuleOrigin, dir: L3Path, why: string, other: string): void => {
    const key = `${layer}\0${ruleKey(o)}\0${why}\0${other}`;
    const r = out.get(key);
    if (!r) out.set(key, { layer, rule: ruleKey(o), file: o.file, directions: [dir], why, other });
    else if (!r.directions.includes(dir)) r.directions.push(dir);
  };
  if (nftOnly !== undefined) {
    const l2: OneLayerRule = { layer: 'nft', rule: ALL_L2_RULES, file: p.file, directions: ['fromVm', 'toVm'], why: `the eBPF programs cannot hold this port's policy: ${nftOnly}`, other: 'no eBPF program on this port' };
    out.set(`nft\0${ALL_L2_RULES}`, l2);
  }
  for (const g of secondLinePolicy(p).gaps) add('ebpf', g.rule.origin, PATH_OF[g.direction], `${g.what}: ${g.why}`, `nft ${g.nft}`);
  for (const path of L3_PATHS) for (const r of p.l3[path]) add('nft', r.origin, path, L3_WHY, L3_OTHER);
  return [...out.values()].sort(byRule);
}

function byRule(a: OneLayerRule, b: OneLayerRule): number {
  const ka = `${a.layer}\0${a.rule}\0${a.why}`;
  const kb = `${b.layer}\0${b.rule}\0${b.why}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** One port's rules of a report (oneLayerReport), as portOneLayerRules gives them. */
export function portRulesOf(groups: readonly OneLayerGroup[], iface: string): OneLayerRule[] {
  return groups.filter((g) => g.interfaces.includes(iface)).map(({ interfaces: _i, ...r }) => r).sort(byRule);
}

/** Every port's one-layer rules, grouped by rule (a rule that only one layer enforces is one entry, with its ports). */
export function oneLayerReport(ir: PolicyIR, nftOnly: ReadonlyMap<string, string> = new Map()): OneLayerGroup[] {
  const groups = new Map<string, OneLayerGroup>();
  for (const p of ir.interfaces) {
    for (const r of portOneLayerRules(p, nftOnly.get(p.iface))) {
      const key = `${r.layer}\0${r.rule}\0${r.directions.join(',')}\0${r.why}\0${r.other}`;
      const g = groups.get(key);
      if (g) g.interfaces.push(p.iface);
      else groups.set(key, { ...r, interfaces: [p.iface] });
    }
  }
  return [...groups.values()];
}

/** One line for people: `eBPF only: rule f/1 (fromVm): why; nft leaves it out`. */
export function describeOneLayer(r: OneLayerRule): string {
  return `${r.layer === 'ebpf' ? 'eBPF' : 'nft'} only: ${r.rule === ALL_L2_RULES ? 'every L2 rule' : `rule ${r.rule}`} (${r.directions.join(', ')}): ${r.why}; ${r.other}`;
}
