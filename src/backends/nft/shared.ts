// Shared chains: interfaces whose policies have the same shape share one set
// of chains, lowered once per shape; per interface there are only elements.
//
// A shape is the rule structure of one direction of a policy with every
// value that comes from the interface's own parameters ($MAC, $IP, ... in
// its filterref: tests marked `port` by the resolver) left out. Each such
// address test becomes one lookup of `iifname . field` (`oifname . field`
// towards the VM) in a set of the shape, which holds the values of every
// interface that has the shape; the instances of a rule expanded from a list
// (an IP list) become more elements of that set. Everything else stays in
// the shape's rules. So a shape depends on nothing but its own key: lowered
// once (the same for every interface, host and load), named from a hash of
// the key (names.ts), and an interface joins or leaves it by its elements.
//
// A rule can be shared only when that is exactly equivalent: a negated
// per-interface test needs a single instance per interface (`(if, a) not in
// S` is `a != v` only then: the instance count of such a group is part of the
// key), and the negations of one rule's looked-up tests must agree.
// Otherwise the interface gets its own chains (l2.ts). nft cannot look RARP
// addresses up in typed sets (l2.ts): a RARP rule testing per-interface
// addresses dispatches through a per-interface map to a small chain of the
// interface holding its instances.
import { dropReason, type DropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, IpTest, JumpGuard, L2Entry, L2Match, L2Rule, MacTest } from '../../ir/types.js';
import { InternalError } from '../../util/errors.js';
import { accept, add, concat, goto, jump, match, meta, payload, prefix, setRef, str, sym, tuple, vmap } from './build.js';
import type { NftCommand, Selector, SetKeyType, Statement, Verdict } from './model.js';
import { nftNames } from './names.js';
import { br, endOfChain, guardStatements, l2Verdict, lowerL2Match, SLOT_SELECTORS } from './l2.js';
import { appendAll } from '../../util/arrays.js';
import { fastPortElements, fastShape, type FastShape } from './opt/fast-accept.js';
import type { WalkEnd } from './opt/walk.js';

/** The elements a port put in its shape's fast sets (what opt/fast-base.ts hoists). */
export type FastAccepted = ReturnType<typeof fastPortElements>['accepted'][number];
import type { PassName } from './opt/passes.js';

/** Bumped whenever the chains lowered for a shape key change meaning: part of every shape's hash. */
export const SHAPE_LOWERING_VERSION = 1;

export type SlotPath = 'src' | 'dst' | 'sha' | 'tha' | 'spa' | 'tpa' | 'srcIp' | 'dstIp';
export const SLOT_PATHS: readonly SlotPath[] = ['src', 'dst', 'sha', 'tha', 'spa', 'tpa', 'srcIp', 'dstIp'];

interface RuleGroup {
  kind: 'group';
  /** Consecutive instances of one filter rule. */
  rules: L2Rule[];
}
interface Jump {
  kind: 'jump';
  chain: string;
  guard: JumpGuard;
}
interface TemplateChain {
  /** undefined for the root chain. */
  sub?: string;
  entries: (RuleGroup | Jump)[];
}
/** One direction of an interface's policy, grouped as its shape sees it. */
export interface Template {
  iface: string;
  dir: Direction;
  chains: TemplateChain[];
  /** The shape key: the structure without per-interface values. */
  key: string;
}

function slotTest(m: L2Match, path: SlotPath): MacTest | IpTest | undefined {
  return (m as Record<string, unknown>)[path] as MacTest | IpTest | undefined;
}

/** An address test's value, if it can live in a set (masked MACs cannot). */
function slotValue(t: MacTest | IpTest): string | undefined {
  if ('mask' in t && t.mask !== undefined && t.mask !== 'ff:ff:ff:ff:ff:ff') return undefined;
  return t.addr;
}

/** A test whose value is the interface's own and can be looked up in a set. */
export function portSlot(t: MacTest | IpTest | undefined): t is MacTest | IpTest {
  return !!t?.port && slotValue(t) !== undefined;
}

