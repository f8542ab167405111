// NFT_MSG_NEWRULE for the rules a port adds to a shape it joins (its small
// per-interface chains: a RARP announce rule testing its own MAC, and the
// like) and for the rules of a shape a port brings (lookups of the shape's
// sets). Those rules compare packet fields with constants or look them up
// in named sets, and end in a verdict, so a small encoder covers them:
//   - `field == | != constant` where the field is an Ethernet, ARP, IPv4 or
//     IPv6 header field on whole bytes (`ether saddr`, `ip saddr`, `arp
//     saddr ip`, ...) or raw bytes (`@ll|nh|th,OFFSET,LEN` on whole bytes):
//     a payload load and a compare of the bytes as they are in the frame;
//     an address field against a prefix: the prefix's whole bytes compared
//     (a load of fewer bytes), or a mask first when it ends within a byte,
//     as nft does (a field of the network layer only after the rule's
//     EtherType test, which nft would otherwise add);
//   - `field & mask == | != constant` on such a field: a load, a mask, a
//     compare;
//   - `meta length OP n` (any comparison): a load, the byte order swap nft
//     inserts (`hton`), a compare; `meta l4proto | protocol == | != n`;
//   - `selector == | != @set` and `selector vmap @map` where the selector
//     is one of those fields, `meta iifname | oifname`, or a concatenation
//     of them: the loads into consecutive registers (numbered as nft
//     numbers them) and a lookup (into the verdict register for a vmap);
//   - `meta mark set N` and `meta mark set meta mark & A | B` (a port's L3
//     mark chains), and `meta mark & A vmap @map` (the L3 dispatch);
//   - `udp|tcp sport|dport` (with the `meta l4proto` test nft adds before
//     them), `vlan id|type` (after an `ether type 0x8100` test), other
//     comparisons than == and != on header fields, ranges (two compares,
//     or a range expression for !=), a mask given as an address;
//   - `meta iifname | oifname == | != "name"` and the wildcard `"prefix*"`
//     (a compare of the prefix's bytes only);
//   - `ct state` against one state, `ct direction`;
//   - in the ip and ip6 families, their own header fields without an
//     EtherType test (the family is the dependency);
//   - `counter name "x"` (an object reference), and every verdict;
//   - the rule's comment (its user data).
// Anything else throws NfnlEncodeError(unsupported) and the caller sends the
// batch through libnftables instead. nft itself writes the same semantics,
// sometimes with adjacent loads merged into one; kernel tests decode what
// this encoder sent with nft and compare it with the rule as written.
import { isIPv4 } from 'node:net';
import type { PayloadField, PrefixValue, Selector, Statement, Value, Verdict } from '../../backends/nft/model.js';
import { encodeValue, NfnlEncodeError } from './data.js';
import { InternalError } from '../../util/errors.js';
import type { NlWriter } from './netlink.js';
import { NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, VERDICT_CODE } from './uapi.js';

/** enum nft_rule_attributes. */
export const NFTA_RULE = { TABLE: 1, CHAIN: 2, EXPRESSIONS: 4, USERDATA: 7 } as const;
const NFTA_LIST_ELEM = 1;
const NFTA_EXPR = { NAME: 1, DATA: 2 } as const;
const PAYLOAD = { DREG: 1, BASE: 2, OFFSET: 3, LEN: 4 } as const;
const PAYLOAD_BASE = { ll: 0, nh: 1, th: 2 } as const;
const CMP = { SREG: 1, OP: 2, DATA: 3 } as const;
const CMP_OP: Readonly<Record<string, number>> = { '==': 0, '!=': 1, '<': 2, '<=': 3, '>': 4, '>=': 5 };
const META = { DREG: 1, KEY: 2, SREG: 3 } as const;
const NFT_META_LEN = 0;
const NFT_META_MARK = 3;
/** Meta keys a lookup or a compare may load (enum nft_meta_keys) and their lengths. */
const META_KEYS: Readonly<Record<string, { key: number; len: number }>> = { protocol: { key: 1, len: 2 }, iifname: { key: 6, len: 16 }, oifname: { key: 7, len: 16 }, l4proto: { key: 16, len: 1 } };
/** enum nft_ct_attributes, nft_ct_keys (the two the L3 rules test); ct state bits (NF_CT_STATE_*), directions. */
const CT = { DREG: 1, KEY: 2 } as const;
const CT_KEYS: Readonly<Record<string, { key: number; len: number }>> = { state: { key: 0, len: 4 }, direction: { key: 1, len: 1 } };
const CT_STATE_BITS: Readonly<Record<string, number>> = { invalid: 1, established: 2, related: 4, new: 8, untracked: 64 };
const CT_DIRECTIONS: Readonly<Record<string, number>> = { original: 0, reply: 1 };
/** enum nft_range_attributes, nft_range_ops. */
const RANGE = { SREG: 1, OP: 2, FROM: 3, TO: 4 } as const;
const NFT_RANGE_NEQ = 1;
const LOOKUP = { SET: 1, SREG: 2, DREG: 3, SET_ID: 4, FLAGS: 5 } as const;
const NFT_LOOKUP_F_INV = 1;
const BITWISE = { SREG: 1, DREG: 2, LEN: 3, MASK: 4, XOR: 5, OP: 6 } as const;
const NFT_BITWISE_BOOL = 0;
const BYTEORDER = { SREG: 1, DREG: 2, OP: 3, LEN: 4, SIZE: 5 } as const;
const NFT_BYTEORDER_HTON = 1;
const IMMEDIATE = { DREG: 1, DATA: 2 } as const;
const OBJREF = { IMM_TYPE: 1, IMM_NAME: 2 } as const;
const NFT_OBJECT_COUNTER = 1;
const NFT_REG_VERDICT = 0;
const NFT_REG_1 = 1;
/** The first 32-bit register (NFT_REG32_00): parts of a concatenation that do not start a 16-byte register. */
const NFT_REG32_00 = 8;
/** NFTNL_UDATA_RULE_COMMENT: the comment TLV in a rule's user data. */
const UDATA_RULE_COMMENT = 0;

