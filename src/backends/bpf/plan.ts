// Planning for the tc/eBPF backend: one interface's L2 policy split into a
// SHAPE (the rule structure: chains, jumps, which fields each rule tests and
// with which negation, verdicts, drop reasons) and VALUES (the MACs,
// addresses, ports, numbers those tests compare with).
//
// The shape becomes C (emit.ts) and is compiled once; the values go into the
// nwf_cfg map of each loaded instance. Interfaces whose policies differ only
// in values share one object: every clean-traffic VM, whatever its MAC and
// addresses.
//
// Rules are kept in order; consecutive rules of one chain with the same
// template (same tests, negations, verdict and reason) form a GROUP that
// matches when any of its value tuples matches. That is exact: the first of
// them to match would give the same verdict. It is also what makes the shape
// independent of list lengths: `return if src IP = $IP` expanded over three
// addresses is one group with three tuples. A group's capacity is bucketed
// (4, 16, 64, 256, 1024 tuples), so lists of 1..4 addresses share a shape.
// `continue` rules never change a verdict at L2 and are left out.
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { dropReason, type DropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, IpTest, JumpGuard, L2Match, L2Rule, MacTest, NumTest, RangeTest } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { macToBytes, parseIPv4, parseIPv6 } from '../../ir/values.js';
import { assertNever, CODES, InternalError, NwfError } from '../../util/errors.js';

/** Bumped whenever the emitted C or the value layout changes meaning. */
export const BPF_PLAN_VERSION = 1;

/** Group capacities (tuples); a group takes the smallest bucket that holds its values. */
export const GROUP_CAPS = [4, 16, 64, 256, 1024] as const;

/** How a field's values are stored: each slot is one __u64 of the config. */
export type FieldKind = 'mac' | 'num' | 'range' | 'ip4' | 'ip6' | 'icmp6' | 'flag';

export const SLOTS: Readonly<Record<FieldKind, number>> = { mac: 2, num: 1, range: 2, ip4: 2, ip6: 4, icmp6: 4, flag: 0 };

/** Every field a template can test, with its storage kind. */
export const FIELDS = {
  'eth.src': 'mac',
  'eth.dst': 'mac',
  'eth.type': 'num',
  'vlan.id': 'num',
  'vlan.encap': 'num',
  'stp.type': 'num',
  'stp.flags': 'num',
  'stp.rootPriority': 'range',
  'stp.rootAddress': 'mac',
  'stp.rootCost': 'range',
  'stp.senderPriority': 'range',
  'stp.senderAddress': 'mac',
  'stp.port': 'range',
  'stp.age': 'range',
  'stp.maxAge': 'range',
  'stp.helloTime': 'range',
  'stp.forwardDelay': 'range',
  'arp.hwType': 'num',
  'arp.protoType': 'num',
  'arp.opcode': 'num',
  'arp.sha': 'mac',
  'arp.tha': 'mac',
  'arp.spa': 'ip4',
  'arp.tpa': 'ip4',
  'arp.gratuitous': 'flag',
  'ip4.src': 'ip4',
  'ip4.dst': 'ip4',
  'ip4.protocol': 'num',
  'ip4.srcPort': 'range',
  'ip4.dstPort': 'range',
  'ip4.tos': 'num',
  'ip6.src': 'ip6',
  'ip6.dst': 'ip6',
  'ip6.protocol': 'num',
  'ip6.srcPort': 'range',
  'ip6.dstPort': 'range',
  'ip6.icmp': 'icmp6',
} as const satisfies Record<string, FieldKind>;

export type Field = keyof typeof FIELDS;

export interface FieldTest {
  field: Field;
  neg: boolean;
  /** Compares with the port's learned address (IP learning), not with config values: no slots. */
  learned?: true;
}

/** Config slots a test takes. */
export function testSlots(t: FieldTest): number {
  return t.learned ? 0 : SLOTS[FIELDS[t.field]];
}

export type GroupVerdict = 'accept' | 'drop' | 'return';

/** The structure of a rule: what it tests, not against which values. */
export interface RuleTemplate {
  proto: L2Match['proto'];
  tests: FieldTest[];
  verdict: GroupVerdict;
  /** Set for drop verdicts. */
  reason?: DropReason;
}

