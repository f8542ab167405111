// Raw Ethernet frame construction for tests, the demo and the benchmarks.
//
// Layers are built bottom-up as plain Uint8Arrays: a payload is wrapped in a
// transport header (udp/tcp/icmp, checksummed over the IP pseudo header), then
// in an IP header (ipv4Packet/ipv6Packet), then in an Ethernet header (ether),
// optionally with 802.1Q tags. The *Frame helpers do all of that in one call.
//
// Ethernet frames are returned without FCS and zero-padded to the 60-byte
// minimum (ETH_ZLEN, counting any VLAN tags) unless `pad: false` is given,
// which tests of runt or truncated frames need.
//
// Several builders accept raw overrides (checksum, totalLength, ihl, length)
// so that deliberately malformed packets can be produced.

import { CODES, NwfError } from '../../util/errors.js';
import { ARP_OPCODES, ETHERTYPES, TCP_FLAGS, type ArpOpName } from '../../ir/values.js';
import {
  concat,
  internetChecksum,
  ipAddr,
  ipv4,
  ipv6,
  mac,
  type IpInput,
  type Ipv4Input,
  type Ipv6Input,
  type MacInput,
} from '../../frames/bytes.js';

export * from '../../frames/bytes.js';

// ---------------------------------------------------------------------------
// Constants

/** EtherTypes by name (the IR's table). */
export const EtherType = ETHERTYPES;

export const IpProto = {
  ICMP: 1,
  IGMP: 2,
  TCP: 6,
  UDP: 17,
  DCCP: 33,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  SCTP: 132,
  UDPLITE: 136,
} as const;

/** Every TCP flag bit: nwfilter's six and the two ECN bits. */
export const TcpFlag = { ...TCP_FLAGS, ECE: 0x40, CWR: 0x80 } as const;
export type TcpFlagName = keyof typeof TcpFlag;

/** ARP/RARP opcodes by nwfilter name (the IR's table). */
export const ArpOp = ARP_OPCODES;
export type { ArpOpName };

export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';
/** Destination of STP BPDUs (the bridge group address). */
export const STP_MAC = '01:80:c2:00:00:00';
/** Minimum Ethernet frame length without FCS. */
export const MIN_FRAME_LEN = 60;

// ---------------------------------------------------------------------------
// Small helpers

function field(name: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new NwfError(CODES.FRAME_INVALID, `${name} ${v} is out of range`, {
      expected: `an integer in [0, ${max}]`,
    });
  }
  return v;
}

function put16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

function put32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Zero-pad `b` to a multiple of 4 bytes. */
function pad4(b: Uint8Array): Uint8Array {
  const rem = b.length % 4;
  return rem === 0 ? b : concat(b, new Uint8Array(4 - rem));
}

const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------
// Layer 2

export interface VlanTag {
  /** VLAN id, 0-4095. */
  id: number;
  /** Priority code point, 0-7 (default 0). */
  pcp?: number;
  /** Drop eligible indicator (default false). */
  dei?: boolean;
  /** Tag protocol identifier (default 0x8100; 0x88a8 for an S-tag). */
  tpid?: number;
}

export interface EtherOptions {
  dst: MacInput;
  src: MacInput;
  /** EtherType of the payload (after any VLAN tags), or an 802.3 length. */
  type: number;
  /** One tag, or several listed outermost first. */
  vlan?: VlanTag | VlanTag[];
  payload?: Uint8Array;
  /** Zero-pad to 60 bytes (default true). */
  pad?: boolean;
}

/** An Ethernet II frame: dst, src, [802.1Q tags], type, payload. */
export function ether(o: EtherOptions): Uint8Array {
  const tags = o.vlan === undefined ? [] : Array.isArray(o.vlan) ? o.vlan : [o.vlan];
  const payload = o.payload ?? EMPTY;
  const hdrLen = 14 + 4 * tags.length;
  const len = Math.max(hdrLen + payload.length, o.pad === false ? 0 : MIN_FRAME_LEN);
  const b = new Uint8Array(len);
  b.set(mac(o.dst), 0);
  b.set(mac(o.src), 6);
  let off = 12;
  for (const t of tags) {
    put16(b, off, field('VLAN TPID', t.tpid ?? EtherType.VLAN, 0xffff));
    const tci =
      (field('VLAN PCP', t.pcp ?? 0, 7) << 13) | ((t.dei ? 1 : 0) << 12) | field('VLAN id', t.id, 4095);
    put16(b, off + 2, tci);
    off += 4;
  }
  put16(b, off, field('EtherType', o.type, 0xffff));
  b.set(payload, hdrLen);
  return b;
}