/** The match with every per-interface value left out: what interfaces of one shape share. */
function skeleton(m: L2Match): unknown {
  const o: Record<string, unknown> = { ...m };
  for (const p of SLOT_PATHS) {
    const t = slotTest(m, p);
    if (!portSlot(t)) continue;
    const { addr: _addr, ...rest } = t as { addr: string };
    o[p] = { ...rest, addr: '*' };
  }
  return o;
}

/** Whether a group's looked-up tests are negated (its instance count is then part of the shape). */
function negatedPortTest(m: L2Match): boolean {
  return SLOT_PATHS.some((p) => {
    const t = slotTest(m, p);
    return portSlot(t) && t.neg;
  });
}

/**
 * The skeleton of a match as JSON text. A frozen match (a rule the resolver
 * shares between the interfaces of one template, resolve.ts) cannot change:
 * its text is computed once for all of them.
 */
const skeletonTexts = new WeakMap<L2Match, string>();
function skeletonText(m: L2Match): string {
  if (!Object.isFrozen(m)) return JSON.stringify(skeleton(m));
  let s = skeletonTexts.get(m);
  if (s === undefined) skeletonTexts.set(m, (s = JSON.stringify(skeleton(m))));
  return s;
}

/** A rule group with the skeleton text of its first rule (for the key). */
interface KeyedGroup extends RuleGroup {
  sk: string;
}

/**
 * Consecutive instances of one filter rule that differ only in
 * per-interface values form a group (one shared rule, their values in a
 * set); instances that differ in anything else (ports, protocols from a
 * list) start a new group.
 */
function groupRules(rules: readonly L2Rule[]): KeyedGroup[] {
  const out: KeyedGroup[] = [];
  let lastSkeleton = '';
  for (const r of rules) {
    const last = out[out.length - 1];
    const prev = last?.rules[0];
    const sk = skeletonText(r.match);
    if (last && prev && prev.origin.filter === r.origin.filter && prev.origin.rule === r.origin.rule && sk === lastSkeleton) last.rules.push(r);
    else out.push({ kind: 'group', rules: [r], sk });
    lastSkeleton = sk;
  }
  return out;
}

/** A group's part of the shape key: JSON of {id, verdict, reason, m: skeleton, n?} (n: the instance count, for a negated looked-up test). */
const groupKeyTexts = new WeakMap<L2Rule, string>();
function groupKeyText(g: KeyedGroup): string {
  const rep = g.rules[0] as L2Rule;
  const frozen = Object.isFrozen(rep);
  let base = frozen ? groupKeyTexts.get(rep) : undefined;
  if (base === undefined) {
    base = `{"id":${JSON.stringify(`${rep.origin.filter}/${rep.origin.rule}`)},"verdict":${JSON.stringify(rep.verdict)},"reason":${JSON.stringify(dropReason(rep.origin))},"m":${g.sk}`;
    if (frozen) groupKeyTexts.set(rep, base);
  }
  return negatedPortTest(rep.match) ? `${base},"n":${g.rules.length}}` : `${base}}`;
}

export function buildTemplate(p: InterfacePolicy, dir: Direction): Template {
  const pol = p.l2[dir];
  const root: { sub?: string; entries: (KeyedGroup | Jump)[] } = { entries: [] };
  let pending: L2Rule[] = [];
  const flush = (): void => {
    appendAll(root.entries, groupRules(pending));
    pending = [];
  };
  for (const e of pol.root) {
    if (e.kind === 'rule') pending.push(e.rule);
    else {
      flush();
      root.entries.push({ kind: 'jump', chain: e.chain, guard: e.guard });
    }
  }
  flush();
  const chains = [root, ...pol.chains.map((c) => ({ sub: c.name, entries: groupRules(c.rules) }))];
  // the key is JSON of [version, dir, {learn}?, [{sub?, entries: [jump | group key]}]], written
  // from the groups' texts (learned $IP tests are lowered by learning mode, learn.ts)
  const head = JSON.stringify([SHAPE_LOWERING_VERSION, dir, ...(p.learning ? [{ learn: p.learning.mode }] : [])]).slice(0, -1);
  const chainTexts = chains.map((c) => {
    const entries = c.entries.map((e) => (e.kind === 'jump' ? JSON.stringify(e) : groupKeyText(e))).join(',');
    return c.sub === undefined ? `{"entries":[${entries}]}` : `{"sub":${JSON.stringify(c.sub)},"entries":[${entries}]}`;
  });
  const key = `${head},[${chainTexts.join(',')}]]`;
  return { iface: p.iface, dir, chains, key };
}