const unsupported = (what: string): never => {
  throw new NfnlEncodeError(`rule: ${what} is not encoded here`, true);
};

/** Header fields on whole bytes: base, offset and length in bytes (the bridge family's link layer is Ethernet). */
type Field = { base: number; offset: number; len: number };
const nh = (offset: number, len: number): Field => ({ base: PAYLOAD_BASE.nh, offset, len });
const th = (offset: number, len: number): Field => ({ base: PAYLOAD_BASE.th, offset, len });
const ll = (offset: number, len: number): Field => ({ base: PAYLOAD_BASE.ll, offset, len });
const FIELDS: { readonly [P in PayloadField['protocol']]?: Readonly<Record<string, Field>> } = {
  udp: { sport: th(0, 2), dport: th(2, 2), length: th(4, 2) },
  tcp: { sport: th(0, 2), dport: th(2, 2) },
  // the 802.1Q tag after the outer EtherType; `vlan id` is its low 12 bits (masked, see VLAN_ID_MASK)
  vlan: { id: ll(14, 2), type: ll(16, 2) },
  ether: { daddr: { base: PAYLOAD_BASE.ll, offset: 0, len: 6 }, saddr: { base: PAYLOAD_BASE.ll, offset: 6, len: 6 }, type: { base: PAYLOAD_BASE.ll, offset: 12, len: 2 } },
  ip: { length: nh(2, 2), id: nh(4, 2), 'frag-off': nh(6, 2), ttl: nh(8, 1), protocol: nh(9, 1), saddr: nh(12, 4), daddr: nh(16, 4) },
  ip6: { length: nh(4, 2), nexthdr: nh(6, 1), hoplimit: nh(7, 1), saddr: nh(8, 16), daddr: nh(24, 16) },
  arp: { htype: nh(0, 2), ptype: nh(2, 2), hlen: nh(4, 1), plen: nh(5, 1), operation: nh(6, 2), 'saddr ether': nh(8, 6), 'saddr ip': nh(14, 4), 'daddr ether': nh(18, 6), 'daddr ip': nh(24, 4) },
};
/**
 * The EtherType a network-layer field depends on: nft adds `ether type ==
 * it` before such a field unless the rule already tests it, so the encoder
 * takes the field only after that test (else libnftables has the rule).
 */
const DEPENDENCY: { readonly [P in PayloadField['protocol']]?: number } = { ip: 0x0800, ip6: 0x86dd, arp: 0x0806, vlan: 0x8100 };
/** Transport fields: nft adds `meta l4proto N` before the first one unless the rule tested it. */
const L4_DEPENDENCY: { readonly [P in PayloadField['protocol']]?: number } = { udp: 17, tcp: 6 };
/** `vlan id`: 12 bits of the 2-byte TCI. */
const VLAN_ID_MASK = Buffer.from([0x0f, 0xff]);
/** The families whose own network header needs no EtherType test. */
const FAMILY_PROTOCOL: Readonly<Record<string, string>> = { ip: 'ip', ip6: 'ip6' };

/** Address fields: their constants are written as addresses (and may be prefixes). */
const ADDRESS_FIELDS: Readonly<Record<string, 'ipv4_addr' | 'ipv6_addr'>> = { 'ip saddr': 'ipv4_addr', 'ip daddr': 'ipv4_addr', 'ip6 saddr': 'ipv6_addr', 'ip6 daddr': 'ipv6_addr', 'arp saddr ip': 'ipv4_addr', 'arp daddr ip': 'ipv4_addr' };