export interface PlanGroup {
  /** Index in the object's config (n[index], g<index>). */
  index: number;
  dir: Direction;
  template: RuleTemplate;
  cap: number;
  /** One encoded tuple per distinct value combination (slots * 8 bytes each). */
  tuples: Uint8Array[];
  /** The IR rules merged into this group (values side: not part of the shape). */
  ruleIds: string[];
  /** Where the rules come from, `filter/rule` (values side: not part of the shape). */
  origins: string[];
  /** The chain the group sits in (null = root); for messages only. */
  chain: string | null;
}

export type PlanEntry =
  | { kind: 'group'; group: PlanGroup }
  | { kind: 'jump'; chain: string; guard: JumpGuard; groups: PlanGroup[] };

export interface DirPlan {
  /** False when the direction has no L2 rules at all: nothing hooked, everything accepted. */
  hooked: boolean;
  entries: PlanEntry[];
}

export interface BpfPlan {
  iface: string;
  dirs: Record<Direction, DirPlan>;
  /** All groups, by index. */
  groups: PlanGroup[];
  /** Canonical shape (JSON-able, value free). */
  shape: BpfShape;
  /** 16 hex digits: the first 8 bytes of the shape's SHA-256. */
  shapeId: string;
  /** A learning port's values (its learning table tests them). */
  learn?: LearnValues;
}

/** DHCPSERVER values a dhcp learning port's config holds (bpf/lib/nwf_learn.h, NWF_LRN_SERVERS). */
export const LRN_SERVERS = 16;

export interface LearnValues {
  mode: 'any' | 'dhcp';
  /** The port's MAC: the learning table tests the source MAC, a DHCPACK's chaddr. */
  mac: string;
  /** dhcp: the trusted servers (DHCPSERVER), as address bytes; empty: any server. */
  servers: Uint8Array[];
}

/** The value-free description a shape id is computed from. */
export interface BpfShape {
  version: number;
  /** The shape's ports learn their address (IP learning, bpf/lib/nwf_learn.h). */
  learn?: 'any' | 'dhcp';
  dirs: Record<Direction, { hooked: boolean; entries: ShapeEntry[] }>;
}
export type ShapeGroup = { template: RuleTemplate; cap: number };
export type ShapeEntry = { kind: 'group'; group: ShapeGroup } | { kind: 'jump'; guard: JumpGuard; groups: ShapeGroup[] };

// ---- value encoding -----------------------------------------------------------------

const LE = endianness() === 'LE';

function slotNum(v: number | bigint): Uint8Array {
  const b = Buffer.alloc(8);
  if (LE) b.writeBigUInt64LE(BigInt(v));
  else b.writeBigUInt64BE(BigInt(v));
  return b;
}

/** Writes a __u64 (a non-negative safe integer) at `off` in host byte order. */
function putU64(dv: DataView, off: number, v: number): void {
  const lo = v >>> 0;
  const hi = Math.floor(v / 0x1_0000_0000) >>> 0;
  dv.setUint32(off, LE ? lo : hi, LE);
  dv.setUint32(off + 4, LE ? hi : lo, LE);
}

function prefixMask(len: number, prefix: number): Uint8Array {
  const m = new Uint8Array(len);
  for (let bit = 0; bit < prefix; bit++) m[bit >> 3] = (m[bit >> 3] as number) | (0x80 >> (bit & 7));
  return m;
}

/**
 * Parsed addresses by their text: a port's MAC and addresses recur in
 * several of its rules, and the filters' constants in every port. Bounded
 * (cleared when full); the arrays are only read.
 */
const MAX_PARSED = 1 << 16;
const macBytes = new Map<string, Uint8Array>();
const ipBytes = new Map<string, Uint8Array>();
const FULL_MAC = new Uint8Array(6).fill(0xff);

function parsedMac(s: string): Uint8Array {
  let b = macBytes.get(s);
  if (!b) {
    if (macBytes.size >= MAX_PARSED) macBytes.clear();
    macBytes.set(s, (b = macToBytes(s)));
  }
  return b;
}

