// --backend both, dhcp ports: the eBPF program is the learner; this keeps
// the nft second line's learned-state sets in step with the program's live
// leases (docs/design/ip-learning.md 3 "Backends"). Each lease is an element
// of the port's own lease set lrn-lease-<tap> (the set its `$IP` tests read,
// as under --backend nft: backends/nft/learn.ts) whose timeout is the lease's
// remaining time, and the tap is in lrn-locked until its last lease ends, so
// the nft line drops a lease when the program does (within the copy's
// rounding), without a copy. A port's elements are written again when they
// differ from the program's leases: a new lease, a RELEASE, a renewal (a
// later expiry). Until a lease is copied the nft line keeps the port in its
// DHCP-only rules (learn.ts, a dhcp port under both never learns on its
// own): it fails closed, never open.
import { BRIDGE_TABLE, nftNames } from '../../backends/nft/names.js';
import { add, del, elem, nftTable, str, sym } from '../../backends/nft/build.js';
import type { NftCommand } from '../../backends/nft/model.js';
import type { LearnedAddress } from '../../ir/learning.js';
import { nftListSet, listed } from '../nft.js';
import type { CommandRunner } from '../runner.js';

const br = nftTable('bridge', BRIDGE_TABLE);

/** The longest element timeout written (s): a longer lease is copied again when its element ends. */
export const MAX_COPY_TIMEOUT_S = 24 * 86400;
/** A copied lease whose nft expiry differs from the program's by more than this (s) is written again. */
const SLACK_S = 5;

interface NftLease {
  ip: string;
  /** Seconds left; undefined: no timeout. */
  expires?: number;
}

/** A lease set's elements (`{"elem": {"val": ADDR, "expires": S}}` or ADDR), with their seconds left. */
function nftLeases(elems: unknown): NftLease[] {
  const out: NftLease[] = [];
  if (!Array.isArray(elems)) return out;
  for (const e of elems) {
    const inner = e && typeof e === 'object' && 'elem' in e ? (e as { elem: { val?: unknown; expires?: unknown } }).elem : undefined;
    const v = inner ? inner.val : e;
    if (typeof v !== 'string') continue;
    out.push({ ip: v, ...(typeof inner?.expires === 'number' ? { expires: inner.expires } : {}) });
  }
  return out;
}

/** Seconds left of a lease (undefined: infinite, or beyond MAX_COPY_TIMEOUT_S: copied with the cap). */
function secondsLeft(a: LearnedAddress, now: number): number | undefined {
  if (a.expires === undefined) return undefined;
  const s = Math.ceil((Date.parse(a.expires) - now) / 1000);
  return s >= MAX_COPY_TIMEOUT_S * 100 ? undefined : Math.min(s, MAX_COPY_TIMEOUT_S);
}

const COMMENT = 'dhcp lease learned by the eBPF program';

/**
 * nft commands that bring the lease-set / lrn-locked elements of the dhcp
 * ports `taps` to the program's live leases (`bpf`), and the taps they
 * change.
 */
export async function leaseSync(taps: readonly string[], bpf: ReadonlyMap<string, LearnedAddress[]>, opts: { netns?: string; runner?: CommandRunner }, now = Date.now()): Promise<{ cmds: NftCommand[]; ports: string[] }> {
  const run = { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) };
  const locked = nftNames.learnedLocked();
  const cmds: NftCommand[] = [];
  const ports: string[] = [];
  for (const tap of taps) {
    const set = nftNames.learnedLeases(tap);
    let cur: NftLease[];
    try {
      cur = nftLeases(listed(await nftListSet('bridge', BRIDGE_TABLE, set, run), 'set')[0]?.elem);
    } catch {
      continue; // no lease set: the port is not a dhcp port of the nft line (nothing to copy into)
    }
    const want = (bpf.get(tap) ?? []).filter((a) => a.expires === undefined || Date.parse(a.expires) > now).map((a) => ({ ip: a.ip, left: secondsLeft(a, now) }));
    const same =
      want.length === cur.length &&
      want.every((w) => {
        const c = cur.find((x) => x.ip === w.ip);
        if (c === undefined) return false;
        if (w.left === undefined) return c.expires === undefined;
        // a lease longer than the cap was written with the cap: written again only when a day of it has gone
        if (w.left === MAX_COPY_TIMEOUT_S) return c.expires !== undefined && c.expires > MAX_COPY_TIMEOUT_S - 86400;
        return c.expires !== undefined && Math.abs(c.expires - w.left) <= SLACK_S;
      });
    if (same) continue;
    ports.push(tap);
    // the old elements go (each added first, so that deleting it cannot fail), the leases come back in the same transaction
    if (cur.length) {
      const old = br.element(set, cur.map((c) => sym(c.ip)));
      const lock = br.element(locked, [str(tap)]);
      cmds.push(add(old), add(lock), del(old), del(lock));
    }
    if (!want.length) continue;
    cmds.push(add(br.element(set, want.map((w) => elem(sym(w.ip), COMMENT, w.left)))));
    let longest: number | undefined = 0;
    for (const w of want) longest = longest === undefined || w.left === undefined ? undefined : Math.max(longest, w.left);
    cmds.push(add(br.element(locked, [elem(str(tap), COMMENT, longest)])));
  }
  return { cmds, ports };
}