export interface Ieee8023Options {
  dst: MacInput;
  src: MacInput;
  vlan?: VlanTag | VlanTag[];
  /** Everything after the length field (LLC header and data). */
  payload: Uint8Array;
  /** Override the length field (default: payload length). */
  length?: number;
  pad?: boolean;
}

/** An IEEE 802.3 frame whose type/length field holds the payload length. */
export function ieee8023(o: Ieee8023Options): Uint8Array {
  const length = o.length ?? o.payload.length;
  if (o.length === undefined && length >= 0x600) {
    throw new NwfError(CODES.FRAME_INVALID, `802.3 payload of ${length} bytes is too long`, {
      expected: 'at most 1535 bytes',
    });
  }
  return ether({ dst: o.dst, src: o.src, type: length, payload: o.payload, ...opt('vlan', o.vlan), ...opt('pad', o.pad) });
}

/** `{k: v}` when v is defined, else `{}` (keeps optional options optional). */
function opt<K extends string, V>(k: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [k]: v }) as { [P in K]?: V };
}

// ---------------------------------------------------------------------------
// Layer 3

export interface Ipv4PacketOptions {
  src: Ipv4Input;
  dst: Ipv4Input;
  protocol: number;
  payload?: Uint8Array;
  /** Time to live (default 64). */
  ttl?: number;
  /** Whole TOS byte (default 0). */
  tos?: number;
  /** DSCP, 0-63; replaces the upper six bits of `tos`. */
  dscp?: number;
  /** Identification (default 0). */
  id?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Fragment offset in units of 8 bytes, as in the header (default 0). */
  fragOffset?: number;
  /** Option bytes; zero-padded to a multiple of 4, at most 40. */
  options?: Uint8Array;
  /** Raw overrides for malformed packets. */
  ihl?: number;
  totalLength?: number;
  checksum?: number;
}

/** An IPv4 header (with a correct checksum unless overridden) plus payload. */
export function ipv4Packet(o: Ipv4PacketOptions): Uint8Array {
  const options = pad4(o.options ?? EMPTY);
  if (options.length > 40) {
    throw new NwfError(CODES.FRAME_INVALID, `IPv4 options of ${options.length} bytes exceed 40`);
  }
  const payload = o.payload ?? EMPTY;
  const hlen = 20 + options.length;
  const b = new Uint8Array(hlen + payload.length);
  const ihl = o.ihl ?? hlen / 4;
  b[0] = 0x40 | field('IHL', ihl, 15);
  let tos = field('TOS', o.tos ?? 0, 255);
  if (o.dscp !== undefined) tos = (field('DSCP', o.dscp, 63) << 2) | (tos & 3);
  b[1] = tos;
  put16(b, 2, field('total length', o.totalLength ?? b.length, 0xffff));
  put16(b, 4, field('IP id', o.id ?? 0, 0xffff));
  const flags = (o.dontFragment ? 0x4000 : 0) | (o.moreFragments ? 0x2000 : 0);
  put16(b, 6, flags | field('fragment offset', o.fragOffset ?? 0, 0x1fff));
  b[8] = field('TTL', o.ttl ?? 64, 255);
  b[9] = field('IP protocol', o.protocol, 255);
  b.set(ipv4(o.src), 12);
  b.set(ipv4(o.dst), 16);
  b.set(options, 20);
  put16(b, 10, o.checksum ?? internetChecksum(b.subarray(0, hlen)));
  b.set(payload, hlen);
  return b;
}

export interface Ipv6PacketOptions {
  src: Ipv6Input;
  dst: Ipv6Input;
  nextHeader: number;
  payload?: Uint8Array;
  /** Hop limit (default 64). */
  hopLimit?: number;
  /** Whole traffic class byte (default 0). */
  trafficClass?: number;
  /** DSCP, 0-63; replaces the upper six bits of `trafficClass`. */
  dscp?: number;
  flowLabel?: number;
  /** Raw override of the payload length field. */
  payloadLength?: number;
}