function expr(w: NlWriter, name: string, body: () => void): void {
  w.nest(NFTA_LIST_ELEM);
  w.strz(NFTA_EXPR.NAME, name);
  w.nest(NFTA_EXPR.DATA);
  body();
  w.nestEnd();
  w.nestEnd();
}

/** A constant as `len` big-endian bytes (numbers, MAC addresses). */
function constantBytes(v: Value, len: number): Buffer {
  if (v.kind === 'number') {
    if (!Number.isSafeInteger(v.value) || v.value < 0) unsupported(`the constant ${v.value}`);
    const out = Buffer.alloc(len);
    // exact for safe integers: the bytes from the last one back
    let x = v.value;
    for (let i = len - 1; i >= 0 && x > 0; i--) {
      out[i] = x % 256;
      x = Math.floor(x / 256);
    }
    if (x !== 0) unsupported(`${v.value} in ${len} bytes`);
    return out;
  }
  if (v.kind === 'symbol' && len === 6 && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(v.value)) {
    const out = Buffer.alloc(6);
    for (let i = 0; i < 6; i++) out[i] = parseInt(v.value.substring(i * 3, i * 3 + 2), 16);
    return out;
  }
  if (v.kind === 'symbol' && len === 4 && isIPv4(v.value)) return Buffer.from(v.value.split('.').map(Number));
  if (v.kind === 'symbol' && len === 16 && v.value.includes(':')) return encodeValue('ipv6_addr', v);
  return unsupported(`the value ${JSON.stringify(v)}`);
}

/** Where a selector's bytes are: payload base, offset and length (whole bytes). */
function payloadOf(s: Selector): Field {
  if (s.kind === 'payload') {
    const f = FIELDS[s.protocol]?.[s.field];
    if (f) return f;
  }
  if (s.kind === 'raw-payload' && s.offset % 8 === 0 && s.len % 8 === 0 && s.len > 0 && s.len <= 128) return { base: PAYLOAD_BASE[s.base], offset: s.offset / 8, len: s.len / 8 };
  return unsupported(`the selector ${JSON.stringify(s)}`);
}

function writePayload(w: NlWriter, p: Field, dreg: number): void {
  expr(w, 'payload', () => {
    w.be32(PAYLOAD.DREG, dreg);
    w.be32(PAYLOAD.BASE, p.base);
    w.be32(PAYLOAD.OFFSET, p.offset);
    w.be32(PAYLOAD.LEN, p.len);
  });
}

function writeMeta(w: NlWriter, key: number, dreg: number): void {
  // libnftnl's order (the kernel takes any)
  expr(w, 'meta', () => {
    w.be32(META.KEY, key);
    w.be32(META.DREG, dreg);
  });
}

/** Loads a field (a header field on whole bytes, or a meta key of META_KEYS) into `dreg`; returns its length. */
function writeLoad(w: NlWriter, s: Selector, dreg: number): number {
  if (s.kind === 'binop' && dreg === NFT_REG_1 && s.op === '&' && s.left.kind === 'meta' && s.left.key === 'mark' && s.right.kind === 'number') {
    // `meta mark & A` (the L3 dispatch's key): the mark, masked
    writeMeta(w, NFT_META_MARK, NFT_REG_1);
    writeBitwise(w, markBytes(s.right), NFT_BITWISE_BOOL);
    return 4;
  }
  if (s.kind === 'meta') {
    const m = META_KEYS[s.key] ?? unsupported(`meta ${s.key}`);
    writeMeta(w, m.key, dreg);
    return m.len;
  }
  const p = payloadOf(s);
  writePayload(w, p, dreg);
  return p.len;
}

/**
 * The register nft puts a part of a concatenation in, from its position in
 * 32-bit words: a 16-byte register (1-4) where one starts, else a 32-bit one
 * (8-23), as nft's netlink_put_register numbers them.
 */
const concatRegister = (word: number): number => (word % 4 === 0 ? NFT_REG_1 + word / 4 : NFT_REG32_00 + word);

/** Loads a selector (one field, or a concatenation of fields one after the other in nft's registers) from NFT_REG_1. */
function writeKeyLoad(w: NlWriter, key: Selector): void {
  const parts = key.kind === 'concat' ? key.items : [key];
  let word = 0;
  for (const part of parts) word += Math.ceil(writeLoad(w, part, concatRegister(word)) / 4);
  if (word > 16) unsupported(`a key of ${word * 4} bytes`);
}

/** `selector == | != @set`: the selector loaded, then the lookup. */
function writeLookup(w: NlWriter, s: Extract<Statement, { kind: 'match' }>, set: string): void {
  if (s.op !== '==' && s.op !== '!=') unsupported(`${s.op} with a set`);
  writeKeyLoad(w, s.left);
  expr(w, 'lookup', () => {
    w.be32(LOOKUP.SREG, NFT_REG_1);
    w.strz(LOOKUP.SET, set);
    if (s.op === '!=') w.be32(LOOKUP.FLAGS, NFT_LOOKUP_F_INV);
  });
}

