// A small interpreter of the typed nft model (src/backends/nft/model.ts) for
// the bridge table nwf-fast emits: a frame goes through the prerouting and
// postrouting base chains the way nft_do_chain runs them (rules in order, a
// failed match or an unreadable field ends the rule, jump/goto/return,
// verdict maps, set lookups, counting sets). It is the unit-level check of
// the optimizer: the same frame through the program with and without the
// passes must end with the same verdict and the same counters.
//
// What it models of the kernel (Linux 6.x bridge family):
// - a VLAN-tagged frame has its tag in metadata: link-layer loads read the
//   frame as sent (`ether type` 0x8100), the network header starts after the
//   tag, `meta length` counts from the network header;
// - the transport header exists only for IPv4/IPv6 whose header validates
//   (nft_set_pktinfo_ipv4/ipv6_validate) and, for IPv4, not for a fragment
//   other than the first; `meta l4proto` likewise;
// - a payload load beyond the frame ends the rule (NFT_BREAK), also for `!=`.
// Only the bridge table runs: the L3 tables (br_netfilter) are not the
// optimizer's and are not modelled; a mark statement is recorded with the
// counters (`set meta mark ...`), so a pass that skipped the L3 mark of a
// frame shows as a difference.
import type {
  Atom,
  MapObject,
  MatchStatement,
  NftBatch,
  PrefixValue,
  RangeValue,
  RuleObject,
  Selector,
  SetItem,
  SetObject,
  Statement,
  Value,
  Verdict,
} from '../../src/backends/nft/model.js';
import { macToBytes, parseIPv4, parseIPv6 } from '../../src/ir/values.js';

type Part = { s: string } | { b: Uint8Array };
type Key = Part[];

interface Packet {
  ll: Uint8Array;
  nh: Uint8Array;
  /** Offset of the transport header in nh, when there is one. */
  th?: number;
  l4proto?: number;
  meta: Record<string, string>;
}

const PAYLOAD: Record<string, Record<string, [base: 'll' | 'nh' | 'th', offsetBits: number, lenBits: number]>> = {
  ether: { daddr: ['ll', 0, 48], saddr: ['ll', 48, 48], type: ['ll', 96, 16] },
  vlan: { id: ['ll', 116, 12], pcp: ['ll', 112, 3], type: ['ll', 128, 16] },
  arp: {
    htype: ['nh', 0, 16],
    ptype: ['nh', 16, 16],
    hlen: ['nh', 32, 8],
    plen: ['nh', 40, 8],
    operation: ['nh', 48, 16],
    'saddr ether': ['nh', 64, 48],
    'saddr ip': ['nh', 112, 32],
    'daddr ether': ['nh', 144, 48],
    'daddr ip': ['nh', 192, 32],
  },
  ip: { version: ['nh', 0, 4], hdrlength: ['nh', 4, 4], dscp: ['nh', 8, 6], length: ['nh', 16, 16], id: ['nh', 32, 16], 'frag-off': ['nh', 48, 16], ttl: ['nh', 64, 8], protocol: ['nh', 72, 8], saddr: ['nh', 96, 32], daddr: ['nh', 128, 32] },
  ip6: { nexthdr: ['nh', 48, 8], hoplimit: ['nh', 56, 8], saddr: ['nh', 64, 128], daddr: ['nh', 192, 128] },
  tcp: { sport: ['th', 0, 16], dport: ['th', 16, 16], flags: ['th', 104, 8] },
  udp: { sport: ['th', 0, 16], dport: ['th', 16, 16] },
  icmp: { type: ['th', 0, 8], code: ['th', 8, 8] },
  icmpv6: { type: ['th', 0, 8], code: ['th', 8, 8] },
};

class Break extends Error {}

/** Bits [off, off+len) of a buffer as a big-endian byte string of ceil(len/8) bytes (nft loads whole bytes and masks). */
function bits(buf: Uint8Array, off: number, len: number): Uint8Array {
  const firstByte = Math.floor(off / 8);
  const lastByte = Math.floor((off + len - 1) / 8);
  if (lastByte >= buf.length) throw new Break();
  if (off % 8 === 0 && len % 8 === 0) return buf.slice(firstByte, lastByte + 1);
  let v = 0n;
  for (let i = firstByte; i <= lastByte; i++) v = (v << 8n) | BigInt(buf[i] as number);
  const total = (lastByte - firstByte + 1) * 8;
  v = (v >> BigInt(total - (off % 8) - len)) & ((1n << BigInt(len)) - 1n);
  return numBytes(v, Math.ceil(len / 8));
}

