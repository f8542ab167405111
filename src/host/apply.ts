// Host operations on generations: load (check, then apply in ONE
// transaction), rollback, unload and status. nwf-fast only ever touches its
// own two tables (bridge nwf_fast, inet nwf_fast).
import { existsSync, readFileSync } from 'node:fs';
import { CODES, NwfError } from '../util/errors.js';
import { BRIDGE_TABLE, INET_TABLE, parseDropCounter } from '../backends/nft/names.js';
import type { NftJsonDocument } from '../backends/nft/model.js';
import { nftApply, nftCheck, nftListTable, type NftRunOptions } from './nft.js';
import { hostRunner, inNetns, withNetns } from './netns.js';
import { type Generation, type HostState, readGeneration, StateDir } from './generation.js';
import { toNftJson } from '../backends/nft/serialize.js';
import { lowerNftFor } from '../compile.js';
import { attachBpf, bpfStats, detachBpf, prepareBpf, unpinAll, updateBpfInPlace } from './bpf-apply.js';
import { elementDelta } from './delta.js';
import { liveDelta, planLoad, type LoadPlan } from './teardown.js';
import { applyElementDelta, type ElementDeltaOptions } from './nfnl/index.js';

export interface HostOptions extends NftRunOptions {
  stateDir: string;
  /** bpffs directory for nwf-fast's pins (default /sys/fs/bpf/nwf-fast). */
  pinDir?: string;
  /** Always replace the whole generation, never apply an element delta. */
  full?: boolean;
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

/** The families of nwf-fast's tables (all named nwf_fast). */
const OUR_FAMILIES = ['bridge', 'ip', 'ip6', 'inet'] as const;
type Listing = Partial<Record<(typeof OUR_FAMILIES)[number], NftJsonDocument>>;

async function listOurs(opts: NftRunOptions): Promise<Listing> {
  const out: Listing = {};
  for (const fam of OUR_FAMILIES) {
    try {
      out[fam] = await nftListTable(fam, fam === 'bridge' ? BRIDGE_TABLE : INET_TABLE, opts);
    } catch {
      // table absent
    }
  }
  return out;
}

/** Applies a build batch over whatever nwf-fast's tables hold now, as load does (no state recorded); returns the load tag. */
export async function applyBuild(build: NftJsonDocument, opts: NftRunOptions): Promise<string> {
  const plan = planLoad(await listOurs(opts), build);
  await nftApply(plan.apply, opts);
  await cleanupAfter(plan, opts);
  return plan.tag;
}

/**
 * The incremental path on its own (as load takes it when only addresses
 * change): the element delta between two builds, aimed at the live objects.
 * Returns false when the builds differ in more than elements.
 */
export async function applyIncremental(prev: NftJsonDocument, next: NftJsonDocument, opts: ElementDeltaOptions, liveTag?: string): Promise<boolean> {
  const plain = elementDelta(prev, next);
  if (!plain) return false;
  const delta = liveDelta(liveTag ?? (await listOurs(opts)), plain);
  if (!delta) return false;
  await applyElementDelta({ live: delta, plain, build: next }, opts);
  return true;
}

/** The second transaction of a load: the previous generation's objects go (a failure only leaves them for the next load). */
async function cleanupAfter(plan: LoadPlan, opts: NftRunOptions): Promise<void> {
  if (plan.cleanup.nftables.length <= 1) return;
  try {
    await nftApply(plan.cleanup, opts);
  } catch {
    // leftovers of a tag that is not live are removed by the next load
  }
}

/** A listing without handles and counter values: what must not change while a generation is in force. */
export function normalizeListing(doc: NftJsonDocument | undefined): unknown {
  if (!doc) return null;
  const strip = (v: unknown): unknown => {
    // object names carry the load tag (teardown.ts): compare without it
    if (typeof v === 'string') return v.replace(/^(@?)g[0-9a-f]{6}_/, '$1*_');
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === 'handle' || k === 'packets' || k === 'bytes') continue;
        // element order in a listing depends on insertion history: compare as sets
        if (k === 'comment') o[k] = x;
        else o[k] = k === 'elem' && Array.isArray(x) ? (x.map(strip) as unknown[]).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) : strip(x);
      }
      return o;
    }
    return v;
  };
  return strip(doc.nftables.filter((o) => !('metainfo' in o)));
}

function normalizeAll(l: Listing): unknown {
  return Object.fromEntries(OUR_FAMILIES.map((f) => [f, normalizeListing(l[f])]));
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
  /** Applied as an element delta / in-place eBPF value update (delta.ts). */
  incremental?: boolean;
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
  if (previous && !opts.full) {
    const r = await tryIncremental(previous, g, state, s, opts);
    if (r) return r;
  }
  const t0 = performance.now();
  // One transaction puts the new objects next to the live ones and re-points the base chains
  // (teardown.ts); the previous objects are deleted by a second one.
  const plan = planLoad(await listOurs(opts), toNftJson(lowerNftFor(g.manifest.backend, g.ir).batch));
  await nftCheck(plan.apply, opts);
  const t1 = performance.now();
  const stored = state.store(g);
  // Verify and configure every eBPF program before anything changes.
  const bpf = stored.bpf;
  const prepared = bpf ? inNs(opts, () => prepareBpf(stored.dir, bpf)) : undefined;
  let missing: string[] = [];
  try {
    await faultPoint('pause-before-apply');
    await nftApply(plan.apply, opts);
    await cleanupAfter(plan, opts);
    if (prepared) missing = inNs(opts, () => attachBpf(prepared, opts.pinDir).missing);
  } finally {
    prepared?.close();
  }
  const now = new Set(bpfInterfaces(stored));
  inNs(opts, () => detachBpf(bpfInterfaces(previous).filter((i) => !now.has(i))));
  if (!prepared) unpinAll(opts.pinDir);
  const t2 = performance.now();
  state.writeKernelSnapshot(stored.manifest.id, await snapshot(opts));
  const next: HostState = { current: stored.manifest.id, history: [...s.history, stored.manifest.id].slice(-20), loadedAt: new Date().toISOString(), tag: plan.tag };
  state.write(next);
  return { generation: stored, previous: s.current, ms: { check: t1 - t0, apply: t2 - t1 }, missingTaps: missing };
}