/** `selector vmap @map`: the selector loaded, then a lookup whose data is the verdict. */
function writeVmap(w: NlWriter, s: Extract<Statement, { kind: 'vmap' }>): void {
  if (s.data.kind !== 'setref') unsupported('an anonymous verdict map');
  writeKeyLoad(w, s.key);
  expr(w, 'lookup', () => {
    w.be32(LOOKUP.SREG, NFT_REG_1);
    w.be32(LOOKUP.DREG, NFT_REG_VERDICT);
    w.strz(LOOKUP.SET, (s.data as { name: string }).name);
  });
}

/** An attribute holding constant bytes (a nested NFTA_DATA_VALUE). */
function dataAttr(w: NlWriter, type: number, bytes: Buffer): void {
  w.nest(type);
  w.attr(NFTA_DATA_VALUE, bytes);
  w.nestEnd();
}

function writeBitwise(w: NlWriter, mask: Buffer, op?: number, xor: Buffer = Buffer.alloc(mask.length)): void {
  expr(w, 'bitwise', () => {
    w.be32(BITWISE.SREG, NFT_REG_1);
    w.be32(BITWISE.DREG, NFT_REG_1);
    if (op !== undefined) w.be32(BITWISE.OP, op);
    w.be32(BITWISE.LEN, mask.length);
    dataAttr(w, BITWISE.MASK, mask);
    dataAttr(w, BITWISE.XOR, xor);
  });
}

/** An address field against a prefix: its whole bytes compared, or masked first when the prefix ends within a byte (as nft writes it). */
function writePrefixMatch(w: NlWriter, op: string, p: Field, type: 'ipv4_addr' | 'ipv6_addr', v: PrefixValue): void {
  const full = encodeValue(type, { kind: 'symbol', value: v.addr });
  if (!Number.isInteger(v.len) || v.len <= 0 || v.len > full.length * 8) unsupported(`the prefix /${v.len}`);
  if (v.len % 8 === 0) {
    writePayload(w, { ...p, len: v.len / 8 }, NFT_REG_1);
    writeCmp(w, op, full.subarray(0, v.len / 8));
    return;
  }
  const mask = Buffer.alloc(full.length);
  for (let i = 0; i < mask.length; i++) mask[i] = (0xff << (8 - Math.max(0, Math.min(8, v.len - i * 8)))) & 0xff;
  writePayload(w, p, NFT_REG_1);
  // nft writes no operation for a prefix's mask (the kernel's default: a mask and xor)
  writeBitwise(w, mask);
  writeCmp(w, op, Buffer.from(full.map((b, i) => b & (mask[i] as number))));
}

function writeCmp(w: NlWriter, op: string, data: Buffer): void {
  const code = CMP_OP[op];
  if (code === undefined) unsupported(`the comparison ${op}`);
  expr(w, 'cmp', () => {
    w.be32(CMP.SREG, NFT_REG_1);
    w.be32(CMP.OP, code as number);
    w.nest(CMP.DATA);
    w.attr(NFTA_DATA_VALUE, data);
    w.nestEnd();
  });
}

/** What a rule has tested so far: EtherTypes and transport protocols (`meta l4proto`). */
interface Tested {
  family: string;
  etherTypes: Set<number>;
  l4protos: Set<number>;
}

/**
 * Refuses a network-layer field whose EtherType the rule has not tested yet
 * (see DEPENDENCY); writes the `meta l4proto` test nft adds before a
 * transport field (after an IPv4 or IPv6 EtherType test).
 */
function writeDependencies(w: NlWriter, s: Selector, t: Tested): void {
  const parts = s.kind === 'concat' ? s.items : s.kind === 'binop' ? [s.left] : [s];
  for (const p of parts) {
    if (p.kind !== 'payload') continue;
    if (FAMILY_PROTOCOL[t.family] === p.protocol) continue;
    const dep = DEPENDENCY[p.protocol];
    if (dep !== undefined && (t.family !== 'bridge' || !t.etherTypes.has(dep))) unsupported(`${p.protocol} fields without an earlier ether type test`);
    const l4 = L4_DEPENDENCY[p.protocol];
    if (l4 === undefined || t.l4protos.has(l4)) continue;
    if (t.family !== 'bridge' || !(t.etherTypes.has(0x0800) || t.etherTypes.has(0x86dd))) unsupported(`${p.protocol} fields without an earlier ether type test`);
    writeMeta(w, (META_KEYS.l4proto as { key: number }).key, NFT_REG_1);
    writeCmp(w, '==', Buffer.from([l4]));
    t.l4protos.add(l4);
  }
}

