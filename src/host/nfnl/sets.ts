// NFT_MSG_NEWSET: a named set or map, as nft 1.0.6 creates it from the
// libnftables JSON nwf-fast writes, so that `nft list` prints a set created
// here exactly as one nft created (it reads the key and data types back from
// the user data, not from the kernel's type numbers alone):
//   NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS,
//   NFTA_SET_KEY_TYPE (nft's datatype number; a concatenation packs one
//   6-bit number per part), NFTA_SET_KEY_LEN (each part of a concatenation
//   padded to 4 bytes),
//   maps: NFTA_SET_DATA_TYPE and NFTA_SET_DATA_LEN (verdict maps:
//   NFT_DATA_VERDICT and 0), object maps: NFTA_SET_OBJ_TYPE instead,
//   NFTA_SET_ID (unique in the batch),
//   NFTA_SET_DESC { NFTA_SET_DESC_SIZE, NFTA_SET_DESC_CONCAT (interval
//   concatenations: each part's length) } when there is one of them,
//   NFTA_SET_USERDATA (libnftnl TLVs: the key byte order, the data byte
//   order of a data map, the key `typeof` of a concatenation, the data
//   interval flag of a map),
//   NFTA_SET_EXPR { counter } for a set whose elements count.
// The numbers and the order of the attributes are those nft sends (recorded
// in test/fixtures/nfnl/newset.json with `strace`, see test/unit/nfnl-sets.test.ts).
import type { MapDataType, SetFlag, SetKeyType } from '../../backends/nft/model.js';
import { NfnlEncodeError } from './data.js';
import type { SetDecl } from './encode.js';
import type { NlWriter } from './netlink.js';
import { NFT_DATA_VALUE_MAXLEN, NFT_REG32_SIZE } from './uapi.js';

/** What a new set needs beyond its declaration: its size and whether its elements count. */
export interface NewSet extends SetDecl {
  size?: number;
  counter?: boolean;
  /** Rules of the same batch change it from the packet path (NFT_SET_EVAL: nft lists it `dynamic`). */
  dynamic?: boolean;
}

/** enum nft_set_attributes. */
export const NFTA_SET = { TABLE: 1, NAME: 2, FLAGS: 3, KEY_TYPE: 4, KEY_LEN: 5, DATA_TYPE: 6, DATA_LEN: 7, DESC: 9, ID: 10, USERDATA: 13, OBJ_TYPE: 15, EXPR: 17 } as const;
/** enum nft_set_desc_attributes, nft_set_field_attributes. */
const DESC = { SIZE: 1, CONCAT: 2 } as const;
const NFTA_SET_FIELD_LEN = 1;
const NFTA_LIST_ELEM = 1;
const NFTA_EXPR = { NAME: 1, DATA: 2 } as const;
/** enum nft_set_flags. */
const FLAG: Readonly<Record<SetFlag | 'map' | 'object' | 'concat', number>> = { constant: 0x2, interval: 0x4, map: 0x8, timeout: 0x10, object: 0x40, concat: 0x80 };
/** NFT_SET_EVAL: a set the packet path updates. */
const SET_EVAL = 0x20;
/** NFT_DATA_VERDICT: the data type of a verdict map. */
const NFT_DATA_VERDICT = 0xffffff00;
const NFT_OBJECT_COUNTER = 1;

/** nft's byte orders (enum byteorder) as its user data records them. */
const ORDER = { invalid: 0, host: 1, big: 2 } as const;
/** libnftnl set user data types (enum nftnl_udata_set_types) and the typeof nest's (nftnl_udata_set_typeof_types). */
const UDATA = { KEYBYTEORDER: 0, DATABYTEORDER: 1, KEY_TYPEOF: 3, DATA_INTERVAL: 6 } as const;
const UDATA_TYPEOF = { EXPR: 0, DATA: 1 } as const;
/** nft's expression type of a concatenation (enum expr_types: EXPR_CONCAT). */
const EXPR_CONCAT = 13;
/** Bits per part in a concatenation's type number (nft's TYPE_BITS). */
const TYPE_BITS = 6;

/** nft's datatype of a key or value type: its number (enum datatypes), length in bytes and byte order. */
interface NftType {
  id: number;
  len: number;
  order: (typeof ORDER)[keyof typeof ORDER];
}
const TYPES: Readonly<Record<SetKeyType, NftType>> = {
  ifname: { id: 41, len: 16, order: ORDER.host },
  ether_addr: { id: 9, len: 6, order: ORDER.big },
  ipv4_addr: { id: 7, len: 4, order: ORDER.big },
  ipv6_addr: { id: 8, len: 16, order: ORDER.big },
  ether_type: { id: 10, len: 2, order: ORDER.big },
  inet_proto: { id: 12, len: 1, order: ORDER.invalid },
  inet_service: { id: 13, len: 2, order: ORDER.big },
  mark: { id: 19, len: 4, order: ORDER.host },
  iface_index: { id: 20, len: 4, order: ORDER.host },
  ct_state: { id: 26, len: 4, order: ORDER.host },
  pkt_type: { id: 31, len: 1, order: ORDER.host },
  arp_op: { id: 11, len: 2, order: ORDER.big },
  icmp_type: { id: 14, len: 1, order: ORDER.big },
  icmpv6_type: { id: 29, len: 1, order: ORDER.big },
};

function nftType(t: SetKeyType | Exclude<MapDataType, 'counter'>): NftType {
  const info = (TYPES as Record<string, NftType | undefined>)[t];
  if (!info) throw new NfnlEncodeError(`set type ${String(t)} is not encoded here`, true);
  return info;
}