/** A fixed 40-byte IPv6 header plus payload (no extension headers added). */
export function ipv6Packet(o: Ipv6PacketOptions): Uint8Array {
  const payload = o.payload ?? EMPTY;
  const b = new Uint8Array(40 + payload.length);
  let tc = field('traffic class', o.trafficClass ?? 0, 255);
  if (o.dscp !== undefined) tc = (field('DSCP', o.dscp, 63) << 2) | (tc & 3);
  const flow = field('flow label', o.flowLabel ?? 0, 0xfffff);
  put32(b, 0, ((6 << 28) | (tc << 20) | flow) >>> 0);
  put16(b, 4, field('payload length', o.payloadLength ?? payload.length, 0xffff));
  b[6] = field('next header', o.nextHeader, 255);
  b[7] = field('hop limit', o.hopLimit ?? 64, 255);
  b.set(ipv6(o.src), 8);
  b.set(ipv6(o.dst), 24);
  b.set(payload, 40);
  return b;
}

// ---------------------------------------------------------------------------
// Layer 4

/** Addresses of the enclosing IP packet, for transport checksums. */
export interface PseudoHeader {
  src: IpInput;
  dst: IpInput;
}

/**
 * The pseudo header summed into TCP/UDP/ICMPv6 checksums: 12 bytes for IPv4
 * (RFC 793/768), 40 bytes for IPv6 (RFC 8200 section 8.1).
 */
export function pseudoHeader(ip: PseudoHeader, protocol: number, length: number): Uint8Array {
  const src = ipAddr(ip.src);
  const dst = ipAddr(ip.dst);
  if (src.length !== dst.length) {
    throw new NwfError(CODES.FRAME_INVALID, 'pseudo header mixes IPv4 and IPv6 addresses');
  }
  if (src.length === 4) {
    const b = new Uint8Array(12);
    b.set(src, 0);
    b.set(dst, 4);
    b[9] = protocol;
    put16(b, 10, length);
    return b;
  }
  const b = new Uint8Array(40);
  b.set(src, 0);
  b.set(dst, 16);
  put32(b, 32, length);
  b[39] = protocol;
  return b;
}

export interface UdpOptions {
  sport: number;
  dport: number;
  payload?: Uint8Array;
  /** Raw override (0 = "no checksum", legal over IPv4 only). */
  checksum?: number;
  /** Raw override of the length field. */
  length?: number;
}

/** A UDP datagram with its checksum over the IPv4/IPv6 pseudo header. */
export function udp(o: UdpOptions, ip: PseudoHeader): Uint8Array {
  const payload = o.payload ?? EMPTY;
  const b = new Uint8Array(8 + payload.length);
  put16(b, 0, field('UDP source port', o.sport, 0xffff));
  put16(b, 2, field('UDP destination port', o.dport, 0xffff));
  put16(b, 4, field('UDP length', o.length ?? b.length, 0xffff));
  b.set(payload, 8);
  let sum = o.checksum;
  if (sum === undefined) {
    sum = internetChecksum(pseudoHeader(ip, IpProto.UDP, b.length), b);
    // A computed 0 is sent as all ones; 0 means "no checksum" (RFC 768).
    if (sum === 0) sum = 0xffff;
  }
  put16(b, 6, sum);
  return b;
}

export interface TcpOptions {
  sport: number;
  dport: number;
  /** A flag byte or a list of flag names, e.g. `['SYN', 'ACK']`. */
  flags: number | readonly TcpFlagName[];
  seq?: number;
  ack?: number;
  /** Window (default 65535). */
  window?: number;
  urgent?: number;
  /** TCP option bytes, zero-padded to a multiple of 4, at most 40. */
  tcpOptions?: Uint8Array;
  payload?: Uint8Array;
  checksum?: number;
}

/** Flag byte from a number or a list of names. */
export function tcpFlags(flags: number | readonly TcpFlagName[]): number {
  if (typeof flags === 'number') return field('TCP flags', flags, 0xff);
  let v = 0;
  for (const f of flags) v |= TcpFlag[f];
  return v;
}

/** A TCP segment with its checksum over the IPv4/IPv6 pseudo header. */
export function tcp(o: TcpOptions, ip: PseudoHeader): Uint8Array {
  const options = pad4(o.tcpOptions ?? EMPTY);
  if (options.length > 40) {
    throw new NwfError(CODES.FRAME_INVALID, `TCP options of ${options.length} bytes exceed 40`);
  }
  const payload = o.payload ?? EMPTY;
  const hlen = 20 + options.length;
  const b = new Uint8Array(hlen + payload.length);
  put16(b, 0, field('TCP source port', o.sport, 0xffff));
  put16(b, 2, field('TCP destination port', o.dport, 0xffff));
  put32(b, 4, field('TCP seq', o.seq ?? 0, 0xffffffff));
  put32(b, 8, field('TCP ack', o.ack ?? 0, 0xffffffff));
  b[12] = (hlen / 4) << 4;
  b[13] = tcpFlags(o.flags);
  put16(b, 14, field('TCP window', o.window ?? 0xffff, 0xffff));
  put16(b, 18, field('TCP urgent pointer', o.urgent ?? 0, 0xffff));
  b.set(options, 20);
  b.set(payload, hlen);
  put16(b, 16, o.checksum ?? internetChecksum(pseudoHeader(ip, IpProto.TCP, b.length), b));
  return b;
}

