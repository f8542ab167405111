// Symbolic evaluation of one interface's shape template (shared.ts) under a
// frame class: what every frame of the class meets, rule by rule, and where
// it ends. The optimizer's passes ask one question of a rule: under what is
// known about the frames that reach it, does it match always, never, or
// depending on something the class leaves open?
//
// A class (FrameClass) is: an untagged EtherType, a minimum length of the
// network header, fixed values of header fields (ARP sizes and types), and
// the addresses bound to fixed values (the key of a fast path: the source
// MAC, the source IP, ...). Every other field is unknown. The tests are
// classified on the L2Match exactly as l2.ts lowers it (an explicit `ether
// type`, `meta length` guards, raw loads for ARP sizes), so the answer holds
// for the rules in the kernel.
//
// Exactness (docs, "nft optimizer", fact 1): a class whose length covers
// every field it binds never meets a short frame, so a negated test is the
// negation of the positive one under it.
import type { Direction, IpTest, JumpGuard, L2Match, L2Rule, MacTest, NumTest } from '../../../ir/types.js';
import { ETHERTYPE_OF, ETHERTYPES, macToBytes, parseIPv4, parseIPv6 } from '../../../ir/values.js';

/** What the passes read of a shape template (shared.ts Template): one interface's chains, rule groups and guarded jumps. */
export interface TemplateView {
  iface: string;
  dir: Direction;
  chains: readonly {
    /** undefined for the root chain. */
    sub?: string;
    entries: readonly ({ kind: 'group'; rules: readonly L2Rule[] } | { kind: 'jump'; chain: string; guard: JumpGuard })[];
  }[];
}

export type Tri = 'always' | 'never' | 'unknown';

/** Header fields a class can bind, by the template's slot names (shared.ts SlotPath). */
export type BoundPath = 'src' | 'dst' | 'sha' | 'spa' | 'tpa' | 'srcIp' | 'dstIp';

export interface FrameClass {
  /** The link-layer EtherType (untagged: a tagged frame's is 0x8100 and is not in the class). */
  etherType: number;
  /** The network header holds at least this many bytes. */
  minLength: number;
  /** ARP hardware type 1, protocol type IPv4, sizes 6 and 4 (only with etherType ARP). */
  arpEthIp?: boolean;
  /** Addresses every frame of the class carries (MACs as text, IPv4 as text). */
  bound: Partial<Record<BoundPath, string>>;
  /**
   * Shape level: a bound address is "the interface's own" without a value:
   * a test of the interface's own address at that path holds, a constant
   * there is unknown. Depends on the shape's structure only (a cost model,
   * never what decides an element).
   */
  symbolic?: boolean;
}

const not = (t: Tri): Tri => (t === 'always' ? 'never' : t === 'never' ? 'always' : 'unknown');
const known = (b: boolean): Tri => (b ? 'always' : 'never');

/** All tests of a rule: never if one is never, always if all are always. */
function all(ts: readonly Tri[]): Tri {
  if (ts.includes('never')) return 'never';
  return ts.every((t) => t === 'always') ? 'always' : 'unknown';
}

/** A test of a bound path at shape level (FrameClass.symbolic): the interface's own address holds, `match='no'` of it does not. */
function symbolicTest(t: { neg: boolean; port?: true }): Tri {
  return t.port ? known(!t.neg) : 'unknown';
}

function macTest(c: FrameClass, path: BoundPath, t: MacTest | undefined): Tri {
  if (!t) return 'always';
  const v = c.bound[path];
  if (v === undefined) return 'unknown';
  if (c.symbolic) return symbolicTest(t);
  if (v === t.addr && !t.mask) return known(!t.neg); // the common case, without parsing
  const a = macToBytes(v);
  const b = macToBytes(t.addr);
  const m = t.mask ? macToBytes(t.mask) : new Uint8Array(6).fill(0xff);
  const eq = a.every((x, i) => (x & (m[i] as number)) === ((b[i] as number) & (m[i] as number)));
  return t.neg ? not(known(eq)) : known(eq);
}

/**
 * Parsed addresses, by family and text. A port with a long address list is
 * walked once per address over rules holding the whole list, so every
 * address would otherwise be parsed once per walk (quadratic parsing).
 * Bounded: emptied when full. The arrays are never written.
 */
const IP_BYTES = new Map<string, Uint8Array | undefined>();
const IP_BYTES_MAX = 1 << 16;

/** An address as bytes (IPv4 or IPv6 text). */
function ipBytes(family: 'ipv4' | 'ipv6', text: string): Uint8Array | undefined {
  const key = `${family} ${text}`;
  if (IP_BYTES.has(key)) return IP_BYTES.get(key);
  let b: Uint8Array | undefined;
  if (family === 'ipv6') b = parseIPv6(text);
  else {
    const v = parseIPv4(text);
    b = v === undefined ? undefined : Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  }
  if (IP_BYTES.size >= IP_BYTES_MAX) IP_BYTES.clear();
  IP_BYTES.set(key, b);
  return b;
}

