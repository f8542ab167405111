// nf_tables changes as one netlink batch, mixed in the order given: add a
// (regular) chain, a counter, a named set or map (sets.ts), or a rule of the
// kinds rules.ts encodes; flush a chain (delete its rules); delete a chain,
// a set or map, a counter, a table; and element changes (encode.ts). That
// is every command of a port joining or leaving a shape, of a port bringing
// a new shape (its chains, sets and rules), and of a load's cleanup, sent
// without libnftables (whose client reads the whole table first, and waits
// for the kernel on close): base chains, tables and other rules are left to
// libnftables.
import type { Statement } from '../../backends/nft/model.js';
import { withNetns } from '../netns.js';
import { writeElementChange, type ElementChange, type EncodedMessage } from './encode.js';
import { NFTA_SET, writeNewSet, type NewSet } from './sets.js';
import { NlWriter } from './netlink.js';
import { ANON_SET_NAME, anonymousCtStates, commentUserdata, CT_STATE_SET_USERDATA, NFTA_RULE, writeRuleExpressions } from './rules.js';
import { NfnlSocket, errnoText } from './socket.js';
import { elementText, NfnlBatchError, sendBatch, type BatchSocket } from './transact.js';
import {
  NFNL_MSG_BATCH_BEGIN,
  NFNL_MSG_BATCH_END,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  nftMsgType,
  VERDICT_CODE,
  type NfFamily,
} from './uapi.js';
import { NfnlEncodeError } from './data.js';

/** enum nf_tables_msg_types (the ones used here). */
const MSG = { NEWSETELEM: 12, NEWTABLE: 0, DELTABLE: 2, NEWCHAIN: 3, DELCHAIN: 5, NEWRULE: 6, DELRULE: 8, NEWSET: 9, DELSET: 11, NEWOBJ: 18, DELOBJ: 20 } as const;
/** NLM_F_APPEND: a new rule goes to the end of its chain. */
const NLM_F_APPEND = 0x800;
/** Attribute numbers: NFTA_TABLE_NAME, NFTA_CHAIN_*, NFTA_RULE_*, NFTA_SET_*, NFTA_OBJ_*. */
const A = { TABLE_NAME: 1, TABLE_FLAGS: 2, CHAIN_TABLE: 1, CHAIN_NAME: 3, RULE_TABLE: 1, RULE_CHAIN: 2, SET_TABLE: 1, SET_NAME: 2, OBJ_TABLE: 1, OBJ_NAME: 2, OBJ_TYPE: 3, OBJ_DATA: 4 } as const;
const NFT_OBJECT_COUNTER = 1;

/** A base chain's hook: nft's type, hook, priority and policy (and device of a netdev chain). */
export interface BaseChainHook {
  type: 'filter' | 'nat' | 'route';
  hook: string;
  prio: number;
  policy?: 'accept' | 'drop';
  dev?: string;
}

export type ObjectChange =
  | { op: 'add'; kind: 'chain'; family: NfFamily; table: string; name: string; base?: BaseChainHook }
  | { op: 'flush' | 'delete'; kind: 'chain'; family: NfFamily; table: string; name: string }
  | { op: 'add' | 'delete'; kind: 'counter'; family: NfFamily; table: string; name: string }
  | { op: 'delete'; kind: 'set'; family: NfFamily; table: string; name: string }
  | ({ op: 'add'; kind: 'set' } & NewSet)
  | { op: 'add' | 'delete'; kind: 'table'; family: NfFamily; name: string }
  | { op: 'add'; kind: 'rule'; family: NfFamily; table: string; chain: string; statements: readonly Statement[]; comment?: string };

/** An object change, or element changes of one set. */
export type NfnlChange = ObjectChange | { kind: 'elements'; change: ElementChange };

/** The change in nft's words, for messages. */
export function objectChangeText(c: NfnlChange): string {
  switch (c.kind) {
    case 'table':
      return `${c.op} table ${c.family} ${c.name}`;
    case 'rule':
      return `add a rule to chain ${c.family} ${c.table} ${c.chain}${c.comment ? ` (${c.comment})` : ''}`;
    case 'elements':
      return `${c.change.op} ${c.change.elements.length === 1 ? `element ${elementText(c.change.elements[0] as never, c.change.set)}` : `${c.change.elements.length} elements`} ${c.change.op === 'add' ? 'to' : 'from'} ${c.change.set.name}`;
    default:
      return `${c.op} ${c.kind} ${c.family} ${c.table} ${c.name}`;
  }
}

