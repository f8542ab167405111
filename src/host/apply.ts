// Host operations on generations: load (check, then apply in ONE
// transaction), rollback and unload. nwf-fast only ever touches its own
// tables (those named nwf_fast that carry its owner mark, table-owner.ts)
// and its tc filters and pins. Every nft command comes from load-plan.ts
// over typed inventories. What the state directory records around a change
// (checks before it, the journal, the audit log, what a failure after apply
// leaves) is change.ts and preflight.ts; `status` is status.ts.
import { existsSync, readFileSync } from 'node:fs';
import { CODES, NwfError } from '../util/errors.js';
import { appendAll } from '../util/arrays.js';
import { newTag } from '../backends/nft/names.js';
import type { NftBatch, NftFamily } from '../backends/nft/model.js';
import { toNftJson } from '../backends/nft/serialize.js';
import { lowerNftFor } from '../compile.js';
import { nftApply, nftCheck, nftListTable, type NftRunOptions } from './nft.js';
import { hostRunner, inNetns, withNetns } from './netns.js';
import { DEFAULT_KEEP_GENERATIONS, type Generation, type HostState, readGeneration, rollbackTarget, StateDir } from './generation.js';
import { attachBpf, detachBpf, prepareBpf, unpinAll, updateBpfInPlace, type AttachResult, type BpfHookChoice, type HookPlan } from './bpf-apply.js';
import { inventoryOf, kernelInventory, liveTag, normalizeListing, OUR_TABLES, tagsIn, type KernelInventory, type Listing } from './inventory.js';
import { elementDelta, planFullLoad, unloadBatch, type LoadPlan } from './load-plan.js';
import { applyElementDelta, type ElementDeltaOptions } from './nfnl/index.js';
import { startChange, type StateChange } from './change.js';
import { interfaceChanges, stateFromAudit } from './audit.js';
import { describeJournal, readJournal } from './journal.js';
import { checkTables, preflightLoad, preflightUnload, type Preflight } from './preflight.js';
import { createMarkedTables, probeTables, type TableProbe } from './table-owner.js';
import { detachEverywhere, forceUnload, type UnloadResult } from './force-unload.js';

export type { UnloadResult };

