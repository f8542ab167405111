// `unload --force`: removes nwf-fast from the kernel with no readable state,
// by nwf-fast's own markers only: the nft tables named nwf_fast that carry
// an nwf-fast owner mark (any owner id), the tc filters with nwf-fast's
// handle and priority (0x4e57) and the links pinned under the pin directory
// on every interface of the namespace, and the pins named like nwf-fast's
// (shape-*, tap-*: a link whose last pin goes is released). The state
// directory is updated when it can be (nothing loaded, a journal removed,
// an audit line); when it cannot, the unload still happens and says so.
import { existsSync, readFileSync } from 'node:fs';
import { toNftJson } from '../backends/nft/serialize.js';
import { appendAudit } from './audit.js';
import { DEFAULT_PIN_DIR, unpinAll } from './bpf-apply.js';
import { detachPort, queryPort } from './bpf/hook.js';
import { StateDir } from './generation.js';
import { removeJournal } from './journal.js';
import { unloadBatch } from './load-plan.js';
import { ifIndex, withNetns } from './netns.js';
import { nftApply, type NftRunOptions } from './nft.js';
import { describeNotOurs, probeTables } from './table-owner.js';

export interface ForceUnloadOptions extends NftRunOptions {
  stateDir: string;
  pinDir?: string;
}

export interface UnloadResult {
  previous: string | null;
  /** Tables removed, as `family name`. */
  tables: string[];
  notes: string[];
  forced: boolean;
}

/** Names of the interfaces of the calling thread's network namespace. */
export function interfacesHere(): string[] {
  const text = readFileSync('/proc/thread-self/net/dev', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n').slice(2)) {
    const i = line.indexOf(':');
    if (i > 0) out.push(line.slice(0, i).trim());
  }
  return out;
}

/**
 * Removes nwf-fast's programs (its tc filters, handle and priority 0x4e57;
 * its tcx and XDP links pinned under `pinDir`) from every interface of the
 * calling thread's namespace except `keep`. Returns the interfaces it
 * removed them from.
 */
export function detachEverywhere(keep: ReadonlySet<string>, pinDir = DEFAULT_PIN_DIR): string[] {
  const out: string[] = [];
  for (const iface of interfacesHere()) {
    if (keep.has(iface)) continue;
    let ifindex: number;
    try {
      ifindex = ifIndex(iface);
    } catch {
      continue;
    }
    const q = queryPort({ iface, ifindex }, pinDir);
    if (!q.out && !q.in) continue;
    detachPort({ iface, ifindex }, pinDir);
    out.push(iface);
  }
  return out;
}

export async function forceUnload(opts: ForceUnloadOptions): Promise<UnloadResult> {
  const t0 = performance.now();
  const notes: string[] = [];
  // any nwf-fast mark counts, whatever its owner id
  const tables = probeTables(opts, undefined);
  const ours = tables.filter((t) => t.state === 'ours');
  for (const t of tables) if (t.state === 'foreign') notes.push(`${describeNotOurs(t, undefined)}: left alone`);
  if (ours.length) await nftApply(toNftJson(unloadBatch(ours)), opts);
  const detached = opts.netns ? withNetns(opts.netns, () => detachEverywhere(new Set(), opts.pinDir)) : detachEverywhere(new Set(), opts.pinDir);
  if (detached.length) notes.push(`removed nwf-fast's eBPF programs from ${detached.join(', ')}`);
  unpinAll(opts.pinDir);
  // the state directory, if it can still record anything
  const state = new StateDir(opts.stateDir);
  let previous: string | null = null;
  if (!existsSync(state.dir)) {
    notes.push(`no state directory ${state.dir}: nothing recorded`);
    return { previous, tables: ours.map((t) => `${t.family} ${t.name}`), notes, forced: true };
  }
  try {
    let history: string[] = [];
    try {
      const s = state.read();
      previous = s.current;
      history = s.history;
    } catch {
      // damaged: replaced by a record of nothing loaded
    }
    state.write({ current: null, history });
    removeJournal(state);
    appendAudit(state.dir, { op: 'unload', outcome: 'ok', generation: null, previous, durationMs: Math.round((performance.now() - t0) * 10) / 10, forced: true });
  } catch (e) {
    notes.push(`the state directory ${state.dir} was not updated (${(e as Error).message}); the kernel is clean`);
  }
  return { previous, tables: ours.map((t) => `${t.family} ${t.name}`), notes, forced: true };
}
