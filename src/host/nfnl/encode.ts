// nf_tables element changes as one netlink batch:
//   NFNL_MSG_BATCH_BEGIN (res_id NFNL_SUBSYS_NFTABLES)
//   NFT_MSG_DELSETELEM / NFT_MSG_NEWSETELEM, one message per set and operation:
//     NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET,
//     NFTA_SET_ELEM_LIST_ELEMENTS { NFTA_LIST_ELEM { KEY, [KEY_END], [DATA | OBJREF] } ... }
//   NFNL_MSG_BATCH_END
// The kernel applies the batch as one transaction: every message or none.
// Every message asks for an acknowledgement (NLM_F_ACK), and so does the end
// of the batch (acknowledged only once the transaction is committed, on
// kernels that acknowledge it).
import type { Atom, MapDataType, SetFlag, SetItem, SetKeyType, Verdict } from '../../backends/nft/model.js';
import { assertNever } from '../../util/errors.js';
import { encodeKey, encodeKeyInto, encodeValue, keyLength, NfnlEncodeError } from './data.js';
import { NlWriter } from './netlink.js';
import {
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NFTA_DATA_VALUE,
  NFTA_DATA_VERDICT,
  NFTA_LIST_ELEM,
  NFTA_SET_ELEM_DATA,
  NFTA_SET_ELEM_KEY,
  NFTA_SET_ELEM_KEY_END,
  NFTA_SET_ELEM_LIST_ELEMENTS,
  NFTA_SET_ELEM_LIST_SET,
  NFTA_SET_ELEM_LIST_TABLE,
  NFTA_SET_ELEM_OBJREF,
  NFTA_VERDICT_CHAIN,
  NFTA_VERDICT_CODE,
  NFT_MSG_DELSETELEM,
  NFT_MSG_NEWSETELEM,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  VERDICT_CODE,
  nftMsgType,
  type NfFamily,
} from './uapi.js';

/** What the encoder needs to know of a set or map: where it is and its key and data types. */
export interface SetDecl {
  family: NfFamily;
  table: string;
  name: string;
  /** One type, or several for a concatenation. */
  type: SetKeyType | readonly SetKeyType[];
  flags?: readonly SetFlag[];
  /** Maps only: the data type (`verdict`, `counter` for an object map, or a value type). */
  map?: 'verdict' | MapDataType;
}

/** A set element, or a map entry [key, data]. */
export type ElementEntry = SetItem | readonly [SetItem, Atom | Verdict];

/** Elements added to or deleted from one set (deletions name keys only). */
export interface ElementChange {
  op: 'add' | 'delete';
  set: SetDecl;
  elements: readonly ElementEntry[];
}

export interface EncodedMessage {
  seq: number;
  change: ElementChange;
  /** Offset of the message in the batch. */
  offset: number;
  length: number;
  /** Offsets, from the start of the message, of each element's NFTA_LIST_ELEM attribute. */
  elementOffsets: number[];
}

export interface EncodedBatch {
  bytes: Buffer;
  /** The element messages (not the begin and end markers). */
  messages: EncodedMessage[];
  beginSeq: number;
  endSeq: number;
}

/**
 * Elements go into one message while its NFTA_SET_ELEM_LIST_ELEMENTS nest is
 * shorter than this; the largest element (two 64-byte keys and a chain name)
 * stays well under the 64 KiB an attribute length can say.
 */
const ELEMENTS_NEST_LIMIT = 60_000;

const keyTypes = (s: SetDecl): readonly SetKeyType[] => (typeof s.type === 'string' ? [s.type] : s.type);

function writeVerdict(w: NlWriter, v: Verdict): void {
  w.nest(NFTA_SET_ELEM_DATA);
  w.nest(NFTA_DATA_VERDICT);
  w.be32(NFTA_VERDICT_CODE, VERDICT_CODE[v.kind]);
  switch (v.kind) {
    case 'jump':
    case 'goto':
      w.strz(NFTA_VERDICT_CHAIN, v.target);
      break;
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
      break;
    default:
      assertNever(v, 'verdict');
  }
  w.nestEnd();
  w.nestEnd();
}

function isVerdict(d: Atom | Verdict): d is Verdict {
  return d.kind !== 'number' && d.kind !== 'string' && d.kind !== 'symbol';
}