/** An anonymous set's flags (NFT_SET_ANONYMOUS, NFT_SET_CONSTANT), nft's ct_state datatype, NFTA_SET_DESC_SIZE, enum nft_set_elem_list_attributes. */
const SET_ANONYMOUS = 0x1;
const SET_CONSTANT = 0x2;
const CT_STATE_TYPE = 26;
const SET_DESC_SIZE = 1;
const ELEM_LIST = { TABLE: 1, SET: 2, ELEMENTS: 3, SET_ID: 4 } as const;

/** enum nft_chain_attributes (a base chain's), nft_hook_attributes. */
const CHAIN = { HOOK: 4, POLICY: 5, TYPE: 7 } as const;
const HOOK = { NUM: 1, PRIORITY: 2, DEV: 3 } as const;
/** Hook numbers: enum nf_inet_hooks (the bridge family's nf_br_hooks have the same numbers), nf_dev_hooks. */
const HOOKS: Readonly<Record<string, number>> = { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4, ingress: 5 };
const NETDEV_HOOKS: Readonly<Record<string, number>> = { ingress: 0, egress: 1 };

/** A base chain's type, policy and hook, in the order nft 1.0.6 writes them. */
function writeBaseChain(w: NlWriter, family: NfFamily, b: BaseChainHook): void {
  const num = (family === 'netdev' ? NETDEV_HOOKS : HOOKS)[b.hook];
  if (num === undefined) throw new NfnlEncodeError(`the ${family} hook ${b.hook} is not encoded here`, true);
  if (!Number.isInteger(b.prio) || b.prio < -0x80000000 || b.prio > 0x7fffffff) throw new NfnlEncodeError(`chain priority ${b.prio} is not a 32-bit integer`, false);
  w.strz(CHAIN.TYPE, b.type);
  if (b.policy !== undefined) w.be32(CHAIN.POLICY, VERDICT_CODE[b.policy]);
  w.nest(CHAIN.HOOK);
  w.be32(HOOK.NUM, num);
  w.be32(HOOK.PRIORITY, b.prio);
  if (b.dev !== undefined) w.strz(HOOK.DEV, b.dev);
  w.nestEnd();
}

/**
 * The anonymous sets a rule looks up (`ct state { new, established }`), as
 * nft creates them in the same batch right before the rule: an
 * NFT_MSG_NEWSET (anonymous, constant, its elements' count as its size,
 * NFTA_SET_ID the message's sequence number) and an NFT_MSG_NEWSETELEM
 * naming it by that id, each under its own sequence number after `seq`.
 * Returns the last sequence number used and the sets' ids in the rule's order.
 */
function writeAnonymousSets(w: NlWriter, c: Extract<ObjectChange, { kind: 'rule' }>, seq: number, messages: { seq: number; change: NfnlChange }[]): { seq: number; ids: number[] } {
  let n = seq;
  const ids: number[] = [];
  const family = NFPROTO[c.family];
  const req = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
  for (const s of c.statements) {
    const keys = anonymousCtStates(s);
    if (!keys) continue;
    n = (n + 1) >>> 0;
    const id = n;
    w.begin(nftMsgType(MSG.NEWSET), req, n, family);
    w.strz(NFTA_SET.TABLE, c.table);
    w.strz(NFTA_SET.NAME, ANON_SET_NAME);
    w.be32(NFTA_SET.FLAGS, SET_ANONYMOUS | SET_CONSTANT);
    w.be32(NFTA_SET.KEY_TYPE, CT_STATE_TYPE);
    w.be32(NFTA_SET.KEY_LEN, 4);
    w.be32(NFTA_SET.ID, id);
    w.nest(NFTA_SET.DESC);
    w.be32(SET_DESC_SIZE, keys.length);
    w.nestEnd();
    w.attr(NFTA_SET.USERDATA, CT_STATE_SET_USERDATA);
    w.end();
    messages.push({ seq: n, change: c });
    n = (n + 1) >>> 0;
    w.begin(nftMsgType(MSG.NEWSETELEM), req, n, family);
    w.strz(ELEM_LIST.TABLE, c.table);
    w.strz(ELEM_LIST.SET, ANON_SET_NAME);
    w.be32(ELEM_LIST.SET_ID, id);
    w.nest(ELEM_LIST.ELEMENTS);
    for (const k of keys) {
      w.nest(1); // NFTA_LIST_ELEM
      w.nest(1); // NFTA_SET_ELEM_KEY
      w.attr(1, k); // NFTA_DATA_VALUE
      w.nestEnd();
      w.nestEnd();
    }
    w.nestEnd();
    w.end();
    messages.push({ seq: n, change: c });
    ids.push(id);
  }
  return { seq: n, ids };
}

