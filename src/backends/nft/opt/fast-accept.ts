// P4 `fast-accept`: the common accept path first, its lookups fused.
//
// For IPv4, ARP and IPv6, a shape whose policy checks the interface's own
// addresses (its MAC, its IPs) gets one rule first in its root chain that
// accepts exactly the frames the policy accepts on that path, with every
// address in one concatenated lookup:
//
//   ether type 0x800 meta length >= 20 iifname . ether saddr . ip saddr @sf-<shape>-ip4 accept
//   ether type 0x806 @nh,0,32 0x10800 @nh,32,16 0x604 meta length >= 28
//       iifname . ether saddr . arp saddr ether . arp saddr ip @sf-<shape>-arp accept
//   ether type 0x86dd meta length >= 40 iifname . ether saddr . ip6 saddr @sf-<shape>-ip6 accept
//
// Every original rule stays behind it, so a frame the fast rule does not
// accept meets the original program unchanged; drops and their counters are
// never moved. What the fast rule accepts is checked per interface: for each
// combination of its addresses (its MACs times its IPs), the template is
// walked (walk.ts) under the class "this EtherType, untagged, at least this
// long, these addresses"; the element goes into the set only when every way
// through the chains accepts with no drop on the way. An element left out
// (a `0.0.0.0` address whose DHCP rule depends on ports, a negated address,
// a rule between the checks that tests something else and drops) only means
// that interface's frames take the original path.
//
// Exact because (docs, nft optimizer, facts 1-2): the rule tests the
// EtherType explicitly (a VLAN-tagged frame reads 0x8100 and never matches;
// nft adds no `meta protocol` dependency after an explicit `ether type`),
// and the length guard covers every field it reads, so short frames fall
// through to the original guards that drop and count them.
import type { Direction, L2Rule } from '../../../ir/types.js';
import { InternalError } from '../../../util/errors.js';
import { ETHERTYPE_OF } from '../../../ir/values.js';
import { accept, add, eq, hex, match, meta, payload, raw, setRef, str, sym } from '../build.js';
import type { NftCommand, Selector, SetKeyType, Statement, TupleValue } from '../model.js';
import { nftNames } from '../names.js';
import { br } from '../l2.js';
import { classSignature, walkTemplate, type BoundPath, type FrameClass, type TemplateView as Template, type WalkEnd } from './walk.js';

/** Most elements one interface may add to a fast set (its MACs times its IPs); beyond it the interface keeps the original path. */
export const MAX_FAST_ELEMENTS = 4096;
/** Templates of at most this many rule instances keep their walks' ends by class signature. */
const MAX_SIGNATURE_RULES = 64;

export type FastKind = 'ip4' | 'arp' | 'ip6';
export const FAST_KINDS: readonly FastKind[] = ['ip4', 'arp', 'ip6'];
const KINDS = FAST_KINDS;

export interface FastPath {
  kind: FastKind;
  set: string;
  /** The addresses of the key, after the interface name. */
  paths: BoundPath[];
  class: Omit<FrameClass, 'bound'>;
}

/** A shape's fast paths (what each interface fills). */
export interface FastShape {
  paths: FastPath[];
  decls: NftCommand[];
  /** The rules that go first in the shape's root chain. */
  rules: NftCommand[];
  /** What the pass did, or why not, per kind of frame. */
  report: string[];
  /** Walk ends by kind and class signature (walk.ts classSignature): an interface whose rules classify like an earlier one's is not walked again. */
  walks: Map<string, WalkEnd>;
}

/** Candidate key addresses per kind and direction: what identifies the sender (from the VM) or the receiver (to it). */
const CANDIDATES: Record<Direction, Record<FastKind, BoundPath[]>> = {
  out: { ip4: ['src', 'srcIp'], arp: ['src', 'sha', 'spa'], ip6: ['src', 'srcIp'] },
  in: { ip4: ['dst', 'dstIp'], arp: ['dst', 'tpa'], ip6: ['dst', 'dstIp'] },
};

const CLASSES: Record<FastKind, Omit<FrameClass, 'bound'>> = {
  ip4: { etherType: ETHERTYPE_OF.ipv4, minLength: 20 },
  arp: { etherType: ETHERTYPE_OF.arp, minLength: 28, arpEthIp: true },
  ip6: { etherType: ETHERTYPE_OF.ipv6, minLength: 40 },
};

/** The selector and set type of a key address (IP addresses by the kind's family). */
function keyOf(kind: FastKind, p: BoundPath): { sel: Selector; type: SetKeyType } {
  if (kind === 'ip6' && (p === 'srcIp' || p === 'dstIp')) return { sel: payload('ip6', p === 'srcIp' ? 'saddr' : 'daddr'), type: 'ipv6_addr' };
  return { sel: SELECTOR[p], type: TYPE[p] };
}

