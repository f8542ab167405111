// The reference evaluator: what libvirt's rules would do with one frame.
//
// It follows the semantics doc literally and is written to be obviously
// right, not fast: each L2 test mirrors the kernel ebtables match libvirt
// uses (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp and the basic -s/-d/-p
// match), including their behaviour on frames too short to hold the field
// (no match, whatever the negation). L3/L4 rules mirror the iptables rules
// libvirt writes, seen through br_netfilter after the L2 verdict.
// Every backend is tested against this.
import { assertNever } from '../util/errors.js';
import { dropReason, type DropReason } from './reasons.js';
import type { Direction, InterfacePolicy, IpRangeTest, IpTest, L2Chain, L2Match, L2Rule, L3Rule, MacTest, NumTest, RangeTest } from './types.js';
import { ETHERTYPE_OF, ETHERTYPES, macToBytes, parseIPv4, parseIPv6, type ConnStateName } from './values.js';
import { l4MatchHeaderSize } from './facts.js';

export interface ConnInfo {
  /** Conntrack state of the packet's connection ('untracked': conntrack does not follow it, e.g. ICMPv6 neighbour discovery). */
  state: 'new' | 'established' | 'related' | 'invalid' | 'untracked';
  /** Whether the packet goes in the connection's original or reply direction. */
  direction: 'original' | 'reply';
}

export interface EvalOptions {
  /**
   * Connection state seen by the L3 rules. Default: what conntrack makes of
   * the packet as the first of its flow (classifyFirstPacket): usually a new
   * connection, but INVALID for packets that cannot start one and untracked
   * for ICMPv6 neighbour discovery and MLD.
   */
  conn?: ConnInfo;
  /** For traffic from the VM: forwarded (default) or addressed to the host itself. */
  path?: 'forward' | 'host';
  /** Model br_netfilter (on by default in a new network namespace): IP frames pass iptables, bad headers are dropped. */
  brNetfilter?: boolean;
  /** Connections already counted for connlimit (default 0). */
  connCount?: number;
}

export interface TraceStep {
  stage: 'l2' | 'l3' | 'host';
  /** Chain as libvirt names it (e.g. `libvirt-I-vnet0`, `I-vnet0-mac`, `FI-vnet0`). */
  chain: string;
  event: 'match' | 'jump' | 'return' | 'fall-off' | 'not-hooked' | 'skip' | 'drop';
  ruleId?: string;
  filter?: string;
  rule?: number;
  verdict?: string;
  note?: string;
}

export interface EvalResult {
  verdict: 'accept' | 'drop';
  /** Set when dropped. */
  reason?: DropReason | 'host';
  /** The rule that decided, if a rule did. */
  decidedBy?: { stage: 'l2' | 'l3'; ruleId: string; filter: string; rule: number };
  trace: TraceStep[];
}

// ---- byte access -----------------------------------------------------------------

/** A view of the frame from some offset; reads past the end return undefined. */
class View {
  constructor(
    readonly b: Uint8Array,
    readonly base: number,
  ) {}
  get length(): number {
    return Math.max(0, this.b.length - this.base);
  }
  has(off: number, len: number): boolean {
    return off >= 0 && this.base + off + len <= this.b.length;
  }
  u8(off: number): number | undefined {
    return this.has(off, 1) ? (this.b[this.base + off] as number) : undefined;
  }
  u16(off: number): number | undefined {
    return this.has(off, 2) ? ((this.b[this.base + off] as number) << 8) | (this.b[this.base + off + 1] as number) : undefined;
  }
  u32(off: number): number | undefined {
    const hi = this.u16(off);
    const lo = this.u16(off + 2);
    return hi === undefined || lo === undefined ? undefined : ((hi << 16) | lo) >>> 0;
  }
  bytes(off: number, len: number): Uint8Array | undefined {
    return this.has(off, len) ? this.b.subarray(this.base + off, this.base + off + len) : undefined;
  }
}

/** What the kernel knows about a frame at the bridge. */
interface Frame {
  raw: Uint8Array;
  dst: Uint8Array;
  src: Uint8Array;
  /** ebtables' protocol: the EtherType field (0x8100 for a tagged frame), or the 802.3 length. */
  proto: number;
  /** The network header (right after the 14-byte Ethernet header). */
  net: View;
}