function numBytes(v: bigint | number, n: number): Uint8Array {
  let x = BigInt(v);
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** A constant as bytes of the width of what it is compared with. */
function atomBytes(a: Atom, width: number): Uint8Array {
  if (a.kind === 'number') return numBytes(a.value, width);
  if (a.kind === 'string') throw new Error(`string ${a.value} compared with bytes`);
  const v = a.value;
  if (/^[0-9a-f]{1,2}(:[0-9a-f]{1,2}){5}$/i.test(v)) return macToBytes(v);
  const v4 = parseIPv4(v);
  if (v4 !== undefined) return numBytes(v4, 4);
  if (v.includes(':')) {
    const v6 = parseIPv6(v);
    if (v6) return v6;
  }
  const named: Record<string, number> = { ip: 0x800, arp: 0x806, ip6: 0x86dd, vlan: 0x8100, broadcast: 1, multicast: 2 };
  if (v in named) return numBytes(named[v] as number, width);
  throw new Error(`unknown symbol ${v}`);
}

function prefixMatch(x: Uint8Array, p: PrefixValue): boolean {
  const a = atomBytes({ kind: 'symbol', value: p.addr }, x.length);
  for (let i = 0; i < x.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, p.len - i * 8));
    const mask = bitsHere === 0 ? 0 : (0xff << (8 - bitsHere)) & 0xff;
    if (((x[i] as number) & mask) !== ((a[i] as number) & mask)) return false;
  }
  return true;
}

function partMatches(x: Part, item: Atom | PrefixValue | RangeValue): boolean {
  if ('s' in x) {
    if (item.kind !== 'string') return false;
    return item.value.endsWith('*') ? x.s.startsWith(item.value.slice(0, -1)) : x.s === item.value;
  }
  if (item.kind === 'prefix') return prefixMatch(x.b, item);
  if (item.kind === 'range') return cmpBytes(x.b, atomBytes(item.from, x.b.length)) >= 0 && cmpBytes(x.b, atomBytes(item.to, x.b.length)) <= 0;
  return cmpBytes(x.b, atomBytes(item, x.b.length)) === 0;
}

function itemMatches(key: Key, item: SetItem): boolean {
  const v = item.kind === 'elem' ? item.value : item;
  if (v.kind === 'tuple') return v.items.length === key.length && v.items.every((it, i) => partMatches(key[i] as Part, it));
  return key.length === 1 && partMatches(key[0] as Part, v);
}

export interface Outcome {
  verdict: 'accept' | 'drop';
  /** Counters that counted the frame, in order: `set NAME ELEMENT` (counting sets) or `counter NAME`; and marks set (`set meta mark VALUE`). */
  counted: string[];
  /** Rules evaluated (a cost measure, like the prototype's walk). */
  rules: number;
}

/** A loaded bridge table: its chains, sets and maps with their elements. */
export class BridgeTable {
  private readonly chains = new Map<string, RuleObject[]>();
  private readonly sets = new Map<string, { obj: SetObject | MapObject; items: SetItem[]; data: (Verdict | Atom | undefined)[] }>();

  constructor(batch: NftBatch, table = 'nwf_fast') {
    for (const c of batch) {
      if (c.op !== 'add' && c.op !== 'create') continue;
      const o = c.object;
      if (o.family !== 'bridge' || ('table' in o ? o.table : o.name) !== table) continue;
      if (o.kind === 'chain') this.chains.set(o.name, this.chains.get(o.name) ?? []);
      else if (o.kind === 'rule') this.chains.get(o.chain)?.push(o) ?? this.chains.set(o.chain, [o]);
      else if (o.kind === 'set' || o.kind === 'map') {
        const s = { obj: o, items: [] as SetItem[], data: [] as (Verdict | Atom | undefined)[] };
        this.sets.set(o.name, s);
        for (const e of o.elements ?? []) this.addElement(o.name, e);
      } else if (o.kind === 'element') for (const e of o.elements) this.addElement(o.name, e);
    }
  }

  private addElement(name: string, e: SetItem | readonly [SetItem, Atom | Verdict]): void {
    const s = this.sets.get(name);
    if (!s) throw new Error(`element of unknown set ${name}`);
    if (Array.isArray(e)) {
      s.items.push(e[0] as SetItem);
      s.data.push(e[1] as Verdict | Atom);
    } else {
      s.items.push(e as SetItem);
      s.data.push(undefined);
    }
  }

  chainNames(): string[] {
    return [...this.chains.keys()];
  }