function ipAddrBytes(t: IpTest): Uint8Array {
  let b = ipBytes.get(t.addr);
  if (b) return b;
  if (t.family === 'ipv4') {
    const v = parseIPv4(t.addr);
    if (v === undefined) throw new InternalError(`bad IPv4 address in the IR: ${t.addr}`);
    b = Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  } else {
    const a = parseIPv6(t.addr);
    if (!a) throw new InternalError(`bad IPv6 address in the IR: ${t.addr}`);
    b = a;
  }
  if (ipBytes.size >= MAX_PARSED) ipBytes.clear();
  ipBytes.set(t.addr, b);
  return b;
}

// ---- templates ------------------------------------------------------------------------

/**
 * Extracts the tests of one L2 match, in a fixed order, and writes their
 * encoded values one after another (each test's slots, 8 bytes each): a
 * MAC or address is its bytes & mask, then the mask, each zero-extended to
 * half the test's slots; a number one slot; a range lo, hi. Tests the
 * evaluator ignores are left out (ports and ICMP types without a protocol,
 * as ebt_ip/ebt_ip6 only look at them after the protocol). One instance is
 * reused for every rule (no allocation but the tuple's copy).
 */
class TestWriter {
  private buf = new Uint8Array(1024);
  private dv = new DataView(this.buf.buffer);
  len = 0;
  /** The tests' structure as text (field and negation of each): the template's key without verdict and reason. */
  key = '';
  /** The tests written since reset(): fields, negations, learned flags (reused arrays; tests() copies them). */
  private fields: Field[] = [];
  private negs: boolean[] = [];
  private learnedAt: boolean[] = [];
  private n = 0;

  reset(): void {
    this.len = 0;
    this.key = '';
    this.n = 0;
  }

  /** The tests written since reset(), as a template holds them. */
  tests(): FieldTest[] {
    const out: FieldTest[] = [];
    for (let i = 0; i < this.n; i++) {
      const field = this.fields[i] as Field;
      const neg = this.negs[i] as boolean;
      out.push(this.learnedAt[i] ? { field, neg, learned: true } : { field, neg });
    }
    return out;
  }

  /** A copy of the bytes written since reset(). */
  tuple(): Uint8Array {
    return this.buf.slice(0, this.len);
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(2 * (this.len + n));
    b.set(this.buf);
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }

  private test(field: Field, neg: boolean, learned = false): void {
    this.fields[this.n] = field;
    this.negs[this.n] = neg;
    this.learnedAt[this.n] = learned;
    this.n++;
    this.key += `${field}${neg ? '!' : ''}${learned ? '~' : ''},`;
  }

  /** addr & mask, then the mask, in `slots` slots (zeroed first). */
  private masked(addr: Uint8Array, mask: Uint8Array, slots: number): void {
    const n = slots * 8;
    this.room(n);
    const at = this.len;
    this.buf.fill(0, at, at + n);
    const half = at + n / 2;
    for (let i = 0; i < addr.length; i++) {
      const m = mask[i] as number;
      this.buf[at + i] = (addr[i] as number) & m;
      this.buf[half + i] = m;
    }
    this.len += n;
  }

  private u64(v: number): void {
    this.room(8);
    putU64(this.dv, this.len, v);
    this.len += 8;
  }

  mac(field: Field, t: MacTest | undefined): void {
    if (!t) return;
    this.test(field, t.neg);
    this.masked(parsedMac(t.addr), t.mask ? parsedMac(t.mask) : FULL_MAC, 2);
  }

  num(field: Field, t: NumTest | undefined): void {
    if (!t) return;
    this.test(field, t.neg);
    this.u64(t.value);
  }

  range(field: Field, t: RangeTest | undefined): void {
    if (!t) return;
    this.test(field, t.neg);
    this.u64(t.lo);
    this.u64(t.hi);
  }

  ip(field: Field, t: IpTest | undefined, family: 'ipv4' | 'ipv6'): void {
    if (!t) return;
    if (t.learned) return this.test(field, t.neg, true);
    if (t.family !== family) throw new InternalError(`an ${t.family} address where ${family} was expected: ${t.addr}`);
    this.test(field, t.neg);
    const a = ipAddrBytes(t);
    this.masked(a, prefixMask(a.length, t.prefix), family === 'ipv4' ? 2 : 4);
  }

  flag(field: Field, neg: boolean): void {
    this.test(field, neg);
  }

