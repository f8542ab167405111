// Primitive comparisons shared by the ebtables and iptables matches: masked
// MAC and prefix equality, ranges, and the `!` inversion.
import type { IpRangeTest, IpTest, MacTest, RangeTest } from '../types.js';
import { macToBytes, parseIPv4, parseIPv6 } from '../values.js';

/** Applies an ebtables/iptables inversion: `!` flips the comparison result. */
export const inv = (neg: boolean, ok: boolean): boolean => (neg ? !ok : ok);

export function macEq(actual: Uint8Array, t: MacTest): boolean {
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

export function prefixEq(actual: Uint8Array, t: IpTest): boolean {
  const want = ipBytes(t);
  for (let bit = 0; bit < t.prefix; bit++) {
    const byte = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if (((actual[byte] as number) & m) !== ((want[byte] as number) & m)) return false;
  }
  return true;
}

export function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

export function inIpRange(actual: Uint8Array, r: IpRangeTest): boolean {
  const from = ipBytes({ family: r.family, addr: r.from });
  const to = ipBytes({ family: r.family, addr: r.to });
  return cmpBytes(actual, from) >= 0 && cmpBytes(actual, to) <= 0;
}

export const inRange = (v: number, r: RangeTest): boolean => v >= r.lo && v <= r.hi;
