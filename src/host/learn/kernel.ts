// Reading the learned state back from the kernel (docs/design/ip-learning.md
// 4.2): the persistent learned-state sets of the nft backend
// (backends/nft/learn.ts) and the pinned eBPF learning map, for the learning
// ports of the loaded generation (their identity is in their recorded part).
import type { LearnedAddress, LearnedEntry } from '../../ir/learning.js';
import { BRIDGE_TABLE, nftNames } from '../../backends/nft/names.js';
import type { PortLearnInfo } from '../../backends/nft/parts.js';
import { LoadedStore } from '../loaded.js';
import { DEFAULT_STATE_DIR } from '../generation.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_PIN_DIR } from '../bpf/bpffs.js';
import { openPinnedMap, type BpfMap } from '../bpf/map.js';
import { ifIndex } from '../bpf/netns.js';
import { withNetns } from '../netns.js';
import { BPF_LEARNED_MAP, BPF_LEASES_MAP, bootTimeNs, decodeLeases, expiryOf } from './seed.js';
import { leaseSync } from './copy-leases.js';
import { listed, nftApply, nftListSet } from '../nft.js';
import { appendAll } from '../../util/arrays.js';
import { add, del, flush, nftTable, str, sym, tuple } from '../../backends/nft/build.js';
import { toNftJson } from '../../backends/nft/serialize.js';

const br = nftTable('bridge', BRIDGE_TABLE);
import type { CommandRunner } from '../runner.js';

export interface ReadLearnedOptions {
  /** nwf-fast's state directory (the loaded generation's record; default DEFAULT_STATE_DIR). */
  stateDir?: string;
  /** Network namespace to read in (tests); absent: the caller's. */
  netns?: string;
  /** bpffs directory of nwf-fast's pins (default DEFAULT_PIN_DIR): the eBPF learned-state map. */
  pinDir?: string;
  runner?: CommandRunner;
}

/** The learning ports of the loaded generation, by tap name. */
export function learningPorts(stateDir: string, withProgram = false): Map<string, PortLearnInfo> {
  const store = new LoadedStore(stateDir);
  const out = new Map<string, PortLearnInfo>();
  for (const name of store.portNames()) {
    const p = store.readPort(name);
    if (p?.status === 'protected' && p.nft.learn && (!withProgram || p.bpf)) out.set(p.iface, p.nft.learn);
  }
  return out;
}

/** `ifname . ipv4_addr` elements of a listed set, by interface (nft prints them as `{"concat": [IF, ADDR]}`). */
export function concatElements(elems: unknown): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!Array.isArray(elems)) return out;
  for (const e of elems) {
    const v = e && typeof e === 'object' && 'elem' in e ? (e as { elem: { val?: unknown } }).elem.val : e;
    const c = v && typeof v === 'object' && 'concat' in v ? (v as { concat: unknown }).concat : undefined;
    if (!Array.isArray(c) || c.length !== 2 || typeof c[0] !== 'string') continue;
    const ip = c[1];
    if (typeof ip !== 'string') continue;
    const list = out.get(c[0]) ?? [];
    list.push(ip);
    out.set(c[0], list);
  }
  return out;
}

/** The nft backend's learned addresses, by interface (empty when the table or set is not there). */
export async function readNftLearned(opts: Omit<ReadLearnedOptions, 'stateDir'>): Promise<Map<string, string[]>> {
  try {
    const doc = await nftListSet('bridge', BRIDGE_TABLE, nftNames.learnedAddrs(), { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) });
    return concatElements(listed(doc, 'set')[0]?.elem);
  } catch {
    return new Map();
  }
}

/** A dhcp lease as the kernel holds it: the address and when its element expires (wall-clock ISO UTC). */
export interface KernelLease {
  ip: string;
  expires: string;
}

/**
 * The leases of a listed lease set (`{"elem": {"val": ADDR, "timeout": T,
 * "expires": E}}`, E seconds left), expiring `now` + E. An element without
 * `expires` (none is created so) is left out: a lease always ends.
 */
export function leaseElements(elems: unknown, now = Date.now()): KernelLease[] {
  const out: KernelLease[] = [];
  if (!Array.isArray(elems)) return out;
  for (const e of elems) {
    const el = e && typeof e === 'object' && 'elem' in e ? (e as { elem: { val?: unknown; expires?: unknown } }).elem : undefined;
    if (!el || typeof el.val !== 'string' || typeof el.expires !== 'number') continue;
    out.push({ ip: el.val, expires: new Date(now + el.expires * 1000).toISOString() });
  }
  return out;
}