  icmp6(type: RangeTest, code: RangeTest): void {
    // ebt_ip6 inverts type and code together, with the type's flag.
    this.test('ip6.icmp', type.neg);
    this.u64(type.lo);
    this.u64(type.hi);
    this.u64(code.lo);
    this.u64(code.hi);
  }

  /** Writes every test of `m` (after reset()). */
  match(m: L2Match): void {
    switch (m.proto) {
      case 'any':
        break;
      case 'mac':
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        this.num('eth.type', m.etherType);
        break;
      case 'vlan':
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        this.num('vlan.id', m.vlanId);
        this.num('vlan.encap', m.encap);
        break;
      case 'stp': {
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        const s = m.fields;
        if (s) {
          this.num('stp.type', s.type);
          this.num('stp.flags', s.flags);
          this.range('stp.rootPriority', s.rootPriority);
          this.mac('stp.rootAddress', s.rootAddress);
          this.range('stp.rootCost', s.rootCost);
          this.range('stp.senderPriority', s.senderPriority);
          this.mac('stp.senderAddress', s.senderAddress);
          this.range('stp.port', s.port);
          this.range('stp.age', s.age);
          this.range('stp.maxAge', s.maxAge);
          this.range('stp.helloTime', s.helloTime);
          this.range('stp.forwardDelay', s.forwardDelay);
        }
        break;
      }
      case 'arp':
      case 'rarp':
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        this.num('arp.hwType', m.hwType);
        this.num('arp.protoType', m.protoType);
        this.num('arp.opcode', m.opcode);
        this.mac('arp.sha', m.sha);
        this.mac('arp.tha', m.tha);
        this.ip('arp.spa', m.spa, 'ipv4');
        this.ip('arp.tpa', m.tpa, 'ipv4');
        if (m.gratuitous) this.flag('arp.gratuitous', m.gratuitous.neg);
        break;
      case 'ipv4':
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        this.ip('ip4.src', m.srcIp, 'ipv4');
        this.ip('ip4.dst', m.dstIp, 'ipv4');
        this.num('ip4.protocol', m.protocol);
        if (m.protocol) {
          this.range('ip4.srcPort', m.srcPort);
          this.range('ip4.dstPort', m.dstPort);
        }
        this.num('ip4.tos', m.tos);
        break;
      case 'ipv6':
        this.mac('eth.src', m.src);
        this.mac('eth.dst', m.dst);
        this.ip('ip6.src', m.srcIp, 'ipv6');
        this.ip('ip6.dst', m.dstIp, 'ipv6');
        this.num('ip6.protocol', m.protocol);
        if (m.protocol) {
          this.range('ip6.srcPort', m.srcPort);
          this.range('ip6.dstPort', m.dstPort);
          if (m.icmpType) this.icmp6(m.icmpType, m.icmpCode ?? { lo: 0, hi: 255, neg: m.icmpType.neg });
        }
        break;
      default:
        return assertNever(m, 'L2 match');
    }
  }
}

const writer = new TestWriter();

/**
 * Templates by their key (protocol, tests, verdict, reason), each with a
 * small id that stands for it in shape signatures (shapeOf). Bounded: when
 * full it is forgotten, and ids are never given twice (plans of frozen rules
 * keep theirs), so a signature never stands for two structures.
 */
const templates = new Map<string, { tpl: RuleTemplate; id: number }>();
const MAX_TEMPLATES = 1 << 16;
let nextTemplateId = 0;

function templateFor(r: L2Rule, verdict: GroupVerdict, testsKey: string, tests: () => FieldTest[]): { tpl: RuleTemplate; id: number } {
  const reason = verdict === 'drop' ? dropReason(r.origin) : undefined;
  const key = `${r.match.proto}|${testsKey}|${verdict}|${reason ?? ''}`;
  let t = templates.get(key);
  if (!t) {
    if (templates.size >= MAX_TEMPLATES) templates.clear();
    const tpl: RuleTemplate = { proto: r.match.proto, tests: tests(), verdict };
    if (reason !== undefined) tpl.reason = reason;
    templates.set(key, (t = { tpl, id: nextTemplateId++ }));
  }
  return t;
}

