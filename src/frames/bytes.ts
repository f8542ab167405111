// Byte-level helpers for frames: address parsers, hex conversion,
// concatenation and the Internet (ones' complement) checksum.
//
// Everything here is pure and allocation-light; it is used by unit tests, the
// demo and the benchmarks, and by the CLI to read frames given on the command
// line, so malformed input raises an NwfError rather than a bare Error.

import { CODES, NwfError } from '../util/errors.js';
import { parseIPv6 } from '../ir/values.js';

/** An address given either as text or as already-encoded bytes. */
export type MacInput = string | Uint8Array;
export type Ipv4Input = string | Uint8Array;
export type Ipv6Input = string | Uint8Array;
/** An IPv4 or IPv6 address; text containing ':' is read as IPv6. */
export type IpInput = string | Uint8Array;

function invalid(what: string, value: string, expected: string): never {
  throw new NwfError(CODES.VALUE_INVALID, `invalid ${what} '${value}'`, { expected });
}

function checkLength(b: Uint8Array, n: number, what: string): Uint8Array {
  if (b.length !== n) {
    throw new NwfError(CODES.VALUE_INVALID, `${what} must be ${n} bytes, got ${b.length}`);
  }
  return b;
}

const MAC_GROUP = /^[0-9a-fA-F]{1,2}$/;

/**
 * Parse a MAC address: six groups of one or two hex digits separated by ':'
 * or '-' (`52:54:00:12:34:56`, `52-54-00-12-34-56`). Bytes are passed through
 * after a length check.
 */
export function mac(s: MacInput): Uint8Array {
  if (typeof s !== 'string') return checkLength(s, 6, 'a MAC address');
  const groups = s.trim().split(/[:-]/);
  if (groups.length !== 6 || !groups.every((g) => MAC_GROUP.test(g))) {
    invalid('MAC address', s, 'a MAC address like 52:54:00:12:34:56');
  }
  return Uint8Array.from(groups, (g) => parseInt(g, 16));
}

/** Parse a dotted-quad IPv4 address (`192.0.2.1`). */
export function ipv4(s: Ipv4Input): Uint8Array {
  if (typeof s !== 'string') return checkLength(s, 4, 'an IPv4 address');
  const out = parseIpv4Text(s.trim());
  if (!out) invalid('IPv4 address', s, 'an IPv4 address like 192.0.2.1');
  return out;
}

function parseIpv4Text(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^[0-9]{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    out[i] = v;
  }
  return out;
}

/**
 * Parse an IPv6 address in any RFC 4291 text form: full, `::`-compressed, or
 * with a trailing dotted-quad IPv4 part (`::ffff:192.0.2.1`). Zone ids
 * (`%eth0`) are not accepted.
 */
export function ipv6(s: Ipv6Input): Uint8Array {
  if (typeof s !== 'string') return checkLength(s, 16, 'an IPv6 address');
  const out = parseIpv6Text(s.trim());
  if (!out) invalid('IPv6 address', s, 'an IPv6 address like 2001:db8::1');
  return out;
}

function parseIpv6Text(s: string): Uint8Array | undefined {
  return parseIPv6(s);
}

/** Parse an IPv4 or IPv6 address (4 or 16 bytes); text with ':' is IPv6. */
export function ipAddr(s: IpInput): Uint8Array {
  if (typeof s !== 'string') {
    if (s.length !== 4 && s.length !== 16) {
      throw new NwfError(CODES.VALUE_INVALID, `an IP address must be 4 or 16 bytes, got ${s.length}`);
    }
    return s;
  }
  return s.includes(':') ? ipv6(s) : ipv4(s);
}

/** Format 6 bytes as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(b: Uint8Array): string {
  return toHex(checkLength(b, 6, 'a MAC address'), ':');
}

/** Format 4 bytes as a dotted quad. */
export function formatIpv4(b: Uint8Array): string {
  return Array.from(checkLength(b, 4, 'an IPv4 address')).join('.');
}

/** Lower-case hex, bytes joined by `sep` (default: none). */
export function toHex(b: Uint8Array, sep = ''): string {
  let s = '';
  for (let i = 0; i < b.length; i++) {
    if (i > 0) s += sep;
    s += b[i]!.toString(16).padStart(2, '0');
  }
  return s;
}

/**
 * Parse hex text into bytes. Whitespace, ':', '-' and '.' between digits are
 * ignored, as is one leading `0x`. The digit count must be even.
 */
export function fromHex(s: string): Uint8Array {
  let t = s.trim();
  if (/^0x/i.test(t)) t = t.slice(2);
  t = t.replace(/[\s:.-]/g, '');
  if (!/^[0-9a-fA-F]*$/.test(t) || t.length % 2 !== 0) {
    throw new NwfError(CODES.FRAME_INVALID, 'invalid hex bytes', {
      expected: 'an even number of hex digits, optionally separated by spaces or colons',
    });
  }
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Concatenate byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Big-endian 16-bit value as 2 bytes. */
export function u16(v: number): Uint8Array {
  return Uint8Array.of((v >> 8) & 0xff, v & 0xff);
}

/** Big-endian 32-bit value as 4 bytes. */
export function u32(v: number): Uint8Array {
  return Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

/**
 * The 16-bit ones' complement sum of the concatenation of `parts` (RFC 1071),
 * folded but not complemented. An odd total length is padded with one zero
 * byte at the very end; odd-length parts in the middle are handled as if the
 * parts had been concatenated first.
 */
export function onesComplementSum(...parts: Uint8Array[]): number {
  let sum = 0;
  let odd = false; // whether the previous part left a dangling high byte
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) {
      sum += odd ? p[i]! : p[i]! << 8;
      odd = !odd;
    }
    // Fold regularly so the sum stays a small integer.
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The Internet checksum of the concatenation of `parts`: ~sum, 16 bits. */
export function internetChecksum(...parts: Uint8Array[]): number {
  return ~onesComplementSum(...parts) & 0xffff;
}
