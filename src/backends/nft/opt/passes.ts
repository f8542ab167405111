// The optimizing middle end of the nft backend: semantics-preserving passes
// over a shape's template (shared.ts), each in its own module, run once per
// shape; per interface they only add set elements. Which passes run is part
// of the shape's key, so an optimized shape and an unoptimized one never
// share a name.
//
//   fast-accept   (fast-accept.ts) IPv4, ARP and IPv6 accepted first by one
//                 fused lookup of the interface's own addresses
//   fast-base     (fast-base.ts) those fast rules from the VM hoisted into the
//                 base chain, before the dispatch by interface name (changes
//                 no shape: the skeleton's rules and the ports' elements)
//
// `nwf-fast compile --explain-opt` prints what each pass did per shape and
// direction (or which precondition failed) and, per interface, the elements
// a pass left out; `--no-opt` lowers without the passes.
import { CODES, NwfError } from '../../../util/errors.js';
import { fastAcceptFires, fastShape } from './fast-accept.js';
import type { TemplateView } from './walk.js';

export const PASS_NAMES = ['fast-accept', 'fast-base'] as const;
/** Bumped whenever a pass changes what it emits for a shape key: part of an optimized shape's key (like shared.ts SHAPE_LOWERING_VERSION). */
export const OPT_VERSION = 1;
export type PassName = (typeof PASS_NAMES)[number];

/** The passes to run: undefined (or optimize off) runs none. */
export function passesOf(opts: { optimize?: boolean; passes?: readonly PassName[] }): readonly PassName[] {
  if (opts.optimize === false) return [];
  const ps = opts.passes ?? PASS_NAMES;
  for (const p of ps) if (!(PASS_NAMES as readonly string[]).includes(p)) throw new NwfError(CODES.VALUE_INVALID, `unknown optimizer pass '${p}'`, { expected: PASS_NAMES.join(', ') });
  return PASS_NAMES.filter((p) => ps.includes(p));
}

/** The passes that change a shape: part of its key (a shape no pass changes keeps its unoptimized name). */
export function firingPasses(t: TemplateView, passes: readonly PassName[]): PassName[] {
  return passes.filter((p) => p === 'fast-accept' && fastAcceptFires(t));
}

/** Why the passes asked for and not in `firing` leave a shape alone (compile --explain-opt). */
export function notFired(t: TemplateView, passes: readonly PassName[], firing: readonly PassName[]): string[] {
  if (!passes.includes('fast-accept')) return passes.includes('fast-base') ? ['fast-base: nothing to hoist (fast-accept is off)'] : [];
  if (firing.includes('fast-accept')) return [];
  return fastShape(t, '0').report.map((l) => `fast-accept ${l}`);
}

/** What the passes did: per shape and direction, and per interface what they left out. */
export interface OptReport {
  passes: readonly PassName[];
  shapes: { shape: string; dir: 'out' | 'in'; ifaces: string[]; lines: string[] }[];
  ports: { iface: string; dir: 'out' | 'in'; lines: string[] }[];
}

/** The report as text, for `compile --explain-opt`. */
export function formatOptReport(r: OptReport): string {
  const out: string[] = [`optimizer passes: ${r.passes.length ? r.passes.join(', ') : 'none (--no-opt)'}`];
  for (const s of r.shapes) {
    out.push(`shape ${s.shape} (${s.dir === 'out' ? 'from the VM' : 'to the VM'}; ${s.ifaces.length} interface${s.ifaces.length === 1 ? '' : 's'}: ${s.ifaces.slice(0, 8).join(', ')}${s.ifaces.length > 8 ? ', ...' : ''})`);
    for (const l of s.lines) out.push(`  ${l}`);
  }
  for (const p of r.ports) for (const l of p.lines) out.push(`interface ${p.iface} (${p.dir}): ${l}`);
  return `${out.join('\n')}\n`;
}