function capFor(n: number, where: string): number {
  const cap = GROUP_CAPS.find((c) => c >= n);
  if (cap === undefined) {
    throw new NwfError(CODES.VALUE_OUT_OF_RANGE, `${where}: ${n} value combinations in one rule group, the bpf backend supports at most ${GROUP_CAPS[GROUP_CAPS.length - 1]}`, {
      hint: 'shorten the variable lists, or use the nft backend',
    });
  }
  return cap;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Bytes as text (latin1: one character per byte), a key for sets of tuples. */
function bytesKey(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

// ---- planning -------------------------------------------------------------------------

/** A rule's template (with its id) and its encoded value tuple. */
interface RulePlan {
  tpl: RuleTemplate;
  id: number;
  tuple: Uint8Array;
}

/**
 * Plans of frozen rules: the resolver shares one frozen rule object between
 * the interfaces of a template (resolve.ts), so its plan is computed once
 * for all of them (never mutated: templates and tuples are only read).
 */
const rulePlans = new WeakMap<L2Rule, RulePlan>();
function rulePlan(r: L2Rule & { verdict: GroupVerdict }): RulePlan {
  const frozen = Object.isFrozen(r);
  const known = frozen ? rulePlans.get(r) : undefined;
  if (known) return known;
  writer.reset();
  writer.match(r.match);
  const t = templateFor(r, r.verdict, writer.key, () => writer.tests());
  const out = { tpl: t.tpl, id: t.id, tuple: writer.tuple() };
  if (frozen) rulePlans.set(r, out);
  return out;
}

/** Guards as text, for shape signatures (the resolver shares guard objects between interfaces). */
const guardTexts = new WeakMap<JumpGuard, string>();
function guardText(g: JumpGuard): string {
  let t = guardTexts.get(g);
  if (t === undefined) guardTexts.set(g, (t = JSON.stringify(g)));
  return t;
}

/** Tuples of a group up to this many are deduplicated by comparison, larger ones through a set. */
const DEDUP_LINEAR = 8;

class GroupBuilder {
  readonly groups: PlanGroup[] = [];
  /** The shape's structure as text (a key for shapeOf: template ids and capacities, jumps, guards), built as the groups are. */
  sig = '';

  /** Groups of one run of rules (a sub-chain, or root rules between two jumps). */
  run(dir: Direction, chain: string | null, rules: readonly L2Rule[], iface: string): PlanGroup[] {
    const out: PlanGroup[] = [];
    const ids: number[] = [];
    let cur: { g: PlanGroup; id: number; seen?: Set<string>; filter?: string; rule?: number } | undefined;
    for (const r of rules) {
      if (r.verdict === 'continue') continue;
      const { tpl, id, tuple } = rulePlan(r as L2Rule & { verdict: GroupVerdict });
      if (!cur || cur.id !== id) {
        const g: PlanGroup = { index: -1, dir, template: tpl, cap: 0, tuples: [], ruleIds: [], origins: [], chain };
        cur = { g, id };
        out.push(g);
        ids.push(id);
      }
      const g = cur.g;
      g.ruleIds.push(r.id);
      // (consecutive rules of a group mostly come from one filter rule)
      if (r.origin.filter !== cur.filter || r.origin.rule !== cur.rule) {
        cur.filter = r.origin.filter;
        cur.rule = r.origin.rule;
        const origin = `${r.origin.filter}/${r.origin.rule}`;
        if (!g.origins.includes(origin)) g.origins.push(origin);
      }
      if (g.tuples.length < DEDUP_LINEAR) {
        if (!g.tuples.some((t) => sameBytes(t, tuple))) g.tuples.push(tuple);
        continue;
      }
      cur.seen ??= new Set(g.tuples.map(bytesKey));
      const k = bytesKey(tuple);
      if (!cur.seen.has(k)) {
        cur.seen.add(k);
        g.tuples.push(tuple);
      }
    }
    for (const [i, g] of out.entries()) {
      g.cap = capFor(g.tuples.length, `interface ${iface}, ${dir === 'out' ? 'from' : 'to'} the VM, ${g.origins.join(', ')}`);
      g.index = this.groups.length;
      this.groups.push(g);
      this.sig += `${ids[i] as number}:${g.cap},`;
    }
    return out;
  }
}

function shapeGroup(g: PlanGroup): ShapeGroup {
  return { template: g.template, cap: g.cap };
}

/** Split one interface's L2 policy into shape and values. */
export function planInterface(p: InterfacePolicy): BpfPlan {
  const b = new GroupBuilder();
  const dirs = {} as Record<Direction, DirPlan>;
  for (const dir of DIRECTIONS) {
    const pol = p.l2[dir];
    const chains = new Map(pol.chains.map((c) => [c.name, c]));
    const entries: PlanEntry[] = [];
    let pending: L2Rule[] = [];
    const flush = (): void => {
      for (const g of b.run(dir, null, pending, p.iface)) entries.push({ kind: 'group', group: g });
      pending = [];
    };
    b.sig += pol.root.length > 0 ? 'D,' : 'd,';
    for (const e of pol.root) {
      if (e.kind === 'rule') {
        pending.push(e.rule);
        continue;
      }
      flush();
      const ch = chains.get(e.chain);
      if (!ch) throw new InternalError(`jump to unknown chain ${e.chain} on ${p.iface}`);
      b.sig += `J${guardText(e.guard)},`;
      entries.push({ kind: 'jump', chain: e.chain, guard: e.guard, groups: b.run(dir, e.chain, ch.rules, p.iface) });
      b.sig += 'E,';
    }
    flush();
    dirs[dir] = { hooked: pol.root.length > 0, entries };
  }
  const learn = p.learning ? learnConfig(p) : undefined;
  // the learning mode is part of the structure: a dhcp shape's programs and config differ from an any shape's
  const { shape, shapeId } = shapeOf(`${learn?.mode ?? ''};${b.sig}`, () => ({
    version: BPF_PLAN_VERSION,
    ...(learn ? { learn: learn.mode } : {}),
    dirs: Object.fromEntries(
      DIRECTIONS.map((d) => [
        d,
        {
          hooked: dirs[d].hooked,
          entries: dirs[d].entries.map((e): ShapeEntry => (e.kind === 'group' ? { kind: 'group', group: shapeGroup(e.group) } : { kind: 'jump', guard: e.guard, groups: e.groups.map(shapeGroup) })),
        },
      ]),
    ) as BpfShape['dirs'],
  }));
  return { iface: p.iface, dirs, groups: b.groups, shape, shapeId, ...(learn ? { learn } : {}) };
}

/**
 * Shapes by their structure's text (every group's template key and
 * capacity, the jumps and their guards, per direction): the shape object and
 * its id (a SHA-256 of its canonical JSON) are computed once per structure,
 * and shared (read only) by every plan of it.
 */
const shapes = new Map<string, { shape: BpfShape; shapeId: string }>();
const MAX_SHAPES = 4096;
function shapeOf(sig: string, build: () => BpfShape): { shape: BpfShape; shapeId: string } {
  let s = shapes.get(sig);
  if (!s) {
    const shape = build();
    s = { shape, shapeId: shapeIdOf(shape) };
    if (shapes.size >= MAX_SHAPES) shapes.clear();
    shapes.set(sig, s);
  }
  return s;
}

/** A learning port's values: its MAC and, for dhcp, its trusted servers (memory images). */
function learnConfig(p: InterfacePolicy): LearnValues {
  const l = p.learning as NonNullable<InterfacePolicy['learning']>;
  if (l.mode === 'any') return { mode: 'any', mac: p.mac, servers: [] };
  const servers = [...new Set(l.dhcpServers)];
  if (servers.length > LRN_SERVERS) {
    throw new NwfError(CODES.VALUE_OUT_OF_RANGE, `interface ${p.iface}: DHCPSERVER lists ${servers.length} servers, the bpf backend checks at most ${LRN_SERVERS}: the port fails closed`, {
      iface: p.iface,
      filter: p.filter,
      location: { file: p.file },
      expected: `at most ${LRN_SERVERS} DHCPSERVER values`,
      hint: 'list fewer DHCP servers, or use the nft backend',
    });
  }
  return {
    mode: 'dhcp',
    mac: p.mac,
    servers: servers.map((s) => {
      const v = parseIPv4(s);
      if (v === undefined) {
        throw new NwfError(CODES.IP_LEARNING_UNSUPPORTED, `interface ${p.iface}: DHCPSERVER value ${JSON.stringify(s)} is not an IPv4 address: the port fails closed`, {
          iface: p.iface,
          filter: p.filter,
          location: { file: p.file },
          expected: 'IPv4 addresses (a.b.c.d) in DHCPSERVER',
        });
      }
      return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    }),
  };
}

/** Canonical JSON (sorted keys) of a value. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function shapeIdOf(shape: BpfShape): string {
  return createHash('sha256').update(canonicalJson(shape)).digest('hex').slice(0, 16);
}

// ---- the config value -------------------------------------------------------------------

export function groupSlots(t: RuleTemplate): number {
  return t.tests.reduce((s, x) => s + testSlots(x), 0);
}

/** Byte layout of struct nwf_config (all members are __u64, so there is no padding). */
export interface ConfigLayout {
  size: number;
  /** Offset of n[0]. */
  countsOffset: number;
  /** Offset of each group's tuple array (-1 when the group stores no values). */
  groupOffsets: number[];
  /** Learning shapes: offset of lrn_mac, the port's MAC (memory image). */
  lrnMacOffset?: number;
  /** dhcp learning shapes: offset of lrn_nsrv (the DHCPSERVER count), followed by lrn_srv[LRN_SERVERS]. */
  lrnServersOffset?: number;
}

export function configLayout(groups: readonly { template: RuleTemplate; cap: number }[], learn?: 'any' | 'dhcp'): ConfigLayout {
  let off = 8 + 8 * Math.max(1, groups.length);
  const groupOffsets = groups.map((g) => {
    const slots = groupSlots(g.template);
    if (slots === 0) return -1;
    const at = off;
    off += g.cap * slots * 8;
    return at;
  });
  if (learn === 'dhcp') return { size: off + 16 + 8 * LRN_SERVERS, countsOffset: 8, groupOffsets, lrnMacOffset: off, lrnServersOffset: off + 8 };
  if (learn) return { size: off + 8, countsOffset: 8, groupOffsets, lrnMacOffset: off };
  return { size: off, countsOffset: 8, groupOffsets };
}

/** The shape tag the program checks before trusting a config (the shape id as a number). */
export function shapeTag(shapeId: string): bigint {
  return BigInt(`0x${shapeId}`);
}

/** Layouts and tags by shape (a plan's layout depends on its shape only: templates and capacities). */
const layouts = new Map<string, { layout: ConfigLayout; strides: number[]; tag: Uint8Array }>();

function shapeLayout(plan: BpfPlan): { layout: ConfigLayout; strides: number[]; tag: Uint8Array } {
  let l = layouts.get(plan.shapeId);
  if (!l) {
    if (layouts.size >= MAX_SHAPES) layouts.clear();
    layouts.set(plan.shapeId, (l = { layout: configLayout(plan.groups, plan.shape.learn), strides: plan.groups.map((g) => groupSlots(g.template) * 8), tag: slotNum(shapeTag(plan.shapeId)) }));
  }
  return l;
}

/** The bytes of struct nwf_config for this interface's values. */
export function encodeConfig(plan: BpfPlan): Uint8Array {
  const { layout, strides, tag } = shapeLayout(plan);
  const out = new Uint8Array(layout.size);
  const dv = new DataView(out.buffer);
  if (layout.lrnMacOffset !== undefined) out.set(parsedMac(plan.learn?.mac ?? '00:00:00:00:00:00'), layout.lrnMacOffset);
  if (layout.lrnServersOffset !== undefined) {
    const servers = plan.learn?.servers ?? [];
    putU64(dv, layout.lrnServersOffset, servers.length);
    servers.forEach((a, i) => out.set(a, layout.lrnServersOffset! + 8 + 8 * i));
  }
  out.set(tag, 0);
  const groups = plan.groups;
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i] as PlanGroup;
    putU64(dv, layout.countsOffset + 8 * i, g.tuples.length);
    const base = layout.groupOffsets[i] as number;
    if (base < 0) continue;
    const stride = strides[i] as number;
    for (let k = 0; k < g.tuples.length; k++) {
      const t = g.tuples[k] as Uint8Array;
      if (t.length !== stride) throw new InternalError(`tuple of ${t.length} bytes in a group of stride ${stride}`);
      out.set(t, base + k * stride);
    }
  }
  return out;
}
