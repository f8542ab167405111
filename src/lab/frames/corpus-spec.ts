// An editable description of one test frame, and its rendering to bytes.
//
// The corpus generator (corpus.ts) starts from a spec filled with the VM's
// own valid addresses, lets each rule test rewrite the fields it looks at
// (corpus-rules.ts), and renders the result with the frame builders, so
// every IPv4 header checksum and every transport checksum is right.
import type { ConnInfo } from '../../ir/eval.js';
import type { Direction } from '../../ir/types.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../../ir/values.js';
import { CODES, NwfError } from '../../util/errors.js';
import {
  arpFrame,
  bpdu,
  concat,
  ether,
  icmpFrame,
  icmpv6,
  icmpv6Frame,
  ieee8023,
  ipv4Frame,
  ipv6Frame,
  ipv6TcpFrame,
  ipv6UdpFrame,
  mac,
  rarpFrame,
  tcp,
  tcpFrame,
  udp,
  udpFrame,
  IpProto,
  TcpFlag,
  type VlanTag,
} from './build.js';

export type SpecKind = 'ipv4' | 'ipv6' | 'arp' | 'rarp' | 'stp' | 'raw';

export interface ArpFields {
  op: number;
  sha: string;
  spa: string;
  tha: string;
  tpa: string;
  htype: number;
  ptype: number;
}

/** Everything a generated frame can vary. Fields a kind does not use are ignored. */
export interface FrameSpec {
  dir: Direction;
  kind: SpecKind;
  srcMac: string;
  dstMac: string;
  /** 802.1Q tag id; the frame is tagged when set. */
  vlan?: number;
  /** EtherType (or 802.3 length) of a `raw` frame. */
  etherType: number;
  src4: string;
  dst4: string;
  src6: string;
  dst6: string;
  /** IP protocol / IPv6 upper-layer header. */
  proto: number;
  sport: number;
  dport: number;
  /** IPv4 TOS byte / IPv6 traffic class byte. */
  tos: number;
  tcpFlags: number;
  /** Set when a rule chose the TCP flags (otherwise established packets get ACK). */
  tcpFlagsFixed: boolean;
  /** A TCP option kind to carry. */
  tcpOpt?: number;
  /** ICMP / ICMPv6 type (default echo request) and code. */
  icmpType?: number;
  icmpCode: number;
  arp: ArpFields;
  /**
   * The 35-byte BPDU after the LLC header. ebt_stp reads its "type" from byte 2
   * (the version byte) and its configuration fields from byte 3 on.
   */
  stp: Uint8Array;
  /** IPv4 fragment variants: first fragment (MF set) or a later one (offset 1480). */
  frag?: 'first' | 'later';
  /** IPv4 header with 4 bytes of options (IHL 6). */
  ipOptions?: boolean;
  /** IPv6 with a hop-by-hop extension header before the upper layer. */
  ipv6Ext?: boolean;
  conn?: ConnInfo;
  /**
   * Addresses of the VM (first) and the peer, per family: a prefix test that the
   * current address fails takes the first of these inside the prefix, before
   * falling back to copying the prefix bits.
   */
  known4: readonly Uint8Array[];
  known6: readonly Uint8Array[];
}

export function cloneSpec(s: FrameSpec): FrameSpec {
  const c: FrameSpec = { ...s, arp: { ...s.arp }, stp: s.stp.slice() };
  if (s.conn) c.conn = { ...s.conn };
  return c;
}

/** Parsed addresses, memoised: the builders take bytes as they are, and parsing text dominated the run time. */
const parsed = new Map<string, Uint8Array>();
function memo(key: string, parse: () => Uint8Array): Uint8Array {
  let b = parsed.get(key);
  if (!b) {
    if (parsed.size > 4096) parsed.clear();
    b = parse();
    parsed.set(key, b);
  }
  return b;
}
const M = (t: string): Uint8Array => memo(`m${t}`, () => mac(t));
const A4 = (t: string): Uint8Array => memo(`4${t}`, () => ipToBytes('ipv4', t));
const A6 = (t: string): Uint8Array => memo(`6${t}`, () => ipToBytes('ipv6', t));

/** The default BPDU body for a bridge with address `srcMac`. */
export function defaultBpdu(srcMac: string): Uint8Array {
  return memo(`b${srcMac}`, () => bpdu({ rootAddress: srcMac, senderAddress: srcMac })).slice();
}

// ---- address arithmetic -----------------------------------------------------------

export function ipToBytes(family: 'ipv4' | 'ipv6', text: string): Uint8Array {
  if (family === 'ipv4') {
    const v = parseIPv4(text);
    if (v === undefined) throw new NwfError(CODES.VALUE_INVALID, `invalid IPv4 address '${text}'`, { expected: 'an IPv4 address like 192.0.2.1' });
    return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  }
  const b = parseIPv6(text);
  if (!b) throw new NwfError(CODES.VALUE_INVALID, `invalid IPv6 address '${text}'`, { expected: 'an IPv6 address like 2001:db8::1' });
  return b;
}