/** An IP test on a bound path; `family` is the class's (an address of the other family is never bound). */
function ipTest(c: FrameClass, path: BoundPath, t: IpTest | undefined, family: 'ipv4' | 'ipv6' = 'ipv4'): Tri {
  if (!t) return 'always';
  const v = c.bound[path];
  if (v === undefined || t.family !== family) return 'unknown';
  if (c.symbolic) return symbolicTest(t);
  if (v === t.addr && t.prefix === (family === 'ipv4' ? 32 : 128)) return known(!t.neg);
  const a = ipBytes(family, v);
  const b = ipBytes(family, t.addr);
  if (!a || !b) return 'unknown';
  let eq = true;
  for (let i = 0; i < a.length && eq; i++) {
    const bitsHere = Math.max(0, Math.min(8, t.prefix - i * 8));
    const mask = bitsHere === 0 ? 0 : (0xff << (8 - bitsHere)) & 0xff;
    eq = ((a[i] as number) & mask) === ((b[i] as number) & mask);
  }
  return t.neg ? not(known(eq)) : known(eq);
}

function numTest(value: number | undefined, t: NumTest | undefined): Tri {
  if (!t) return 'always';
  if (value === undefined) return 'unknown';
  return t.neg ? not(known(value === t.value)) : known(value === t.value);
}

const unknownIf = (x: unknown): Tri => (x === undefined ? 'always' : 'unknown');

/** Whether a frame of the class matches a rule's match, as l2.ts lowers it. */
export function classifyMatch(c: FrameClass, m: L2Match): Tri {
  if (m.proto === 'any') return 'always';
  const eth = [macTest(c, 'src', m.src), macTest(c, 'dst', m.dst)];
  const arp = c.etherType === ETHERTYPE_OF.arp && c.arpEthIp === true;
  switch (m.proto) {
    case 'mac':
      return all([...eth, numTest(c.etherType, m.etherType)]);
    case 'vlan':
      // an untagged class never has EtherType 0x8100
      return all([...eth, known(c.etherType === ETHERTYPE_OF.vlan)]);
    case 'stp':
      // no EtherType test; the LLC bytes are not in any class
      return all([...eth, m.fields ? 'unknown' : 'always']);
    case 'arp':
    case 'rarp': {
      if (c.etherType !== ETHERTYPE_OF[m.proto]) return 'never';
      const tests: Tri[] = [...eth];
      const fields = m.opcode || m.hwType || m.protoType || m.spa || m.tpa || m.gratuitous || m.sha || m.tha;
      if (!fields) return all(tests);
      // the size and type guards and the 28-byte length the lowering adds hold for an ARP class
      if (!arp || c.minLength < 28) return all([...tests, 'unknown']);
      tests.push(unknownIf(m.opcode), unknownIf(m.gratuitous), numTest(1, m.hwType), numTest(ETHERTYPES.IPV4, m.protoType));
      if (m.proto === 'rarp') return all([...tests, 'unknown']);
      tests.push(macTest(c, 'sha', m.sha), unknownIf(m.tha), ipTest(c, 'spa', m.spa), ipTest(c, 'tpa', m.tpa));
      return all(tests);
    }
    case 'ipv4': {
      if (c.etherType !== ETHERTYPE_OF.ipv4) return 'never';
      const fields = m.srcIp || m.dstIp || m.protocol || m.tos;
      if (!fields) return all(eth);
      if (c.minLength < 20) return all([...eth, 'unknown']);
      return all([
        ...eth,
        ipTest(c, 'srcIp', m.srcIp),
        ipTest(c, 'dstIp', m.dstIp),
        unknownIf(m.protocol),
        unknownIf(m.srcPort),
        unknownIf(m.dstPort),
        unknownIf(m.tos),
      ]);
    }
    case 'ipv6': {
      if (c.etherType !== ETHERTYPE_OF.ipv6) return 'never';
      const fields = m.srcIp || m.dstIp || m.protocol;
      if (!fields) return all(eth);
      if (c.minLength < 40) return all([...eth, 'unknown']);
      // the protocol is `meta l4proto` (after extension headers), ports and ICMP types read the transport header
      return all([...eth, ipTest(c, 'srcIp', m.srcIp, 'ipv6'), ipTest(c, 'dstIp', m.dstIp, 'ipv6'), unknownIf(m.protocol), unknownIf(m.srcPort), unknownIf(m.dstPort), unknownIf(m.icmpType)]);
    }
  }
}

type Entry = TemplateView['chains'][number]['entries'][number];

/** Whether a frame of the class takes a guarded jump. */
function guardTest(c: FrameClass, g: JumpGuard): Tri {
  return g.kind === 'none' ? 'always' : g.kind === 'stp' ? macTest(c, 'dst', { addr: '01:80:c2:00:00:00', neg: false }) : known(g.etherType === c.etherType);
}

