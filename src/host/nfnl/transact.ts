// Sends element changes as one batch and checks what the kernel answered:
// the batch is in force only when no message was refused and the commit was
// acknowledged (the batch end, or every message on kernels that do not
// acknowledge the end). Anything else is an error naming the set, the
// element and the errno; the kernel has then rolled the whole batch back.
import { CODES, NwfError } from '../../util/errors.js';
import { verdictWords, type Atom, type SetItem, type SetKeyType, type Verdict } from '../../backends/nft/model.js';
import { encodeElementBatch, type ElementChange, type ElementEntry, type EncodedBatch, type EncodedMessage, type SetDecl } from './encode.js';
import type { NlReply } from './netlink.js';
import { errnoText } from './socket.js';
import { NLMSG_ERROR } from './uapi.js';

/** The kernel refused an element batch (nothing of it was applied), or did not say whether it applied it. */
export class NfnlBatchError extends NwfError {
  /** Positive errno, or 0 when the kernel's answer was missing. */
  readonly errno: number;
  readonly change?: ElementChange;
  readonly element?: ElementEntry;
  constructor(message: string, errno: number, change?: ElementChange, element?: ElementEntry) {
    super(CODES.LOAD_FAILED, message, {
      hint:
        errno === 0
          ? 'the kernel did not acknowledge the batch: run `nwf-fast status` (drift) or load the generation again with --full'
          : 'nf_tables rolled the whole batch back: nothing was changed',
    });
    this.name = 'NfnlBatchError';
    this.errno = errno;
    if (change) this.change = change;
    if (element !== undefined) this.element = element;
  }
}

/** One value in nft's words: interface names quoted, addresses and numbers bare. */
function itemText(i: SetItem, type?: SetKeyType): string {
  switch (i.kind) {
    case 'string':
      return type === undefined || type === 'ifname' ? JSON.stringify(i.value) : i.value;
    case 'number':
    case 'symbol':
      return String(i.value);
    case 'prefix':
      return `${i.addr}/${i.len}`;
    case 'range':
      return `${itemText(i.from, type)}-${itemText(i.to, type)}`;
    case 'tuple':
      return i.items.map((x) => itemText(x)).join(' . ');
    case 'elem':
      return itemText(i.value, type);
  }
}

function dataText(d: Atom | Verdict): string {
  if (d.kind === 'string') return JSON.stringify(d.value);
  return d.kind === 'number' || d.kind === 'symbol' ? String(d.value) : verdictWords(d);
}

/** An element in nft's words: `"vnet0" . 10.0.0.1`, `"vnet0" : jump is0`. */
export function elementText(e: ElementEntry, set?: Pick<SetDecl, 'type'>): string {
  const types = set === undefined ? undefined : typeof set.type === 'string' ? [set.type] : set.type;
  const key = (k: SetItem): string => (k.kind === 'tuple' ? k.items.map((x, i) => itemText(x, types?.[i] ?? 'ifname')).join(' . ') : itemText(k, types?.[0]));
  if (Array.isArray(e)) {
    const [k, d] = e as readonly [SetItem, Atom | Verdict];
    return `${key(k)} : ${dataText(d)}`;
  }
  return key(e as SetItem);
}

const setText = (c: ElementChange): string => `${c.set.map ? 'map' : 'set'} ${c.set.family} ${c.set.table} ${c.set.name}`;

/** What an errno means for an element operation. */
function meaning(errno: number, c: ElementChange, atElement: boolean): string {
  const del = c.op === 'delete';
  switch (errno) {
    case 2: // ENOENT
      if (!atElement) return 'the table or the set does not exist';
      if (del) return 'the element is not in the set';
      return c.set.map === 'verdict' ? 'the chain the element jumps to does not exist' : c.set.map === 'counter' ? 'the counter the element names does not exist' : 'not found';
    case 17: // EEXIST
      return 'the key is already in the set with other data, or overlaps an interval in it';
    case 22: // EINVAL
      return 'the kernel rejected the element (its key or data does not match the set definition)';
    case 16: // EBUSY
      return 'the set is in use and cannot change';
    case 28: // ENOSPC
    case 23: // ENFILE
      return 'the set is full';
    case 1: // EPERM
      return 'changing nf_tables needs CAP_NET_ADMIN in this network namespace';
    default:
      return '';
  }
}

