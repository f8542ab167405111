// The nf_tables generation id: a counter the kernel increments with every
// committed nf_tables transaction in a network namespace (any table, any
// program). NFT_MSG_GETGEN reads it in one round trip, so a load can tell
// cheaply whether anything was committed since it recorded the id: if not,
// the kernel still holds exactly what nwf-fast loaded; if so, it lists its
// tables and compares (host/verify.ts).
import { InternalError } from '../../util/errors.js';
import { withNetns } from '../netns.js';
import { NlWriter, type NlReply } from './netlink.js';
import { NfnlSocket } from './socket.js';
import { NFTA_GEN_ID, NFT_MSG_GETGEN, NFT_MSG_NEWGEN, NLM_F_REQUEST, NLMSG_ERROR, nftMsgType } from './uapi.js';
import { NfnlBatchError } from './transact.js';
import { errnoText } from './socket.js';

/** The GETGEN request (AF_UNSPEC, no attributes). */
export function encodeGetGen(seq: number): Buffer {
  const w = new NlWriter(32);
  w.begin(nftMsgType(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0);
  w.end();
  return w.bytes();
}

/** The generation id of a NEWGEN reply, or undefined for another message. */
export function genIdOf(r: NlReply): number | undefined {
  if (r.type !== nftMsgType(NFT_MSG_NEWGEN)) return undefined;
  const v = r.attrs?.get(NFTA_GEN_ID);
  if (!v || v.length < 4) throw new InternalError('NFT_MSG_NEWGEN without NFTA_GEN_ID');
  return v.readUInt32BE(0);
}

/** What getGeneration needs of a socket (NfnlSocket; a fake in unit tests). */
export interface GenSocket {
  reserveSeq(count: number): number;
  send(bytes: Buffer): void;
  receive(done: (rs: readonly NlReply[]) => boolean, timeoutMs: number): NlReply[];
}

/** Reads the current nf_tables generation id over `sock`. */
export function getGeneration(sock: GenSocket, timeoutMs = 1000): number {
  const seq = sock.reserveSeq(1);
  sock.send(encodeGetGen(seq));
  const mine = (rs: readonly NlReply[]): NlReply | undefined => rs.find((r) => r.seq === seq && (r.type === NLMSG_ERROR || genIdOf(r) !== undefined));
  const r = mine(sock.receive((rs) => mine(rs) !== undefined, timeoutMs));
  if (!r) throw new NfnlBatchError(`nf_tables did not answer NFT_MSG_GETGEN within ${timeoutMs} ms`, 0);
  if (r.type === NLMSG_ERROR) throw new NfnlBatchError(`nf_tables refused NFT_MSG_GETGEN: ${errnoText(r.errno ?? 0)}`, r.errno ?? 0);
  return genIdOf(r) as number;
}

/** The generation id of `netns` (else the calling thread's namespace), on a socket of its own. */
export function nftGeneration(opts: { netns?: string; socket?: NfnlSocket } = {}): number {
  if (opts.socket) return getGeneration(opts.socket);
  const sock = opts.netns !== undefined ? withNetns(opts.netns, () => NfnlSocket.open()) : NfnlSocket.open();
  try {
    return getGeneration(sock);
  } finally {
    // nothing was deleted on this socket: closing it does not wait
    sock.close();
  }
}