const pad4 = (n: number): number => Math.ceil(n / NFT_REG32_SIZE) * NFT_REG32_SIZE;
const keyTypes = (s: SetDecl): readonly SetKeyType[] => (typeof s.type === 'string' ? [s.type] : s.type);

function be32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** One libnftnl user data TLV (type u8, length u8, value). */
function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 255) throw new NfnlEncodeError('set user data: a value of more than 255 bytes', false);
  return Buffer.concat([Buffer.from([type, value.length]), value]);
}
function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** The user data nft writes for a set: the type information `nft list` reads back. */
export function setUserdata(s: NewSet): Buffer {
  const types = keyTypes(s);
  const concat = types.length > 1;
  const parts = [tlv(UDATA.KEYBYTEORDER, u32le(concat ? ORDER.invalid : nftType(types[0] as SetKeyType).order))];
  if (s.map !== undefined && s.map !== 'counter') parts.push(tlv(UDATA.DATABYTEORDER, u32le(s.map === 'verdict' ? ORDER.invalid : nftType(s.map).order)));
  // a concatenation of types (not of expressions): the typeof nest says so, with no expressions in it
  if (concat) parts.push(tlv(UDATA.KEY_TYPEOF, Buffer.concat([tlv(UDATA_TYPEOF.EXPR, u32le(EXPR_CONCAT)), tlv(UDATA_TYPEOF.DATA, Buffer.alloc(0))])));
  if (s.map !== undefined) parts.push(tlv(UDATA.DATA_INTERVAL, u32le(0)));
  return Buffer.concat(parts);
}

/** The NFTA_SET_FLAGS of a set. */
export function setFlags(s: NewSet): number {
  let f = 0;
  for (const x of s.flags ?? []) {
    const bit = FLAG[x];
    if (bit === undefined) throw new NfnlEncodeError(`set flag ${String(x)} is not encoded here`, true);
    f |= bit;
  }
  if (s.dynamic) f |= SET_EVAL;
  if (s.map === 'counter') f |= FLAG.object;
  else if (s.map !== undefined) f |= FLAG.map;
  if (keyTypes(s).length > 1 && s.flags?.includes('interval')) f |= FLAG.concat;
  return f;
}

/**
 * Writes the body of an NFT_MSG_NEWSET (the caller begins and ends the
 * message): `setId` is the set's NFTA_SET_ID, unique in its batch.
 */
export function writeNewSet(w: NlWriter, s: NewSet, setId: number): void {
  const types = keyTypes(s);
  if (types.length === 0) throw new NfnlEncodeError(`set ${s.name}: no key type`, false);
  const infos = types.map(nftType);
  const concat = infos.length > 1;
  if (infos.length > 32 / TYPE_BITS) throw new NfnlEncodeError(`set ${s.name}: a concatenation of ${infos.length} types (at most ${Math.floor(32 / TYPE_BITS)})`, true);
  const keyLen = concat ? infos.reduce((n, t) => n + pad4(t.len), 0) : (infos[0] as NftType).len;
  if (keyLen > NFT_DATA_VALUE_MAXLEN) throw new NfnlEncodeError(`set ${s.name}: a key of ${keyLen} bytes (at most ${NFT_DATA_VALUE_MAXLEN})`, false);
  if (s.size !== undefined && (!Number.isInteger(s.size) || s.size <= 0 || s.size > 0xffffffff)) throw new NfnlEncodeError(`set ${s.name}: size ${s.size} is not a positive 32-bit integer`, false);
  w.strz(NFTA_SET.TABLE, s.table);
  w.strz(NFTA_SET.NAME, s.name);
  w.attr(NFTA_SET.FLAGS, be32(setFlags(s)));
  w.attr(NFTA_SET.KEY_TYPE, be32(infos.reduce((n, t) => ((n << TYPE_BITS) | t.id) >>> 0, 0)));
  w.attr(NFTA_SET.KEY_LEN, be32(keyLen));
  if (s.map === 'counter') w.attr(NFTA_SET.OBJ_TYPE, be32(NFT_OBJECT_COUNTER));
  else if (s.map === 'verdict') {
    w.attr(NFTA_SET.DATA_TYPE, be32(NFT_DATA_VERDICT));
    w.attr(NFTA_SET.DATA_LEN, be32(0));
  } else if (s.map !== undefined) {
    const d = nftType(s.map);
    w.attr(NFTA_SET.DATA_TYPE, be32(d.id));
    w.attr(NFTA_SET.DATA_LEN, be32(d.len));
  }
  w.attr(NFTA_SET.ID, be32(setId));
  const fieldLens = concat && s.flags?.includes('interval') ? infos.map((t) => t.len) : undefined;
  if (s.size !== undefined || fieldLens) {
    w.nest(NFTA_SET.DESC);
    if (s.size !== undefined) w.attr(DESC.SIZE, be32(s.size));
    if (fieldLens) {
      w.nest(DESC.CONCAT);
      for (const len of fieldLens) {
        w.nest(NFTA_LIST_ELEM);
        w.attr(NFTA_SET_FIELD_LEN, be32(len));
        w.nestEnd();
      }
      w.nestEnd();
    }
    w.nestEnd();
  }
  w.attr(NFTA_SET.USERDATA, setUserdata(s));
  if (s.counter) {
    w.nest(NFTA_SET.EXPR);
    w.strz(NFTA_EXPR.NAME, 'counter');
    w.nest(NFTA_EXPR.DATA);
    w.nestEnd();
    w.nestEnd();
  }
}