/** A template's grouping: per chain, per entry, its rule count (0: a jump). */
export type TemplateLayout = number[][];

export function layoutOf(t: Template): TemplateLayout {
  return t.chains.map((c) => c.entries.map((e) => (e.kind === 'jump' ? 0 : e.rules.length)));
}

/**
 * The template of a port whose grouping and key are known (port-memo.ts: a
 * port of the same class as the one they were built from): the port's own
 * rules, grouped by `layout`, without building the key again.
 */
export function templateFromLayout(p: InterfacePolicy, dir: Direction, layout: TemplateLayout, key: string): Template {
  const pol = p.l2[dir];
  const chains: TemplateChain[] = [];
  const group = (rules: L2Rule[]): RuleGroup => ({ kind: 'group', rules });
  const root: TemplateChain = { entries: [] };
  let at = 0;
  for (const n of layout[0] as number[]) {
    const e = pol.root[at] as L2Entry;
    if (n === 0) {
      if (e.kind !== 'jump') throw new InternalError('template layout does not fit the policy');
      root.entries.push({ kind: 'jump', chain: e.chain, guard: e.guard });
      at++;
      continue;
    }
    const rules: L2Rule[] = [];
    for (let k = 0; k < n; k++) {
      const x = pol.root[at++];
      if (x?.kind !== 'rule') throw new InternalError('template layout does not fit the policy');
      rules.push(x.rule);
    }
    root.entries.push(group(rules));
  }
  chains.push(root);
  pol.chains.forEach((c, i) => {
    const entries: RuleGroup[] = [];
    let k = 0;
    for (const n of layout[i + 1] as number[]) {
      entries.push(group(c.rules.slice(k, k + n)));
      k += n;
    }
    chains.push({ sub: c.name, entries });
  });
  return { iface: p.iface, dir, chains, key };
}

const SET_TYPE: Record<SlotPath, (t: MacTest | IpTest) => SetKeyType> = {
  src: () => 'ether_addr',
  dst: () => 'ether_addr',
  sha: () => 'ether_addr',
  tha: () => 'ether_addr',
  spa: () => 'ipv4_addr',
  tpa: () => 'ipv4_addr',
  srcIp: (t) => ((t as IpTest).family === 'ipv6' ? 'ipv6_addr' : 'ipv4_addr'),
  dstIp: (t) => ((t as IpTest).family === 'ipv6' ? 'ipv6_addr' : 'ipv4_addr'),
};

function slotSelector(path: SlotPath, t: MacTest | IpTest): Selector {
  if (path === 'srcIp' || path === 'dstIp') {
    const fam = (t as IpTest).family === 'ipv6' ? 'ip6' : 'ip';
    return payload(fam, path === 'srcIp' ? 'saddr' : 'daddr');
  }
  return SLOT_SELECTORS[path];
}

function elementValue(t: MacTest | IpTest) {
  if ('prefix' in t) {
    const full = t.family === 'ipv4' ? 32 : 128;
    return t.prefix === full ? sym(t.addr) : prefix(t.addr, t.prefix);
  }
  return sym(t.addr);
}

/** How a shape lowered one group: a shared rule (its values looked up in set k), or a per-interface map k. */
type GroupPlan = { kind: 'shared'; set?: { k: number; slots: SlotPath[] } } | { kind: 'per-interface'; k: number };