export interface IcmpOptions {
  type: number;
  code?: number;
  /** Echo identifier / sequence: the 4 bytes after the checksum. */
  id?: number;
  seq?: number;
  /** The 4 "rest of header" bytes verbatim (overrides id/seq). */
  rest?: Uint8Array;
  payload?: Uint8Array;
  checksum?: number;
}

function icmpCommon(o: IcmpOptions): Uint8Array {
  const payload = o.payload ?? EMPTY;
  const b = new Uint8Array(8 + payload.length);
  b[0] = field('ICMP type', o.type, 255);
  b[1] = field('ICMP code', o.code ?? 0, 255);
  if (o.rest !== undefined) {
    if (o.rest.length !== 4) throw new NwfError(CODES.FRAME_INVALID, 'ICMP rest-of-header must be 4 bytes');
    b.set(o.rest, 4);
  } else {
    put16(b, 4, field('ICMP id', o.id ?? 0, 0xffff));
    put16(b, 6, field('ICMP sequence', o.seq ?? 0, 0xffff));
  }
  b.set(payload, 8);
  return b;
}

/** An ICMPv4 message; the checksum covers the message only. */
export function icmpv4(o: IcmpOptions): Uint8Array {
  const b = icmpCommon(o);
  put16(b, 2, o.checksum ?? internetChecksum(b));
  return b;
}

/** An ICMPv6 message; the checksum includes the IPv6 pseudo header. */
export function icmpv6(o: IcmpOptions, ip: { src: Ipv6Input; dst: Ipv6Input }): Uint8Array {
  const b = icmpCommon(o);
  const ph = pseudoHeader({ src: ipv6(ip.src), dst: ipv6(ip.dst) }, IpProto.ICMPV6, b.length);
  put16(b, 2, o.checksum ?? internetChecksum(ph, b));
  return b;
}

// ---------------------------------------------------------------------------
// ARP / RARP

export interface ArpOptions {
  /** Opcode: number or name (Request, Reply, Request_Reverse, ...). */
  op: number | ArpOpName;
  /** Sender hardware address. */
  sha: MacInput;
  /** Sender protocol address (default 0.0.0.0). */
  spa?: Ipv4Input;
  /** Target hardware address (default 00:00:00:00:00:00). */
  tha?: MacInput;
  /** Target protocol address (default 0.0.0.0). */
  tpa?: Ipv4Input;
  /** Hardware type (default 1, Ethernet). */
  htype?: number;
  /** Protocol type (default 0x0800, IPv4). */
  ptype?: number;
  /** Raw overrides of the address length bytes (default 6 and 4). */
  hlen?: number;
  plen?: number;
}

export function arpOpcode(op: number | ArpOpName): number {
  return typeof op === 'number' ? field('ARP opcode', op, 0xffff) : ArpOp[op];
}

/**
 * The 28-byte ARP body for Ethernet/IPv4; RARP uses the same layout under
 * EtherType 0x8035.
 */
export function arp(o: ArpOptions): Uint8Array {
  const b = new Uint8Array(28);
  put16(b, 0, field('ARP hardware type', o.htype ?? 1, 0xffff));
  put16(b, 2, field('ARP protocol type', o.ptype ?? EtherType.IPV4, 0xffff));
  b[4] = field('ARP hardware length', o.hlen ?? 6, 255);
  b[5] = field('ARP protocol length', o.plen ?? 4, 255);
  put16(b, 6, arpOpcode(o.op));
  b.set(mac(o.sha), 8);
  b.set(ipv4(o.spa ?? '0.0.0.0'), 14);
  b.set(mac(o.tha ?? '00:00:00:00:00:00'), 18);
  b.set(ipv4(o.tpa ?? '0.0.0.0'), 24);
  return b;
}

// ---------------------------------------------------------------------------
// STP

