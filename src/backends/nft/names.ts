// Every name nwf-fast generates in nftables comes from here, and so does the
// load-tag format.
//
// Names are structural and injective by construction. A generated name is
// either a fixed word (`pre`, `from_vm`, ...: no `-`) or `KIND-PART-PART...`
// where KIND is a word of a fixed vocabulary and each PART is
//  - an encoded string (an interface name, a filter's sub-chain name):
//    [A-Za-z0-9] stay, every other byte of its UTF-8 (`_` and `-` included)
//    becomes `_` and two lowercase hex digits, so a part never holds `-`
//    and decodes back unambiguously;
//  - or a token of a fixed vocabulary (a direction, a drop reason, a number,
//    a shape's hash), also without `-`.
// Splitting a name on `-` gives back its kind and parts, so two different
// (kind, parts) can never produce the same name: tap `a` with sub-chain
// `mac` is `own-out-a-mac`, tap `a_mac` is `own-out-a_5fmac`. A name longer
// than nft's limit (255 bytes; only reachable with pathological inputs)
// becomes `KIND-_z` and a 160-bit hash of its kind and parts: `_z` is never
// produced by the encoding.
//
// Load tags: a full replacement builds the new generation next to the live
// one under a fresh tag (`g1a2b3c-sh-...`) and deletes the previous tag's
// objects afterwards (host/load-plan.ts). Objects that must never be deleted
// by a replacement have persistent names without a tag: base chains (their
// hooks would be unregistered for a moment), named counters and the
// per-port counting sets (they keep their counts). Lowering produces
// untagged names; the host applies the tag (tagName) when it builds commands.
import { createHash, randomBytes } from 'node:crypto';
import type { Direction, L3Path } from '../../ir/types.js';
import type { DropReason } from '../../ir/reasons.js';
import { InternalError } from '../../util/errors.js';

export const BRIDGE_TABLE = 'nwf_fast';
export const INET_TABLE = 'nwf_fast';

/** nft's longest table, chain, set and object name (NFT_NAME_MAXLEN less its NUL). */
export const NFT_NAME_MAX = 255;

// ---- the encoding ---------------------------------------------------------------------

