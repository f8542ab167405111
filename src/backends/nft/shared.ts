// Shared chains: interfaces whose policies have the same shape (the same
// chains, rules and tests, differing only in their addresses: MACs and IPs
// from $MAC, $IP, $GATEWAY_MAC, ...) share one set of chains. Each address
// test that differs between interfaces becomes one lookup of
// `iifname . field` (`oifname . field` towards the VM) in a set holding every
// interface's values; the instances of a rule expanded from a list (an IP
// list) become more elements of that set. Loading 1000 interfaces then adds a
// few hundred rules and some thousands of set elements instead of tens of
// thousands of rules, and changing one VM's address is a set update.
//
// A rule can be shared only when that is exactly equivalent: a varying
// negated test needs a single instance per interface (`(if, a) not in S` is
// `a != v` only then), and a masked MAC must not vary. Otherwise the whole
// shape falls back to per-interface chains (l2.ts).
import { dropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, IpTest, JumpGuard, L2Match, L2Rule, MacTest } from '../../ir/types.js';
import { accept, add, concat, drop, jump, match, meta, payload, prefix, setRef, str, sym, tuple, vmap } from './build.js';
import type { NftCommand, Selector, SetKeyType, Statement, Verdict } from './model.js';
import { dropCounter, type NftNames } from './names.js';
import { br, endOfChain, guardStatements, l2Verdict, lowerL2Match, SLOT_SELECTORS } from './l2.js';
import { appendAll } from '../../util/arrays.js';

type SlotPath = 'src' | 'dst' | 'sha' | 'tha' | 'spa' | 'tpa' | 'srcIp' | 'dstIp';
const SLOT_PATHS: readonly SlotPath[] = ['src', 'dst', 'sha', 'tha', 'spa', 'tpa', 'srcIp', 'dstIp'];

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
export interface Template {
  iface: string;
  chains: TemplateChain[];
  key: string;
}

function slotTest(m: L2Match, path: SlotPath): MacTest | IpTest | undefined {
  return (m as Record<string, unknown>)[path] as MacTest | IpTest | undefined;
}

/** An address test's value, if it can live in a set (masked MACs cannot). */
function slotValue(t: MacTest | IpTest): string | undefined {
  if ('mask' in t && t.mask !== undefined && t.mask !== 'ff:ff:ff:ff:ff:ff') return undefined;
  return 'prefix' in t ? t.addr : t.addr;
}

/** The match with every set-able address removed: what interfaces of one shape share. */
function skeleton(m: L2Match): unknown {
  const o: Record<string, unknown> = { ...m };
  for (const p of SLOT_PATHS) {
    const t = slotTest(m, p);
    if (!t || slotValue(t) === undefined) continue;
    const { addr: _addr, ...rest } = t as { addr: string };
    o[p] = { ...rest, addr: '*' };
  }
  return o;
}

/**
 * Consecutive instances of one filter rule that differ only in set-able
 * addresses form a group (one shared rule, their addresses in a set);
 * instances that differ in anything else (ports, protocols from a list) start
 * a new group.
 */
function groupRules(rules: readonly L2Rule[]): RuleGroup[] {
  const out: RuleGroup[] = [];
  let lastSkeleton = '';
  for (const r of rules) {
    const last = out[out.length - 1];
    const prev = last?.rules[0];
    const sk = JSON.stringify(skeleton(r.match));
    if (last && prev && prev.origin.filter === r.origin.filter && prev.origin.rule === r.origin.rule && sk === lastSkeleton) last.rules.push(r);
    else out.push({ kind: 'group', rules: [r] });
    lastSkeleton = sk;
  }
  return out;
}

