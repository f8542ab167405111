// Host operations on generations: load (check, then apply in ONE
// transaction), rollback, unload and status. nwf-fast only ever touches its
// own tables (bridge nwf_fast, ip nwf_fast, ip6 nwf_fast) and its tc filters
// and pins. Every nft command comes from load-plan.ts over typed inventories.
import { existsSync, readFileSync } from 'node:fs';
import { CODES, NwfError } from '../util/errors.js';
import { newTag, parseDropCounter } from '../backends/nft/names.js';
import type { NftBatch } from '../backends/nft/model.js';
import { toNftJson } from '../backends/nft/serialize.js';
import { lowerNftFor } from '../compile.js';
import { nftApply, nftCheck, nftListTable, type NftRunOptions } from './nft.js';
import { hostRunner, inNetns, withNetns } from './netns.js';
import { type Generation, type HostState, readGeneration, StateDir } from './generation.js';
import { attachBpf, bpfAttachments, bpfStats, detachBpf, prepareBpf, unpinAll, updateBpfInPlace, type BpfHookChoice, type HookPlan, type TapHooks } from './bpf-apply.js';
import { inventoryOf, kernelInventory, liveTag, normalizeListing, OUR_TABLES, tagsIn, type KernelInventory, type Listing } from './inventory.js';
import { elementDelta, planFullLoad, unloadBatch, type LoadPlan } from './load-plan.js';
import { applyElementDelta, type ElementDeltaOptions } from './nfnl/index.js';

export interface HostOptions extends NftRunOptions {
  stateDir: string;
  /** bpffs directory for nwf-fast's pins (default /sys/fs/bpf/nwf-fast). */
  pinDir?: string;
  /** Always replace the whole generation, never apply an element delta. */
  full?: boolean;
  /**
   * Where the eBPF programs go on the taps (default: what the last load that
   * named one asked for, else auto: tcx where the kernel has it, else tc).
   */
  bpfHook?: BpfHookChoice;
}

/** Runs fn in the namespace of the options (tc and interface lookups act on the calling thread's namespace). */
function inNs<T>(opts: HostOptions, fn: () => T): T {
  return opts.netns ? withNetns(opts.netns, fn) : fn();
}

/** Interfaces of a generation that carry eBPF programs. */
function bpfInterfaces(g: Generation | undefined): string[] {
  return g?.bpf?.interfaces.map((i) => i.iface) ?? [];
}

/** Test hook: NWF_FAST_FAULT=pause-before-apply:MS sleeps right before the transaction is applied. */
async function faultPoint(name: string): Promise<void> {
  const f = process.env.NWF_FAST_FAULT;
  if (!f) return;
  const [point, ms] = f.split(':');
  if (point === name) await new Promise((r) => setTimeout(r, Number(ms ?? 1000)));
}