function writeChange(w: NlWriter, c: ObjectChange, seq: number, anonSetIds: readonly number[] = []): void {
  const family = NFPROTO[c.family];
  const req = NLM_F_REQUEST | NLM_F_ACK;
  switch (c.kind) {
    case 'rule':
      w.begin(nftMsgType(MSG.NEWRULE), req | NLM_F_CREATE | NLM_F_APPEND, seq, family);
      w.strz(NFTA_RULE.TABLE, c.table);
      w.strz(NFTA_RULE.CHAIN, c.chain);
      writeRuleExpressions(w, c.statements, c.family, anonSetIds);
      if (c.comment !== undefined) w.attr(NFTA_RULE.USERDATA, commentUserdata(c.comment));
      break;
    case 'table':
      // as nft adds a table: no NLM_F_CREATE, flags 0 (an existing table stays as it is, its comment too)
      w.begin(nftMsgType(c.op === 'add' ? MSG.NEWTABLE : MSG.DELTABLE), req, seq, family);
      w.strz(A.TABLE_NAME, c.name);
      if (c.op === 'add') w.be32(A.TABLE_FLAGS, 0);
      break;
    case 'chain':
      if (c.op === 'flush') {
        // a DELRULE without a handle deletes every rule of the chain
        w.begin(nftMsgType(MSG.DELRULE), req, seq, family);
        w.strz(A.RULE_TABLE, c.table);
        w.strz(A.RULE_CHAIN, c.name);
      } else {
        w.begin(nftMsgType(c.op === 'add' ? MSG.NEWCHAIN : MSG.DELCHAIN), c.op === 'add' ? req | NLM_F_CREATE : req, seq, family);
        w.strz(A.CHAIN_TABLE, c.table);
        w.strz(A.CHAIN_NAME, c.name);
        if (c.op === 'add' && c.base) writeBaseChain(w, c.family, c.base);
      }
      break;
    case 'set':
      if (c.op === 'add') {
        // NFTA_SET_ID: the message's sequence number is unique in the batch
        w.begin(nftMsgType(MSG.NEWSET), req | NLM_F_CREATE, seq, family);
        writeNewSet(w, c, seq || 0xffffffff);
        break;
      }
      w.begin(nftMsgType(MSG.DELSET), req, seq, family);
      w.strz(A.SET_TABLE, c.table);
      w.strz(A.SET_NAME, c.name);
      break;
    case 'counter':
      w.begin(nftMsgType(c.op === 'add' ? MSG.NEWOBJ : MSG.DELOBJ), c.op === 'add' ? req | NLM_F_CREATE : req, seq, family);
      w.strz(A.OBJ_TABLE, c.table);
      w.strz(A.OBJ_NAME, c.name);
      w.be32(A.OBJ_TYPE, NFT_OBJECT_COUNTER);
      if (c.op === 'add') {
        // a counter starting at zero: an empty data nest
        w.nest(A.OBJ_DATA);
        w.nestEnd();
      }
      break;
  }
  w.end();
}

/** The changes as one batch (begin, a message each, several for very many elements, end). */
export function encodeChangeBatch(changes: readonly NfnlChange[], seq: number): { bytes: Buffer; messages: { seq: number; change: NfnlChange }[]; beginSeq: number; endSeq: number } {
  const w = new NlWriter(256 + changes.reduce((n, c) => n + (c.kind === 'elements' ? 64 + c.change.elements.length * 96 : 160), 0));
  const beginSeq = seq >>> 0;
  w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, beginSeq, 0, NFNL_SUBSYS_NFTABLES);
  w.end();
  const messages: { seq: number; change: NfnlChange }[] = [];
  let n = beginSeq;
  for (const change of changes) {
    if (change.kind === 'elements') {
      const em: EncodedMessage[] = [];
      n = writeElementChange(w, change.change, n, em);
      for (const m of em) messages.push({ seq: m.seq, change: { kind: 'elements', change: m.change } });
    } else if (change.kind === 'rule') {
      const anon = writeAnonymousSets(w, change, n, messages);
      n = (anon.seq + 1) >>> 0;
      writeChange(w, change, n, anon.ids);
      messages.push({ seq: n, change });
    } else {
      n = (n + 1) >>> 0;
      writeChange(w, change, n);
      messages.push({ seq: n, change });
    }
  }
  const endSeq = (n + 1) >>> 0;
  w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST | NLM_F_ACK, endSeq, 0, NFNL_SUBSYS_NFTABLES);
  w.end();
  return { bytes: w.bytes(), messages, beginSeq, endSeq };
}