export interface BpduOptions {
  /** BPDU type: 0x00 configuration (default), 0x80 topology change notification. */
  type?: number;
  flags?: number;
  /** Root bridge id: 16-bit priority and MAC (default 0x8000, 00:..:00). */
  rootPriority?: number;
  rootAddress?: MacInput;
  rootCost?: number;
  /** Sending bridge id: 16-bit priority and MAC (default 0x8000, 00:..:00). */
  senderPriority?: number;
  senderAddress?: MacInput;
  /** Port id (default 0x8001). */
  port?: number;
  /** Timers in 1/256 s, as on the wire: defaults 0, 20 s, 2 s, 15 s. */
  age?: number;
  maxAge?: number;
  helloTime?: number;
  forwardDelay?: number;
}

/**
 * A spanning-tree BPDU (protocol id 0, version 0): 35 bytes for a
 * configuration BPDU, 4 bytes for a topology change notification.
 */
export function bpdu(o: BpduOptions = {}): Uint8Array {
  const type = field('BPDU type', o.type ?? 0, 255);
  if (type === 0x80) return Uint8Array.of(0, 0, 0, 0x80);
  const b = new Uint8Array(35);
  // bytes 0-1 protocol id, 2 version: all zero
  b[3] = type;
  b[4] = field('BPDU flags', o.flags ?? 0, 255);
  put16(b, 5, field('root priority', o.rootPriority ?? 0x8000, 0xffff));
  b.set(mac(o.rootAddress ?? '00:00:00:00:00:00'), 7);
  put32(b, 13, field('root path cost', o.rootCost ?? 0, 0xffffffff));
  put16(b, 17, field('sender priority', o.senderPriority ?? 0x8000, 0xffff));
  b.set(mac(o.senderAddress ?? '00:00:00:00:00:00'), 19);
  put16(b, 25, field('port id', o.port ?? 0x8001, 0xffff));
  put16(b, 27, field('message age', o.age ?? 0, 0xffff));
  put16(b, 29, field('max age', o.maxAge ?? 20 * 256, 0xffff));
  put16(b, 31, field('hello time', o.helloTime ?? 2 * 256, 0xffff));
  put16(b, 33, field('forward delay', o.forwardDelay ?? 15 * 256, 0xffff));
  return b;
}

export interface StpFrameOptions extends BpduOptions {
  /** Source MAC; also the default root and sender bridge address. */
  srcMac: MacInput;
  /** Destination (default 01:80:c2:00:00:00). */
  dstMac?: MacInput;
  vlan?: VlanTag | VlanTag[];
  pad?: boolean;
}

/** A whole STP frame: 802.3 length, LLC 42 42 03, then the BPDU. */
export function stpBpdu(o: StpFrameOptions): Uint8Array {
  const body = bpdu({ rootAddress: o.srcMac, senderAddress: o.srcMac, ...o });
  return ieee8023({
    dst: o.dstMac ?? STP_MAC,
    src: o.srcMac,
    payload: concat(Uint8Array.of(0x42, 0x42, 0x03), body),
    ...opt('vlan', o.vlan),
    ...opt('pad', o.pad),
  });
}

// ---------------------------------------------------------------------------
// Whole frames

export interface L2Options {
  srcMac: MacInput;
  dstMac: MacInput;
  vlan?: VlanTag | VlanTag[];
  /** Zero-pad to 60 bytes (default true). */
  pad?: boolean;
}

type Ipv4Extra = Omit<Ipv4PacketOptions, 'src' | 'dst' | 'protocol' | 'payload'>;
type Ipv6Extra = Omit<Ipv6PacketOptions, 'src' | 'dst' | 'nextHeader' | 'payload'>;

export interface Ipv4FrameOptions extends L2Options {
  srcIp: Ipv4Input;
  dstIp: Ipv4Input;
  /** Further IPv4 header fields (ttl, tos, id, fragments, options, ...). */
  ip?: Ipv4Extra;
}

export interface Ipv6FrameOptions extends L2Options {
  srcIp: Ipv6Input;
  dstIp: Ipv6Input;
  /** Further IPv6 header fields (hopLimit, trafficClass, flowLabel, ...). */
  ip?: Ipv6Extra;
}

function l2(o: L2Options, type: number, payload: Uint8Array): Uint8Array {
  return ether({ dst: o.dstMac, src: o.srcMac, type, payload, ...opt('vlan', o.vlan), ...opt('pad', o.pad) });
}