/** The nft backend's dhcp leases of `ifaces` (their lease sets, backends/nft/learn.ts), by interface; a port without its set is left out. */
export async function readNftLeases(ifaces: readonly string[], opts: Omit<ReadLearnedOptions, 'stateDir'>): Promise<Map<string, KernelLease[]>> {
  const out = new Map<string, KernelLease[]>();
  for (const iface of ifaces) {
    try {
      const doc = await nftListSet('bridge', BRIDGE_TABLE, nftNames.learnedLeases(iface), { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) });
      out.set(iface, leaseElements(listed(doc, 'set')[0]?.elem));
    } catch {
      // no such set: the port is not (or no longer) a dhcp port of the nft table
    }
  }
  return out;
}

/**
 * The eBPF backend's learned addresses of the learning `ports` (by tap
 * ifindex in the netns), by interface; empty without the maps. `any`: the
 * address; `dhcp`: the live leases (none: an empty list), their boot-time
 * deadlines converted to wall-clock expiries (CLOCK_BOOTTIME read now).
 */
export function readBpfLearned(ports: ReadonlyMap<string, Pick<PortLearnInfo, 'mode'>>, opts: { netns?: string; pinDir?: string }): Map<string, LearnedAddress[]> {
  const out = new Map<string, LearnedAddress[]>();
  const pinDir = opts.pinDir ?? DEFAULT_PIN_DIR;
  const open = (name: string): BpfMap | undefined => (existsSync(join(pinDir, name)) ? openPinnedMap(join(pinDir, name)) : undefined);
  const any = open(BPF_LEARNED_MAP);
  const dhcp = open(BPF_LEASES_MAP);
  if (!any && !dhcp) return out;
  try {
    const find = () => [...ports].map(([iface, info]) => ({ iface, mode: info.mode, index: tapIndex(iface) }));
    const indexes = opts.netns ? withNetns(opts.netns, find) : find();
    const clocks = { wallMs: Date.now(), bootNs: bootTimeNs() };
    for (const { iface, mode, index } of indexes) {
      if (index === undefined) continue;
      const key = Buffer.alloc(4);
      key.writeUInt32LE(index);
      if (mode === 'dhcp') {
        // a port with an entry is the program's (bpf, both): no live lease means none, whatever nft holds
        const v = dhcp?.lookup(key);
        if (v) out.set(iface, decodeLeases(v, clocks.bootNs).map((l) => ({ ip: l.ip, expires: expiryOf(l.deadline, clocks), ...(l.server ? { server: l.server } : {}), source: 'kernel' as const })));
        continue;
      }
      const v = any?.lookup(key);
      if (v) out.set(iface, [{ ip: [...v.subarray(0, 4)].join('.'), source: 'kernel' as const }]);
    }
  } finally {
    any?.close();
    dhcp?.close();
  }
  return out;
}

function tapIndex(iface: string): number | undefined {
  try {
    return ifIndex(iface);
  } catch {
    return undefined;
  }
}

/** Every learning port's addresses as the kernel holds them (source 'kernel'); ports that learned nothing are left out. */
export async function readLearnedFromKernel(opts: ReadLearnedOptions = {}): Promise<LearnedEntry[]> {
  const ports = learningPorts(opts.stateDir ?? DEFAULT_STATE_DIR);
  if (ports.size === 0) return [];
  const nft = await readNftLearned(opts);
  const leases = await readNftLeases([...ports].filter(([, info]) => info.mode === 'dhcp').map(([iface]) => iface), opts);
  // eBPF (bpf, both): the program is the learner; its addresses win where both hold some (only for
  // ports with a program: under both, a port nft enforces alone learns in nft, and a map entry of its
  // tap from an earlier program is stale)
  const bpf = readBpfLearned(learningPorts(opts.stateDir ?? DEFAULT_STATE_DIR, true), opts);
  const out: LearnedEntry[] = [];
  for (const [iface, info] of [...ports].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    // the nft backend's dhcp leases (a lease set of the port's own; under both a copy of the program's)
    const held = info.mode === 'dhcp' ? leases.get(iface) : undefined;
    const addresses = bpf.get(iface) ?? (held?.length ? held.map((l) => ({ ip: l.ip, expires: l.expires, source: 'kernel' as const })) : (nft.get(iface) ?? []).map((ip) => ({ ip, source: 'kernel' as const })));
    if (!addresses.length) continue;
    out.push({ owner: { name: info.owner, uuid: info.uuid ?? '' }, mac: info.mac, mode: info.mode, addresses });
  }
  return out;
}

/**
 * --backend both: the eBPF programs are the only learner; this copies what
 * they learned into the nft learned-state sets (lrn-addr, lrn-locked), which
 * moves the port from the nft learning table to its static path (L3 rules
 * included). Run after every load and rollback, and by reconcile's poll.
 * Returns the ports it copied. Never removes anything.
 */