const TRI_CHAR: Record<Tri, string> = { always: 'a', never: 'n', unknown: 'u' };

/**
 * Everything a walk reads of a template beyond its shape's key: how each
 * jump guard and each rule instance classify under the class, in order. Two
 * templates of one shape with the same signature under a class walk alike
 * (walkTemplate reads values only through guardTest and classifyMatch), so
 * a walk's end can be kept per signature.
 */
export function classSignature(t: TemplateView, c: FrameClass): string {
  let s = '';
  for (const ch of t.chains) {
    s += '|';
    for (const e of ch.entries) {
      if (e.kind === 'jump') s += `j${TRI_CHAR[guardTest(c, e.guard)]}`;
      else {
        s += 'g';
        for (const r of e.rules) s += TRI_CHAR[classifyMatch(c, r.match)];
      }
    }
  }
  return s;
}

export type WalkEnd =
  | { kind: 'accept' }
  /** A frame of the class may end here: a drop, or a walk too large to follow. */
  | { kind: 'not-accepted'; why: string };

/** The most branches (rules classified `unknown`) a walk follows before it gives up. */
const MAX_LEAVES = 256;

/**
 * Walks an interface's template under a class, following both outcomes of
 * every rule whose test is unknown. `accept` when every frame of the class
 * is accepted with no counter on the way (nwfilter has no counting accept);
 * otherwise the first way one can end differently. `cost` counts the rules a
 * frame evaluates on the first accepting way (the shape's cost model).
 */
export function walkTemplate(t: TemplateView, c: FrameClass): { end: WalkEnd; cost: number } {
  const index = new Map<string | undefined, number>(t.chains.map((ch, i) => [ch.sub, i]));
  let leaves = 0;
  let firstCost = -1;
  type Frame = { chain: number; entry: number; rule: number };
  const ruleText = (r: L2Rule): string => `${r.origin.filter}/${r.origin.rule}`;
  // a depth-first walk over (position, return stack); `cost` is rules evaluated so far
  const go = (pos: Frame, stack: readonly Frame[], cost: number): WalkEnd => {
    for (;;) {
      const chain = t.chains[pos.chain];
      const e: Entry | undefined = chain?.entries[pos.entry];
      if (!chain || !e) return leaf({ kind: 'accept' }, cost); // libvirt accepts at the end of every chain
      if (e.kind === 'jump') {
        cost++;
        const taken = guardTest(c, e.guard);
        const next: Frame = { chain: pos.chain, entry: pos.entry + 1, rule: 0 };
        const target = index.get(e.chain);
        if (target === undefined) return { kind: 'not-accepted', why: `jump to unknown chain ${e.chain}` };
        const into: Frame = { chain: target, entry: 0, rule: 0 };
        if (taken === 'never') {
          pos = next;
          continue;
        }
        if (taken === 'always') {
          stack = [...stack, next];
          pos = into;
          continue;
        }
        const r = go(into, [...stack, next], cost);
        if (r.kind !== 'accept') return r;
        pos = next;
        continue;
      }
      // at shape level a group is its first instance: the instance count is not part of a shape's key
      const r = c.symbolic && pos.rule > 0 ? undefined : e.rules[pos.rule];
      if (!r) {
        pos = { chain: pos.chain, entry: pos.entry + 1, rule: 0 };
        continue;
      }
      cost++;
      const next: Frame = { ...pos, rule: pos.rule + 1 };
      const m = classifyMatch(c, r.match);
      if (m === 'never') {
        pos = next;
        continue;
      }
      const out = verdict(r, pos, stack, cost);
      if (m === 'always') return out();
      const v = out();
      if (v.kind !== 'accept') return v;
      pos = next;
    }
  };
  const leaf = (end: WalkEnd, cost: number): WalkEnd => {
    if (++leaves > MAX_LEAVES) return { kind: 'not-accepted', why: `more than ${MAX_LEAVES} ways through the chains` };
    if (end.kind === 'accept' && firstCost < 0) firstCost = cost;
    return end;
  };
  const verdict =
    (r: L2Rule, pos: Frame, stack: readonly Frame[], cost: number) =>
    (): WalkEnd => {
      switch (r.verdict) {
        case 'accept':
          return leaf({ kind: 'accept' }, cost);
        case 'drop':
          return leaf({ kind: 'not-accepted', why: `rule ${ruleText(r)} drops` }, cost);
        case 'continue':
          return go({ ...pos, rule: pos.rule + 1 }, stack, cost);
        case 'return': {
          if (t.chains[pos.chain]?.sub === undefined) return leaf({ kind: 'accept' }, cost);
          const back = stack[stack.length - 1];
          if (!back) return leaf({ kind: 'accept' }, cost);
          return go(back, stack.slice(0, -1), cost);
        }
      }
    };
  const end = go({ chain: index.get(undefined) ?? 0, entry: 0, rule: 0 }, [], 0);
  return { end, cost: firstCost };
}