/** Ethernet + IPv4 with an arbitrary protocol and payload. */
export function ipv4Frame(o: Ipv4FrameOptions & { protocol: number; payload?: Uint8Array }): Uint8Array {
  const pkt = ipv4Packet({ ...o.ip, src: o.srcIp, dst: o.dstIp, protocol: o.protocol, payload: o.payload ?? EMPTY });
  return l2(o, EtherType.IPV4, pkt);
}

/** Ethernet + IPv6 with an arbitrary next header and payload. */
export function ipv6Frame(o: Ipv6FrameOptions & { nextHeader: number; payload?: Uint8Array }): Uint8Array {
  const pkt = ipv6Packet({ ...o.ip, src: o.srcIp, dst: o.dstIp, nextHeader: o.nextHeader, payload: o.payload ?? EMPTY });
  return l2(o, EtherType.IPV6, pkt);
}

const ph = (o: { srcIp: IpInput; dstIp: IpInput }): PseudoHeader => ({ src: o.srcIp, dst: o.dstIp });

/** Ethernet + IPv4 + UDP. */
export function udpFrame(o: Ipv4FrameOptions & UdpOptions): Uint8Array {
  return ipv4Frame({ ...o, protocol: IpProto.UDP, payload: udp(o, ph(o)) });
}

/** Ethernet + IPv4 + TCP. */
export function tcpFrame(o: Ipv4FrameOptions & TcpOptions): Uint8Array {
  return ipv4Frame({ ...o, protocol: IpProto.TCP, payload: tcp(o, ph(o)) });
}

/** Ethernet + IPv4 + ICMP. */
export function icmpFrame(o: Ipv4FrameOptions & IcmpOptions): Uint8Array {
  return ipv4Frame({ ...o, protocol: IpProto.ICMP, payload: icmpv4(o) });
}

/** Ethernet + IPv6 + UDP. */
export function ipv6UdpFrame(o: Ipv6FrameOptions & UdpOptions): Uint8Array {
  return ipv6Frame({ ...o, nextHeader: IpProto.UDP, payload: udp(o, ph(o)) });
}

/** Ethernet + IPv6 + TCP. */
export function ipv6TcpFrame(o: Ipv6FrameOptions & TcpOptions): Uint8Array {
  return ipv6Frame({ ...o, nextHeader: IpProto.TCP, payload: tcp(o, ph(o)) });
}

/** Ethernet + IPv6 + ICMPv6 (hop limit 255 by default, as NDP requires). */
export function icmpv6Frame(o: Ipv6FrameOptions & IcmpOptions): Uint8Array {
  const payload = icmpv6(o, { src: o.srcIp, dst: o.dstIp });
  return ipv6Frame({ ...o, ip: { hopLimit: 255, ...o.ip }, nextHeader: IpProto.ICMPV6, payload });
}

export type ArpFrameOptions = Omit<L2Options, 'dstMac'> &
  Partial<ArpOptions> & {
    /** Ethernet destination (default broadcast). */
    dstMac?: MacInput;
  };

function arpLike(o: ArpFrameOptions, type: number, defaultOp: ArpOpName): Uint8Array {
  const body = arp({ ...o, op: o.op ?? defaultOp, sha: o.sha ?? o.srcMac });
  return l2({ ...o, dstMac: o.dstMac ?? BROADCAST_MAC }, type, body);
}

/** Ethernet + ARP (EtherType 0x0806). Defaults: broadcast, Request, sha = srcMac. */
export function arpFrame(o: ArpFrameOptions): Uint8Array {
  return arpLike(o, EtherType.ARP, 'Request');
}

/** Ethernet + RARP (EtherType 0x8035). Defaults: broadcast, Request_Reverse, sha = srcMac. */
export function rarpFrame(o: ArpFrameOptions): Uint8Array {
  return arpLike(o, EtherType.RARP, 'Request_Reverse');
}

/**
 * The RARP frame QEMU broadcasts after migration to announce a guest MAC:
 * src MAC = sender = target hardware address = the guest MAC, both protocol
 * addresses 0.0.0.0, opcode Request_Reverse, to ff:ff:ff:ff:ff:ff.
 */
export function rarpAnnounceFrame(
  guestMac: MacInput,
  o: { vlan?: VlanTag | VlanTag[]; pad?: boolean } = {},
): Uint8Array {
  return rarpFrame({ ...o, srcMac: guestMac, sha: guestMac, tha: guestMac, op: 'Request_Reverse' });
}