/** A shape lowered once: its chains, rules and (empty) sets and maps. */
export interface ShapeEmission {
  /** The shape's name part (names.ts shapeHash of its key). */
  hash: string;
  dir: Direction;
  commands: NftCommand[];
  /** The chain every interface of the shape jumps to. */
  root: string;
  /** Drop reasons of its rules: each interface has an entry in those counting sets. */
  reasons: DropReason[];
  /** Per chain, per entry: how each group was lowered (what an interface adds). */
  plan: (GroupPlan | undefined)[][];
  /** The fast-accept paths (opt/fast-accept.ts), when that pass ran. */
  fast?: FastShape;
  /** What the optimizer's passes did to this shape (compile --explain-opt). */
  opt: string[];
}

function comment(id: string): string {
  return id.replace(/#\d+$/, '').replace(/[^A-Za-z0-9_.:/#@+-]/g, '_').slice(0, 120);
}

const ifKeyOf = (dir: Direction) => meta(dir === 'out' ? 'iifname' : 'oifname');

/**
 * The shared chains of a shape from one interface's template (any: the key
 * holds everything they depend on), or undefined when a rule cannot be
 * shared exactly (the interfaces of this shape get their own chains).
 */
export function emitShape(t: Template, hash: string, passes: readonly PassName[] = []): ShapeEmission | undefined {
  const { dir } = t;
  const chainName = (sub?: string): string => nftNames.shapeChain(hash, sub);
  const ifKey = ifKeyOf(dir);
  const decls: NftCommand[] = [];
  const rules: NftCommand[] = [];
  const reasons = new Set<DropReason>();
  const plan: (GroupPlan | undefined)[][] = [];
  for (const c of t.chains) decls.push(add(br.chain(chainName(c.sub))));
  const opt: string[] = [];
  let fast: FastShape | undefined;
  if (passes.includes('fast-accept')) {
    // first in the root chain: the root's rules are the first pushed below
    fast = fastShape(t, hash);
    appendAll(decls, fast.decls);
    appendAll(rules, fast.rules);
    for (const l of fast.report) opt.push(`fast-accept ${l}`);
  }
  let setNo = 0;
  for (const c of t.chains) {
    const name = chainName(c.sub);
    const chainPlan: (GroupPlan | undefined)[] = [];
    plan.push(chainPlan);
    for (const e of c.entries) {
      if (e.kind === 'jump') {
        chainPlan.push(undefined);
        rules.push(add(br.rule(name, [...guardStatements(e.guard), jump(chainName(e.chain))], `jump ${e.chain}`)));
        continue;
      }
      const rep = e.rules[0] as L2Rule;
      const slots = SLOT_PATHS.filter((path) => portSlot(slotTest(rep.match, path)));
      const setable = rep.match.proto !== 'rarp' || slots.every((v) => v === 'src' || v === 'dst');
      if (!setable) {
        // per-interface chains behind a map: exact for accept, drop and continue (a miss falls
        // back into this chain); a sub-chain `return` is not
        if (rep.verdict === 'return' && c.sub !== undefined) return undefined;
        const k = setNo++;
        const mapName = nftNames.shapeMap(hash, k);
        decls.push(add(br.verdictMap(mapName, 'ifname', [])));
        rules.push(add(br.rule(name, [vmap(ifKey, mapName)], `${comment(rep.id)} (per interface)`)));
        chainPlan.push({ kind: 'per-interface', k });
        continue;
      }
      // constants stay in the rule; the interface's own values are looked up
      const stmts = lowerL2Match(rep.match, rep, t.iface, new Set(slots), dir);
      let set: { k: number; slots: SlotPath[] } | undefined;
      if (slots.length) {
        const negated = slots.some((v) => (slotTest(rep.match, v) as MacTest | IpTest).neg);
        if (negated && (slots.length > 1 || e.rules.length !== 1)) return undefined;
        if (slots.some((v) => (slotTest(rep.match, v) as MacTest | IpTest).neg !== negated)) return undefined;
        const k = setNo++;
        const setName = nftNames.shapeSet(hash, k);
        const types: SetKeyType[] = ['ifname', ...slots.map((v) => SET_TYPE[v](slotTest(rep.match, v) as MacTest | IpTest))];
        const interval = slots.some((v) => {
          const x = slotTest(rep.match, v) as IpTest;
          return 'prefix' in x && x.prefix !== (x.family === 'ipv4' ? 32 : 128);
        });
        decls.push(add(br.set(setName, types, undefined, interval ? { flags: ['interval'] } : {})));
        stmts.push(match(concat(ifKey, ...slots.map((v) => slotSelector(v, slotTest(rep.match, v) as MacTest | IpTest))), negated ? '!=' : '==', setRef(setName)));
        set = { k, slots };
      }
      chainPlan.push({ kind: 'shared', ...(set ? { set } : {}) });
      const verdict: Statement[] = [];
      switch (rep.verdict) {
        case 'accept':
          verdict.push(accept());
          break;
        case 'drop': {
          const reason = dropReason(rep.origin);
          reasons.add(reason);
          verdict.push(goto(nftNames.dropChain(dir, reason)));
          break;
        }
        case 'return':
          verdict.push(c.sub === undefined ? accept() : ({ kind: 'return' } as Verdict));
          break;
        case 'continue':
          verdict.push({ kind: 'continue' });
          break;
      }
      rules.push(add(br.rule(name, [...stmts, ...verdict], comment(rep.id))));
    }
    rules.push(endOfChain(name));
  }
  return { hash, dir, commands: [...decls, ...rules], root: chainName(), reasons: [...reasons].sort(), plan, opt, ...(fast ? { fast } : {}) };
}

/**
 * What one interface adds to a shape: the elements of the shape's sets, and
 * for per-interface groups its own small chain and map entry. Drop reasons
 * of those chains are added to `reasons`.
 */
export function shapePortCommands(s: ShapeEmission, t: Template, reasons: Set<DropReason>, notes?: string[], fastAccepted?: FastAccepted[], walkEnds?: (WalkEnd[] | undefined)[]): NftCommand[] {
  const iface = t.iface;
  const sets: NftCommand[] = [];
  const chains: NftCommand[] = [];
  t.chains.forEach((c, ci) => {
    c.entries.forEach((e, ei) => {
      const g = s.plan[ci]?.[ei];
      if (e.kind === 'jump' || !g) return;
      if (g.kind === 'per-interface') {
        const tiny = nftNames.shapePortChain(s.hash, g.k, iface);
        chains.push(add(br.chain(tiny)));
        for (const r of e.rules) chains.push(add(br.rule(tiny, [...lowerL2Match(r.match, r, iface, undefined, t.dir), ...l2Verdict(r, t.dir, c.sub === undefined, reasons)], comment(r.id))));
        chains.push(add(br.element(nftNames.shapeMap(s.hash, g.k), [[str(iface), jump(tiny)]])));
        return;
      }
      if (!g.set) return;
      const slots = g.set.slots;
      const seen = new Set<string>();
      const elements = [];
      for (const r of e.rules) {
        const tests = slots.map((v) => slotTest(r.match, v) as MacTest | IpTest);
        // the element's identity: its values' texts (an address and, for IP, its prefix)
        const id = tests.map((x) => ('prefix' in x ? `${x.addr}/${x.prefix}` : x.addr)).join(' ');
        if (seen.has(id)) continue;
        seen.add(id);
        const vals = tests.map(elementValue);
        elements.push(tuple(str(iface), ...vals));
      }
      sets.push(add(br.element(nftNames.shapeSet(s.hash, g.set.k), elements)));
    });
  });
  for (const r of s.reasons) reasons.add(r);
  if (s.fast) {
    const f = fastPortElements(s.fast, t, walkEnds);
    appendAll(sets, f.commands);
    if (notes) for (const n of f.notes) notes.push(`fast-accept ${n}`);
    if (fastAccepted) appendAll(fastAccepted, f.accepted);
  }
  return [...chains, ...sets];
}