/** An interface name as nft compares it: the name padded to IFNAMSIZ, or a wildcard's prefix (`vnet*`) alone. */
function ifnameBytes(name: string): Buffer {
  const wild = name.endsWith('*') && !name.endsWith('\\*');
  const text = Buffer.from(wild ? name.slice(0, -1) : name, 'utf8');
  if (text.includes(0) || text.length >= 16 || name.includes('\\') || (wild && text.length === 0)) unsupported(`the interface name ${JSON.stringify(name)}`);
  if (wild) return text;
  const out = Buffer.alloc(16);
  text.copy(out);
  return out;
}

/** `ct state == one state` (the state bits, host order) and `ct direction == original | reply`. */
/**
 * The states of `ct state == { a, b, ... }` with several states (nft looks
 * them up in an anonymous set), as the set's element keys; undefined for
 * any other statement.
 */
export function anonymousCtStates(s: Statement): Buffer[] | undefined {
  if (s.kind !== 'match' || s.left.kind !== 'ct' || s.left.key !== 'state' || s.right.kind !== 'set' || s.right.items.length < 2) return undefined;
  if (s.op !== '==') return unsupported(`ct state ${s.op} several states`);
  return s.right.items.map((i) => {
    const bit = i.kind === 'symbol' ? CT_STATE_BITS[i.value] : undefined;
    if (bit === undefined) return unsupported(`ct state ${JSON.stringify(i)}`);
    const b = Buffer.alloc(4);
    b.writeUInt32LE(bit);
    return b;
  });
}

/** The name nft gives an anonymous set (the kernel puts a number for %d), and the user data it writes for one of ct states. */
export const ANON_SET_NAME = '__set%d';
/** libnftnl set user data of nft 1.0.6's `ct state { ... }` set: the key in host byte order, the key's typeof `ct state` (recorded with strace). */
export const CT_STATE_SET_USERDATA = Buffer.from('000401000000031400040c000000010c0004000000000104ffffffff', 'hex');

function writeCtMatch(w: NlWriter, s: Extract<Statement, { kind: 'match' }>, anon: number[]): void {
  const c = s.left as Extract<Selector, { kind: 'ct' }>;
  const k = CT_KEYS[c.key];
  if (!k || 'dir' in c || (s.op !== '==' && s.op !== '!=')) return unsupported(`ct ${c.key} ${s.op}`);
  let data: Buffer;
  if (c.key === 'state') {
    if (anonymousCtStates(s)) {
      // several states: a lookup in the anonymous set the batch created before the rule
      const id = anon.shift();
      if (id === undefined) throw new InternalError('an anonymous ct state set without its id');
      expr(w, 'ct', () => {
        w.be32(CT.KEY, k.key);
        w.be32(CT.DREG, NFT_REG_1);
      });
      expr(w, 'lookup', () => {
        w.be32(LOOKUP.SREG, NFT_REG_1);
        w.strz(LOOKUP.SET, ANON_SET_NAME);
        w.be32(LOOKUP.SET_ID, id);
      });
      return;
    }
    // one state: a compare
    const items = s.right.kind === 'set' ? s.right.items : s.right.kind === 'flags' ? s.right.items : [s.right];
    const only = items.length === 1 ? items[0] : undefined;
    const bit = only && only.kind === 'symbol' ? CT_STATE_BITS[only.value] : undefined;
    if (bit === undefined) return unsupported(`ct state ${JSON.stringify(s.right)}`);
    data = Buffer.alloc(4);
    data.writeUInt32LE(bit);
  } else {
    const dir = s.right.kind === 'symbol' ? CT_DIRECTIONS[s.right.value] : undefined;
    if (dir === undefined) return unsupported(`ct direction ${JSON.stringify(s.right)}`);
    data = Buffer.from([dir]);
  }
  expr(w, 'ct', () => {
    w.be32(CT.KEY, k.key);
    w.be32(CT.DREG, NFT_REG_1);
  });
  writeCmp(w, s.op, data);
}