export function buildTemplate(p: InterfacePolicy, dir: Direction): Template {
  const pol = p.l2[dir];
  const root: TemplateChain = { entries: [] };
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
  const chains: TemplateChain[] = [root, ...pol.chains.map((c) => ({ sub: c.name, entries: groupRules(c.rules) }))];
  const key = JSON.stringify(
    chains.map((c) => ({
      sub: c.sub,
      entries: c.entries.map((e) =>
        e.kind === 'jump' ? e : { id: `${e.rules[0]?.origin.filter}/${e.rules[0]?.origin.rule}`, verdict: e.rules[0]?.verdict, reason: e.rules[0] ? dropReason(e.rules[0].origin) : '', m: skeleton((e.rules[0] as L2Rule).match) },
      ),
    })),
  );
  return { iface: p.iface, chains, key };
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

export interface SharedEmission {
  /** Chains, sets and rules of the shape. */
  commands: NftCommand[];
  /** The root chain each interface jumps to. */
  root: string;
  /** Counter-map entries needed: reason -> interfaces. */
  counterMaps: Map<string, Set<string>>;
  /** Named counters referenced directly (per-interface dispatch chains). */
  namedCounters: Set<string>;
}

function comment(id: string): string {
  return id.replace(/#\d+$/, '').replace(/[^A-Za-z0-9_.:/#@+-]/g, '_').slice(0, 120);
}

/** Shared chains for interfaces with the same template, or undefined when a rule cannot be shared exactly. */
export function emitShared(dir: Direction, shapeId: number, templates: readonly Template[], names: NftNames): SharedEmission | undefined {
  const first = templates[0];
  if (!first) return undefined;
  const chainName = (sub?: string): string => names.sharedChain(dir, shapeId, sub);
  const ifKey = meta(dir === 'out' ? 'iifname' : 'oifname');
  const commands: NftCommand[] = [];
  const rules: NftCommand[] = [];
  const counterMaps = new Map<string, Set<string>>();
  const namedCounters = new Set<string>();
  const tinyRules: NftCommand[] = [];
  const maps: NftCommand[] = [];
  for (const c of first.chains) commands.push(add(br.chain(chainName(c.sub))));
  let setNo = 0;
  for (let ci = 0; ci < first.chains.length; ci++) {
    const c = first.chains[ci] as TemplateChain;
    const name = chainName(c.sub);
    for (let ei = 0; ei < c.entries.length; ei++) {
      const e = c.entries[ei] as RuleGroup | Jump;
      if (e.kind === 'jump') {
        rules.push(add(br.rule(name, [...guardStatements(e.guard), jump(chainName(e.chain))], `jump ${e.chain}`)));
        continue;
      }
      // the same group in every interface of the shape
      const groups = templates.map((t) => (t.chains[ci] as TemplateChain).entries[ei] as RuleGroup);
      const rep = e.rules[0] as L2Rule;
      const varying: SlotPath[] = [];
      for (const path of SLOT_PATHS) {
        const t0 = slotTest(rep.match, path);
        if (!t0 || slotValue(t0) === undefined) continue;
        const values = new Set(groups.flatMap((g) => g.rules.map((r) => slotValue(slotTest(r.match, path) as MacTest | IpTest))));
        if (values.size > 1) varying.push(path);
      }
      const setable = rep.match.proto !== 'rarp' || varying.every((v) => v === 'src' || v === 'dst');
      if (!setable) {
        // nft cannot look RARP addresses up in typed sets (see l2.ts): dispatch to a
        // per-interface chain holding this rule's instances. Exact for accept, drop and
        // continue (a miss falls back into this chain); a sub-chain `return` is not.
        if (rep.verdict === 'return' && c.sub !== undefined) return undefined;
        const mapNo = setNo++;
        const mapName = names.perIfaceMap(dir, shapeId, mapNo);
        const entries: [ReturnType<typeof str>, Verdict][] = [];
        for (let k = 0; k < templates.length; k++) {
          const iface = (templates[k] as Template).iface;
          const tiny = names.perIfaceChain(dir, shapeId, mapNo, iface);
          commands.push(add(br.chain(tiny)));
          for (const r of (groups[k] as RuleGroup).rules) tinyRules.push(add(br.rule(tiny, [...lowerL2Match(r.match, r, iface), ...l2Verdict(r, iface, c.sub === undefined, namedCounters)], comment(r.id))));
          entries.push([str(iface), jump(tiny)]);
        }
        maps.push(add(br.verdictMap(mapName, 'ifname', entries)));
        rules.push(add(br.rule(name, [vmap(ifKey, mapName)], `${comment(rep.id)} (per interface)`)));
        continue;
      }
      const stmts = lowerL2Match(rep.match, rep, first.iface, new Set(varying));
      if (varying.length) {
        const negated = varying.some((v) => (slotTest(rep.match, v) as MacTest | IpTest).neg);
        if (negated && (varying.length > 1 || groups.some((g) => g.rules.length !== 1))) return undefined;
        if (varying.some((v) => (slotTest(rep.match, v) as MacTest | IpTest).neg !== negated)) return undefined;
        const setName = names.sharedSet(dir, shapeId, setNo++);
        const types: SetKeyType[] = ['ifname', ...varying.map((v) => SET_TYPE[v](slotTest(rep.match, v) as MacTest | IpTest))];
        const interval = varying.some((v) => {
          const t = slotTest(rep.match, v) as IpTest;
          return 'prefix' in t && t.prefix !== (t.family === 'ipv4' ? 32 : 128);
        });
        const seen = new Set<string>();
        const elements = [];
        for (let k = 0; k < templates.length; k++) {
          const iface = (templates[k] as Template).iface;
          for (const r of (groups[k] as RuleGroup).rules) {
            const vals = varying.map((v) => elementValue(slotTest(r.match, v) as MacTest | IpTest));
            const id = JSON.stringify([iface, vals]);
            if (seen.has(id)) continue;
            seen.add(id);
            elements.push(tuple(str(iface), ...vals));
          }
        }
        commands.push(add(br.set(setName, types, elements, interval ? { flags: ['interval'] } : {})));
        stmts.push(match(concat(ifKey, ...varying.map((v) => slotSelector(v, slotTest(rep.match, v) as MacTest | IpTest))), negated ? '!=' : '==', setRef(setName)));
      }
      const verdict: Statement[] = [];
      const inRoot = c.sub === undefined;
      switch (rep.verdict) {
        case 'accept':
          verdict.push(accept());
          break;
        case 'drop': {
          const reason = dropReason(rep.origin);
          const users = counterMaps.get(reason) ?? new Set<string>();
          for (const t of templates) users.add(t.iface);
          counterMaps.set(reason, users);
          verdict.push({ kind: 'counter-map', key: ifKey, map: names.counterMap(dir, reason) }, drop());
          break;
        }
        case 'return':
          verdict.push(inRoot ? accept() : ({ kind: 'return' } as Verdict));
          break;
        case 'continue':
          verdict.push({ kind: 'continue' });
          break;
      }
      rules.push(add(br.rule(name, [...stmts, ...verdict], comment(rep.id))));
    }
    rules.push(endOfChain(name));
  }
  return { commands: [...commands, ...tinyRules, ...maps, ...rules], root: chainName(), counterMaps, namedCounters };
}

export function counterMapCommands(dir: Direction, maps: ReadonlyMap<string, ReadonlySet<string>>, names: NftNames): NftCommand[] {
  const out: NftCommand[] = [];
  for (const [reason, ifaces] of [...maps].sort(([a], [b]) => (a < b ? -1 : 1))) {
    out.push(add(br.dataMap(names.counterMap(dir, reason), 'ifname', 'counter', [...ifaces].sort().map((i) => [str(i), str(dropCounter(i, reason as never))] as const))));
  }
  return out;
}