export interface HostOptions extends NftRunOptions {
  stateDir: string;
  /** bpffs directory for nwf-fast's pins (default /sys/fs/bpf/nwf-fast). */
  pinDir?: string;
  /** Always replace the whole generation, never apply an element delta. */
  full?: boolean;
  /** Load a generation that protects no interface over one that protects some. */
  allowEmpty?: boolean;
  /** Stored generations kept after a load (config keep_generations; default 10). */
  keepGenerations?: number;
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

/**
 * Test hooks: NWF_FAST_FAULT=pause-before-apply:MS sleeps right before the
 * transaction is applied; NWF_FAST_FAULT=fail-after-apply makes the step
 * after the kernel changed fail (as a full disk or a vanished tap would).
 */
async function faultPoint(name: 'pause-before-apply' | 'fail-after-apply'): Promise<void> {
  const f = process.env.NWF_FAST_FAULT;
  if (!f) return;
  const [point, ms] = f.split(':');
  if (point !== name) return;
  if (name === 'fail-after-apply') throw new NwfError(CODES.COMMAND_FAILED, 'injected failure after apply (NWF_FAST_FAULT=fail-after-apply)');
  await new Promise((r) => setTimeout(r, Number(ms ?? 1000)));
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

/**
 * The listing of nwf-fast's tables: with `tables`, those of them that are
 * ours (table-owner.ts); without, every table named like ours (the lab's
 * applyNft, which owns its namespace).
 */
export async function listOurs(opts: NftRunOptions, tables?: readonly TableProbe[]): Promise<Listing> {
  const out: Listing = {};
  const wanted = tables ? tables.filter((t) => t.state === 'ours') : OUR_TABLES;
  for (const t of wanted) {
    try {
      out[t.family] = await nftListTable(t.family, t.name, opts);
    } catch {
      // table absent
    }
  }
  return out;
}

async function kernelNow(opts: NftRunOptions, tables?: readonly TableProbe[]): Promise<KernelInventory> {
  return kernelInventory(await listOurs(opts, tables));
}

/** A full load plan of a generation's nft part, lowered under a tag no object in the kernel carries. */
function planFor(k: KernelInventory, lower: (tag: string) => NftBatch): LoadPlan {
  const tag = newTag(tagsIn(k));
  return planFullLoad(k, lower(tag), tag);
}

/** The families of the tables a batch adds. */
function tableFamilies(batch: NftBatch): Set<NftFamily> {
  return new Set([...inventoryOf(batch.filter((c) => c.op === 'add' && c.object.kind === 'table')).tables.values()].map((t) => t.family));
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
 * (no state recorded, no owner mark: the lab's own namespaces): `lower`
 * gives the batch under the tag it is handed. Returns the load tag.
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

export function normalizeAll(l: Listing): unknown {
  return Object.fromEntries(OUR_TABLES.map((t) => [t.family, normalizeListing(l[t.family])]));
}

async function snapshot(opts: NftRunOptions, tables: readonly TableProbe[]): Promise<unknown> {
  return normalizeAll(await listOurs(opts, tables));
}

export interface LoadResult {
  generation: Generation;
  previous: string | null;
  ms: { check: number; apply: number; total: number };
  /** Taps of the generation's eBPF programs that do not exist (attached by a later load). */
  missingTaps: string[];
  /** Applied as an element delta / in-place eBPF value update (load-plan.ts). */
  incremental?: boolean;
  /** The hook of each tap's eBPF programs, when this load attached them. */
  bpfHooks?: Record<string, HookPlan>;
  /** Things worth saying (tables left alone, a replaced stored copy, stale files removed, eBPF attachment fallbacks). */
  notes: string[];
  /** What this load repaired: an interrupted or failed change, a damaged state file. */
  repaired: string[];
  /** Stored generations removed (keep_generations). */
  pruned: string[];
}

interface LoadContext {
  state: StateDir;
  change: StateChange;
  s: HostState;
  previous: Generation | undefined;
  /** The checks' results: owner id and the tables named like ours. */
  pre: Preflight;
  notes: string[];
  repaired: string[];
  t0: number;
}

/** Checks with nft -c, then applies the generation as one transaction and records it. */
export async function loadGeneration(dir: string, opts: HostOptions, op: 'load' | 'rollback' = 'load'): Promise<LoadResult> {
  const state = new StateDir(opts.stateDir);
  const change = startChange(state, op);
  try {
    return await loadChecked(readGeneration(dir), state, change, opts);
  } catch (e) {
    throw change.fail(e);
  }
}

/** What a change reads of the state directory first: the state (a damaged one rebuilt), what it repairs. */
function stateForChange(state: StateDir, notes: string[]): { s: HostState; repaired: string[] } {
  for (const f of state.cleanStale()) notes.push(`removed ${f}, left by a process that died`);
  const journal = readJournal(state);
  if (journal.kind === 'entry' && journal.running) {
    throw new NwfError(CODES.STATE_INVALID, `another nwf-fast command is changing this state directory: ${describeJournal(journal)}`, { hint: 'wait for it to end, then run this again' });
  }
  const { state: s, damaged } = state.readForRepair(() => stateFromAudit(state.dir));
  const repaired: string[] = [];
  if (damaged !== undefined) repaired.push(`state.json was damaged (${damaged}): rebuilt from the audit log (kept as state.json.damaged)`);
  const pending = describeJournal(journal);
  if (pending) repaired.push(pending);
  return { s, repaired };
}

async function loadChecked(g: Generation, state: StateDir, change: StateChange, opts: HostOptions): Promise<LoadResult> {
  const t0 = performance.now();
  const notes: string[] = [];
  const { s, repaired } = stateForChange(state, notes);
  const previous = s.current ? safeLoad(state, s.current, notes) : undefined;
  change.describe(g.manifest.id, s.current, { backend: g.manifest.backend, interfaces: interfaceChanges(previous?.ir, g.ir) });
  if (g.manifest.l3) {
    const k = await probeKernel(opts);
    if (!k.brNetfilterIpv4) {
      throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'this generation has L3/L4 rules, which need br_netfilter: net.bridge.bridge-nf-call-iptables is not 1', {
        hint: 'modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 (libvirt needs the same)',
      });
    }
  }
  // Everything that can be checked before the kernel is touched (preflight.ts); tables by family below.
  const pre = preflightLoad(state, g, previous, { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.pinDir ? { pinDir: opts.pinDir } : {}), ...(opts.allowEmpty ? { allowEmpty: true } : {}) });
  const ctx: LoadContext = { state, change, s, previous, pre, notes, repaired, t0 };
  const hook = opts.bpfHook ?? s.bpfHook ?? 'auto';
  // an interrupted change or a rebuilt state: the kernel is unknown, only a full load repairs it;
  // another hook than the loaded one: the programs move, which a value update cannot do
  if (previous && !opts.full && !repaired.length && (opts.bpfHook === undefined || opts.bpfHook === s.bpfHook)) {
    const r = await tryIncremental(previous, g, ctx, opts);
    if (r) return r;
  }
  const t1 = performance.now();
  // One transaction puts the new objects next to the live ones and re-points the base chains
  // (load-plan.ts); the previous objects are deleted by a second one.
  const plan = planFor(await kernelNow(opts, ctx.pre.tables), (tag) => lowerNftFor(g.manifest.backend, g.ir, tag).batch);
  const families = tableFamilies(plan.apply);
  appendAll(notes, checkTables(ctx.pre, families, state.dir));
  const apply = toNftJson(plan.apply);
  await nftCheck(apply, opts);
  const t2 = performance.now();
  // The generation is on disk (verified) before anything changes, and so is the journal.
  const stored = state.store(g, notes);
  change.journal(stored.manifest.id, s.current);
  // Verify and configure every eBPF program before anything changes.
  const bpf = stored.bpf;
  const prepared = bpf ? inNs(opts, () => prepareBpf(stored.dir, bpf, hook)) : undefined;
  let attached: ReturnType<typeof attachBpf> | undefined;
  try {
    await faultPoint('pause-before-apply');
    if (ctx.pre.freshOwner) state.writeOwnerId(ctx.pre.owner);
    const created = await createMarkedTables(ctx.pre.tables, families, ctx.pre.owner, opts);
    if (created.length) ctx.pre.tables = ctx.pre.tables.map((t) => (created.includes(t.family) ? { ...t, state: 'ours' as const, owner: ctx.pre.owner } : t));
    await nftApply(apply, opts);
    change.touched(`generation ${stored.manifest.id}'s nftables rules${prepared ? '; its eBPF programs are attached to some taps at most' : ''} (${s.current ?? 'nothing'} was in force before)`);
    await cleanupAfter(plan, opts);
    if (prepared) {
      change.touched(`generation ${stored.manifest.id}'s nftables rules; its eBPF programs on some taps at most (${s.current ?? 'nothing'} was in force before)`);
      attached = inNs(opts, () => attachBpf(prepared, opts.pinDir));
    }
  } finally {
    prepared?.close();
  }
  const now = new Set(bpfInterfaces(stored));
  // taps the previous generation (or an interrupted change) had programs on, and this one has not
  if (repaired.length || (s.current && !previous)) inNs(opts, () => detachEverywhere(now, opts.pinDir));
  else inNs(opts, () => detachBpf(bpfInterfaces(previous).filter((i) => !now.has(i)), opts.pinDir));
  if (!prepared) unpinAll(opts.pinDir);
  change.touched(`generation ${stored.manifest.id} (not recorded as loaded: the state directory was not updated)`);
  await faultPoint('fail-after-apply');
  const t3 = performance.now();
  if (attached) appendAll(notes, attached.notes);
  return record(ctx, stored, plan.tag, { check: t2 - t1, apply: t3 - t2 }, attached, false, opts);
}

/** Records a generation as loaded: kernel snapshot, state, pruning, journal and audit. */
async function record(ctx: LoadContext, stored: Generation, tag: string | undefined, ms: { check: number; apply: number }, attached: AttachResult | undefined, incremental: boolean, opts: HostOptions): Promise<LoadResult> {
  const { state, s } = ctx;
  state.writeKernelSnapshot(stored.manifest.id, await snapshot(opts, ctx.pre.tables));
  const keep = opts.keepGenerations ?? DEFAULT_KEEP_GENERATIONS;
  const keepHook = opts.bpfHook ?? s.bpfHook;
  const next: HostState = {
    current: stored.manifest.id,
    history: [...s.history, stored.manifest.id].slice(-Math.max(20, keep)),
    loadedAt: new Date().toISOString(),
    ...(tag ? { tag } : {}),
    ...(keepHook ? { bpfHook: keepHook } : {}),
  };
  state.write(next);
  const pruned = state.prune(next, keep);
  ctx.change.done({ incremental, ...(ctx.repaired.length ? { repaired: ctx.repaired } : {}) });
  return {
    generation: stored,
    previous: s.current,
    ms: { ...ms, total: performance.now() - ctx.t0 },
    missingTaps: attached?.missing ?? [],
    ...(incremental ? { incremental: true } : {}),
    ...(attached ? { bpfHooks: attached.hooks } : {}),
    notes: ctx.notes,
    repaired: ctx.repaired,
    pruned,
  };
}

/**
 * The incremental path: both generations lowered under the live tag have the
 * same structure and differ in elements only (load-plan.ts), and eBPF values
 * change in place. Returns undefined to fall back to a full load.
 */
async function tryIncremental(previous: Generation, g: Generation, ctx: LoadContext, opts: HostOptions): Promise<LoadResult | undefined> {
  const { s, state, change } = ctx;
  const backend = g.manifest.backend;
  if (previous.manifest.backend !== backend) return undefined;
  // the live tag recorded by the last load saves listing the tables (a drifted kernel makes
  // the delta fail and the load fall back to a full one)
  const tag = backend === 'bpf' ? undefined : (s.tag ?? liveTag(await kernelNow(opts, ctx.pre.tables)));
  if (backend !== 'bpf' && tag === undefined) return undefined;
  const nextBatch = lowerNftFor(backend, g.ir, tag).batch;
  const changes = elementDelta(inventoryOf(lowerNftFor(backend, previous.ir, tag).batch), inventoryOf(nextBatch));
  if (!changes) return undefined;
  // nothing to change in nft: a full load (which also repairs drift) rather than a silent no-op
  if (backend === 'nft' && changes.length === 0) return undefined;
  // the tables must be ours, as the previous load left them
  const families = tableFamilies(nextBatch);
  if ([...families].some((f) => ctx.pre.tables.find((t) => t.family === f)?.state !== 'ours')) return undefined;
  const bpfPrev = previous.bpf;
  const bpfNext = g.bpf;
  if (bpfPrev && bpfNext) {
    const sameIfaces = JSON.stringify(bpfPrev.interfaces.map((i) => [i.iface, i.shapeId])) === JSON.stringify(bpfNext.interfaces.map((i) => [i.iface, i.shapeId]));
    if (!sameIfaces) return undefined;
  }
  appendAll(ctx.notes, checkTables(ctx.pre, families, state.dir));
  const t0 = performance.now();
  const stored = state.store(g, ctx.notes);
  change.journal(stored.manifest.id, s.current);
  try {
    await faultPoint('pause-before-apply');
    // one transaction (netlink encoder, else libnftables); refused if the kernel lacks an element we delete
    if (changes.length) await applyElementDelta(changes, opts);
  } catch {
    return undefined;
  }
  if (changes.length) change.touched(`generation ${stored.manifest.id}'s nftables elements (incremental)${bpfNext ? '; eBPF values of the previous generation ' + (s.current ?? '') : ''}`);
  let attached: AttachResult | undefined;
  if (bpfPrev && bpfNext) {
    change.touched(`generation ${stored.manifest.id}'s nftables elements; its eBPF values on some taps at most`);
    if (!inNs(opts, () => updateBpfInPlace(bpfPrev, bpfNext, opts.pinDir))) {
      // values could not be changed in place: re-attach everything (the ruleset is already current)
      const prepared = inNs(opts, () => prepareBpf(stored.dir, bpfNext, s.bpfHook ?? 'auto'));
      try {
        attached = inNs(opts, () => attachBpf(prepared, opts.pinDir));
      } finally {
        prepared.close();
      }
      appendAll(ctx.notes, attached.notes);
    }
  }
  change.touched(`generation ${stored.manifest.id} (not recorded as loaded: the state directory was not updated)`);
  await faultPoint('fail-after-apply');
  const t1 = performance.now();
  return record(ctx, stored, tag ?? s.tag, { check: 0, apply: t1 - t0 }, attached, true, opts);
}

function safeLoad(state: StateDir, id: string, notes?: string[]): Generation | undefined {
  try {
    return state.load(id);
  } catch (e) {
    notes?.push(`the stored copy of the loaded generation ${id} is unusable (${(e as Error).message}): this load replaces everything`);
    return undefined;
  }
}

export async function rollback(opts: HostOptions): Promise<LoadResult> {
  const state = new StateDir(opts.stateDir);
  const { state: s } = state.readForRepair(() => stateFromAudit(state.dir));
  const prevId = rollbackTarget(s);
  if (!prevId) {
    const change = startChange(state, 'rollback');
    change.describe(null, s.current);
    throw change.fail(new NwfError(CODES.STATE_INVALID, `no previous generation to roll back to (state: ${opts.stateDir})`, { hint: 'nwf-fast status shows the history' }));
  }
  const dir = state.generationDir(prevId);
  try {
    readGeneration(dir);
  } catch (e) {
    const change = startChange(state, 'rollback');
    change.describe(prevId, s.current);
    throw change.fail(
      new NwfError(CODES.STATE_INVALID, `cannot roll back to generation ${prevId}: its stored copy is unusable (${(e as Error).message})`, {
        location: { file: dir },
        hint: 'there is no other copy to restore it from: compile its sources again and `nwf-fast load DIR`',
      }),
    );
  }
  return loadGeneration(dir, opts, 'rollback');
}

export interface UnloadOptions extends HostOptions {
  /** From the kernel alone (force-unload.ts): no state read, every nwf-fast-marked table. */
  force?: boolean;
}

/** Removes nwf-fast's tables (and nothing else) in one transaction, its tc filters and its pins. */
export async function unload(opts: UnloadOptions): Promise<UnloadResult> {
  if (opts.force) return forceUnload(opts);
  const state = new StateDir(opts.stateDir);
  const change = startChange(state, 'unload');
  try {
    const notes: string[] = [];
    const { s, repaired } = stateForChange(state, notes);
    change.describe(null, s.current);
    // the state directory must be able to record the unload before anything is removed
    const pre = preflightUnload(state, opts);
    appendAll(notes, pre.notes);
    const ours = pre.tables.filter((t) => t.state === 'ours');
    const previous = s.current ? safeLoad(state, s.current, notes) : undefined;
    change.journal(null, s.current, repaired.length ? { repaired } : {});
    if (ours.length) await nftApply(toNftJson(unloadBatch(ours)), opts);
    change.touched(`no nwf-fast tables; eBPF programs of ${s.current ?? 'the previous generation'} possibly still on taps`);
    // without a readable record of what was attached: every tap with nwf-fast's filter
    if (previous && !repaired.length) inNs(opts, () => detachBpf(bpfInterfaces(previous), opts.pinDir));
    else inNs(opts, () => detachEverywhere(new Set(), opts.pinDir));
    unpinAll(opts.pinDir);
    change.touched('nothing of nwf-fast (the state directory was not updated)');
    state.write({ current: null, history: s.history, ...(s.bpfHook ? { bpfHook: s.bpfHook } : {}) });
    change.done();
    return { previous: s.current, tables: ours.map((t) => `${t.family} ${t.name}`), notes, forced: false };
  } catch (e) {
    throw change.fail(e);
  }
}

/** Tables named like ours with their owner (for status). */
export function tablesNow(opts: HostOptions, owner: string | undefined): TableProbe[] {
  return probeTables(opts, owner ?? 'none');
}

/** The kernel's listing of our tables, normalized as the snapshot is recorded (for status). */
export async function listingNow(opts: HostOptions, tables: readonly TableProbe[]): Promise<Listing> {
  return listOurs(opts, tables);
}