function writeMatch(w: NlWriter, s: Extract<Statement, { kind: 'match' }>, anon: number[]): void {
  if (s.left.kind === 'meta' && s.left.key === 'length') {
    const data = constantBytes(s.right, 4);
    writeMeta(w, NFT_META_LEN, NFT_REG_1);
    // the length is host order: nft swaps it to network order and compares big-endian bytes
    expr(w, 'byteorder', () => {
      w.be32(BYTEORDER.SREG, NFT_REG_1);
      w.be32(BYTEORDER.DREG, NFT_REG_1);
      w.be32(BYTEORDER.OP, NFT_BYTEORDER_HTON);
      w.be32(BYTEORDER.LEN, 4);
      w.be32(BYTEORDER.SIZE, 4);
    });
    writeCmp(w, s.op, data);
    return;
  }
  if (s.right.kind === 'setref') {
    writeLookup(w, s, s.right.name);
    return;
  }
  if (s.left.kind === 'ct') {
    writeCtMatch(w, s, anon);
    return;
  }
  if (s.left.kind === 'meta' && (s.left.key === 'iifname' || s.left.key === 'oifname') && s.right.kind === 'string' && (s.op === '==' || s.op === '!=')) {
    writeMeta(w, (META_KEYS[s.left.key] as { key: number }).key, NFT_REG_1);
    writeCmp(w, s.op, ifnameBytes(s.right.value));
    return;
  }
  if (s.right.kind === 'range' && s.left.kind !== 'meta' && s.left.kind !== 'binop' && (s.op === '==' || s.op === '!=')) {
    const p = payloadOf(s.left);
    const from = constantBytes(s.right.from, p.len);
    const to = constantBytes(s.right.to, p.len);
    writePayload(w, p, NFT_REG_1);
    if (s.op === '==') {
      // nft writes an including range as two compares
      writeCmp(w, '>=', from);
      writeCmp(w, '<=', to);
    } else {
      expr(w, 'range', () => {
        w.be32(RANGE.SREG, NFT_REG_1);
        w.be32(RANGE.OP, NFT_RANGE_NEQ);
        dataAttr(w, RANGE.FROM, from);
        dataAttr(w, RANGE.TO, to);
      });
    }
    return;
  }
  if (s.left.kind === 'payload' && s.left.protocol === 'vlan' && s.left.field === 'id') {
    if (s.op !== '==' && s.op !== '!=') unsupported(`${s.op} on vlan id`);
    writePayload(w, payloadOf(s.left), NFT_REG_1);
    writeBitwise(w, VLAN_ID_MASK, NFT_BITWISE_BOOL);
    writeCmp(w, s.op, constantBytes(s.right, 2));
    return;
  }
  if (s.op !== '==' && s.op !== '!=') {
    // an ordered comparison of a header field: its bytes are big endian, so they compare like the value
    if (s.left.kind !== 'payload' && s.left.kind !== 'raw-payload') unsupported(`${s.op} on ${JSON.stringify(s.left)}`);
    if (s.left.kind === 'payload' && ADDRESS_FIELDS[`${s.left.protocol} ${s.left.field}`]) unsupported(`${s.op} on an address`);
    const p = payloadOf(s.left);
    const data = constantBytes(s.right, p.len);
    writePayload(w, p, NFT_REG_1);
    writeCmp(w, s.op, data);
    return;
  }
  if (s.left.kind === 'meta') {
    // meta l4proto / protocol: a value in network byte order, like a header field
    const m = s.left.key === 'l4proto' || s.left.key === 'protocol' ? (META_KEYS[s.left.key] as { key: number; len: number }) : unsupported(`meta ${s.left.key} ${s.op} a value`);
    const data = constantBytes(s.right, m.len);
    writeMeta(w, m.key, NFT_REG_1);
    writeCmp(w, s.op, data);
    return;
  }
  if (s.left.kind === 'binop') {
    // `field & mask == | != value`: the field masked, then compared
    if (s.left.op !== '&' || (s.left.right.kind !== 'number' && s.left.right.kind !== 'symbol')) unsupported(`the selector ${JSON.stringify(s.left)}`);
    if (s.left.left.kind === 'payload' && s.left.left.protocol === 'vlan' && s.left.left.field === 'id') unsupported('a mask on vlan id');
    const f = payloadOf(s.left.left);
    const mask = constantBytes(s.left.right as Value, f.len);
    const data = constantBytes(s.right, f.len);
    writePayload(w, f, NFT_REG_1);
    writeBitwise(w, mask, NFT_BITWISE_BOOL);
    writeCmp(w, s.op, data);
    return;
  }
  const p = payloadOf(s.left);
  const address = s.left.kind === 'payload' ? ADDRESS_FIELDS[`${s.left.protocol} ${s.left.field}`] : undefined;
  if (s.right.kind === 'prefix') {
    if (!address) unsupported(`a prefix on ${JSON.stringify(s.left)}`);
    writePrefixMatch(w, s.op, p, address as 'ipv4_addr' | 'ipv6_addr', s.right);
    return;
  }
  const data = constantBytes(s.right, p.len);
  writePayload(w, p, NFT_REG_1);
  writeCmp(w, s.op, data);
}

function writeVerdict(w: NlWriter, v: Verdict): void {
  expr(w, 'immediate', () => {
    w.be32(IMMEDIATE.DREG, NFT_REG_VERDICT);
    w.nest(IMMEDIATE.DATA);
    w.nest(NFTA_DATA_VERDICT);
    w.be32(NFTA_VERDICT_CODE, VERDICT_CODE[v.kind]);
    if (v.kind === 'jump' || v.kind === 'goto') w.strz(NFTA_VERDICT_CHAIN, v.target);
    w.nestEnd();
    w.nestEnd();
  });
}

