// Element deltas straight to nf_tables over netlink: the IP-change path of an
// incremental load without libnftables, whose client first reads the table's
// chains, sets and objects into its cache (4-8 ms of CPU on a 1000-port
// table) before it sends anything, and closes its socket (a wait for an RCU
// grace period after deletions, see socket.ts). The encoder (encode.ts) is
// independent of how the delta was computed; applyElementDelta is the one
// call site the load path uses.
import type { NftJsonDocument } from '../../backends/nft/model.js';
import { nftApply, type NftRunOptions } from '../nft.js';
import { withNetns } from '../netns.js';
import { NfnlEncodeError } from './data.js';
import type { ElementChange } from './encode.js';
import { elementChangesFromJson } from './from-json.js';
import { NfnlSocket } from './socket.js';
import { sendElementBatch, type BatchResult } from './transact.js';

export { NfnlEncodeError } from './data.js';
export { encodeElementBatch, type ElementChange, type ElementEntry, type SetDecl } from './encode.js';
export { NfnlSocket } from './socket.js';
export { NfnlBatchError, elementText, sendElementBatch } from './transact.js';
export { elementChangesFromJson, setDeclsFromJson } from './from-json.js';

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

/** An element delta as the load path has it today (libnftables JSON). */
export interface ElementDeltaPlan {
  /** The delta with the kernel's (load-tagged) object names. */
  live: NftJsonDocument;
  /** The same delta with the generation's own names (command for command). */
  plain: NftJsonDocument;
  /** The generation the delta leads to: the set declarations (key and data types). */
  build: NftJsonDocument;
}

export interface ElementDeltaResult {
  /** `nfnl`: the netlink encoder; `nft`: libnftables or the nft program (nftApply). */
  path: 'nfnl' | 'nft';
  /** Why the encoder was not used. */
  fallback?: string;
}

/**
 * Applies an element delta: through the netlink encoder when the options ask
 * for in-process work (`inProcess`, no command runner) and it can encode
 * every element, else through nftApply (libnftables or the nft program). Either way one
 * transaction; a refusal by the kernel throws (nothing applied).
 */
export async function applyElementDelta(plan: ElementDeltaPlan, opts: ElementDeltaOptions = {}): Promise<ElementDeltaResult> {
  let fallback: string | undefined;
  if (opts.inProcess && !opts.runner) {
    const changes = elementChangesFromJson(plan.live, plan.plain, plan.build);
    if (!changes) fallback = 'the delta is not a plain element delta over declared sets';
    else {
      try {
        applyElementChanges(changes, {
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
    }
  } else fallback = opts.runner ? 'a command runner was given' : 'not in-process (--nft-binary)';
  await nftApply(plan.live, opts);
  return { path: 'nft', fallback };
}
