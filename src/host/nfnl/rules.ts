// NFT_MSG_NEWRULE for the rules a port adds to a shape it joins: its small
// per-interface chains (a RARP announce rule testing its own MAC, and the
// like). Those rules compare packet fields with constants and end in a
// verdict, so a small encoder covers them:
//   - `field == | != constant` where the field is an Ethernet address or
//     type (`ether saddr/daddr/type`) or raw bytes (`@ll|nh|th,OFFSET,LEN`
//     on whole bytes): a payload load and a compare of the bytes as they are
//     in the frame;
//   - `meta length OP n` (any comparison): a load, the byte order swap nft
//     inserts (`hton`), a compare;
//   - `counter name "x"` (an object reference), and every verdict;
//   - the rule's comment (its user data).
// Anything else throws NfnlEncodeError(unsupported) and the caller sends the
// batch through libnftables instead. nft itself writes the same semantics,
// sometimes with adjacent loads merged into one; kernel tests decode what
// this encoder sent with nft and compare it with the rule as written.
import { isIPv4 } from 'node:net';
import type { Selector, Statement, Value, Verdict } from '../../backends/nft/model.js';
import { NfnlEncodeError } from './data.js';
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
const META = { DREG: 1, KEY: 2 } as const;
const NFT_META_LEN = 0;
const BYTEORDER = { SREG: 1, DREG: 2, OP: 3, LEN: 4, SIZE: 5 } as const;
const NFT_BYTEORDER_HTON = 1;
const IMMEDIATE = { DREG: 1, DATA: 2 } as const;
const OBJREF = { IMM_TYPE: 1, IMM_NAME: 2 } as const;
const NFT_OBJECT_COUNTER = 1;
const NFT_REG_VERDICT = 0;
const NFT_REG_1 = 1;
/** NFTNL_UDATA_RULE_COMMENT: the comment TLV in a rule's user data. */
const UDATA_RULE_COMMENT = 0;

const unsupported = (what: string): never => {
  throw new NfnlEncodeError(`rule: ${what} is not encoded here`, true);
};

/** Ethernet header fields (link-layer base): offset and length in bytes. */
const ETHER: Readonly<Record<string, { offset: number; len: number }>> = { daddr: { offset: 0, len: 6 }, saddr: { offset: 6, len: 6 }, type: { offset: 12, len: 2 } };

function be32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

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
    let x = BigInt(v.value);
    for (let i = len - 1; i >= 0; i--) {
      out[i] = Number(x & 0xffn);
      x >>= 8n;
    }
    if (x !== 0n) unsupported(`${v.value} in ${len} bytes`);
    return out;
  }
  if (v.kind === 'symbol' && len === 6 && /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(v.value)) return Buffer.from(v.value.split(':').map((h) => parseInt(h, 16)));
  if (v.kind === 'symbol' && len === 4 && isIPv4(v.value)) return Buffer.from(v.value.split('.').map(Number));
  return unsupported(`the value ${JSON.stringify(v)}`);
}

/** Where a selector's bytes are: payload base, offset and length (whole bytes). */
function payloadOf(s: Selector): { base: number; offset: number; len: number } {
  if (s.kind === 'payload' && s.protocol === 'ether') {
    const f = ETHER[s.field];
    if (f) return { base: PAYLOAD_BASE.ll, ...f };
  }
  if (s.kind === 'raw-payload' && s.offset % 8 === 0 && s.len % 8 === 0 && s.len > 0 && s.len <= 128) return { base: PAYLOAD_BASE[s.base], offset: s.offset / 8, len: s.len / 8 };
  return unsupported(`the selector ${JSON.stringify(s)}`);
}

function writeCmp(w: NlWriter, op: string, data: Buffer): void {
  const code = CMP_OP[op];
  if (code === undefined) unsupported(`the comparison ${op}`);
  expr(w, 'cmp', () => {
    w.attr(CMP.SREG, be32(NFT_REG_1));
    w.attr(CMP.OP, be32(code as number));
    w.nest(CMP.DATA);
    w.attr(NFTA_DATA_VALUE, data);
    w.nestEnd();
  });
}

function writeMatch(w: NlWriter, s: Extract<Statement, { kind: 'match' }>): void {
  if (s.left.kind === 'meta' && s.left.key === 'length') {
    const data = constantBytes(s.right, 4);
    expr(w, 'meta', () => {
      w.attr(META.DREG, be32(NFT_REG_1));
      w.attr(META.KEY, be32(NFT_META_LEN));
    });
    // the length is host order: nft swaps it to network order and compares big-endian bytes
    expr(w, 'byteorder', () => {
      w.attr(BYTEORDER.SREG, be32(NFT_REG_1));
      w.attr(BYTEORDER.DREG, be32(NFT_REG_1));
      w.attr(BYTEORDER.OP, be32(NFT_BYTEORDER_HTON));
      w.attr(BYTEORDER.LEN, be32(4));
      w.attr(BYTEORDER.SIZE, be32(4));
    });
    writeCmp(w, s.op, data);
    return;
  }
  if (s.op !== '==' && s.op !== '!=') unsupported(`${s.op} on a payload field`);
  const p = payloadOf(s.left);
  const data = constantBytes(s.right, p.len);
  expr(w, 'payload', () => {
    w.attr(PAYLOAD.DREG, be32(NFT_REG_1));
    w.attr(PAYLOAD.BASE, be32(p.base));
    w.attr(PAYLOAD.OFFSET, be32(p.offset));
    w.attr(PAYLOAD.LEN, be32(p.len));
  });
  writeCmp(w, s.op, data);
}

function writeVerdict(w: NlWriter, v: Verdict): void {
  expr(w, 'immediate', () => {
    w.attr(IMMEDIATE.DREG, be32(NFT_REG_VERDICT));
    w.nest(IMMEDIATE.DATA);
    w.nest(NFTA_DATA_VERDICT);
    w.be32(NFTA_VERDICT_CODE, VERDICT_CODE[v.kind]);
    if (v.kind === 'jump' || v.kind === 'goto') w.strz(NFTA_VERDICT_CHAIN, v.target);
    w.nestEnd();
    w.nestEnd();
  });
}

/** The NFTA_RULE_EXPRESSIONS of a rule's statements (throws NfnlEncodeError(unsupported) for what is not covered). */
export function writeRuleExpressions(w: NlWriter, statements: readonly Statement[]): void {
  w.nest(NFTA_RULE.EXPRESSIONS);
  for (const s of statements) {
    switch (s.kind) {
      case 'match':
        writeMatch(w, s);
        break;
      case 'counter-ref':
        expr(w, 'objref', () => {
          w.attr(OBJREF.IMM_TYPE, be32(NFT_OBJECT_COUNTER));
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

/** A rule's comment as nft stores it: a user-data TLV (type, length, the string and its NUL). */
export function commentUserdata(comment: string): Buffer {
  const text = Buffer.from(comment, 'utf8');
  if (text.length + 1 > 255) unsupported('a comment of more than 254 bytes');
  return Buffer.concat([Buffer.from([UDATA_RULE_COMMENT, text.length + 1]), text, Buffer.from([0])]);
}