/** A mark as the kernel holds it: 32 bits in host byte order. */
function markBytes(v: Value): Buffer {
  if (v.kind !== 'number' || !Number.isInteger(v.value) || v.value < 0 || v.value > 0xffffffff) return unsupported(`the mark ${JSON.stringify(v)}`);
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v.value);
  return b;
}

/**
 * `meta mark set N` (an immediate) and `meta mark set meta mark & A | B`
 * (the mark loaded, masked with A & ~B, B xor-ed in, as nft folds it); then
 * the meta set.
 */
function writeSetMark(w: NlWriter, s: Extract<Statement, { kind: 'mangle' }>): void {
  if (s.key.kind !== 'meta' || s.key.key !== 'mark') unsupported(`setting ${s.key.kind} ${s.key.key}`);
  const v = s.value;
  if (v.kind === 'number') {
    const data = markBytes(v);
    expr(w, 'immediate', () => {
      w.be32(IMMEDIATE.DREG, NFT_REG_1);
      w.nest(IMMEDIATE.DATA);
      w.attr(NFTA_DATA_VALUE, data);
      w.nestEnd();
    });
  } else if (v.kind === 'binop' && v.op === '|' && v.right.kind === 'number' && v.left.kind === 'binop' && v.left.op === '&' && v.left.left.kind === 'meta' && v.left.left.key === 'mark' && v.left.right.kind === 'number') {
    const or = markBytes(v.right);
    const and = markBytes(v.left.right);
    writeMeta(w, NFT_META_MARK, NFT_REG_1);
    writeBitwise(w, Buffer.from(and.map((b, i) => b & ~(or[i] as number) & 0xff)), NFT_BITWISE_BOOL, or);
  } else unsupported(`meta mark set ${JSON.stringify(v)}`);
  expr(w, 'meta', () => {
    w.be32(META.KEY, NFT_META_MARK);
    w.be32(META.SREG, NFT_REG_1);
  });
}

/** The NFTA_RULE_EXPRESSIONS of a rule's statements (throws NfnlEncodeError(unsupported) for what is not covered). */
export function writeRuleExpressions(w: NlWriter, statements: readonly Statement[], family = 'bridge', anonSetIds: readonly number[] = []): void {
  const anon = [...anonSetIds];
  w.nest(NFTA_RULE.EXPRESSIONS);
  const t: Tested = { family, etherTypes: new Set(), l4protos: new Set() };
  const noteTested = (s: Extract<Statement, { kind: 'match' }>): void => {
    if (s.op === '==' && s.left.kind === 'payload' && s.left.protocol === 'ether' && s.left.field === 'type' && s.right.kind === 'number') t.etherTypes.add(s.right.value);
    if (s.op === '==' && s.left.kind === 'meta' && s.left.key === 'l4proto' && s.right.kind === 'number') t.l4protos.add(s.right.value);
  };
  for (const item of mergePayloadMatches(statements)) {
    if ('members' in item) {
      // adjacent header fields compared as one load, as nft merges them
      for (const m of item.members) writeDependencies(w, m.left, t);
      writePayload(w, item.field, NFT_REG_1);
      writeCmp(w, '==', item.data);
      for (const m of item.members) noteTested(m);
      continue;
    }
    const s = item;
    switch (s.kind) {
      case 'match':
        writeDependencies(w, s.left, t);
        writeMatch(w, s, anon);
        noteTested(s);
        break;
      case 'vmap':
        writeDependencies(w, s.key, t);
        writeVmap(w, s);
        break;
      case 'mangle':
        writeSetMark(w, s);
        break;
      case 'set-update':
        writeDependencies(w, s.key, t);
        writeSetUpdate(w, s);
        break;
      case 'counter-ref':
        expr(w, 'objref', () => {
          w.be32(OBJREF.IMM_TYPE, NFT_OBJECT_COUNTER);
          w.strz(OBJREF.IMM_NAME, s.name);
        });
        break;
      case 'accept':
      case 'drop':
      case 'continue':
      case 'return':
      case 'jump':
      case 'goto':
        writeVerdict(w, s);
        break;
      default:
        unsupported(`the statement ${s.kind}`);
    }
  }
  w.nestEnd();
}

type MatchStatement = Extract<Statement, { kind: 'match' }>;
/** Header field tests nft loads as one: the field they span, its bytes, the tests. */
interface MergedMatch {
  field: Field;
  data: Buffer;
  members: MatchStatement[];
}
/** A test nft may merge: `field == constant` on whole bytes. */
interface Mergeable {
  index: number;
  s: MatchStatement;
  field: Field;
  data: Buffer;
  /** The field names the next header's protocol (ether type, vlan type, ip protocol, ip6 nexthdr). */
  protocolKey: boolean;
}
const PROTOCOL_KEYS = new Set(['ether type', 'vlan type', 'ip protocol', 'ip6 nexthdr']);