async function readSysctl(path: string, opts: HostOptions): Promise<string | undefined> {
  if (!opts.netns) return existsSync(path) ? readFileSync(path, 'utf8').trim() : undefined;
  const r = await (opts.runner ?? hostRunner()).run(inNetns(opts.netns, ['cat', path]), { check: false });
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

export interface KernelProbe {
  /** br_netfilter passes bridged IPv4 / IPv6 to the inet hooks (needed for L3 rules). */
  brNetfilterIpv4: boolean;
  brNetfilterIpv6: boolean;
}

export async function probeKernel(opts: HostOptions): Promise<KernelProbe> {
  return {
    brNetfilterIpv4: (await readSysctl('/proc/sys/net/bridge/bridge-nf-call-iptables', opts)) === '1',
    brNetfilterIpv6: (await readSysctl('/proc/sys/net/bridge/bridge-nf-call-ip6tables', opts)) === '1',
  };
}

async function listOurs(opts: NftRunOptions): Promise<Listing> {
  const out: Listing = {};
  for (const t of OUR_TABLES) {
    try {
      out[t.family] = await nftListTable(t.family, t.name, opts);
    } catch {
      // table absent
    }
  }
  return out;
}

async function kernelNow(opts: NftRunOptions): Promise<KernelInventory> {
  return kernelInventory(await listOurs(opts));
}

/** A full load plan of a generation's nft part, lowered under a tag no object in the kernel carries. */
function planFor(k: KernelInventory, lower: (tag: string) => NftBatch): LoadPlan {
  const tag = newTag(tagsIn(k));
  return planFullLoad(k, lower(tag), tag);
}

/** The second transaction of a load: the previous generation's objects go (a failure only leaves them for the next load). */
async function cleanupAfter(plan: LoadPlan, opts: NftRunOptions): Promise<void> {
  if (plan.cleanup.length === 0) return;
  try {
    await nftApply(toNftJson(plan.cleanup), opts);
  } catch {
    // leftovers of a tag that is not live are removed by the next load
  }
}

/**
 * Applies an nft build over whatever nwf-fast's tables hold now, as load does
 * (no state recorded): `lower` gives the batch under the tag it is handed.
 * Returns the load tag.
 */
export async function applyNft(lower: (tag: string) => NftBatch, opts: NftRunOptions): Promise<string> {
  const plan = planFor(await kernelNow(opts), lower);
  await nftApply(toNftJson(plan.apply), opts);
  await cleanupAfter(plan, opts);
  return plan.tag;
}

/**
 * The incremental path on its own (as load takes it when only addresses
 * change): the element delta between two builds lowered under the live tag.
 * Returns false when the builds differ in more than elements.
 */
export async function applyIncremental(prev: NftBatch, next: NftBatch, opts: ElementDeltaOptions): Promise<boolean> {
  const changes = elementDelta(inventoryOf(prev), inventoryOf(next));
  if (!changes) return false;
  if (changes.length) await applyElementDelta(changes, opts);
  return true;
}

function normalizeAll(l: Listing): unknown {
  return Object.fromEntries(OUR_TABLES.map((t) => [t.family, normalizeListing(l[t.family])]));
}

async function snapshot(opts: NftRunOptions): Promise<unknown> {
  return normalizeAll(await listOurs(opts));
}

export interface LoadResult {
  generation: Generation;
  previous: string | null;
  ms: { check: number; apply: number };
  /** Taps of the generation's eBPF programs that do not exist (attached by a later load). */
  missingTaps: string[];
  /** Applied as an element delta / in-place eBPF value update (load-plan.ts). */
  incremental?: boolean;
  /** The hook of each tap's eBPF programs, when this load attached them. */
  bpfHooks?: Record<string, HookPlan>;
  /** What the user should know about the eBPF attachment (fallbacks). */
  notes: string[];
}

/** Checks with nft -c, then applies the generation as one transaction and records it. */
export async function loadGeneration(dir: string, opts: HostOptions): Promise<LoadResult> {
  const g = readGeneration(dir);
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  if (g.manifest.l3) {
    const k = await probeKernel(opts);
    if (!k.brNetfilterIpv4) {
      throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'this generation has L3/L4 rules, which need br_netfilter: net.bridge.bridge-nf-call-iptables is not 1', {
        hint: 'modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 (libvirt needs the same)',
      });
    }
  }
  const previous = s.current ? safeLoad(state, s.current) : undefined;
  const hook = opts.bpfHook ?? s.bpfHook ?? 'auto';
  const keepHook = opts.bpfHook ?? s.bpfHook;
  // another hook than the loaded one: the programs move, which a value update cannot do
  if (previous && !opts.full && (opts.bpfHook === undefined || opts.bpfHook === s.bpfHook)) {
    const r = await tryIncremental(previous, g, state, s, opts);
    if (r) return r;
  }
  const t0 = performance.now();
  // One transaction puts the new objects next to the live ones and re-points the base chains
  // (load-plan.ts); the previous objects are deleted by a second one.
  const plan = planFor(await kernelNow(opts), (tag) => lowerNftFor(g.manifest.backend, g.ir, tag).batch);
  const apply = toNftJson(plan.apply);
  await nftCheck(apply, opts);
  const t1 = performance.now();
  const stored = state.store(g);
  // Verify and configure every eBPF program before anything changes.
  const bpf = stored.bpf;
  const prepared = bpf ? inNs(opts, () => prepareBpf(stored.dir, bpf, hook)) : undefined;
  let attached: ReturnType<typeof attachBpf> | undefined;
  try {
    await faultPoint('pause-before-apply');
    await nftApply(apply, opts);
    await cleanupAfter(plan, opts);
    if (prepared) attached = inNs(opts, () => attachBpf(prepared, opts.pinDir));
  } finally {
    prepared?.close();
  }
  const now = new Set(bpfInterfaces(stored));
  inNs(opts, () => detachBpf(bpfInterfaces(previous).filter((i) => !now.has(i)), opts.pinDir));
  if (!prepared) unpinAll(opts.pinDir);
  const t2 = performance.now();
  state.writeKernelSnapshot(stored.manifest.id, await snapshot(opts));
  const next: HostState = {
    current: stored.manifest.id,
    history: [...s.history, stored.manifest.id].slice(-20),
    loadedAt: new Date().toISOString(),
    tag: plan.tag,
    ...(keepHook ? { bpfHook: keepHook } : {}),
  };
  state.write(next);
  return {
    generation: stored,
    previous: s.current,
    ms: { check: t1 - t0, apply: t2 - t1 },
    missingTaps: attached?.missing ?? [],
    ...(attached ? { bpfHooks: attached.hooks } : {}),
    notes: attached?.notes ?? [],
  };
}

