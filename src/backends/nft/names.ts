// Every name nwf-fast generates in nftables comes from here.
import { createHash } from 'node:crypto';
import type { Direction, L3Path } from '../../ir/types.js';
import type { DropReason } from '../../ir/reasons.js';

export const BRIDGE_TABLE = 'nwf_fast';
export const INET_TABLE = 'nwf_fast';

/** A name part that nft accepts unquoted; interface names with other characters get a hash suffix. */
export function namePart(s: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(s)) return s;
  const h = createHash('sha256').update(s).digest('hex').slice(0, 6);
  return `${s.replace(/[^A-Za-z0-9_-]/g, '_')}_${h}`;
}

/** Base chains and dispatch maps of the bridge table. */
export const bridgeNames = {
  preChain: 'pre',
  postChain: 'post',
  markChain: 'mark_fwd',
  outMap: 'from_vm',
  inMap: 'to_vm',
  l3Ports: 'l3_ports',
  markInMap: 'mark_in',
  markOutMap: 'mark_out',
} as const;

/** Base chains and dispatch maps of the inet table (L3 rules through br_netfilter). */
export const inetNames = {
  forwardChain: 'l3_forward',
  inputChain: 'l3_input',
  fromVmMap: 'fi_map',
  toVmMap: 'fo_map',
  toHostMap: 'hi_map',
} as const;

/** L2 chain of an interface: its root chain, or a sub-chain named after the filter chain. */
export function l2Chain(dir: Direction, iface: string, sub?: string): string {
  const p = dir === 'out' ? 'i' : 'o';
  return sub ? `${p}_${namePart(iface)}_${namePart(sub)}` : `${p}_${namePart(iface)}`;
}

export function l3Chain(path: L3Path, iface: string): string {
  return `${path === 'fromVm' ? 'fi' : path === 'toVm' ? 'fo' : 'hi'}_${namePart(iface)}`;
}

export function markChain(which: 'in' | 'out', iface: string): string {
  return `m${which}_${namePart(iface)}`;
}

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
