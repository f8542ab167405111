// Every name nwf-fast generates in nftables comes from here, and so does the
// load-tag format.
//
// Load tags: base chains are never deleted (their hooks would be unregistered
// for a moment) and named counters keep their counts, so both have plain
// names. Every other object of a generation carries the tag of the load that
// created it as a name prefix (`g1a2b3c_is0`): a load builds the new objects
// next to the live ones under a fresh tag, and deletes the previous tag's
// objects afterwards (host/load-plan.ts). Lowering takes the tag (nftNames).
import { createHash, randomBytes } from 'node:crypto';
import type { Direction, L3Path } from '../../ir/types.js';
import type { DropReason } from '../../ir/reasons.js';
import { InternalError } from '../../util/errors.js';

export const BRIDGE_TABLE = 'nwf_fast';
export const INET_TABLE = 'nwf_fast';

// ---- load tags ---------------------------------------------------------------------

/** `g` and six hex digits, followed by `_` in a name. */
const TAG_PREFIX_RE = /^(g[0-9a-f]{6})_/;

/** A fresh random load tag, none of `avoid`. */
export function newTag(avoid: ReadonlySet<string> = new Set()): string {
  for (;;) {
    const t = `g${randomBytes(3).toString('hex')}`;
    if (!avoid.has(t)) return t;
  }
}

/** The load tag an object name carries, if any. */
export function tagOf(name: string): string | undefined {
  return TAG_PREFIX_RE.exec(name)?.[1];
}

/** An object name with its load tag (if any) replaced by `*`: names that differ only in their tag compare equal. */
export function tagFree(name: string): string {
  return name.replace(TAG_PREFIX_RE, '*_');
}

/** A name part that nft accepts unquoted; interface names with other characters get a hash suffix. */
export function namePart(s: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(s)) return s;
  const h = createHash('sha256').update(s).digest('hex').slice(0, 6);
  return `${s.replace(/[^A-Za-z0-9_-]/g, '_')}_${h}`;
}

// ---- names of one generation --------------------------------------------------------

/** Base chains (plain names: never deleted, only flushed and refilled). */
export const BASE_CHAINS = {
  bridgePre: 'pre',
  bridgePost: 'post',
  bridgeMark: 'mark_fwd',
  l3Forward: 'l3_forward',
  l3Input: 'l3_input',
} as const;

/** Named drop counters (plain names: their counts survive reloads). */
export function dropCounter(iface: string, reason: DropReason | 'host'): string {
  return `drop_${namePart(iface)}_${reason}`;
}

/** Parses a drop counter name back (for status). */
export function parseDropCounter(name: string, ifaces: readonly string[]): { iface: string; reason: string } | undefined {
  for (const iface of ifaces) {
    const p = `drop_${namePart(iface)}_`;
    if (name.startsWith(p)) return { iface, reason: name.slice(p.length) };
  }
  return undefined;
}

/** The names of one generation's objects, every one but base chains and counters under `tag`. */
export interface NftNames {
  readonly tag: string | undefined;
  /** Dispatch maps and sets of the bridge table. */
  readonly bridge: { readonly outMap: string; readonly inMap: string; readonly l3Ports: string; readonly markInMap: string; readonly markOutMap: string };
  /** Dispatch maps of the ip / ip6 tables (L3 rules through br_netfilter). */
  readonly inet: { readonly fromVmMap: string; readonly toVmMap: string; readonly toHostMap: string };
  /** L2 chain of an interface: its root chain, or a sub-chain named after the filter chain. */
  l2Chain(dir: Direction, iface: string, sub?: string): string;
  /** Shared chains of policy shape `shape` (root, or a sub-chain). */
  sharedChain(dir: Direction, shape: number, sub?: string): string;
  /** The k-th address set of a shared shape. */
  sharedSet(dir: Direction, shape: number, k: number): string;
  /** The k-th per-interface dispatch map of a shared shape, and its chain for one interface. */
  perIfaceMap(dir: Direction, shape: number, k: number): string;
  perIfaceChain(dir: Direction, shape: number, k: number, iface: string): string;
  /** `counter name <if> map`: the drop counter of each interface, per direction and reason. */
  counterMap(dir: Direction, reason: string): string;
  l3Chain(path: L3Path, iface: string): string;
  markChain(which: 'in' | 'out', iface: string): string;
  /** The check chain for a protocol header of `size` bytes. */
  l4Check(size: number): string;
}

const dirLetter = (dir: Direction): string => (dir === 'out' ? 'i' : 'o');

export function nftNames(tag?: string): NftNames {
  if (tag !== undefined && tagOf(`${tag}_`) !== tag) throw new InternalError(`invalid load tag ${JSON.stringify(tag)}`);
  const t = (name: string): string => (tag === undefined ? name : `${tag}_${name}`);
  const shared = (dir: Direction, shape: number): string => `${dirLetter(dir)}s${shape}`;
  return {
    tag,
    bridge: { outMap: t('from_vm'), inMap: t('to_vm'), l3Ports: t('l3_ports'), markInMap: t('mark_in'), markOutMap: t('mark_out') },
    inet: { fromVmMap: t('fi_map'), toVmMap: t('fo_map'), toHostMap: t('hi_map') },
    l2Chain: (dir, iface, sub) => t(sub ? `${dirLetter(dir)}_${namePart(iface)}_${namePart(sub)}` : `${dirLetter(dir)}_${namePart(iface)}`),
    sharedChain: (dir, shape, sub) => t(sub ? `${shared(dir, shape)}_${namePart(sub)}` : shared(dir, shape)),
    sharedSet: (dir, shape, k) => t(`${shared(dir, shape)}_a${k}`),
    perIfaceMap: (dir, shape, k) => t(`${shared(dir, shape)}_d${k}`),
    perIfaceChain: (dir, shape, k, iface) => t(`${shared(dir, shape)}_d${k}_${namePart(iface)}`),
    counterMap: (dir, reason) => t(`cnt_${dir}_${reason.replace(/[^A-Za-z0-9_]/g, '_')}`),
    l3Chain: (path, iface) => t(`${path === 'fromVm' ? 'fi' : path === 'toVm' ? 'fo' : 'hi'}_${namePart(iface)}`),
    markChain: (which, iface) => t(`m${which}_${namePart(iface)}`),
    l4Check: (size) => t(`l4chk_${size}`),
  };
}