/**
 * The incremental path: both generations lowered under the live tag have the
 * same structure and differ in elements only (load-plan.ts), and eBPF values
 * change in place. Returns undefined to fall back to a full load.
 */
async function tryIncremental(previous: Generation, g: Generation, state: StateDir, s: HostState, opts: HostOptions): Promise<LoadResult | undefined> {
  const backend = g.manifest.backend;
  if (previous.manifest.backend !== backend) return undefined;
  // the live tag recorded by the last load saves listing the tables (a drifted kernel makes
  // the delta fail and the load fall back to a full one)
  const tag = backend === 'bpf' ? undefined : (s.tag ?? liveTag(await kernelNow(opts)));
  if (backend !== 'bpf' && tag === undefined) return undefined;
  const changes = elementDelta(inventoryOf(lowerNftFor(backend, previous.ir, tag).batch), inventoryOf(lowerNftFor(backend, g.ir, tag).batch));
  if (!changes) return undefined;
  // nothing to change in nft: a full load (which also repairs drift) rather than a silent no-op
  if (backend === 'nft' && changes.length === 0) return undefined;
  const bpfPrev = previous.bpf;
  const bpfNext = g.bpf;
  if (bpfPrev && bpfNext) {
    const sameIfaces = JSON.stringify(bpfPrev.interfaces.map((i) => [i.iface, i.shapeId])) === JSON.stringify(bpfNext.interfaces.map((i) => [i.iface, i.shapeId]));
    if (!sameIfaces) return undefined;
  }
  const t0 = performance.now();
  try {
    await faultPoint('pause-before-apply');
    // one transaction (netlink encoder, else libnftables); refused if the kernel lacks an element we delete
    if (changes.length) await applyElementDelta(changes, opts);
  } catch {
    return undefined;
  }
  let attached: ReturnType<typeof attachBpf> | undefined;
  if (bpfPrev && bpfNext && !inNs(opts, () => updateBpfInPlace(bpfPrev, bpfNext, opts.pinDir))) {
    // values could not be changed in place: re-attach everything (the ruleset is already current)
    const prepared = inNs(opts, () => prepareBpf(g.dir, bpfNext, s.bpfHook ?? 'auto'));
    try {
      attached = inNs(opts, () => attachBpf(prepared, opts.pinDir));
    } finally {
      prepared.close();
    }
  }
  const t1 = performance.now();
  const stored = state.store(g);
  state.writeKernelSnapshot(stored.manifest.id, await snapshot(opts));
  state.write({
    current: stored.manifest.id,
    history: [...s.history, stored.manifest.id].slice(-20),
    loadedAt: new Date().toISOString(),
    ...(tag ? { tag } : s.tag ? { tag: s.tag } : {}),
    ...(s.bpfHook ? { bpfHook: s.bpfHook } : {}),
  });
  return {
    generation: stored,
    previous: s.current,
    ms: { check: 0, apply: t1 - t0 },
    missingTaps: attached?.missing ?? [],
    incremental: true,
    ...(attached ? { bpfHooks: attached.hooks } : {}),
    notes: attached?.notes ?? [],
  };
}

function safeLoad(state: StateDir, id: string): Generation | undefined {
  try {
    return state.load(id);
  } catch {
    return undefined;
  }
}

export async function rollback(opts: HostOptions): Promise<LoadResult> {
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  const prevId = [...s.history].reverse().find((id, i, arr) => i > 0 && id !== (s.current ?? arr[0]));
  if (!prevId) {
    throw new NwfError(CODES.STATE_INVALID, `no previous generation to roll back to (state: ${opts.stateDir})`, { hint: 'nwf-fast status shows the history' });
  }
  return loadGeneration(state.generationDir(prevId), opts);
}