export async function copyBpfLearnedToNft(opts: ReadLearnedOptions): Promise<string[]> {
  // only ports with a program: a port nft enforces alone (under both, one the programs cannot hold)
  // learns in nft itself, and a copy would overwrite (or, for dhcp, empty) what it learned
  const ports = learningPorts(opts.stateDir ?? DEFAULT_STATE_DIR, true);
  if (ports.size === 0) return [];
  const bpf = readBpfLearned(ports, opts);
  const dhcp = [...ports].filter(([, i]) => i.mode === 'dhcp').map(([iface]) => iface);
  if (bpf.size === 0 && dhcp.length === 0) return [];
  const nft = await readNftLearned(opts);
  const copy = [...bpf].filter(([iface, a]) => ports.get(iface)?.mode === 'any' && !(nft.get(iface) ?? []).includes(a[0]?.ip as string));
  const addrs = nftNames.learnedAddrs();
  const locked = nftNames.learnedLocked();
  const cmds = copy.flatMap(([iface, a]) => [add(br.element(addrs, [tuple(str(iface), sym(a[0]?.ip as string))])), add(br.element(locked, [str(iface)]))]);
  const synced = dhcp.length ? await leaseSync(dhcp, bpf, opts) : { cmds: [], ports: [] };
  appendAll(cmds, synced.cmds);
  if (!cmds.length) return [];
  await nftApply(toNftJson(cmds), { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) });
  return [...copy.map(([iface]) => iface), ...synced.ports].sort();
}

/** A learning port that left the loaded generation (or stopped learning): its tap and, for eBPF, its last ifindex. */
export interface DepartedPort {
  iface: string;
  ifindex?: number;
  /** How it learned (a dhcp port's leases and lock are forgotten too). */
  mode?: PortLearnInfo['mode'];
}

/** Learning ports of the record with their last eBPF ifindex, by tap (taken before a change, for forgetLearned). */
export function learningPortsWithIndex(stateDir: string): Map<string, DepartedPort & { info: PortLearnInfo }> {
  const store = new LoadedStore(stateDir);
  const out = new Map<string, DepartedPort & { info: PortLearnInfo }>();
  for (const name of store.portNames()) {
    const p = store.readPort(name);
    if (p?.status === 'protected' && p.nft.learn) out.set(p.iface, { iface: p.iface, ...(p.bpf?.ifindex !== undefined ? { ifindex: p.bpf.ifindex } : {}), info: p.nft.learn });
  }
  return out;
}

/**
 * The learning ports of `before` that the record no longer has as the same
 * learning port (gone, not learning, or another VM on the tap: another MAC
 * or owner UUID). Their learned state must be forgotten: a tap name or
 * ifindex used again must not inherit it.
 */
export function departedPorts(before: ReadonlyMap<string, DepartedPort & { info: PortLearnInfo }>, stateDir: string): DepartedPort[] {
  const after = learningPorts(stateDir);
  const out: DepartedPort[] = [];
  for (const [iface, b] of before) {
    const a = after.get(iface);
    if (a && a.mac === b.info.mac && a.uuid === b.info.uuid && a.mode === b.info.mode) continue;
    out.push({ iface, mode: b.info.mode, ...(b.ifindex !== undefined ? { ifindex: b.ifindex } : {}) });
  }
  return out;
}

/** Removes the learned state of departed ports: their nft learned-state elements and their eBPF map entries. */
export async function forgetLearned(ports: readonly DepartedPort[], opts: Omit<ReadLearnedOptions, 'stateDir'>): Promise<void> {
  if (!ports.length) return;
  const nft = await readNftLearned(opts);
  const cmds = [];
  for (const p of ports) {
    const ips = nft.get(p.iface) ?? [];
    if (!ips.length) continue;
    // each element added first, so that deleting it cannot fail
    const addrs = br.element(nftNames.learnedAddrs(), ips.map((ip) => tuple(str(p.iface), sym(ip))));
    const locked = br.element(nftNames.learnedLocked(), [str(p.iface)]);
    cmds.push(add(addrs), add(locked), del(addrs), del(locked));
  }
  // dhcp: the lock, and the leases when the tap's lease set is still there (another VM's dhcp port on the tap)
  const dhcp = ports.filter((p) => p.mode === 'dhcp');
  const still = await readNftLeases(dhcp.map((p) => p.iface), opts);
  for (const p of dhcp) {
    const locked = br.element(nftNames.learnedLocked(), [str(p.iface)]);
    cmds.push(add(locked), del(locked));
    if (still.has(p.iface)) cmds.push(flush(br.setRef(nftNames.learnedLeases(p.iface))));
  }
  if (cmds.length) await nftApply(toNftJson(cmds), { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) });
  for (const name of [BPF_LEARNED_MAP, BPF_LEASES_MAP]) {
    const path = join(opts.pinDir ?? DEFAULT_PIN_DIR, name);
    if (!existsSync(path)) continue;
    const map = openPinnedMap(path);
    try {
      for (const p of ports) {
        if (p.ifindex === undefined) continue;
        const key = Buffer.alloc(4);
        key.writeUInt32LE(p.ifindex);
        map.delete(key);
      }
    } finally {
      map.close();
    }
  }
}