function refusal(batch: EncodedBatch, r: NlReply, count: number): NfnlBatchError {
  const errno = r.errno as number;
  const m: EncodedMessage | undefined = batch.messages.find((x) => x.seq === r.seq);
  const more = count > 1 ? ` (and ${count - 1} more refusal${count > 2 ? 's' : ''})` : '';
  const ext = r.extMsg ? `; kernel: ${r.extMsg}` : '';
  if (!m) {
    return new NfnlBatchError(`nf_tables refused the element batch at commit: ${errnoText(errno)}${ext}${more}`, errno);
  }
  const c = m.change;
  let idx = -1;
  if (r.extOffset !== undefined) {
    for (let i = 0; i < m.elementOffsets.length; i++) if ((m.elementOffsets[i] as number) <= r.extOffset) idx = i;
  } else if (c.elements.length === 1) idx = 0;
  const e = idx >= 0 ? c.elements[idx] : undefined;
  const atElement = r.extOffset === undefined ? c.elements.length > 0 : idx >= 0;
  const what = c.op === 'delete' ? 'delete' : 'add';
  const elemPart = e !== undefined ? ` element ${elementText(e, c.set)}` : ` ${c.elements.length} element(s)`;
  const why = meaning(errno, c, atElement);
  return new NfnlBatchError(
    `nf_tables refused to ${what}${elemPart} ${c.op === 'delete' ? 'from' : 'to'} ${setText(c)}: ${errnoText(errno)}${why ? `: ${why}` : ''}${ext}${more}`,
    errno,
    c,
    ...(e !== undefined ? [e] : []),
  );
}

/** What sendElementBatch needs of a socket (NfnlSocket; a fake in unit tests). */
export interface BatchSocket {
  reserveSeq(count: number): number;
  send(bytes: Buffer): void;
  receive(done: (rs: readonly NlReply[]) => boolean, timeoutMs: number): NlReply[];
}

export interface BatchResult {
  messages: number;
  elements: number;
  bytes: number;
}

/**
 * Sends an encoded batch and waits (at most timeoutMs) for the kernel's
 * verdict: returns the error replies (empty: applied); throws NfnlBatchError
 * when the kernel did not say (whether it applied the batch is unknown).
 */
export function sendBatch(sock: BatchSocket, batch: { bytes: Buffer; beginSeq: number; endSeq: number; messages: readonly { seq: number }[] }, timeoutMs: number, what: string): NlReply[] {
  const ours = (r: NlReply): boolean => r.type === NLMSG_ERROR && ((r.seq - batch.beginSeq) >>> 0) <= ((batch.endSeq - batch.beginSeq) >>> 0);
  const acked = (rs: readonly NlReply[]): boolean => {
    const mine = rs.filter(ours);
    if (mine.some((r) => r.errno !== 0)) return true;
    if (mine.some((r) => r.seq === batch.endSeq)) return true;
    const seqs = new Set(mine.map((r) => r.seq));
    return batch.messages.every((m) => seqs.has(m.seq));
  };
  sock.send(batch.bytes);
  const replies = sock.receive(acked, timeoutMs).filter(ours);
  const errors = replies.filter((r) => r.errno !== 0);
  if (errors.length) return errors;
  if (!acked(replies)) {
    throw new NfnlBatchError(`nf_tables did not acknowledge the ${what} within ${timeoutMs} ms (${replies.length} of ${batch.messages.length + 1} acknowledgements): whether it was applied is unknown`, 0);
  }
  return [];
}

/**
 * Encodes `changes` as one nf_tables transaction, sends it on `sock` and
 * waits (at most timeoutMs) for the kernel's verdict. Throws NfnlBatchError
 * when the kernel refused it or did not answer, NfnlEncodeError when a value
 * cannot be encoded (nothing sent).
 */
export function sendElementBatch(sock: BatchSocket, changes: readonly ElementChange[], timeoutMs = 2000): BatchResult {
  const elements = changes.reduce((n, c) => n + c.elements.length, 0);
  if (elements === 0) return { messages: 0, elements: 0, bytes: 0 };
  const batch = encodeElementBatch(changes, sock.reserveSeq(elements + 2));
  const errors = sendBatch(sock, batch, timeoutMs, 'element batch');
  if (errors.length) throw refusal(batch, errors[0] as NlReply, errors.length);
  return { messages: batch.messages.length, elements, bytes: batch.bytes.length };
}