  /** A frame through one bridge hook. */
  run(hook: 'pre' | 'post', frame: Uint8Array, ports: { iif: string; oif: string; bridge?: string }): Outcome {
    const pkt = parse(frame, { iifname: ports.iif, oifname: ports.oif, ibrname: ports.bridge ?? 'br0', obrname: ports.bridge ?? 'br0' });
    const out: Outcome = { verdict: 'accept', counted: [], rules: 0 };
    const stack: { chain: string; next: number }[] = [];
    let chain: string = hook;
    let i = 0;
    for (let steps = 0; steps < 100_000; steps++) {
      const rules = this.chains.get(chain);
      if (!rules) throw new Error(`no chain ${chain}`);
      const r = rules[i];
      if (!r) {
        // end of chain: implicit return, or the base chain's policy (accept)
        const back = stack.pop();
        if (!back) return out;
        chain = back.chain;
        i = back.next;
        continue;
      }
      out.rules++;
      const v = this.rule(r, pkt, out);
      i++;
      if (!v || v.kind === 'continue') continue;
      switch (v.kind) {
        case 'accept':
          out.verdict = 'accept';
          return out;
        case 'drop':
          out.verdict = 'drop';
          return out;
        case 'jump':
          if (stack.length >= 16) throw new Error('jump stack overflow');
          stack.push({ chain, next: i });
          chain = v.target;
          i = 0;
          continue;
        case 'goto':
          chain = v.target;
          i = 0;
          continue;
        case 'return': {
          const back = stack.pop();
          if (!back) return out;
          chain = back.chain;
          i = back.next;
          continue;
        }
      }
    }
    throw new Error('too many steps');
  }

  /** One rule: its verdict, or undefined when a match fails or a field is unreadable. */
  private rule(r: RuleObject, pkt: Packet, out: Outcome): Verdict | undefined {
    const counted: string[] = [];
    try {
      for (const s of r.statements) {
        const v = this.statement(s, pkt, counted);
        if (v === false) return undefined;
        if (v !== true) {
          out.counted.push(...counted);
          return v;
        }
      }
    } catch (e) {
      if (e instanceof Break) return undefined;
      throw e;
    }
    out.counted.push(...counted);
    return undefined;
  }

  private statement(s: Statement, pkt: Packet, counted: string[]): boolean | Verdict {
    switch (s.kind) {
      case 'match':
        return this.match(s, pkt, counted);
      case 'counter':
        return true;
      case 'counter-ref':
        counted.push(`counter ${s.name}`);
        return true;
      case 'mangle':
        counted.push(`set ${s.key.kind} ${s.key.key} ${JSON.stringify(s.value)}`);
        return true;
      case 'set-update': // learning: the packet path adds to a set (both programs learn alike)
        return true;
      case 'vmap': {
        const key = this.key(s.key, pkt);
        if (s.data.kind !== 'setref') {
          const hit = s.data.entries.find(([item]) => itemMatches(key, item));
          return hit ? hit[1] : false;
        }
        const m = this.sets.get(s.data.name);
        if (!m) throw new Error(`no map ${s.data.name}`);
        const idx = m.items.findIndex((item) => itemMatches(key, item));
        return idx < 0 ? false : (m.data[idx] as Verdict);
      }
      case 'accept':
      case 'drop':
      case 'continue':
      case 'return':
      case 'jump':
      case 'goto':
        return s;
      default:
        throw new Error(`statement ${s.kind} not modelled`);
    }
  }

  private match(s: MatchStatement, pkt: Packet, counted: string[]): boolean {
    const key = this.key(s.left, pkt);
    const r: Value = s.right;
    if (r.kind === 'setref') {
      const set = this.sets.get(r.name);
      if (!set) throw new Error(`no set ${r.name}`);
      const idx = set.items.findIndex((item) => itemMatches(key, item));
      if (idx >= 0 && set.obj.counter) counted.push(`set ${r.name} ${JSON.stringify(set.items[idx])}`);
      return s.op === '!=' ? idx < 0 : idx >= 0;
    }
    if (r.kind === 'set') {
      const hit = r.items.some((item) => itemMatches(key, item));
      return s.op === '!=' ? !hit : hit;
    }
    if (r.kind === 'flags') throw new Error('flags not modelled');
    if (r.kind === 'tuple') return itemMatches(key, r) === (s.op !== '!=');
    const x = key[0] as Part;
    if (key.length !== 1) throw new Error('concat compared with a scalar');
    if ('s' in x) {
      const hit = partMatches(x, r as Atom);
      return s.op === '!=' ? !hit : hit;
    }
    if (r.kind === 'prefix' || r.kind === 'range') {
      const hit = partMatches(x, r);
      return s.op === '!=' ? !hit : hit;
    }
    const c = cmpBytes(x.b, atomBytes(r, x.b.length));
    switch (s.op) {
      case '==':
      case 'in':
        return c === 0;
      case '!=':
        return c !== 0;
      case '<':
        return c < 0;
      case '>':
        return c > 0;
      case '<=':
        return c <= 0;
      case '>=':
        return c >= 0;
    }
  }

