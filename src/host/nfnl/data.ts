// Set keys and map data as nf_tables stores them: each set key type has a
// fixed length and byte order (as nft's datatypes define them), a
// concatenation pads every part to a multiple of 4 bytes (one 32-bit
// register), and an interval in a concatenated set is sent as a first key and
// a last key (NFTA_SET_ELEM_KEY and NFTA_SET_ELEM_KEY_END).
import { isIPv4, isIPv6 } from 'node:net';
import type { Atom, MapDataType, PrefixValue, RangeValue, SetItem, SetKeyType } from '../../backends/nft/model.js';
import { IFNAMSIZ, NFT_DATA_VALUE_MAXLEN, NFT_REG32_SIZE } from './uapi.js';

/** A value the encoder cannot express (the caller falls back to libnftables) or that is malformed. */
export class NfnlEncodeError extends Error {
  /** True when the value is valid nft but this encoder does not handle it. */
  readonly unsupported: boolean;
  constructor(message: string, unsupported: boolean) {
    super(message);
    this.name = 'NfnlEncodeError';
    this.unsupported = unsupported;
  }
}

const bad = (what: string, v: unknown, expected: string): never => {
  throw new NfnlEncodeError(`${what}: ${JSON.stringify(v)} is not ${expected}`, false);
};
const unsupported = (what: string): never => {
  throw new NfnlEncodeError(what, true);
};

interface TypeInfo {
  /** Length in bytes (unpadded). */
  len: number;
  /** Writes the value at `at` in `out`. */
  encode(v: string | number, out: Buffer, at?: number): void;
}

function integer(v: string | number, max: number, names: Record<string, number>, what: string): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (/^0x[0-9a-f]+$/i.test(v)) n = parseInt(v.slice(2), 16);
  else if (/^[0-9]+$/.test(v)) n = parseInt(v, 10);
  else if (Object.hasOwn(names, v)) n = names[v] as number;
  else return unsupported(`${what} ${JSON.stringify(v)}: only numbers${Object.keys(names).length ? ` and ${Object.keys(names).join(', ')}` : ''} are encoded here`);
  if (!Number.isInteger(n) || n < 0 || n > max) bad(what, v, `an integer from 0 to ${max}`);
  return n;
}

const beInt = (len: 1 | 2, what: string, names: Record<string, number> = {}): TypeInfo => ({
  len,
  encode: (v, out, at = 0) => {
    const n = integer(v, len === 1 ? 0xff : 0xffff, names, what);
    if (len === 1) out.writeUInt8(n, at);
    else out.writeUInt16BE(n, at);
  },
});
const hostU32 = (what: string): TypeInfo => ({
  len: 4,
  encode: (v, out, at = 0) => out.writeUInt32LE(integer(v, 0xffffffff, {}, what), at),
});

function ipv4Bytes(s: string, out: Buffer, at = 0): void {
  if (!isIPv4(s)) bad('ipv4_addr', s, 'an IPv4 address');
  // four decimal numbers between dots (isIPv4 checked the form)
  let i = 0;
  let n = 0;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c === 0x2e) {
      out[at + i++] = n;
      n = 0;
    } else n = n * 10 + c - 0x30;
  }
  out[at + i] = n;
}