/** Removes nwf-fast's tables (and nothing else) in one transaction, its eBPF programs (tc filters, links) and its pins. */
export async function unload(opts: HostOptions): Promise<void> {
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  await nftApply(toNftJson(unloadBatch()), opts);
  if (s.current) inNs(opts, () => detachBpf(bpfInterfaces(safeLoad(state, s.current as string)), opts.pinDir));
  unpinAll(opts.pinDir);
  state.write({ ...s, current: null });
}

export interface Status {
  stateDir: string;
  current: string | null;
  history: string[];
  loadedAt?: string;
  backend?: 'nft' | 'bpf' | 'both';
  interfaces: {
    iface: string;
    owner: string;
    filter: string;
    drops: Record<string, number>;
    bpfDrops?: Record<string, number>;
    /** eBPF generations: where nwf-fast's programs run on the tap (null: a direction without one), or 'no-tap'. */
    bpfHooks?: TapHooks;
  }[];
  /** True when the kernel's tables differ from what was recorded when the generation was loaded. */
  drift: boolean;
  driftDetail?: string;
  tablesPresent: { bridge: boolean; l3: boolean };
}

export async function status(opts: HostOptions): Promise<Status> {
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  const listing = await listOurs(opts);
  const present = { bridge: !!listing.bridge, l3: !!(listing.ip || listing.ip6 || listing.inet) };
  const out: Status = { stateDir: opts.stateDir, current: s.current, history: s.history, interfaces: [], drift: false, tablesPresent: present };
  if (s.loadedAt) out.loadedAt = s.loadedAt;
  if (!s.current) {
    if (present.bridge || present.l3) {
      out.drift = true;
      out.driftDetail = 'nothing is recorded as loaded, but nwf-fast tables exist in the kernel';
    }
    return out;
  }
  const g = state.load(s.current);
  const ifaces = g.manifest.interfaces.map((i) => i.iface);
  const drops = new Map<string, Record<string, number>>(ifaces.map((i) => [i, {}]));
  for (const c of kernelInventory(listing).counters.values()) {
    const p = parseDropCounter(c.id.name, ifaces);
    if (!p) continue;
    const rec = drops.get(p.iface) as Record<string, number>;
    rec[p.reason] = (rec[p.reason] ?? 0) + c.packets;
  }
  out.backend = g.manifest.backend;
  const storedBpf = g.bpf;
  const bpf = storedBpf ? bpfStats(storedBpf, opts.pinDir) : new Map();
  const hooks = storedBpf ? inNs(opts, () => bpfAttachments(storedBpf, opts.pinDir)) : new Map<string, TapHooks>();
  out.interfaces = g.manifest.interfaces.map((i) => {
    const rec: Status['interfaces'][number] = { iface: i.iface, owner: i.owner, filter: i.filter, drops: drops.get(i.iface) ?? {} };
    const b = bpf.get(i.iface);
    if (b) {
      const d: Record<string, number> = {};
      for (const dir of ['out', 'in'] as const) for (const [k, v] of Object.entries(b[dir])) d[k] = (d[k] ?? 0) + Number(v);
      rec.bpfDrops = d;
    }
    const h = hooks.get(i.iface);
    if (h) rec.bpfHooks = h;
    return rec;
  });
  const details: string[] = [];
  const expected = state.readKernelSnapshot(s.current);
  const now = normalizeAll(listing);
  if (expected !== undefined && JSON.stringify(expected) !== JSON.stringify(now)) {
    details.push(!present.bridge ? 'the bridge table nwf_fast is missing' : 'the kernel tables differ from the loaded generation');
  }
  // a tap that exists must carry nwf-fast's programs in both directions
  const bare: string[] = [];
  for (const [iface, h] of hooks) {
    if (h === 'no-tap') continue;
    const dirs = (['out', 'in'] as const).filter((d) => h[d] === null).map((d) => (d === 'out' ? 'from the VM' : 'to the VM'));
    if (dirs.length) bare.push(`${iface} (${dirs.join(', ')})`);
  }
  if (bare.length) details.push(`eBPF programs missing on ${bare.join(', ')}`);
  if (details.length) {
    out.drift = true;
    out.driftDetail = details.join('; ');
  }
  return out;
}