const SELECTOR: Record<BoundPath, Selector> = {
  src: payload('ether', 'saddr'),
  dst: payload('ether', 'daddr'),
  sha: payload('arp', 'saddr ether'),
  spa: payload('arp', 'saddr ip'),
  tpa: payload('arp', 'daddr ip'),
  srcIp: payload('ip', 'saddr'),
  dstIp: payload('ip', 'daddr'),
};
const TYPE: Record<BoundPath, SetKeyType> = { src: 'ether_addr', dst: 'ether_addr', sha: 'ether_addr', spa: 'ipv4_addr', tpa: 'ipv4_addr', srcIp: 'ipv4_addr', dstIp: 'ipv4_addr' };

/** Protocols of rules whose address tests can be on a kind's accept path. */
const ON_PATH: Record<FastKind, ReadonlySet<string>> = { ip4: new Set(['any', 'mac', 'ipv4']), arp: new Set(['any', 'mac', 'arp']), ip6: new Set(['any', 'mac', 'ipv6']) };

type Rule = L2Rule;

function* rulesOf(t: Template): Generator<Rule> {
  for (const c of t.chains) for (const e of c.entries) if (e.kind === 'group') yield* e.rules;
}

/**
 * The exact value a rule tests at `path` from the interface's own
 * parameters, if any: a candidate for the key. A negated test (`match='no'`)
 * names the interface's own address too; whether a frame from it is
 * accepted is the walk's to say, per element.
 */
function portValue(r: Rule, path: BoundPath, kind: FastKind): string | undefined {
  const t = (r.match as Record<string, unknown>)[path] as { addr: string; neg: boolean; port?: true; mask?: string; prefix?: number; family?: string } | undefined;
  if (!t?.port) return undefined;
  if (t.mask !== undefined && t.mask !== 'ff:ff:ff:ff:ff:ff') return undefined;
  const host = kind === 'ip6' ? { family: 'ipv6', prefix: 128 } : { family: 'ipv4', prefix: 32 };
  if (t.prefix !== undefined && (t.family !== host.family || t.prefix !== host.prefix)) return undefined;
  return t.addr;
}

const ifKeyOf = (dir: Direction): Selector => meta(dir === 'out' ? 'iifname' : 'oifname');

/** The set type of a fast path's key (the interface name, then its addresses). */
export const fastSetType = (kind: FastKind, paths: readonly BoundPath[]): SetKeyType[] => ['ifname', ...paths.map((p) => keyOf(kind, p).type)];

/**
 * The statements of a fast rule: the EtherType, the fixed ARP fields the
 * offsets assume, the length guard covering every field of the key, the
 * lookup of the key in `set`, accept.
 */
export function fastRule(kind: FastKind, dir: Direction, paths: readonly BoundPath[], set: string): Statement[] {
  const cls = CLASSES[kind];
  const guards: Statement[] = [eq(payload('ether', 'type'), hex(cls.etherType))];
  // hardware type 1, protocol IPv4, sizes 6 and 4: what the ARP rules' offsets assume
  if (kind === 'arp') guards.push(eq(raw('nh', 0, 32), hex(0x00010800)), eq(raw('nh', 32, 16), hex(0x0604)));
  guards.push(match(meta('length'), '>=', cls.minLength));
  const key: Selector = { kind: 'concat', items: [ifKeyOf(dir), ...paths.map((p) => keyOf(kind, p).sel)] };
  return [...guards, match(key, '==', setRef(set)), accept()];
}

/** The key addresses of each kind's fast path (none: the pass does not fire for it). */
function keyPaths(t: Template, kind: FastKind): BoundPath[] {
  return CANDIDATES[t.dir][kind].filter((p) => [...rulesOf(t)].some((r) => ON_PATH[kind].has(r.match.proto) && portValue(r, p, kind) !== undefined));
}

/**
 * Whether a kind's fast path can accept anything: the key addresses, and a
 * walk at shape level (its own addresses bound, values left open) that
 * accepts. A shape whose path always meets a drop on something outside the
 * key (clean-traffic-gateway: isolation by destination) gets no fast rule,
 * which would only cost every frame a lookup that misses.
 */
function fastKey(t: Template, kind: FastKind): { paths: BoundPath[] } | { why: string } {
  // a learned $IP (IP learning) is looked up in the learned-state sets at run time: no value to walk with
  if ([...rulesOf(t)].some((r) => JSON.stringify(r.match).includes('"learned":true'))) return { why: 'the policy tests addresses learned at run time' };
  const paths = keyPaths(t, kind);
  if (paths.length === 0) return { why: `the policy checks none of the interface's own ${CANDIDATES[t.dir][kind].join(', ')} on this path` };
  const bound: FrameClass['bound'] = {};
  for (const p of paths) bound[p] = '*';
  const { end } = walkTemplate(t, { ...CLASSES[kind], bound, symbolic: true });
  if (end.kind !== 'accept') return { why: `a frame from the interface's own ${paths.join(', ')} may still be refused (${end.why})` };
  return { paths };
}