/**
 * The incremental path: same structure, different elements (see delta.ts),
 * and eBPF values changed in place. Returns undefined to fall back to a full load.
 */
async function tryIncremental(previous: Generation, g: Generation, state: StateDir, s: HostState, opts: HostOptions): Promise<LoadResult | undefined> {
  if (previous.manifest.backend !== g.manifest.backend) return undefined;
  const build = toNftJson(lowerNftFor(g.manifest.backend, g.ir).batch);
  const plain = elementDelta(toNftJson(lowerNftFor(previous.manifest.backend, previous.ir).batch), build);
  if (!plain) return undefined;
  // nothing to change in nft: a full load (which also repairs drift) rather than a silent no-op
  if (g.manifest.backend === 'nft' && plain.nftables.length <= 1) return undefined;
  // the live tag recorded by the last load saves listing the tables (a drifted kernel makes
  // the delta fail and the load fall back to a full one)
  const delta = liveDelta(s.tag ?? (await listOurs(opts)), plain);
  if (!delta) return undefined;
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
    await applyElementDelta({ live: delta, plain, build }, opts);
  } catch {
    return undefined;
  }
  if (bpfPrev && bpfNext && !inNs(opts, () => updateBpfInPlace(bpfPrev, bpfNext, opts.pinDir))) {
    // values could not be changed in place: re-attach everything (the ruleset is already current)
    const prepared = inNs(opts, () => prepareBpf(g.dir, bpfNext));
    try {
      inNs(opts, () => attachBpf(prepared, opts.pinDir));
    } finally {
      prepared.close();
    }
  }
  const t1 = performance.now();
  const stored = state.store(g);
  state.writeKernelSnapshot(stored.manifest.id, await snapshot(opts));
  state.write({ current: stored.manifest.id, history: [...s.history, stored.manifest.id].slice(-20), loadedAt: new Date().toISOString(), ...(s.tag ? { tag: s.tag } : {}) });
  return { generation: stored, previous: s.current, ms: { check: 0, apply: t1 - t0 }, missingTaps: [], incremental: true };
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

/** Removes nwf-fast's tables (and nothing else) in one transaction. */
export async function unload(opts: HostOptions): Promise<void> {
  const doc: NftJsonDocument = {
    nftables: [
      { metainfo: { json_schema_version: 1 } },
      ...OUR_FAMILIES.flatMap((family): NftJsonDocument['nftables'] => {
        const table = { family, name: family === 'bridge' ? BRIDGE_TABLE : INET_TABLE };
        return [{ add: { table } }, { delete: { table } }];
      }),
    ],
  };
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  await nftApply(doc, opts);
  if (s.current) inNs(opts, () => detachBpf(bpfInterfaces(safeLoad(state, s.current as string))));
  unpinAll(opts.pinDir);
  state.write({ ...s, current: null });
}

export interface Status {
  stateDir: string;
  current: string | null;
  history: string[];
  loadedAt?: string;
  backend?: 'nft' | 'bpf' | 'both';
  interfaces: { iface: string; owner: string; filter: string; drops: Record<string, number>; bpfDrops?: Record<string, number> }[];
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
  for (const doc of Object.values(listing)) {
    if (!doc) continue;
    for (const o of doc.nftables) {
      const c = (o as { counter?: { name?: string; packets?: number } }).counter;
      if (!c?.name) continue;
      const p = parseDropCounter(c.name, ifaces);
      if (!p) continue;
      const rec = drops.get(p.iface) as Record<string, number>;
      rec[p.reason] = (rec[p.reason] ?? 0) + (c.packets ?? 0);
    }
  }
  out.backend = g.manifest.backend;
  const bpf = g.bpf ? bpfStats(g.bpf, opts.pinDir) : new Map();
  out.interfaces = g.manifest.interfaces.map((i) => {
    const rec: Status['interfaces'][number] = { iface: i.iface, owner: i.owner, filter: i.filter, drops: drops.get(i.iface) ?? {} };
    const b = bpf.get(i.iface);
    if (b) {
      const d: Record<string, number> = {};
      for (const dir of ['out', 'in'] as const) for (const [k, v] of Object.entries(b[dir])) if (k !== 'accepted') d[k] = (d[k] ?? 0) + Number(v);
      rec.bpfDrops = d;
    }
    return rec;
  });
  const expected = state.readKernelSnapshot(s.current);
  const now = normalizeAll(listing);
  if (expected !== undefined && JSON.stringify(expected) !== JSON.stringify(now)) {
    out.drift = true;
    out.driftDetail = !present.bridge ? 'the bridge table nwf_fast is missing' : 'the kernel tables differ from the loaded generation';
  }
  return out;
}