/** Sequence numbers a batch of these changes may use. */
const seqsFor = (changes: readonly NfnlChange[]): number => changes.reduce((n, c) => n + (c.kind === 'elements' ? c.change.elements.length : c.kind === 'rule' ? 1 + 2 * c.statements.filter((s) => s.kind === 'match' && s.left.kind === 'ct' && s.right.kind === 'set').length : 1), 2);

/** An encoded batch, ready to send on the socket whose sequence numbers it uses. */
export type ChangeBatch = ReturnType<typeof encodeChangeBatch>;

/**
 * Encodes the changes for `sock` (throws NfnlEncodeError for a change this
 * encoder does not cover: nothing is sent). `ackEach: false`: only the end
 * of the batch asks for an acknowledgement (the kernel still reports every
 * refused message): a batch of thousands of messages would otherwise
 * overflow the socket's receive buffer with acknowledgements.
 */
export function prepareChangeBatch(sock: Pick<BatchSocket, 'reserveSeq'>, changes: readonly NfnlChange[], opts: { ackEach?: boolean } = {}): ChangeBatch {
  const batch = encodeChangeBatch(changes, sock.reserveSeq(seqsFor(changes)));
  if (opts.ackEach === false) {
    const b = batch.bytes;
    for (let at = 0; at + 16 <= b.length; ) {
      const len = b.readUInt32LE(at);
      if (b.readUInt32LE(at + 8) !== batch.endSeq) b.writeUInt16LE(b.readUInt16LE(at + 6) & ~NLM_F_ACK, at + 6);
      at += (len + 3) & ~3;
    }
  }
  return batch;
}

/**
 * Sends an encoded batch as one transaction; throws NfnlBatchError naming
 * the change the kernel refused (then nothing changed).
 */
export function sendPreparedBatch(sock: BatchSocket, batch: ChangeBatch, timeoutMs = 2000, encodeMs = 0): BatchTiming {
  const t1 = performance.now();
  const errors = sendBatch(sock, batch, timeoutMs, 'batch');
  const timing = { encodeMs, kernelMs: performance.now() - t1 };
  const e = errors[0];
  if (!e) return timing;
  const m = batch.messages.find((x) => x.seq === e.seq);
  throw new NfnlBatchError(`nf_tables refused to ${m ? objectChangeText(m.change) : 'commit the batch'}: ${errnoText(e.errno ?? 0)}${e.extMsg ? `; kernel: ${e.extMsg}` : ''}${errors.length > 1 ? ` (and ${errors.length - 1} more refusal${errors.length > 2 ? 's' : ''})` : ''}`, e.errno ?? 0);
}

/**
 * Sends the changes as one transaction; throws NfnlBatchError naming the
 * change the kernel refused (then nothing changed), NfnlEncodeError for a
 * change this encoder does not cover (nothing sent).
 */
export function sendChangeBatch(sock: BatchSocket, changes: readonly NfnlChange[], timeoutMs = 2000): BatchTiming {
  if (!changes.length) return { encodeMs: 0, kernelMs: 0 };
  const t0 = performance.now();
  const batch = prepareChangeBatch(sock, changes);
  return sendPreparedBatch(sock, batch, timeoutMs, performance.now() - t0);
}

/** Where a batch's time went: encoding it (user space), and from its first byte sent to the kernel's last acknowledgement (nf_tables runs the batch within send()). */
export interface BatchTiming {
  encodeMs: number;
  kernelMs: number;
}

/** Applies changes in `netns` (else the calling thread's) on the socket given, or on one of its own closed without waiting for the kernel. */
export function applyChanges(changes: readonly NfnlChange[], opts: { netns?: string; socket?: NfnlSocket; timeoutMs?: number } = {}): void {
  const own = !opts.socket;
  const sock = opts.socket ?? (opts.netns !== undefined ? withNetns(opts.netns, () => NfnlSocket.open()) : NfnlSocket.open());
  try {
    sendChangeBatch(sock, changes, opts.timeoutMs);
  } finally {
    if (own) sock.closeAsync().catch(() => undefined);
  }
}