  private key(sel: Selector, pkt: Packet): Key {
    if (sel.kind === 'concat') return sel.items.flatMap((x) => this.key(x, pkt));
    return [part(sel, pkt)];
  }
}

function part(sel: Selector, pkt: Packet): Part {
  switch (sel.kind) {
    case 'payload': {
      const f = PAYLOAD[sel.protocol]?.[sel.field];
      if (!f) throw new Error(`payload ${sel.protocol} ${sel.field} not modelled`);
      return { b: load(pkt, f[0], f[1], f[2]) };
    }
    case 'raw-payload':
      return { b: load(pkt, sel.base, sel.offset, sel.len) };
    case 'meta': {
      if (sel.key === 'length') return { b: numBytes(pkt.nh.length, 4) };
      if (sel.key === 'l4proto') {
        if (pkt.l4proto === undefined) throw new Break();
        return { b: numBytes(pkt.l4proto, 1) };
      }
      const v = pkt.meta[sel.key];
      if (v === undefined) throw new Error(`meta ${sel.key} not modelled`);
      return { s: v };
    }
    case 'binop': {
      const x = part(sel.left, pkt);
      if ('s' in x || sel.op !== '&' || sel.right.kind === 'flags') throw new Error('binop not modelled');
      const m = atomBytes(sel.right, x.b.length);
      return { b: x.b.map((b, i) => b & (m[i] as number)) };
    }
    default:
      throw new Error(`selector ${sel.kind} not modelled`);
  }
}

function load(pkt: Packet, base: 'll' | 'nh' | 'th', off: number, len: number): Uint8Array {
  if (base === 'll') return bits(pkt.ll, off, len);
  if (base === 'nh') return bits(pkt.nh, off, len);
  if (pkt.th === undefined) throw new Break();
  return bits(pkt.nh.subarray(pkt.th), off, len);
}

/** The packet as the bridge family's hooks see it. */
function parse(frame: Uint8Array, meta: Record<string, string>): Packet {
  if (frame.length < 14) throw new Error('runt frames never reach the bridge hooks');
  const tagged = frame[12] === 0x81 && frame[13] === 0x00 && frame.length >= 18;
  const nhStart = tagged ? 18 : 14;
  const proto = ((frame[nhStart - 2] as number) << 8) | (frame[nhStart - 1] as number);
  const nh = frame.subarray(nhStart);
  const pkt: Packet = { ll: frame, nh, meta };
  if (proto === 0x0800 && nh.length >= 20) {
    const ihl = ((nh[0] as number) & 0x0f) * 4;
    const version = (nh[0] as number) >> 4;
    const total = ((nh[2] as number) << 8) | (nh[3] as number);
    if (ihl >= 20 && version === 4 && nh.length >= total && total >= ihl) {
      const fragoff = (((nh[6] as number) << 8) | (nh[7] as number)) & 0x1fff;
      pkt.l4proto = nh[9] as number;
      if (fragoff === 0) pkt.th = ihl;
    }
  } else if (proto === 0x86dd && nh.length >= 40 && (nh[0] as number) >> 4 === 6) {
    const plen = ((nh[4] as number) << 8) | (nh[5] as number);
    if (plen + 40 <= nh.length) {
      // skip extension headers (hop-by-hop, routing, destination options, fragment)
      let next = nh[6] as number;
      let off = 40;
      let ok = true;
      for (let n = 0; n < 8 && [0, 43, 60, 44].includes(next); n++) {
        if (off + 8 > nh.length) {
          ok = false;
          break;
        }
        const len = next === 44 ? 8 : ((nh[off + 1] as number) + 1) * 8;
        if (next === 44 && ((((nh[off + 2] as number) << 8) | (nh[off + 3] as number)) & 0xfff8) !== 0) {
          // a later fragment: nft sees the fragment header's next header but no transport header
          next = nh[off] as number;
          ok = false;
          pkt.l4proto = next;
          break;
        }
        next = nh[off] as number;
        off += len;
      }
      if (ok) {
        pkt.l4proto = next;
        pkt.th = off;
      }
    }
  }
  return pkt;
}