export function ipToText(family: 'ipv4' | 'ipv6', b: Uint8Array): string {
  if (family === 'ipv4') return formatIPv4((((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0);
  return formatIPv6(b);
}

export function macText(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

export function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const c = b.slice();
  c[bit >> 3] = (c[bit >> 3] ?? 0) ^ (0x80 >> (bit & 7));
  return c;
}

/** `base` with its first `prefix` bits taken from `want`. */
export function withPrefix(base: Uint8Array, want: Uint8Array, prefix: number): Uint8Array {
  const c = base.slice();
  for (let bit = 0; bit < prefix; bit++) {
    const i = bit >> 3;
    const m = 0x80 >> (bit & 7);
    c[i] = ((c[i] ?? 0) & ~m) | ((want[i] ?? 0) & m);
  }
  return c;
}

export function inPrefix(a: Uint8Array, want: Uint8Array, prefix: number): boolean {
  const whole = prefix >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== want[i]) return false;
  for (let bit = whole * 8; bit < prefix; bit++) {
    const m = 0x80 >> (bit & 7);
    if (((a[bit >> 3] ?? 0) & m) !== ((want[bit >> 3] ?? 0) & m)) return false;
  }
  return true;
}

/** `base` with the bits set in `mask` taken from `want`. */
export function withMask(base: Uint8Array, want: Uint8Array, mask: Uint8Array): Uint8Array {
  return base.map((x, i) => (x & ~(mask[i] ?? 0)) | ((want[i] ?? 0) & (mask[i] ?? 0)));
}

/** Bit index (0 = most significant of byte 0) of the last bit set (or clear) in a mask. */
export function lastMaskBit(mask: Uint8Array, set: boolean): number | undefined {
  for (let bit = mask.length * 8 - 1; bit >= 0; bit--) {
    const on = ((mask[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) !== 0;
    if (on === set) return bit;
  }
  return undefined;
}

/** Bit index of the first bit set in a mask. */
export function firstMaskBit(mask: Uint8Array): number | undefined {
  for (let bit = 0; bit < mask.length * 8; bit++) if (((mask[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) !== 0) return bit;
  return undefined;
}

/** The IPv6 link-local address of a MAC (modified EUI-64). */
export function linkLocal(macAddr: string): string {
  const m = mac(macAddr);
  const b = new Uint8Array(16);
  b[0] = 0xfe;
  b[1] = 0x80;
  b[8] = (m[0] ?? 0) ^ 2;
  b[9] = m[1] ?? 0;
  b[10] = m[2] ?? 0;
  b[11] = 0xff;
  b[12] = 0xfe;
  b[13] = m[3] ?? 0;
  b[14] = m[4] ?? 0;
  b[15] = m[5] ?? 0;
  return formatIPv6(b);
}

/** Solicited-node multicast address and its MAC for an IPv6 address. */
export function solicitedNode(addr: string): { ip: string; mac: string } {
  const a = ipToBytes('ipv6', addr);
  const b = ipToBytes('ipv6', 'ff02::1:ff00:0');
  b[13] = a[13] ?? 0;
  b[14] = a[14] ?? 0;
  b[15] = a[15] ?? 0;
  return { ip: formatIPv6(b), mac: macText(Uint8Array.of(0x33, 0x33, 0xff, a[13] ?? 0, a[14] ?? 0, a[15] ?? 0)) };
}

// ---- naming --------------------------------------------------------------------------

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 2: 'igmp', 6: 'tcp', 17: 'udp', 33: 'dccp', 50: 'esp', 51: 'ah', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };

export function protoName(p: number): string {
  return PROTO_NAMES[p] ?? `proto${p}`;
}

export function hex4(v: number): string {
  return `0x${v.toString(16).padStart(4, '0')}`;
}

/** A short label for what the frame carries, e.g. `ipv4-udp`, `vlan10-arp`, `ether-0x88b5`. */
export function kindLabel(s: FrameSpec): string {
  const v = s.vlan !== undefined ? `vlan${s.vlan}-` : '';
  switch (s.kind) {
    case 'ipv4':
    case 'ipv6':
      return `${v}${s.kind}-${protoName(s.proto)}`;
    case 'raw':
      return `${v}ether-${hex4(s.etherType)}`;
    default:
      return `${v}${s.kind}`;
  }
}

// ---- rendering -----------------------------------------------------------------------


/** Ports readable at the start of an upper-layer header we have no builder for. */
function portsPayload(s: FrameSpec): Uint8Array {
  const b = new Uint8Array(8);
  b[0] = s.sport >> 8;
  b[1] = s.sport & 255;
  b[2] = s.dport >> 8;
  b[3] = s.dport & 255;
  return b;
}

function tcpOptionBytes(kind: number | undefined): Uint8Array | undefined {
  if (kind === undefined) return undefined;
  if (kind === 0 || kind === 1) return Uint8Array.of(kind, 1, 1, 1); // EOL/NOP, padded
  return Uint8Array.of(kind, 4, 0, 0);
}

function flagsOf(s: FrameSpec): number {
  if (!s.tcpFlagsFixed && s.conn && s.conn.state !== 'new') return TcpFlag.ACK;
  return s.tcpFlags;
}

/** A hop-by-hop options header (PadN) announcing `next`. */
function hopByHop(next: number): Uint8Array {
  return Uint8Array.of(next, 0, 1, 4, 0, 0, 0, 0);
}

/** Render the spec: padded to 60 bytes unless `pad` is false. */
export function renderSpec(s: FrameSpec, pad = true): Uint8Array {
  const vlan: { vlan?: VlanTag } = s.vlan !== undefined ? { vlan: { id: s.vlan } } : {};
  const l2 = { srcMac: M(s.srcMac), dstMac: M(s.dstMac), pad, ...vlan };
  switch (s.kind) {
    case 'ipv4': {
      const ip = {
        tos: s.tos,
        ...(s.frag === 'first' ? { moreFragments: true, id: 0x4242 } : {}),
        ...(s.frag === 'later' ? { fragOffset: 185, id: 0x4242 } : {}),
        ...(s.ipOptions ? { options: Uint8Array.of(0x94, 0x04, 0, 0) } : {}),
      };
      const o = { ...l2, srcIp: A4(s.src4), dstIp: A4(s.dst4), ip };
      const tcpOptions = tcpOptionBytes(s.tcpOpt);
      if (s.proto === IpProto.TCP) return tcpFrame({ ...o, sport: s.sport, dport: s.dport, flags: flagsOf(s), ...(tcpOptions ? { tcpOptions } : {}) });
      if (s.proto === IpProto.UDP) return udpFrame({ ...o, sport: s.sport, dport: s.dport });
      if (s.proto === IpProto.ICMP) return icmpFrame({ ...o, type: s.icmpType ?? 8, code: s.icmpCode, id: 1, seq: 1 });
      return ipv4Frame({ ...o, protocol: s.proto, payload: portsPayload(s) });
    }
    case 'ipv6': {
      const o = { ...l2, srcIp: A6(s.src6), dstIp: A6(s.dst6), ip: { trafficClass: s.tos } };
      const ph = { src: o.srcIp, dst: o.dstIp };
      const tcpOptions = tcpOptionBytes(s.tcpOpt);
      const tcpO = { sport: s.sport, dport: s.dport, flags: flagsOf(s), ...(tcpOptions ? { tcpOptions } : {}) };
      const icmpO = { type: s.icmpType ?? 128, code: s.icmpCode, id: 1, seq: 1 };
      if (s.ipv6Ext) {
        const l4 =
          s.proto === IpProto.TCP
            ? tcp(tcpO, ph)
            : s.proto === IpProto.UDP
              ? udp({ sport: s.sport, dport: s.dport }, ph)
              : s.proto === IpProto.ICMPV6
                ? icmpv6(icmpO, ph)
                : portsPayload(s);
        return ipv6Frame({ ...o, nextHeader: 0, payload: concat(hopByHop(s.proto), l4) });
      }
      if (s.proto === IpProto.TCP) return ipv6TcpFrame({ ...o, ...tcpO });
      if (s.proto === IpProto.UDP) return ipv6UdpFrame({ ...o, sport: s.sport, dport: s.dport });
      if (s.proto === IpProto.ICMPV6) return icmpv6Frame({ ...o, ...icmpO });
      return ipv6Frame({ ...o, nextHeader: s.proto, payload: portsPayload(s) });
    }
    case 'arp':
    case 'rarp': {
      const a = s.arp;
      const o = { ...l2, op: a.op, sha: M(a.sha), spa: A4(a.spa), tha: M(a.tha), tpa: A4(a.tpa), htype: a.htype, ptype: a.ptype };
      return s.kind === 'arp' ? arpFrame(o) : rarpFrame(o);
    }
    case 'stp':
      return ieee8023({ dst: l2.dstMac, src: l2.srcMac, payload: concat(Uint8Array.of(0x42, 0x42, 0x03), s.stp), pad, ...vlan });
    case 'raw': {
      const payload = new Uint8Array(46);
      for (let i = 0; i < payload.length; i++) payload[i] = (0x4e + i) & 0xff;
      return ether({ dst: l2.dstMac, src: l2.srcMac, type: s.etherType, payload, pad, ...vlan });
    }
  }
}

/** Offset of the upper-layer (L4) header in the rendered frame, for IP kinds. */
export function l4Offset(s: FrameSpec): number | undefined {
  const eth = 14 + (s.vlan !== undefined ? 4 : 0);
  if (s.kind === 'ipv4') return eth + (s.ipOptions ? 24 : 20);
  if (s.kind === 'ipv6') return eth + 40 + (s.ipv6Ext ? 8 : 0);
  return undefined;
}