function ipv6Bytes(s: string, out: Buffer, at = 0): void {
  if (!isIPv6(s) || s.includes('%')) bad('ipv6_addr', s, 'an IPv6 address');
  let text = s;
  // a trailing dotted IPv4 part (::ffff:10.0.0.1) is the last two words
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (m) {
    const b = Buffer.alloc(4);
    ipv4Bytes(m[2] as string, b);
    text = `${m[1] as string}${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const halves = text.split('::');
  const words16 = (h: string | undefined): number[] => (h ? h.split(':').map((x) => parseInt(x, 16)) : []);
  const head = words16(halves[0]);
  const tail = words16(halves[1]);
  const words = halves.length === 2 ? [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail] : head;
  if (halves.length > 2 || words.length !== 8 || words.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffff)) bad('ipv6_addr', s, 'an IPv6 address');
  words.forEach((w, i) => out.writeUInt16BE(w, at + i * 2));
}

/** Types whose bytes compare like their values (big endian): a range must go up in them. */
const ORDERED = new Set<SetKeyType>(['ipv4_addr', 'ipv6_addr', 'ether_addr', 'ether_type', 'inet_service', 'inet_proto', 'arp_op', 'icmp_type', 'icmpv6_type', 'pkt_type']);

const TYPES: Record<SetKeyType, TypeInfo | undefined> = {
  ifname: {
    len: IFNAMSIZ,
    encode: (v, out, at = 0) => {
      if (typeof v !== 'string') return bad('ifname', v, 'an interface name');
      let ascii = true;
      for (let i = 0; i < v.length; i++) if (v.charCodeAt(i) > 0x7f) ascii = false;
      const n = ascii ? v.length : Buffer.byteLength(v, 'utf8');
      if (n === 0 || n >= IFNAMSIZ || v.includes('\0')) bad('ifname', v, `an interface name of 1 to ${IFNAMSIZ - 1} bytes`);
      if (v.endsWith('*')) unsupported(`interface name wildcard ${JSON.stringify(v)}`);
      if (ascii) for (let i = 0; i < v.length; i++) out[at + i] = v.charCodeAt(i);
      else out.write(v, at, 'utf8');
    },
  },
  ether_addr: {
    len: 6,
    encode: (v, out, at = 0) => {
      if (typeof v !== 'string' || !/^[0-9a-f]{1,2}(:[0-9a-f]{1,2}){5}$/i.test(v)) return bad('ether_addr', v, 'a MAC address like 52:54:00:12:34:56');
      if (v.length === 17) for (let i = 0; i < 6; i++) out[at + i] = parseInt(v.substring(i * 3, i * 3 + 2), 16);
      else v.split(':').forEach((h, i) => out.writeUInt8(parseInt(h, 16), at + i));
    },
  },
  ipv4_addr: { len: 4, encode: (v, out, at) => ipv4Bytes(String(v), out, at) },
  ipv6_addr: { len: 16, encode: (v, out, at) => ipv6Bytes(String(v), out, at) },
  ether_type: beInt(2, 'ether_type', { ip: 0x0800, arp: 0x0806, ip6: 0x86dd, vlan: 0x8100 }),
  inet_proto: beInt(1, 'inet_proto', { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 }),
  inet_service: beInt(2, 'inet_service', {}),
  arp_op: beInt(2, 'arp_op', { request: 1, reply: 2, rrequest: 3, rreply: 4 }),
  icmp_type: beInt(1, 'icmp_type', {}),
  icmpv6_type: beInt(1, 'icmpv6_type', {}),
  pkt_type: beInt(1, 'pkt_type', { host: 0, broadcast: 1, multicast: 2, other: 3 }),
  mark: hostU32('mark'),
  iface_index: hostU32('iface_index'),
  // a bitmask with names: left to libnftables
  ct_state: undefined,
};

function typeInfo(t: SetKeyType): TypeInfo {
  return TYPES[t] ?? unsupported(`set key type ${t}`);
}

const pad4 = (n: number): number => Math.ceil(n / NFT_REG32_SIZE) * NFT_REG32_SIZE;

/** Key length in bytes of a set of these types (padded parts when concatenated). */
export function keyLength(types: readonly SetKeyType[]): number {
  return types.length === 1 ? typeInfo(types[0] as SetKeyType).len : types.reduce((n, t) => n + pad4(typeInfo(t).len), 0);
}

function atomText(a: Atom): string | number {
  return a.value;
}

/** First and last value of one part: a value, a prefix (addresses) or a range. */
function partBounds(t: SetKeyType, item: Atom | PrefixValue | RangeValue, interval: boolean): [Buffer, Buffer] {
  const info = typeInfo(t);
  const lo = Buffer.alloc(info.len);
  const hi = Buffer.alloc(info.len);
  switch (item.kind) {
    case 'number':
    case 'string':
    case 'symbol':
      info.encode(atomText(item), lo);
      lo.copy(hi);
      return [lo, hi];
    case 'prefix': {
      if (!interval) bad(`${t} in a set without the interval flag`, `${item.addr}/${item.len}`, 'a single value');
      if (t !== 'ipv4_addr' && t !== 'ipv6_addr') bad(t, `${item.addr}/${item.len}`, 'a value (prefixes are for addresses)');
      info.encode(item.addr, lo);
      const bits = info.len * 8;
      if (!Number.isInteger(item.len) || item.len < 0 || item.len > bits) bad('prefix length', item.len, `0 to ${bits}`);
      for (let i = 0; i < info.len; i++) {
        const keep = Math.max(0, Math.min(8, item.len - i * 8));
        const mask = (0xff << (8 - keep)) & 0xff;
        lo[i] = (lo[i] as number) & mask;
        hi[i] = (lo[i] as number) | (~mask & 0xff);
      }
      return [lo, hi];
    }
    case 'range':
      if (!interval) bad(`${t} in a set without the interval flag`, item, 'a single value');
      info.encode(atomText(item.from), lo);
      info.encode(atomText(item.to), hi);
      if (ORDERED.has(t) && Buffer.compare(lo, hi) > 0) bad(`${t} range`, item, 'a range from low to high');
      if (!ORDERED.has(t)) unsupported(`a range of ${t}`);
      return [lo, hi];
    default:
      return bad('set key part', item, 'a value, prefix or range');
  }
}

export interface EncodedKey {
  key: Buffer;
  /** The last key of an interval (concatenated interval sets only). */
  keyEnd?: Buffer;
}

/**
 * The key bytes of one element of a set whose key has `types`: a single value,
 * or a concatenation (`tuple`) with one part per type. `interval`: the set has
 * the interval flag (then a concatenated key carries its last key too).
 */
export function encodeKey(types: readonly SetKeyType[], item: SetItem, interval: boolean): EncodedKey {
  if (item.kind === 'elem') return unsupported('set elements with comments');
  if (types.length === 0) return bad('set key type', types, 'at least one type');
  if (types.length === 1) {
    if (interval) return unsupported('an interval set with a single (not concatenated) key type');
    if (item.kind === 'tuple') return bad(`${types[0]} key`, item, 'a single value');
    if (item.kind === 'number' || item.kind === 'string' || item.kind === 'symbol') {
      // a value: encoded in place (the common case, no bounds)
      const info = typeInfo(types[0] as SetKeyType);
      const key = Buffer.alloc(info.len);
      info.encode(atomText(item), key);
      return { key };
    }
    return { key: partBounds(types[0] as SetKeyType, item, false)[0] };
  }
  if (item.kind !== 'tuple' || item.items.length !== types.length) return bad(`key of type ${types.join(' . ')}`, item, `a concatenation of ${types.length} values`);
  const key = Buffer.alloc(keyLength(types));
  const keyEnd = interval ? Buffer.alloc(key.length) : undefined;
  let at = 0;
  types.forEach((t, i) => {
    const part = item.items[i] as Atom | PrefixValue | RangeValue;
    if (!interval && (part.kind === 'number' || part.kind === 'string' || part.kind === 'symbol')) {
      // a value in a set without intervals: encoded in place
      const info = typeInfo(t);
      info.encode(atomText(part), key, at);
      at += pad4(info.len);
      return;
    }
    const [lo, hi] = partBounds(t, part, interval);
    lo.copy(key, at);
    if (keyEnd) hi.copy(keyEnd, at);
    else if (!lo.equals(hi)) bad(`${t} in a set without the interval flag`, item.items[i], 'a single value');
    at += pad4(typeInfo(t).len);
  });
  if (key.length > NFT_DATA_VALUE_MAXLEN) bad('key', types.join(' . '), `at most ${NFT_DATA_VALUE_MAXLEN} bytes`);
  return keyEnd ? { key, keyEnd } : { key };
}

/**
 * Writes the key of a set without intervals at `at` in `out` (zeroed), when
 * the element is a value or a concatenation of values (what ports' elements
 * are); returns false, having written nothing, for anything else (then
 * encodeKey has it).
 */
export function encodeKeyInto(types: readonly SetKeyType[], item: SetItem, out: Buffer, at: number): boolean {
  const atom = (x: SetItem): x is Atom => x.kind === 'number' || x.kind === 'string' || x.kind === 'symbol';
  if (types.length === 1) {
    if (!atom(item)) return false;
    typeInfo(types[0] as SetKeyType).encode(atomText(item), out, at);
    return true;
  }
  if (item.kind !== 'tuple' || item.items.length !== types.length || !item.items.every(atom)) return false;
  let o = at;
  for (let i = 0; i < types.length; i++) {
    const info = typeInfo(types[i] as SetKeyType);
    info.encode(atomText(item.items[i] as Atom), out, o);
    o += pad4(info.len);
  }
  return true;
}

/** Map data of a value map (`map: mark`, `map: ipv4_addr`, ...). */
export function encodeValue(type: Exclude<MapDataType, 'counter'>, a: Atom): Buffer {
  const info = typeInfo(type);
  const out = Buffer.alloc(info.len);
  info.encode(atomText(a), out);
  return out;
}