/** Whether the pass changes a shape (a shape it leaves alone keeps its unoptimized name). */
export function fastAcceptFires(t: Template): boolean {
  return KINDS.some((k) => 'paths' in fastKey(t, k));
}

/** The fast paths of a shape, from any interface's template of it (the structure is the shape's). */
export function fastShape(t: Template, hash: string): FastShape {
  const out: FastShape = { paths: [], decls: [], rules: [], report: [], walks: new Map() };
  for (const kind of KINDS) {
    const k = fastKey(t, kind);
    if (!('paths' in k)) {
      out.report.push(`${kind}: not fired (${k.why})`);
      continue;
    }
    const paths = k.paths;
    const set = nftNames.shapeFastSet(hash, kind);
    const cls = CLASSES[kind];
    out.paths.push({ kind, set, paths, class: cls });
    out.decls.push(add(br.set(set, fastSetType(kind, paths))));
    out.rules.push(add(br.rule(nftNames.shapeChain(hash), fastRule(kind, t.dir, paths, set), `fast-accept ${kind}`)));
    out.report.push(`${kind}: fired, key ${[t.dir === 'out' ? 'iifname' : 'oifname', ...paths].join(' . ')} in ${set}`);
  }
  return out;
}

/** Distinct values in order. */
const uniq = (xs: Iterable<string>): string[] => [...new Set(xs)];

/**
 * One interface's elements of a shape's fast sets, and what was left out and
 * why (each element checked by a walk of its own template).
 */
/**
 * `ends`: per fast path, the walk's end per combination, of a port of the
 * same class (port-memo.ts: its walks end alike, combination by
 * combination); a path without them is walked and its ends kept there.
 */
export function fastPortElements(s: FastShape, t: Template, ends?: (WalkEnd[] | undefined)[]): { commands: NftCommand[]; notes: string[]; accepted: { path: FastPath; combos: string[][] }[] } {
  const commands: NftCommand[] = [];
  const notes: string[] = [];
  let instances = 0;
  for (const c of t.chains) for (const e of c.entries) if (e.kind === 'group') instances += e.rules.length;
  const accepted: { path: FastPath; combos: string[][] }[] = [];
  const rules = s.paths.length ? [...rulesOf(t)] : [];
  for (const [fi, fp] of s.paths.entries()) {
    const onPath = rules.filter((r) => ON_PATH[fp.kind].has(r.match.proto));
    const values = fp.paths.map((p) => uniq(onPath.flatMap((r) => portValue(r, p, fp.kind) ?? [])));
    const count = values.reduce((n, v) => n * v.length, 1);
    if (count === 0) {
      notes.push(`${fp.kind}: no element (no address of its own)`);
      continue;
    }
    if (count > MAX_FAST_ELEMENTS) {
      notes.push(`${fp.kind}: no element (${count} address combinations, at most ${MAX_FAST_ELEMENTS})`);
      continue;
    }
    const elements: TupleValue[] = [];
    const combos: string[][] = [];
    const left: string[] = [];
    const known = ends?.[fi];
    if (known && known.length !== count) throw new InternalError(`a port of the same class has ${known.length} fast-accept combinations, this one ${count}`);
    const kept: WalkEnd[] | undefined = ends && !known ? (ends[fi] = []) : undefined;
    let ci = 0;
    for (const combo of product(values)) {
      let end = known?.[ci++];
      if (!end) {
        const bound: FrameClass['bound'] = {};
        fp.paths.forEach((p, i) => (bound[p] = combo[i] as string));
        const cls: FrameClass = { ...fp.class, bound };
        // a signature reads every rule instance, a walk only those before its end: long lists are walked
        const sig = instances <= MAX_SIGNATURE_RULES ? `${fp.kind}${classSignature(t, cls)}` : undefined;
        end = sig === undefined ? undefined : s.walks.get(sig);
        if (!end) {
          end = walkTemplate(t, cls).end;
          if (sig !== undefined) s.walks.set(sig, end);
        }
      }
      kept?.push(end);
      if (end.kind === 'accept') {
        elements.push({ kind: 'tuple', items: [str(t.iface), ...combo.map((v) => sym(v))] } satisfies TupleValue);
        combos.push(combo);
      } else left.push(`${combo.join(' . ')} (${end.why})`);
    }
    if (left.length) notes.push(`${fp.kind}: ${left.length} of ${count} left out: ${left.slice(0, 4).join('; ')}${left.length > 4 ? '; ...' : ''}`);
    if (elements.length) {
      commands.push(add(br.element(fp.set, elements)));
      accepted.push({ path: fp, combos });
    }
  }
  return { commands, notes, accepted };
}

function* product(lists: readonly (readonly string[])[]): Generator<string[]> {
  if (lists.length === 0) {
    yield [];
    return;
  }
  const [head, ...rest] = lists as [readonly string[], ...(readonly string[])[]];
  for (const x of head) for (const tail of product(rest)) yield [x, ...tail];
}