function mergeable(s: Statement, index: number): Mergeable | undefined {
  if (s.kind !== 'match' || s.op !== '==' || (s.left.kind !== 'payload' && s.left.kind !== 'raw-payload')) return undefined;
  if (s.right.kind !== 'number' && s.right.kind !== 'symbol') return undefined;
  if (s.left.kind === 'payload' && s.left.protocol === 'vlan' && s.left.field === 'id') return undefined;
  try {
    const field = payloadOf(s.left);
    return { index, s, field, data: constantBytes(s.right, field.len), protocolKey: s.left.kind === 'payload' && PROTOCOL_KEYS.has(`${s.left.protocol} ${s.left.field}`) };
  } catch (e) {
    if (e instanceof NfnlEncodeError) return undefined;
    throw e;
  }
}

/** Whether nft 1.0.6 merges a test of `b` into the merged test of `a` (adjacent, at most 16 bytes, and worth it). */
function canMerge(a: Field, b: Field): boolean {
  if (a.base !== b.base || a.offset + a.len !== b.offset) return false;
  const total = a.len + b.len;
  if (total > 16) return false;
  // at most 4 bytes stay on the kernel's fast path; the link layer is never on it; a load over 4 bytes already is not
  return total <= 4 || a.base === PAYLOAD_BASE.ll || a.len > 4 || b.len > 4;
}

/**
 * The statements as nft sends them: within each stretch of tests (up to a
 * statement that is not a test), `field == constant` tests on whole bytes
 * sorted by header and offset, adjacent ones merged into one test (see
 * canMerge); a merged test stands where its first field's test stood, or
 * where a protocol key's test stood when it took one in. The kernel sees the
 * same conjunction of tests, and `nft list` prints the rule as nft loaded it.
 */
function mergePayloadMatches(statements: readonly Statement[]): (Statement | MergedMatch)[] {
  const out: (Statement | MergedMatch | undefined)[] = [...statements];
  let run: Mergeable[] = [];
  const flush = (): void => {
    const sorted = [...run].sort((a, b) => a.field.base - b.field.base || a.field.offset - b.field.offset);
    let group: { host: number; field: Field; parts: Mergeable[] } | undefined;
    const close = (): void => {
      // a test on its own too: its bytes are computed already
      if (group) {
        for (const p of group.parts) out[p.index] = undefined;
        out[group.host] = { field: group.field, data: Buffer.concat(group.parts.map((p) => p.data)), members: group.parts.map((p) => p.s) };
      }
    };
    for (const m of sorted) {
      if (group && canMerge(group.field, m.field)) {
        group.field = { ...group.field, len: group.field.len + m.field.len };
        group.parts.push(m);
        if (m.protocolKey) group.host = m.index;
      } else {
        close();
        group = { host: m.index, field: m.field, parts: [m] };
      }
    }
    close();
    run = [];
  };
  statements.forEach((s, i) => {
    if (s.kind !== 'match' && s.kind !== 'vmap') flush();
    else {
      const m = mergeable(s, i);
      if (m) run.push(m);
    }
  });
  flush();
  return out.filter((x): x is Statement | MergedMatch => x !== undefined);
}

const DYNSET = { SET_NAME: 1, OP: 3, SREG_KEY: 4, TIMEOUT: 6 } as const;
const DYNSET_OP = { add: 0, update: 1, delete: 2 } as const;

/**
 * `add | update | delete @set { key [timeout N] }` from the packet path (a
 * dynset): the key loaded as for a lookup, then the set changed (the set
 * was declared `dynamic` in the batch, see commands.ts).
 */
function writeSetUpdate(w: NlWriter, s: Extract<Statement, { kind: 'set-update' }>): void {
  if (s.timeout !== undefined && (!Number.isInteger(s.timeout) || s.timeout <= 0 || s.timeout > 0xffffffff)) unsupported(`a set timeout of ${s.timeout} s`);
  writeKeyLoad(w, s.key);
  expr(w, 'dynset', () => {
    w.be32(DYNSET.SREG_KEY, NFT_REG_1);
    w.be32(DYNSET.OP, DYNSET_OP[s.op]);
    if (s.timeout !== undefined) {
      // milliseconds, a big-endian u64
      const ms = Buffer.alloc(8);
      ms.writeBigUInt64BE(BigInt(s.timeout) * 1000n);
      w.attr(DYNSET.TIMEOUT, ms);
    }
    // the set by name (nft adds its batch id too; the kernel finds a named set by its name first)
    w.strz(DYNSET.SET_NAME, s.set);
  });
}

/** A rule's comment as nft stores it: a user-data TLV (type, length, the string and its NUL). */
export function commentUserdata(comment: string): Buffer {
  const text = Buffer.from(comment, 'utf8');
  if (text.length + 1 > 255) unsupported('a comment of more than 254 bytes');
  return Buffer.concat([Buffer.from([UDATA_RULE_COMMENT, text.length + 1]), text, Buffer.from([0])]);
}