/** A string as a name part: [A-Za-z0-9] kept, every other UTF-8 byte as `_xx`. Never contains `-`. */
export function encodePart(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const alnum = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
    out += alnum ? String.fromCharCode(b) : `_${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The string an encoded part came from (undefined when it is not an encoding). */
export function decodePart(p: string): string | undefined {
  if (!/^(?:[A-Za-z0-9]|_[0-9a-f]{2})*$/.test(p)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < p.length; ) {
    if (p[i] === '_') {
      bytes.push(parseInt(p.slice(i + 1, i + 3), 16));
      i += 3;
    } else bytes.push(p.charCodeAt(i++));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** A part that is either encoded or a fixed token: neither may hold `-`. */
type Part = { enc: string } | { token: string | number };
const enc = (s: string): Part => ({ enc: s });
const tok = (t: string | number): Part => ({ token: t });

function partText(p: Part): string {
  if ('enc' in p) return encodePart(p.enc);
  const t = String(p.token);
  if (!/^[A-Za-z0-9_]+$/.test(t) || t.startsWith('_z')) throw new InternalError(`invalid name token ${JSON.stringify(t)}`);
  return t;
}

/** `kind-part-part...`, or `kind-_z<hash>` when that is longer than nft allows. */
function structured(kind: string, ...parts: Part[]): string {
  const name = [kind, ...parts.map(partText)].join('-');
  if (name.length <= NFT_NAME_MAX - TAG_LENGTH) return name;
  const h = createHash('sha256')
    .update(JSON.stringify([kind, ...parts.map((p) => ('enc' in p ? ['e', p.enc] : ['t', String(p.token)]))]))
    .digest('hex')
    .slice(0, 40);
  return `${kind}-_z${h}`;
}

// ---- load tags ---------------------------------------------------------------------

/** `g` and six hex digits, followed by `-` in a name. */
const TAG_PREFIX_RE = /^(g[0-9a-f]{6})-/;
/** A tag and its separator. */
const TAG_LENGTH = 8;

/** A fresh random load tag, none of `avoid`. */
export function newTag(avoid: ReadonlySet<string> = new Set()): string {
  for (;;) {
    const t = `g${randomBytes(3).toString('hex')}`;
    if (!avoid.has(t)) return t;
  }
}

export function isTag(t: string): boolean {
  return /^g[0-9a-f]{6}$/.test(t);
}

/** The load tag an object name carries, if any. */
export function tagOf(name: string): string | undefined {
  return TAG_PREFIX_RE.exec(name)?.[1];
}

/** An object name without its load tag. */
export function untagged(name: string): string {
  return name.replace(TAG_PREFIX_RE, '');
}

/** An object name with its load tag (if any) replaced by `*`: names that differ only in their tag compare equal. */
export function tagFree(name: string): string {
  return name.replace(TAG_PREFIX_RE, '*-');
}

// ---- the names of one generation -----------------------------------------------------

/** Base chains (persistent: never deleted, only flushed and refilled). */
export const BASE_CHAINS = {
  bridgePre: 'pre',
  bridgePost: 'post',
  bridgeMark: 'mark_fwd',
  l3Forward: 'l3_forward',
  l3Input: 'l3_input',
  /** After bridgePost: DHCPACKs the policy let through to a dhcp learning port teach it (learn.ts). */
  bridgeSnoop: 'lrn_snoop',
} as const;

const PERSISTENT_WORDS: ReadonlySet<string> = new Set(Object.values(BASE_CHAINS));
/** Kinds whose objects keep their names across replacements: counters and counting sets. */
const PERSISTENT_KINDS: ReadonlySet<string> = new Set(['cnt', 'dropc', 'unprot', 'l3drop', 'lrn', 'gate']);

/**
 * Whether a name is learned state (IP learning: the sets the packet path
 * writes). Persistent, never flushed by a load; their elements are the
 * kernel's truth, not the generation's, so drift checks ignore them.
 */
export function isLearnedState(name: string): boolean {
  return untagged(name).startsWith('lrn-');
}

/**
 * Whether a set's elements are host-managed state, not the generation's:
 * learned state (above) and the eBPF gate (`gate-on`: the tap instances
 * nwf-fast attached programs to, skeleton.ts). Drift checks ignore their
 * elements; `status` checks the gate itself.
 */
export function isHostManagedState(name: string): boolean {
  const n = untagged(name);
  return n.startsWith('lrn-') || n.startsWith('gate-');
}

/** Whether a (untagged) name is persistent: used as it is, never under a load tag. */
export function isPersistent(name: string): boolean {
  return PERSISTENT_WORDS.has(name) || PERSISTENT_KINDS.has(name.split('-')[0] as string);
}

/** The name an object has in the kernel under load tag `tag` (persistent names carry none). */
export function tagName(name: string, tag: string | undefined): string {
  if (tag === undefined || isPersistent(name)) return name;
  if (!isTag(tag)) throw new InternalError(`invalid load tag ${JSON.stringify(tag)}`);
  return `${tag}-${name}`;
}

/** Why a frame is dropped and counted: the policy's reasons, and a port nwf-fast does not protect. */
export type CountReason = DropReason | 'unprotected';

/** Fixed tokens of the reasons (a `-` cannot be in a part). */
const REASON_TOKEN: Readonly<Record<CountReason, string>> = {
  'mac-spoof': 'mac_spoof',
  'ip-spoof': 'ip_spoof',
  'arp-spoof': 'arp_spoof',
  rarp: 'rarp',
  'other-l2': 'other_l2',
  policy: 'policy',
  unprotected: 'unprotected',
};
const REASON_OF_TOKEN = new Map(Object.entries(REASON_TOKEN).map(([r, t]) => [t, r as CountReason]));

export const COUNT_REASONS: readonly CountReason[] = Object.keys(REASON_TOKEN) as CountReason[];

/** Fixed names (no `-`): dispatch maps and sets. Tagged. */
export const FIXED = {
  fromVm: 'from_vm',
  toVm: 'to_vm',
  markIn: 'mark_in',
  markOut: 'mark_out',
  l3Ports: 'l3_ports',
  fiMap: 'fi_map',
  foMap: 'fo_map',
  hiMap: 'hi_map',
  /** eBPF-enforced ports: their verdict once the gate let the frame through (skeleton.ts). */
  gateFromVm: 'gate_from_vm',
  gateToVm: 'gate_to_vm',
  /** dhcp learning ports: tap -> goto its snoop chain (learn.ts). */
  snoopMap: 'snoop_map',
  /** The base chain's fast paths (opt/fast-base.ts): IPv4, ARP and IPv6 from the VMs. */
  fastIp4: 'fast_ip4',
  fastArp: 'fast_arp',
  fastIp6: 'fast_ip6',
} as const;

const L3_KIND: Readonly<Record<L3Path, string>> = { fromVm: 'fi', toVm: 'fo', toHost: 'hi' };

/** Every generated name but the fixed ones, untagged. */
export const nftNames = {
  /** The chain a drop with `reason` goes to: counts the port in the counting set, then drops. */
  dropChain: (dir: Direction, reason: CountReason): string => structured('drop', tok(dir), tok(REASON_TOKEN[reason])),
  /** Persistent set of port names with a counter per element: each port's drops for a direction and reason. */
  countMap: (dir: Direction, reason: CountReason): string => structured('cnt', tok(dir), tok(REASON_TOKEN[reason])),
  /** Persistent named counter: drops of a direction and reason not counted for a port (an unknown port, drift). */
  dropCounter: (dir: Direction, reason: CountReason): string => structured('dropc', tok(dir), tok(REASON_TOKEN[reason])),
  /** A shape's chain: its root (no sub) or the filter sub-chain `sub`. */
  shapeChain: (shape: string, sub?: string): string => (sub === undefined ? structured('sh', tok(shape)) : structured('sh', tok(shape), enc(sub))),
  /** The k-th address set of a shape. */
  shapeSet: (shape: string, k: number): string => structured('ss', tok(shape), tok(k)),
  /** A shape's fast-accept set for one kind of frame (opt/fast-accept.ts). */
  shapeFastSet: (shape: string, kind: string): string => structured('sf', tok(shape), tok(kind)),
  /** The k-th per-interface dispatch map of a shape (rules it cannot share). */
  shapeMap: (shape: string, k: number): string => structured('sm', tok(shape), tok(k)),
  /** An interface's chain behind a shape's k-th per-interface map. */
  shapePortChain: (shape: string, k: number, iface: string): string => structured('sp', tok(shape), tok(k), enc(iface)),
  /** An interface's own chains (a policy that cannot be shared): root, or the sub-chain `sub`. */
  ownChain: (dir: Direction, iface: string, sub?: string): string =>
    sub === undefined ? structured('own', tok(dir), enc(iface)) : structured('own', tok(dir), enc(iface), enc(sub)),
  /** The chain marking frames of a port with L3 rules (in: from the port, out: to it). */
  markChain: (which: 'in' | 'out', iface: string): string => structured('mk', tok(which), enc(iface)),
  /** A port's L3 chain (libvirt's FI/FO/HI chains). */
  l3Chain: (path: L3Path, iface: string): string => structured(L3_KIND[path], enc(iface)),
  /** Persistent named counter of a port's L3 drops. */
  l3Counter: (iface: string, reason: DropReason): string => structured('l3drop', enc(iface), tok(REASON_TOKEN[reason])),
  /** Learned state: every learning port's learned IPv4 addresses (`ifname . ipv4_addr`; persistent). */
  learnedAddrs: (): string => structured('lrn', tok('addr')),
  /** Learned state: the ports that learned their address (locked; persistent). */
  learnedLocked: (): string => structured('lrn', tok('locked')),
  /** Learned state: one learning port's address, a size-1 set (the first writer wins; persistent). */
  learnedPort: (iface: string): string => structured('lrn', tok('w'), enc(iface)),
  /** Learned state: a dhcp learning port's leases, a size-4 set with element timeouts (persistent). */
  learnedLeases: (iface: string): string => structured('lrn', tok('lease'), enc(iface)),
  /** A dhcp learning port's trusted DHCP servers (DHCPSERVER), a static set. */
  dhcpServers: (iface: string): string => structured('lsrv', enc(iface)),
  /** A dhcp learning port's snoop chain: a DHCPACK to the VM that the policy accepted adds or renews a lease. */
  snoopChain: (iface: string): string => structured('lrns', enc(iface)),
  /** A learning port's chain (before the lock: libvirt's learning table; after: its shape). */
  learnChain: (dir: Direction, iface: string): string => structured('lrnc', tok(dir), enc(iface)),
  /**
   * The eBPF gate (persistent, host-managed): `ifname . iface_index` of every
   * tap instance nwf-fast attached its programs to (skeleton.ts).
   */
  gateSet: (): string => structured('gate', tok('on')),
  /** The gate chain of a direction: the attached tap instance goes on to its verdict, any other is dropped as unprotected. */
  gateChain: (dir: Direction): string => structured('gatec', tok(dir)),
  /** The check chain for a protocol header of `size` bytes. */
  l4Check: (size: number): string => structured('l4chk', tok(size)),
  /**
   * The set of tap name patterns, or of managed bridges, named by a hash of
   * its contents: another configuration is another set (nft 1.0.6 cannot
   * delete a wildcard element from an interval set; a set is replaced whole).
   */
  configSet: (what: 'taps' | 'bridges', contents: readonly string[]): string => structured(what, tok(shapeHash(JSON.stringify(contents)).slice(0, 12))),
} as const;

/** The interface and reason of an L3 drop counter name (for status). */
export function parseL3Counter(name: string): { iface: string; reason: DropReason } | undefined {
  const m = /^l3drop-([^-]+)-([^-]+)$/.exec(name);
  const iface = m ? decodePart(m[1] as string) : undefined;
  const reason = m ? REASON_OF_TOKEN.get(m[2] as string) : undefined;
  return iface !== undefined && reason !== undefined && reason !== 'unprotected' ? { iface, reason } : undefined;
}

/** The direction and reason of a counting set or drop counter name. */
export function parseCountName(name: string): { kind: 'cnt' | 'dropc'; dir: Direction; reason: CountReason } | undefined {
  const m = /^(cnt|dropc)-(out|in)-([^-]+)$/.exec(name);
  const reason = m ? REASON_OF_TOKEN.get(m[3] as string) : undefined;
  return m && reason ? { kind: m[1] as 'cnt' | 'dropc', dir: m[2] as Direction, reason } : undefined;
}

/** A shape's name part: 16 hex digits of the hash of its key (stable across loads and hosts). */
export function shapeHash(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}