function decodeFrame(raw: Uint8Array): Frame | undefined {
  if (raw.length < 14) return undefined;
  return { raw, dst: raw.subarray(0, 6), src: raw.subarray(6, 12), proto: ((raw[12] as number) << 8) | (raw[13] as number), net: new View(raw, 14) };
}

// ---- primitive tests --------------------------------------------------------------

/** Applies an ebtables/iptables inversion: `!` flips the comparison result. */
const inv = (neg: boolean, ok: boolean): boolean => (neg ? !ok : ok);

function macEq(actual: Uint8Array, t: MacTest): boolean {
  const want = macToBytes(t.addr);
  const mask = t.mask ? macToBytes(t.mask) : undefined;
  for (let i = 0; i < 6; i++) {
    const m = mask ? (mask[i] as number) : 0xff;
    if (((actual[i] as number) & m) !== ((want[i] as number) & m)) return false;
  }
  return true;
}

function ipBytes(t: { family: 'ipv4' | 'ipv6'; addr: string }): Uint8Array {
  if (t.family === 'ipv4') {
    const v = parseIPv4(t.addr) as number;
    return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  }
  return parseIPv6(t.addr) as Uint8Array;
}

function prefixEq(actual: Uint8Array, t: IpTest): boolean {
  const want = ipBytes(t);
  for (let bit = 0; bit < t.prefix; bit++) {
    const byte = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if (((actual[byte] as number) & m) !== ((want[byte] as number) & m)) return false;
  }
  return true;
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

function inIpRange(actual: Uint8Array, r: IpRangeTest): boolean {
  const from = ipBytes({ family: r.family, addr: r.from });
  const to = ipBytes({ family: r.family, addr: r.to });
  return cmpBytes(actual, from) >= 0 && cmpBytes(actual, to) <= 0;
}

const inRange = (v: number, r: RangeTest): boolean => v >= r.lo && v <= r.hi;

// ---- ebtables matches ---------------------------------------------------------------

/** ebtables' basic match: -s, -d (with masks). */
function ebtEth(f: Frame, m: { src?: MacTest; dst?: MacTest }): boolean {
  if (m.src && !inv(m.src.neg, macEq(f.src, m.src))) return false;
  if (m.dst && !inv(m.dst.neg, macEq(f.dst, m.dst))) return false;
  return true;
}

function ebtProto(f: Frame, t: NumTest | undefined): boolean {
  return !t || inv(t.neg, f.proto === t.value);
}

/** ebt_ip (`-p ipv4 --ip-*`). */
function ebtIp(f: Frame, m: Extract<L2Match, { proto: 'ipv4' }>): boolean {
  // ebtables loads the ip match only when the rule has --ip-* options
  if (!m.tos && !m.srcIp && !m.dstIp && !m.protocol) return true;
  const n = f.net;
  if (!n.has(0, 20)) return false;
  if (m.tos && !inv(m.tos.neg, n.u8(1) === m.tos.value)) return false;
  if (m.srcIp && !inv(m.srcIp.neg, prefixEq(n.bytes(12, 4) as Uint8Array, m.srcIp))) return false;
  if (m.dstIp && !inv(m.dstIp.neg, prefixEq(n.bytes(16, 4) as Uint8Array, m.dstIp))) return false;
  if (m.protocol) {
    if (!inv(m.protocol.neg, n.u8(9) === m.protocol.value)) return false;
    if (!m.srcPort && !m.dstPort) return true;
    if (((n.u16(6) as number) & 0x1fff) !== 0) return false; // not the first fragment
    const l4 = ((n.u8(0) as number) & 0x0f) * 4;
    const sport = n.u16(l4);
    const dport = n.u16(l4 + 2);
    if (sport === undefined || dport === undefined) return false;
    if (m.dstPort && !inv(m.dstPort.neg, inRange(dport, m.dstPort))) return false;
    if (m.srcPort && !inv(m.srcPort.neg, inRange(sport, m.srcPort))) return false;
  }
  return true;
}

const IPV6_EXT = new Set([0, 43, 44, 51, 59, 60]);

/** The kernel's ipv6_skip_exthdr: offset of the upper-layer header and its protocol, or undefined. */
export function skipIpv6ExtHeaders(n: View, start: number, next: number): { offset: number; nexthdr: number } | undefined {
  let off = start;
  let nh = next;
  for (let guard = 0; IPV6_EXT.has(nh) && guard < 64; guard++) {
    if (nh === 59) return undefined;
    const hnext = n.u8(off);
    const hlen = n.u8(off + 1);
    if (hnext === undefined || hlen === undefined) return undefined;
    let size: number;
    if (nh === 44) {
      const fo = n.u16(off + 2);
      if (fo === undefined) return undefined;
      if (fo & ~0x7) break; // a non-first fragment: stop here
      size = 8;
    } else if (nh === 51) size = (hlen + 2) << 2;
    else size = (hlen + 1) << 3;
    nh = hnext;
    off += size;
  }
  return { offset: off, nexthdr: nh };
}

/** ebt_ip6 (`-p ipv6 --ip6-*`). */
function ebtIp6(f: Frame, m: Extract<L2Match, { proto: 'ipv6' }>): boolean {
  if (!m.srcIp && !m.dstIp && !m.protocol) return true;
  const n = f.net;
  if (!n.has(0, 40)) return false;
  if (m.srcIp && !inv(m.srcIp.neg, prefixEq(n.bytes(8, 16) as Uint8Array, m.srcIp))) return false;
  if (m.dstIp && !inv(m.dstIp.neg, prefixEq(n.bytes(24, 16) as Uint8Array, m.dstIp))) return false;
  if (m.protocol) {
    const up = skipIpv6ExtHeaders(n, 40, n.u8(6) as number);
    if (!up) return false;
    if (!inv(m.protocol.neg, up.nexthdr === m.protocol.value)) return false;
    if (!m.srcPort && !m.dstPort && !m.icmpType) return true;
    const a = n.u16(up.offset);
    const b = n.u16(up.offset + 2);
    if (a === undefined || b === undefined) return false;
    if (m.dstPort && !inv(m.dstPort.neg, inRange(b, m.dstPort))) return false;
    if (m.srcPort && !inv(m.srcPort.neg, inRange(a, m.srcPort))) return false;
    if (m.icmpType) {
      const type = a >> 8;
      const code = a & 0xff;
      const code_ = m.icmpCode ?? { lo: 0, hi: 255, neg: m.icmpType.neg };
      if (!inv(m.icmpType.neg, inRange(type, m.icmpType) && inRange(code, code_))) return false;
    }
  }
  return true;
}

/** ebt_arp (`-p 0x806|0x8035 --arp-*`). */
function ebtArp(f: Frame, m: Extract<L2Match, { proto: 'arp' | 'rarp' }>): boolean {
  if (!m.opcode && !m.hwType && !m.protoType && !m.spa && !m.tpa && !m.gratuitous && !m.sha && !m.tha) return true;
  const n = f.net;
  if (!n.has(0, 8)) return false;
  const hrd = n.u16(0) as number;
  const pro = n.u16(2) as number;
  const hln = n.u8(4) as number;
  const pln = n.u8(5) as number;
  const op = n.u16(6) as number;
  if (m.opcode && !inv(m.opcode.neg, op === m.opcode.value)) return false;
  if (m.hwType && !inv(m.hwType.neg, hrd === m.hwType.value)) return false;
  if (m.protoType && !inv(m.protoType.neg, pro === m.protoType.value)) return false;
  if (m.spa || m.tpa || m.gratuitous) {
    if (pln !== 4 || pro !== ETHERTYPES.IPV4) return false;
    const sip = n.bytes(8 + hln, 4);
    const tip = n.bytes(8 + 2 * hln + 4, 4);
    if (!sip || !tip) return false;
    if (m.spa && !inv(m.spa.neg, prefixEq(sip, m.spa))) return false;
    if (m.tpa && !inv(m.tpa.neg, prefixEq(tip, m.tpa))) return false;
    if (m.gratuitous && !inv(m.gratuitous.neg, cmpBytes(sip, tip) === 0)) return false;
  }
  if (m.sha || m.tha) {
    if (hln !== 6 || hrd !== 1) return false;
    if (m.sha) {
      const sha = n.bytes(8, 6);
      if (!sha || !inv(m.sha.neg, macEq(sha, m.sha))) return false;
    }
    if (m.tha) {
      const tha = n.bytes(8 + hln + pln, 6);
      if (!tha || !inv(m.tha.neg, macEq(tha, m.tha))) return false;
    }
  }
  return true;
}

/** ebt_vlan (`-p 0x8100 --vlan-*`): the tag right after the Ethernet header. */
function ebtVlan(f: Frame, m: Extract<L2Match, { proto: 'vlan' }>): boolean {
  if (!m.vlanId && !m.encap) return true;
  const tci = f.net.u16(0);
  const encap = f.net.u16(2);
  if (tci === undefined || encap === undefined) return false;
  if (m.vlanId && !inv(m.vlanId.neg, (tci & 0x0fff) === m.vlanId.value)) return false;
  if (m.encap && !inv(m.encap.neg, encap === m.encap.value)) return false;
  return true;
}

/**
 * ebt_stp, with the kernel's exact layout: it compares the first six bytes
 * after the Ethernet header with 42 42 03 00 00 00, reads "type" at byte 5
 * and the configuration fields from byte 6 (one byte earlier than a real
 * BPDU puts them). libvirt's rules go through this match, so we keep it.
 */
function ebtStp(f: Frame, m: Extract<L2Match, { proto: 'stp' }>): boolean {
  const s = m.fields;
  if (!s) return true;
  const hdr = f.net.bytes(0, 6);
  if (!hdr || cmpBytes(hdr, Uint8Array.of(0x42, 0x42, 0x03, 0, 0, 0)) !== 0) return false;
  const type = hdr[5] as number;
  if (s.type && !inv(s.type.neg, type === s.type.value)) return false;
  const cfgTests = Object.keys(s).filter((k) => k !== 'type');
  if (type !== 0 || cfgTests.length === 0) return true;
  const c = f.net.bytes(6, 31);
  if (!c) return false;
  const v = new View(c, 0);
  const r16 = (off: number, t: RangeTest | undefined): boolean => !t || inv(t.neg, inRange(v.u16(off) as number, t));
  if (s.flags && !inv(s.flags.neg, v.u8(0) === s.flags.value)) return false;
  if (!r16(1, s.rootPriority)) return false;
  if (s.rootAddress && !inv(s.rootAddress.neg, macEq(c.subarray(3, 9), s.rootAddress))) return false;
  if (s.rootCost && !inv(s.rootCost.neg, inRange(v.u32(9) as number, s.rootCost))) return false;
  if (!r16(13, s.senderPriority)) return false;
  if (s.senderAddress && !inv(s.senderAddress.neg, macEq(c.subarray(15, 21), s.senderAddress))) return false;
  if (!r16(21, s.port)) return false;
  if (!r16(23, s.age)) return false;
  if (!r16(25, s.maxAge)) return false;
  if (!r16(27, s.helloTime)) return false;
  if (!r16(29, s.forwardDelay)) return false;
  return true;
}

/** Does an L2 rule's match hold for the frame? */
export function matchL2(f: Frame, m: L2Match): boolean {
  switch (m.proto) {
    case 'any':
      return true;
    case 'mac':
      return ebtEth(f, m) && ebtProto(f, m.etherType);
    case 'vlan':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.vlan && ebtVlan(f, m);
    case 'stp':
      return ebtEth(f, m) && ebtStp(f, m);
    case 'arp':
    case 'rarp':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF[m.proto] && ebtArp(f, m);
    case 'ipv4':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.ipv4 && ebtIp(f, m);
    case 'ipv6':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.ipv6 && ebtIp6(f, m);
    default:
      return assertNever(m, 'L2 match');
  }
}

function guardHolds(f: Frame, g: { kind: 'ethertype'; etherType: number } | { kind: 'stp' } | { kind: 'none' }): boolean {
  if (g.kind === 'none') return true;
  if (g.kind === 'stp') return macEq(f.dst, { addr: '01:80:c2:00:00:00', neg: false });
  return f.proto === g.etherType;
}

// ---- L2 walk ------------------------------------------------------------------------

type ChainOutcome = { kind: 'verdict'; verdict: 'accept' | 'drop'; rule: L2Rule } | { kind: 'return'; rule: L2Rule } | { kind: 'fall-off' };

function runChain(f: Frame, chainName: string, rules: readonly L2Rule[], trace: TraceStep[]): ChainOutcome {
  for (const r of rules) {
    if (!matchL2(f, r.match)) continue;
    trace.push({ stage: 'l2', chain: chainName, event: 'match', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, verdict: r.verdict });
    switch (r.verdict) {
      case 'accept':
        return { kind: 'verdict', verdict: 'accept', rule: r };
      case 'drop':
        return { kind: 'verdict', verdict: 'drop', rule: r };
      case 'return':
        return { kind: 'return', rule: r };
      case 'continue':
        continue;
      default:
        return assertNever(r.verdict, 'L2 verdict');
    }
  }
  return { kind: 'fall-off' };
}

export function l2ChainName(dir: Direction, iface: string, chain?: string): string {
  const p = dir === 'out' ? 'I' : 'O';
  return chain ? `${p}-${iface}-${chain}` : `libvirt-${p}-${iface}`;
}

function evalL2(p: InterfacePolicy, dir: Direction, f: Frame, trace: TraceStep[]): { verdict: 'accept' | 'drop'; rule?: L2Rule } {
  const pol = p.l2[dir];
  const rootName = l2ChainName(dir, p.iface);
  if (pol.root.length === 0) {
    trace.push({ stage: 'l2', chain: rootName, event: 'not-hooked', note: 'no L2 rules in this direction' });
    return { verdict: 'accept' };
  }
  const chains = new Map<string, L2Chain>(pol.chains.map((c) => [c.name, c]));
  for (const e of pol.root) {
    if (e.kind === 'rule') {
      const o = runChain(f, rootName, [e.rule], trace);
      if (o.kind === 'verdict') return { verdict: o.verdict, rule: o.rule };
      // RETURN from the root chain goes back to PREROUTING/POSTROUTING, whose policy accepts.
      if (o.kind === 'return') return { verdict: 'accept', rule: o.rule };
      continue;
    }
    if (!guardHolds(f, e.guard)) continue;
    const ch = chains.get(e.chain) as L2Chain;
    const sub = l2ChainName(dir, p.iface, e.chain);
    trace.push({ stage: 'l2', chain: rootName, event: 'jump', note: sub });
    const o = runChain(f, sub, ch.rules, trace);
    if (o.kind === 'verdict') return { verdict: o.verdict, rule: o.rule };
    if (o.kind === 'return') {
      trace.push({ stage: 'l2', chain: sub, event: 'return', note: `back to ${rootName}` });
      continue;
    }
    // Falling off a user chain: ebtables user chains have policy ACCEPT.
    trace.push({ stage: 'l2', chain: sub, event: 'fall-off', verdict: 'accept', note: 'end of chain: policy ACCEPT' });
    return { verdict: 'accept' };
  }
  trace.push({ stage: 'l2', chain: rootName, event: 'fall-off', verdict: 'accept', note: 'end of chain: policy ACCEPT' });
  return { verdict: 'accept' };
}

// ---- br_netfilter and L3 --------------------------------------------------------------

function ipv4HeaderOk(n: View): boolean {
  if (!n.has(0, 20)) return false;
  const vihl = n.u8(0) as number;
  const ihl = vihl & 0x0f;
  if (vihl >> 4 !== 4 || ihl < 5 || !n.has(0, ihl * 4)) return false;
  let sum = 0;
  for (let i = 0; i < ihl * 4; i += 2) sum += n.u16(i) as number;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  if (sum !== 0xffff) return false;
  const tot = n.u16(2) as number;
  return tot <= n.length && tot >= ihl * 4;
}

function ipv6HeaderOk(n: View): boolean {
  if (!n.has(0, 40)) return false;
  if ((n.u8(0) as number) >> 4 !== 6) return false;
  return (n.u16(4) as number) + 40 <= n.length;
}

interface L3Packet {
  family: 'ipv4' | 'ipv6';
  src: Uint8Array;
  dst: Uint8Array;
  /** Upper-layer protocol (after IPv6 extension headers). */
  protocol: number;
  dscp: number;
  /** Upper-layer header, when present (first fragment only). */
  l4?: View;
}

function l3Packet(f: Frame): L3Packet | undefined {
  const n = f.net;
  if (f.proto === ETHERTYPES.IPV4) {
    const ihl = ((n.u8(0) as number) & 0x0f) * 4;
    const tot = n.u16(2) as number;
    const firstFrag = ((n.u16(6) as number) & 0x1fff) === 0;
    const l4 = firstFrag ? new View(f.raw.subarray(0, 14 + tot), 14 + ihl) : undefined;
    return { family: 'ipv4', src: n.bytes(12, 4) as Uint8Array, dst: n.bytes(16, 4) as Uint8Array, protocol: n.u8(9) as number, dscp: (n.u8(1) as number) >> 2, ...(l4 ? { l4 } : {}) };
  }
  const plen = n.u16(4) as number;
  const up = skipIpv6ExtHeaders(new View(f.raw.subarray(0, 14 + 40 + plen), 14), 40, n.u8(6) as number);
  const tc = (((n.u8(0) as number) & 0x0f) << 4) | ((n.u8(1) as number) >> 4);
  return {
    family: 'ipv6',
    src: n.bytes(8, 16) as Uint8Array,
    dst: n.bytes(24, 16) as Uint8Array,
    protocol: up ? up.nexthdr : 59,
    dscp: tc >> 2,
    ...(up ? { l4: new View(f.raw.subarray(0, 14 + 40 + plen), 14 + up.offset) } : {}),
  };
}

function tcpHasOption(l4: View, kind: number): boolean {
  const doff = ((l4.u8(12) ?? 0) >> 4) * 4;
  for (let i = 20; i < doff; ) {
    const k = l4.u8(i);
    if (k === undefined || k === 0) return false;
    if (k === kind) return true;
    if (k === 1) {
      i++;
      continue;
    }
    const len = l4.u8(i + 1);
    if (len === undefined || len < 2) return false;
    i += len;
  }
  return false;
}

const STATE_NAME: Record<Exclude<ConnInfo['state'], 'untracked'>, ConnStateName> = { new: 'NEW', established: 'ESTABLISHED', related: 'RELATED', invalid: 'INVALID' };

/**
 * Does an iptables rule written by libvirt match the packet? 'hotdrop' when
 * the rule's L4 match finds the protocol header truncated: iptables then
 * drops the packet on the spot (xt_tcpudp, xt_sctp, icmp matches).
 */
export function matchL3(f: Frame, pkt: L3Packet, r: L3Rule, conn: ConnInfo, connCount: number): boolean | 'hotdrop' {
  if (r.family !== pkt.family) return false;
  if (r.protocol !== 'all' && pkt.protocol !== r.protocol) return false;
  if (r.srcMac && !inv(r.srcMac.neg, macEq(f.src, r.srcMac))) return false;
  if (r.srcIp && !inv(r.srcIp.neg, prefixEq(pkt.src, r.srcIp))) return false;
  if (r.dstIp && !inv(r.dstIp.neg, prefixEq(pkt.dst, r.dstIp))) return false;
  if (r.srcRange && !inv(r.srcRange.neg, inIpRange(pkt.src, r.srcRange))) return false;
  if (r.dstRange && !inv(r.dstRange.neg, inIpRange(pkt.dst, r.dstRange))) return false;
  if (r.dscp && !inv(r.dscp.neg, pkt.dscp === r.dscp.value)) return false;
  const need = l4MatchHeaderSize(r);
  if (need !== undefined && (!pkt.l4 || !pkt.l4.has(0, need))) return 'hotdrop';
  if (r.srcPort || r.dstPort || r.tcpFlags || r.tcpOption || r.icmp) {
    const l4 = pkt.l4;
    if (!l4) return false;
    if (r.srcPort || r.dstPort) {
      const sp = l4.u16(0);
      const dp = l4.u16(2);
      if (sp === undefined || dp === undefined) return false;
      if (r.srcPort && !inv(r.srcPort.neg, inRange(sp, r.srcPort))) return false;
      if (r.dstPort && !inv(r.dstPort.neg, inRange(dp, r.dstPort))) return false;
    }
    if (r.tcpFlags) {
      const fl = l4.u8(13);
      if (fl === undefined || !inv(r.tcpFlags.neg, (fl & r.tcpFlags.mask) === r.tcpFlags.set)) return false;
    }
    if (r.tcpOption && !inv(r.tcpOption.neg, tcpHasOption(l4, r.tcpOption.value))) return false;
    if (r.icmp) {
      const t = l4.u8(0);
      const c = l4.u8(1);
      if (t === undefined || c === undefined) return false;
      if (!inv(r.icmp.neg, t === r.icmp.type && (r.icmp.code === undefined || c === r.icmp.code))) return false;
    }
  }
  if (r.state && (conn.state === 'untracked' || !r.state.includes(STATE_NAME[conn.state]))) return false;
  // --ctdir needs a conntrack entry: invalid and untracked packets have none
  if (r.ctDir && (conn.state === 'invalid' || conn.state === 'untracked' || r.ctDir !== conn.direction)) return false;
  if (r.connlimitAbove && !inv(r.connlimitAbove.neg, connCount > r.connlimitAbove.value)) return false;
  return true;
}

const TCP_VALID_FLAGS = new Set([0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30]);
const ICMP_NEW = new Set([8, 13, 15, 17]);
const ICMPV6_NEW = new Set([128, 139]);
const ICMPV6_UNTRACKED = new Set([130, 131, 132, 133, 134, 135, 136, 143]);

/**
 * What conntrack makes of a packet that is the first of its flow (nothing
 * tracked before it): NEW when the packet can start a connection, INVALID
 * when it cannot (TCP without SYN/ACK or with invalid flags, ICMP replies and
 * errors, UDP-Lite without a checksum, SCTP without INIT), untracked for
 * ICMPv6 neighbour discovery and MLD.
 */
export function classifyFirstPacket(pkt: L3Packet): ConnInfo {
  const new_: ConnInfo = { state: 'new', direction: 'original' };
  const invalid: ConnInfo = { state: 'invalid', direction: 'original' };
  const l4 = pkt.l4;
  switch (pkt.protocol) {
    case 6: {
      const fl = l4?.u8(13);
      if (fl === undefined || !l4?.has(0, 20)) return invalid;
      const f = fl & ~(0x08 | 0x40 | 0x80) & 0x3f; // ignore PSH, ECE, CWR
      if (!TCP_VALID_FLAGS.has(f)) return invalid;
      // from no state, only SYN and ACK (loose pickup) start tracking; RST, FIN, SYN-ACK do not
      if (f & 0x04 || (f & 0x02 && f & 0x10) || (f & 0x01 && !(f & 0x02))) return invalid;
      return new_;
    }
    case 17:
      if (!l4?.has(0, 8)) return invalid;
      if (pkt.family === 'ipv6' && l4.u16(6) === 0) return invalid;
      return new_;
    case 136:
      if (!l4?.has(0, 8) || l4.u16(6) === 0) return invalid;
      {
        const cov = l4.u16(4) as number;
        if (cov !== 0 && cov < 8) return invalid;
      }
      return new_;
    case 132:
      return l4?.u8(12) === 1 ? new_ : invalid; // first chunk INIT
    case 1: {
      const t = l4?.u8(0);
      return t !== undefined && ICMP_NEW.has(t) ? new_ : invalid;
    }
    case 58: {
      const t = l4?.u8(0);
      if (t === undefined) return invalid;
      if (ICMPV6_UNTRACKED.has(t)) return { state: 'untracked', direction: 'original' };
      return ICMPV6_NEW.has(t) ? new_ : invalid;
    }
    default:
      return new_;
  }
}

export function l3ChainName(path: 'fromVm' | 'toVm' | 'toHost', iface: string): string {
  return `${path === 'fromVm' ? 'FI' : path === 'toVm' ? 'FO' : 'HI'}-${iface}`;
}

function evalL3(p: InterfacePolicy, dir: Direction, f: Frame, opts: EvalOptions, trace: TraceStep[]): { verdict: 'accept' | 'drop'; rule?: L3Rule; hotdrop?: boolean } {
  const path = dir === 'in' ? 'toVm' : opts.path === 'host' ? 'toHost' : 'fromVm';
  const rules = p.l3[path];
  const chain = l3ChainName(path, p.iface);
  const hasFamily = rules.some((r) => (f.proto === ETHERTYPES.IPV4 ? r.family === 'ipv4' : r.family === 'ipv6'));
  if (!hasFamily) return { verdict: 'accept' };
  const pkt = l3Packet(f);
  if (!pkt) return { verdict: 'accept' };
  const conn = opts.conn ?? classifyFirstPacket(pkt);
  for (const r of rules) {
    const m = matchL3(f, pkt, r, conn, opts.connCount ?? 0);
    if (m === 'hotdrop') {
      trace.push({ stage: 'l3', chain, event: 'drop', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, note: 'truncated L4 header: the iptables match drops the packet (hotdrop)' });
      return { verdict: 'drop', rule: r, hotdrop: true };
    }
    if (!m) continue;
    trace.push({ stage: 'l3', chain, event: 'match', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, verdict: r.verdict });
    switch (r.verdict) {
      case 'accept':
      case 'return':
        return { verdict: 'accept', rule: r };
      case 'drop':
      case 'reject':
        return { verdict: 'drop', rule: r };
      case 'continue':
        continue;
      default:
        return assertNever(r.verdict, 'L3 verdict');
    }
  }
  trace.push({ stage: 'l3', chain, event: 'fall-off', verdict: 'accept', note: 'no L3 rule decided: the packet goes on' });
  return { verdict: 'accept' };
}

/** Whether the policy's L3 rules of a family use connection tracking (state, ctdir, connlimit). */
export function hasStatefulRules(p: InterfacePolicy, family: 'ipv4' | 'ipv6'): boolean {
  return [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost].some((r) => r.family === family && (r.state !== undefined || r.ctDir !== undefined || r.connlimitAbove !== undefined));
}

function isFragment(f: Frame): boolean {
  if (f.proto === ETHERTYPES.IPV4) return ((f.net.u16(6) as number) & 0x3fff) !== 0; // MF or an offset
  const up = skipIpv6ExtHeaders(f.net, 40, f.net.u8(6) as number);
  return up === undefined ? false : up.nexthdr === 44 || hasFragmentHeader(f.net);
}

function hasFragmentHeader(n: View): boolean {
  let nh = n.u8(6) as number;
  let off = 40;
  for (let guard = 0; IPV6_EXT.has(nh) && nh !== 59 && guard < 64; guard++) {
    if (nh === 44) return true;
    const next = n.u8(off);
    const len = n.u8(off + 1);
    if (next === undefined || len === undefined) return false;
    off += nh === 51 ? (len + 2) << 2 : (len + 1) << 3;
    nh = next;
  }
  return false;
}

// ---- entry point ---------------------------------------------------------------------

/** The verdict libvirt's rules give `frame` on `policy`'s interface in `direction`. */
export function evaluate(policy: InterfacePolicy, direction: Direction, frame: Uint8Array, opts: EvalOptions = {}): EvalResult {
  const trace: TraceStep[] = [];
  const f = decodeFrame(frame);
  if (!f) {
    trace.push({ stage: 'host', chain: '-', event: 'drop', note: 'runt frame: shorter than an Ethernet header; the kernel never delivers it' });
    return { verdict: 'drop', reason: 'host', trace };
  }
  const l2 = evalL2(policy, direction, f, trace);
  if (l2.verdict === 'drop') {
    const r = l2.rule as L2Rule;
    return { verdict: 'drop', reason: dropReason(r.origin), decidedBy: { stage: 'l2', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule }, trace };
  }
  const brnf = opts.brNetfilter ?? true;
  // br_netfilter hands forwarded ARP to arptables and drops ARP too short for its 8-byte header.
  if (brnf && f.proto === ETHERTYPES.ARP && opts.path !== 'host' && !f.net.has(0, 8)) {
    trace.push({ stage: 'host', chain: 'br_netfilter', event: 'drop', note: 'ARP shorter than its header (br_netfilter drops it before arptables)' });
    return { verdict: 'drop', reason: 'host', trace };
  }
  const isIp = f.proto === ETHERTYPES.IPV4 || f.proto === ETHERTYPES.IPV6;
  if (isIp && brnf) {
    const ok = f.proto === ETHERTYPES.IPV4 ? ipv4HeaderOk(f.net) : ipv6HeaderOk(f.net);
    if (!ok) {
      trace.push({ stage: 'host', chain: 'br_netfilter', event: 'drop', note: 'invalid IP header (br_netfilter validates it before iptables)' });
      return { verdict: 'drop', reason: 'host', trace };
    }
    if (hasStatefulRules(policy, f.proto === ETHERTYPES.IPV4 ? 'ipv4' : 'ipv6') && isFragment(f)) {
      // Connection tracking (in use for this family's stateful rules) reassembles fragments first; a lone fragment never passes.
      trace.push({ stage: 'host', chain: 'conntrack', event: 'drop', note: 'IP fragment held for reassembly by connection tracking' });
      return { verdict: 'drop', reason: 'host', trace };
    }
    const l3 = evalL3(policy, direction, f, opts, trace);
    if (l3.verdict === 'drop') {
      const r = l3.rule as L3Rule;
      return { verdict: 'drop', reason: l3.hotdrop ? 'host' : dropReason(r.origin), decidedBy: { stage: 'l3', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule }, trace };
    }
  }
  const res: EvalResult = { verdict: 'accept', trace };
  if (l2.rule) res.decidedBy = { stage: 'l2', ruleId: l2.rule.id, filter: l2.rule.origin.filter, rule: l2.rule.origin.rule };
  return res;
}
