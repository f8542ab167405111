// Frame decoding for the reference evaluator: a bounds-checked view of the
// bytes, the Ethernet header as ebtables sees it, IPv6 extension headers as
// the kernel skips them, the header checks br_netfilter makes before
// iptables, and the L3 packet the iptables rules look at.
import { ETHERTYPES } from '../values.js';

/** A view of the frame from some offset; reads past the end return undefined. */
export class View {
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
export interface Frame {
  raw: Uint8Array;
  dst: Uint8Array;
  src: Uint8Array;
  /** ebtables' protocol: the EtherType field (0x8100 for a tagged frame), or the 802.3 length. */
  proto: number;
  /** The network header (right after the 14-byte Ethernet header). */
  net: View;
}

export function decodeFrame(raw: Uint8Array): Frame | undefined {
  if (raw.length < 14) return undefined;
  return { raw, dst: raw.subarray(0, 6), src: raw.subarray(6, 12), proto: ((raw[12] as number) << 8) | (raw[13] as number), net: new View(raw, 14) };
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

export function ipv4HeaderOk(n: View): boolean {
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

export function ipv6HeaderOk(n: View): boolean {
  if (!n.has(0, 40)) return false;
  if ((n.u8(0) as number) >> 4 !== 6) return false;
  return (n.u16(4) as number) + 40 <= n.length;
}

export interface L3Packet {
  family: 'ipv4' | 'ipv6';
  src: Uint8Array;
  dst: Uint8Array;
  /** Upper-layer protocol (after IPv6 extension headers). */
  protocol: number;
  dscp: number;
  /** Upper-layer header, when present (first fragment only). */
  l4?: View;
}

export function l3Packet(f: Frame): L3Packet | undefined {
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

export function isFragment(f: Frame): boolean {
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
