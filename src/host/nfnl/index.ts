// Element deltas straight to nf_tables over netlink: the IP-change path of an
// incremental load without libnftables, whose client first reads the table's
// chains, sets and objects into its cache (4-8 ms of CPU on a 1000-port
// table) before it sends anything, and closes its socket (a wait for an RCU
// grace period after deletions, see socket.ts). The encoder (encode.ts) is
// independent of how the delta was computed; applyElementDelta is the one
// call site the load path uses.
import { toNftJson } from '../../backends/nft/serialize.js';
import { nftApply, type NftRunOptions } from '../nft.js';
import { elementBatch, type SetDelta } from '../load-plan.js';
import { withNetns } from '../netns.js';
import { setDeclOf } from './commands.js';
import { NfnlEncodeError } from './data.js';
import type { ElementChange } from './encode.js';
import { NfnlSocket } from './socket.js';
import { sendElementBatch, type BatchResult } from './transact.js';

export { newSetOf, nfnlChangesOf, setDeclOf } from './commands.js';
export { NfnlEncodeError } from './data.js';
export { encodeElementBatch, type ElementChange, type ElementEntry, type SetDecl } from './encode.js';
export { NfnlSocket } from './socket.js';
export { NfnlBatchError, elementText, sendElementBatch } from './transact.js';

export interface NfnlOptions {
  /** Network namespace to act in (else the calling thread's). */
  netns?: string;
  /** An open socket to use (its namespace wins over `netns`); else one is opened and closed. */
  socket?: NfnlSocket;
  timeoutMs?: number;
}

/**
 * Applies element changes as one nf_tables transaction over netlink.
 * Synchronous: the changes are in force when it returns. A socket it opened
 * is closed on a worker thread (closing waits for the kernel, see socket.ts).
 */
export function applyElementChanges(changes: readonly ElementChange[], opts: NfnlOptions = {}): BatchResult {
  const own = !opts.socket;
  const sock = opts.socket ?? (opts.netns !== undefined ? withNetns(opts.netns, () => NfnlSocket.open()) : NfnlSocket.open());
  try {
    return sendElementBatch(sock, changes, opts.timeoutMs);
  } finally {
    if (own) sock.closeAsync().catch(() => undefined);
  }
}

export interface ElementDeltaOptions extends NftRunOptions {
  /** A netlink socket kept open across changes (saves the close, see socket.ts). */
  socket?: NfnlSocket;
}

export interface ElementDeltaResult {
  /** `nfnl`: the netlink encoder; `nft`: libnftables or the nft program (nftApply). */
  path: 'nfnl' | 'nft';
  /** Why the encoder was not used. */
  fallback?: string;
}

/** A typed element delta (load-plan.ts) as the encoder's changes: every deletion, then every addition. */
export function elementChanges(deltas: readonly SetDelta[]): ElementChange[] {
  return [
    ...deltas.filter((d) => d.remove.length).map((d): ElementChange => ({ op: 'delete', set: setDeclOf(d.set), elements: d.remove })),
    ...deltas.filter((d) => d.add.length).map((d): ElementChange => ({ op: 'add', set: setDeclOf(d.set), elements: d.add })),
  ];
}

/**
 * Applies a typed element delta (load-plan.ts elementDelta) as one
 * transaction: through the netlink encoder when the options ask for
 * in-process work (`inProcess`, no command runner) and it can encode every
 * element, else through nftApply (libnftables or the nft program) with the
 * same commands (elementBatch). A refusal by the kernel throws (nothing applied).
 */
export async function applyElementDelta(deltas: readonly SetDelta[], opts: ElementDeltaOptions = {}): Promise<ElementDeltaResult> {
  let fallback: string | undefined;
  if (opts.inProcess && !opts.runner) {
    try {
      applyElementChanges(elementChanges(deltas), {
        ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
        ...(opts.socket ? { socket: opts.socket } : {}),
        ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      });
      return { path: 'nfnl' };
    } catch (e) {
      // nothing was sent: libnftables has the last word on the values
      if (!(e instanceof NfnlEncodeError)) throw e;
      fallback = e.message;
    }
  } else fallback = opts.runner ? 'a command runner was given' : 'not in-process (--nft-binary)';
  await nftApply(toNftJson(elementBatch(deltas)), opts);
  return { path: 'nft', fallback };
}
export { encodeGetGen, genIdOf, getGeneration, nftGeneration } from './gen.js';
export { applyChanges, encodeChangeBatch, objectChangeText, prepareChangeBatch, sendChangeBatch, sendPreparedBatch, type BatchTiming, type ChangeBatch, type NfnlChange, type ObjectChange } from './objects.js';
export { setFlags, setUserdata, writeNewSet, type NewSet } from './sets.js';