/** Writes the index-th NFTA_LIST_ELEM (numbered from 1 like nft does; the kernel reads any type). */
function writeElement(w: NlWriter, c: ElementChange, e: ElementEntry, index: number, types: readonly SetKeyType[], interval: boolean, keyLen: number | undefined): void {
  const s = c.set;
  const isEntry = Array.isArray(e);
  if (c.op === 'add' && s.map !== undefined && !isEntry) throw new NfnlEncodeError(`map ${s.name}: element ${JSON.stringify(e)} has no data`, false);
  if (s.map === undefined && isEntry) throw new NfnlEncodeError(`set ${s.name} is not a map: element ${JSON.stringify(e)} has data`, false);
  const key = isEntry ? (e as readonly [SetItem, Atom | Verdict])[0] : (e as SetItem);
  const data = isEntry ? (e as readonly [SetItem, Atom | Verdict])[1] : undefined;
  w.nest(NFTA_LIST_ELEM + index);
  w.nest(NFTA_SET_ELEM_KEY);
  // plain values go straight into the batch; prefixes, ranges and intervals through encodeKey
  if (keyLen === undefined || !w.attrInPlace(NFTA_DATA_VALUE, keyLen, (buf, at) => encodeKeyInto(types, key, buf, at))) {
    const k = encodeKey(types, key, interval);
    w.attr(NFTA_DATA_VALUE, k.key);
    if (k.keyEnd) {
      w.nestEnd();
      w.nest(NFTA_SET_ELEM_KEY_END);
      w.attr(NFTA_DATA_VALUE, k.keyEnd);
    }
  }
  w.nestEnd();
  // a deletion names the key only
  if (c.op === 'add' && data !== undefined) {
    const m = s.map as 'verdict' | MapDataType;
    if (m === 'verdict') {
      if (!isVerdict(data)) throw new NfnlEncodeError(`verdict map ${s.name}: ${JSON.stringify(data)} is not a verdict`, false);
      writeVerdict(w, data);
    } else if (m === 'counter') {
      if (isVerdict(data) || data.kind === 'number') throw new NfnlEncodeError(`counter map ${s.name}: ${JSON.stringify(data)} is not a counter name`, false);
      w.strz(NFTA_SET_ELEM_OBJREF, data.value);
    } else {
      if (isVerdict(data)) throw new NfnlEncodeError(`map ${s.name} of ${m}: ${JSON.stringify(data)} is not a value`, false);
      w.nest(NFTA_SET_ELEM_DATA);
      w.attr(NFTA_DATA_VALUE, encodeValue(m, data));
      w.nestEnd();
    }
  }
  w.nestEnd();
}

/**
 * Encodes element changes as one nf_tables batch, messages in the order
 * given (put deletions before additions when a key changes its data): one
 * message per change, more for a change with very many elements.
 * Sequence numbers run from `seq`: begin, one per message, end (at most
 * one per element plus two).
 * Throws NfnlEncodeError for values it cannot encode (`unsupported` when
 * libnftables could).
 */
export function encodeElementBatch(changes: readonly ElementChange[], seq: number): EncodedBatch {
  const w = new NlWriter(256 + changes.reduce((n, c) => n + 64 + c.elements.length * 96, 0));
  const beginSeq = seq >>> 0;
  w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, beginSeq, 0, NFNL_SUBSYS_NFTABLES);
  w.end();
  const messages: EncodedMessage[] = [];
  let n = beginSeq;
  for (const c of changes) n = writeElementChange(w, c, n, messages);
  const endSeq = (n + 1) >>> 0;
  w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST | NLM_F_ACK, endSeq, 0, NFNL_SUBSYS_NFTABLES);
  w.end();
  return { bytes: w.bytes(), messages, beginSeq, endSeq };
}

/**
 * Writes one element change as its messages (several for very many
 * elements) after sequence number `seq`; appends them to `messages` and
 * returns the last sequence number used.
 */
export function writeElementChange(w: NlWriter, c: ElementChange, seq: number, messages: EncodedMessage[]): number {
  let n = seq;
  const family = NFPROTO[c.set.family];
  if (family === undefined) throw new NfnlEncodeError(`unknown family ${String(c.set.family)}`, false);
  const type = nftMsgType(c.op === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
  const flags = NLM_F_REQUEST | NLM_F_ACK | (c.op === 'add' ? NLM_F_CREATE : 0);
  const types = keyTypes(c.set);
  const interval = c.set.flags?.includes('interval') ?? false;
  const keyLen = interval || c.elements.length === 0 ? undefined : keyLength(types);
  // an attribute's length is 16 bits: many elements take several messages (still one transaction)
  for (let i = 0; i < c.elements.length; ) {
    n = (n + 1) >>> 0;
    const offset = w.begin(type, flags, n, family);
    w.strz(NFTA_SET_ELEM_LIST_TABLE, c.set.table);
    w.strz(NFTA_SET_ELEM_LIST_SET, c.set.name);
    const nest = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    const elementOffsets: number[] = [];
    const first = i;
    while (i < c.elements.length && (i === first || w.length - nest < ELEMENTS_NEST_LIMIT)) {
      elementOffsets.push(w.length - offset);
      writeElement(w, c, c.elements[i] as ElementEntry, i - first, types, interval, keyLen);
      i++;
    }
    w.nestEnd();
    w.end();
    const part = first === 0 && i === c.elements.length ? c : { ...c, elements: c.elements.slice(first, i) };
    messages.push({ seq: n, change: part, offset, length: w.length - offset, elementOffsets });
  }
  return n;
}
