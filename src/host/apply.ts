// Host operations: load (a generation, or a change of some ports), rollback,
// unload and status. nwf-fast only ever touches its own tables (bridge
// nwf_fast, ip nwf_fast, ip6 nwf_fast), its tc filters and its pins. Every
// nft command comes from load-plan.ts over typed inventories; what is
// loaded is recorded in the state directory (loaded.ts).
//
// Every load is a verified typed diff (commit):
//  1. The next state is put together from parts that were lowered once (a
//     generation's shapes and ports, or one port's part): the host adds its
//     skeleton (tap patterns, bridges), the ports' L3 port ids and eBPF
//     slots (allocated once and kept), and its load tag.
//  2. An incremental load runs only on a kernel that holds what is
//     recorded: the nf_tables generation id is compared first (one netlink
//     round trip); when something else committed since, nwf-fast's tables
//     are listed and compared with the record. Any difference, a change that
//     did not finish, another backend, or a diff that cannot be expressed
//     incrementally: the generation is replaced in full (load-plan.ts).
//  3. eBPF objects that must be loaded are loaded and verified before
//     anything changes; ports that get programs for the first time get them
//     before nftables lets their frames through; then the nft transaction;
//     then the other eBPF changes and the verification of the programs on
//     the taps (bpf-apply.ts); then the nft cleanup transaction.
//  4. The record is written: what was loaded, never a listing.
//
// What the state directory records around a whole load (checks before it,
// the journal, the audit log, what a failure after apply leaves) is
// change.ts and preflight.ts; tables carry nwf-fast's owner mark
// (table-owner.ts); `status` is status.ts, with the kernel verification
// here (loadedStatus).
import type { LearnedEntry } from '../ir/learning.js';
import { copyBpfLearnedToNft, departedPorts, forgetLearned, learningPortsWithIndex } from './learn/kernel.js';
import { ageLearnedSeeds, portSnoops } from '../backends/nft/learn.js';
import { existsSync, readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import { appendAll, maxOf } from '../util/arrays.js';
import type { Backend } from '../compile.js';
import type { FailedInterface } from '../ir/types.js';
import { DIRECTIONS } from '../ir/types.js';
import { nftNames, newTag, parseCountName, parseL3Counter } from '../backends/nft/names.js';
import { add, del, match, meta, nftTable, str } from '../backends/nft/build.js';
import type { NftCommand, NftFamily } from '../backends/nft/model.js';
import { toNftJson } from '../backends/nft/serialize.js';
import { orderBatch, familiesOf, groupElements, type PortPart, type ShapePart } from '../backends/nft/parts.js';
import { MARK_LAYOUT, markCommands, MAX_L3_PORTS, type L3Family } from '../backends/nft/l3.js';
import { isGated } from '../backends/nft/lower.js';
import { DEFAULT_SKELETON_CONFIG, gateElementCommands, lowerSkeleton, type SkeletonConfig } from '../backends/nft/skeleton.js';
import { MAP_NAMES } from '../backends/bpf/names.js';
import { portRulesOf, type OneLayerRule } from '../backends/layers.js';
import { nftApply, nftCheck, nftListTable, type NftRunOptions } from './nft.js';
import { hostRunner, inNetns, withNetns } from './netns.js';
import { DEFAULT_KEEP_GENERATIONS, readGeneration, readPolicy, rollbackTarget, StateDir, type Generation, type HostState } from './generation.js';
import { startChange, type StateChange } from './change.js';
import { interfaceChanges, stateFromAudit } from './audit.js';
import { describeJournal, readJournal } from './journal.js';
import { checkTables, preflightLoad, preflightUnload } from './preflight.js';
import { createMarkedTables, probeTables, type TableProbe } from './table-owner.js';
import { detachEverywhere, forceUnload, type UnloadResult } from './force-unload.js';
import type { BpfHookChoice, HookPlan } from './bpf/hook.js';
import { BpfCommit, bpfPortStats, checkBpfPorts, detachTaps, gateInstances, unpinAll, type BpfPortChange, type BpfState, type BpfWant } from './bpf-apply.js';
import {
  expectedSnapshot,
  kernelInventory,
  listedElementCounter,
  listedElementText,
  listingSnapshot,
  OUR_TABLES,
  snapshotDiff,
  tagsIn,
  type KernelInventory,
  type Listing,
} from './inventory.js';
import { diffParts, planFullLoad, setIndexOf, tagCommands, unloadBatch, type Part, type SetIndex } from './load-plan.js';
import { nfnlChangesOf, nftGeneration, NfnlEncodeError, NfnlSocket, prepareChangeBatch, sendChangeBatch, sendPreparedBatch, type ChangeBatch } from './nfnl/index.js';
import { LoadedStore, type LoadedHead, type LoadedPort, type LoadedRecord } from './loaded.js';

export interface HostOptions extends NftRunOptions {
  stateDir: string;
  /** bpffs directory for nwf-fast's pins (default /sys/fs/bpf/nwf-fast). */
  pinDir?: string;
  /** Always replace the whole generation, never apply a diff. */
  full?: boolean;
  /** Load a generation that protects no interface over one that protects some. */
  allowEmpty?: boolean;
  /** Stored generations kept after a load (config keep_generations; default 10). */
  keepGenerations?: number;
  /** Where the eBPF programs go on the taps (default: what the last load that named one asked for, else auto: tc). */
  bpfHook?: BpfHookChoice;
  /** Globs of the VM ports' names (config tap_patterns): a matching port without an entry is dropped. Default: as recorded, else vnet*. */
  tapPatterns?: readonly string[];
  /** Bridges nwf-fast manages (empty: every bridge). Default: as recorded, else every bridge. */
  bridges?: readonly string[];
  /**
   * Learned addresses to lock learning ports to from their first frame, by
   * learnKey(owner UUID, MAC) (the IP-learning contract, src/ir/learning.ts;
   * the store builds them: src/host/learn/store.ts).
   */
  seeds?: ReadonlyMap<string, LearnedEntry>;
}

const DEFAULT_PIN = '/sys/fs/bpf/nwf-fast';
const pinDirOf = (opts: HostOptions): string => opts.pinDir ?? DEFAULT_PIN;

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
 * Whether the kernel matches `meta ibrname` in the bridge family
 * (CONFIG_NFT_BRIDGE_META): a dry run of a rule using it (nothing is committed).
 */
export async function probeBridgeMeta(opts: NftRunOptions): Promise<boolean> {
  const t = nftTable('bridge', 'nwf_fast_probe');
  const batch: NftCommand[] = [add(t.table), add(t.chain('c')), add(t.rule('c', [match(meta('ibrname'), '==', str('probe0'))])), del(t.ref)];
  try {
    await nftCheck(toNftJson(batch), opts);
    return true;
  } catch {
    return false;
  }
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

const inProcessNetlink = (opts: NftRunOptions): boolean => !!opts.inProcess && !opts.runner;

/** The nf_tables generation id, when nwf-fast talks netlink itself (else undefined: the listing decides). */
function currentGen(opts: NftRunOptions, socket: NfnlSocket | undefined): number | undefined {
  if (!inProcessNetlink(opts)) return undefined;
  try {
    return nftGeneration({ ...(opts.netns !== undefined ? { netns: opts.netns } : {}), ...(socket ? { socket } : {}) });
  } catch {
    return undefined;
  }
}

/** One netlink socket for a commit's transactions (in the options' namespace). */
function openSocket(opts: NftRunOptions): NfnlSocket | undefined {
  try {
    return opts.netns !== undefined ? withNetns(opts.netns, () => NfnlSocket.open()) : NfnlSocket.open();
  } catch {
    return undefined;
  }
}

/**
 * Sends untagged commands under `tag` as one transaction: through the
 * netlink encoder when nwf-fast talks netlink itself and the encoder covers
 * every command, else through libnftables (or the nft program).
 */
async function sendCommands(cmds: readonly NftCommand[], tag: string, index: SetIndex, opts: NftRunOptions, sock: NfnlSocket | undefined): Promise<{ via: 'nfnl' | 'nft'; kernelMs?: number }> {
  const changes = sock ? nfnlChangesOf(cmds, index, tag) : undefined;
  if (sock && changes) {
    try {
      return { via: 'nfnl', kernelMs: sendChangeBatch(sock, changes).kernelMs };
    } catch (e) {
      // nothing was sent: libnftables has the last word on what the encoder does not cover
      if (!(e instanceof NfnlEncodeError)) throw e;
    }
  }
  await nftApply(toNftJson(tagCommands(cmds, tag)), opts);
  return { via: 'nft' };
}

/** How a full load's transaction was sent, and why not over netlink. */
export interface FullApplyResult {
  via: 'nfnl' | 'nft';
  fallback?: string;
  /** Encoding (netlink) or the `nft -c` check (libnftables), and the transaction itself. */
  prepareMs: number;
  applyMs: number;
}

/** Above this many bytes a netlink batch gets more time than a small change (the kernel takes about 20 ms per MiB here). */
const fullTimeoutMs = (bytes: number): number => 5000 + Math.ceil(bytes / (1 << 20)) * 1000;

/**
 * A full load's transaction (tagged commands, as planFullLoad's `apply`) as
 * ONE nf_tables transaction: over netlink when nwf-fast talks netlink itself
 * (`sock`) and the encoder covers every command, else through libnftables
 * or the nft program (checked with `nft -c` first), never a mix. `before`
 * runs once the transaction is ready and before it is sent (the load marks
 * its tables there). A batch the kernel refuses changes nothing
 * (NfnlBatchError names the change it refused). `NWF_FAST_DEBUG=1` says on
 * stderr which path was taken and why.
 */
export async function applyFullTransaction(all: readonly NftCommand[], opts: NftRunOptions, sock: NfnlSocket | undefined, before: () => Promise<void> = async () => undefined): Promise<FullApplyResult> {
  const t0 = performance.now();
  // one `add element` per set (the same elements in the same transaction: every one is in the element phase)
  const cmds = groupElements(all);
  let fallback: string | undefined;
  let batch: ChangeBatch | undefined;
  if (!sock) fallback = opts.runner ? 'a command runner was given' : !opts.inProcess ? 'not in-process (--nft-binary)' : 'no netlink socket';
  else {
    const changes = nfnlChangesOf(cmds, setIndexOf([cmds]), undefined);
    if (!changes) fallback = `a command has no netlink form here (${cmds.find((c) => !nfnlChangesOf([c], setIndexOf([cmds]), undefined))?.op ?? '?'} ${cmds.find((c) => !nfnlChangesOf([c], setIndexOf([cmds]), undefined))?.object.kind ?? '?'})`;
    else {
      try {
        batch = prepareChangeBatch(sock, changes, { ackEach: false });
      } catch (e) {
        // nothing was sent: libnftables has the whole transaction
        if (!(e instanceof NfnlEncodeError)) throw e;
        fallback = e.message;
      }
    }
  }
  if (process.env.NWF_FAST_DEBUG) process.stderr.write(`debug: full nft transaction (${cmds.length} commands) ${batch ? `over netlink (${batch.messages.length} messages, ${batch.bytes.length} bytes)` : `through libnftables: ${fallback ?? ''}`}\n`);
  if (batch && sock) {
    const t1 = performance.now();
    await before();
    const t2 = performance.now();
    sendPreparedBatch(sock, batch, fullTimeoutMs(batch.bytes.length));
    return { via: 'nfnl', prepareMs: t1 - t0, applyMs: performance.now() - t2 };
  }
  const doc = toNftJson(cmds);
  await nftCheck(doc, opts);
  const t1 = performance.now();
  await before();
  const t2 = performance.now();
  await nftApply(doc, opts);
  return { via: 'nft', ...(fallback !== undefined ? { fallback } : {}), prepareMs: t1 - t0, applyMs: performance.now() - t2 };
}

// ---- the desired state ----------------------------------------------------------------------

/** One port as a load wants it: its record (without port id and eBPF slot) and its eBPF values. */
export interface DesiredPort {
  record: Omit<LoadedPort, 'markId' | 'bpf'>;
  bpf?: BpfWant;
}

/** What a load changes. */
export interface ChangeSet {
  backend: Backend;
  /** Ports that change: their new state, or null when they go. */
  ports: Map<string, DesiredPort | null>;
  /** `ports` is every port of the next state (a whole generation): the others go. */
  whole: boolean;
  /** The shapes the changed ports use (new ones at least). */
  shapes: Map<string, ShapePart>;
  /** eBPF objects of the shapes the changed ports use (new shapes at least). */
  bpfObjects: Map<string, string>;
  /** The generation loaded whole, if this is one. */
  generation?: string;
  /** eBPF ports to verify: every port (a load of a generation) or the changed ones. */
  verify: 'all' | 'changed';
}

/** A generation as a whole change set. */
export function changeSetOf(g: Generation): ChangeSet {
  const m = g.manifest;
  const meta = new Map(m.interfaces.map((i) => [i.iface, i]));
  const failed = new Map(m.failed.map((f) => [f.iface, f]));
  const bpf = new Map((g.bpf?.interfaces ?? []).map((i) => [i.iface, i]));
  const oneLayer = m.oneLayer ?? [];
  const ports = new Map<string, DesiredPort | null>();
  // dhcp seeds were lowered with the time their leases had left then (backends/nft/learn.ts)
  const elapsedS = (Date.now() - Date.parse(m.createdAt)) / 1000;
  for (const stored of g.parts.ports) {
    const part = stored.learn?.mode === 'dhcp' && elapsedS >= 1 ? { ...stored, commands: ageLearnedSeeds(stored.commands, elapsedS) } : stored;
    const i = meta.get(part.iface);
    const f = failed.get(part.iface);
    const b = bpf.get(part.iface);
    const cfg = b?.maps.find((x) => x.map === MAP_NAMES.cfg)?.value;
    const record: DesiredPort['record'] = {
      iface: part.iface,
      owner: i?.owner ?? f?.owner ?? '',
      mac: i?.mac ?? f?.mac ?? '',
      filter: i?.filter ?? f?.filter ?? '',
      status: part.status,
      ...(f ? { error: { code: f.code, message: f.message, ...(f.file ? { file: f.file } : {}) } } : {}),
      ...(i ? { rules: { l2Rules: i.l2Rules, l3Rules: i.l3Rules } } : {}),
      ...(oneLayer.length && i ? { oneLayer: portRulesOf(oneLayer, part.iface) } : {}),
      nft: part,
    };
    if (record.oneLayer?.length === 0) delete record.oneLayer;
    ports.set(part.iface, { record, ...(b && cfg && part.status === 'protected' ? { bpf: { shapeId: b.shapeId, cfg, ...(b.learnSeed !== undefined ? { learnSeed: b.learnSeed } : {}), ...(b.learnDhcp !== undefined ? { learnDhcp: b.learnDhcp } : {}) } } : {}) });
  }
  return {
    backend: m.backend,
    ports,
    whole: true,
    shapes: new Map(g.parts.shapes.map((s) => [s.name, s])),
    bpfObjects: new Map((g.bpf?.shapes ?? []).map((s) => [s.shapeId, join(g.dir, s.object)])),
    generation: m.id,
    verify: 'all',
  };
}

// ---- the commit -------------------------------------------------------------------------------

export interface CommitResult {
  /** How nftables was changed: nothing, element changes only, a typed diff, or a full replacement. */
  path: 'none' | 'elements' | 'diff' | 'full';
  /** What sent the transaction: nwf-fast's netlink encoder, or libnftables / the nft program. */
  via?: 'nfnl' | 'nft';
  /** A full replacement through libnftables: why the netlink encoder did not send it. */
  viaFallback?: string;
  /** Why a full replacement was needed. */
  fullReason?: string;
  /** What the kernel held that was not recorded (found and repaired by this load). */
  drift: string[];
  /** eBPF: taps that do not exist yet, taps whose programs were put back. */
  missingTaps: string[];
  repairedTaps: string[];
  /** The mechanism of each tap this commit attached programs to, and what the user should know of it. */
  bpfHooks: Record<string, HookPlan>;
  notes: string[];
  /** Ports that fail closed (their policy failed). */
  failed: FailedInterface[];
  /** Protected ports after the load. */
  ports: number;
  /**
   * check: deciding the path (generation id, a listing when it moved); nft:
   * the transaction that puts the change in force; bpf: eBPF loads, attaches
   * and map updates; cleanup: the second transaction (what went); apply: all
   * of the kernel work; total: the whole call.
   */
  /**
   * Milliseconds: the nft part (`nft`: building and sending the transaction;
   * `nftKernel`, when it went over netlink: from its first byte sent to the
   * kernel's acknowledgement, the rest of `nft` is user space), the eBPF part
   * (map updates, attach, verification), the cleanup transaction.
   */
  ms: { check: number; nft: number; nftKernel?: number; bpf: number; cleanup: number; apply: number; total: number };
  head: LoadedHead;
}

interface MarkInfo {
  id: number;
  families: L3Family[];
  /** The port learns its address: its mark chains mark only once it is locked (l3.ts markCommands); `dhcp`: from its own lease set. */
  learn?: true | 'dhcp';
}

function hashId(prev: string | undefined, what: unknown): string {
  return createHash('sha256')
    .update(`${prev ?? ''}\n${JSON.stringify(what)}`)
    .digest('hex')
    .slice(0, 16);
}

/** The hook the last load asked for (state.json), if it can be read. */
function recordedHook(stateDir: string): BpfHookChoice | undefined {
  try {
    return new StateDir(stateDir).read().bpfHook;
  } catch {
    return undefined;
  }
}

/**
 * tap_patterns globs as nft interface patterns (a name, or a prefix and a
 * trailing `*`): a glob with `?` or `[...]` becomes its prefix before the
 * first of them and `*`, which matches more ports, never fewer (fail closed).
 */
export function nftPatterns(globs: readonly string[]): string[] {
  const out: string[] = [];
  for (const g of globs) {
    const i = g.search(/[*?[]/);
    const p = i < 0 ? g : `${g.slice(0, i)}*`;
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

async function skeletonConfig(opts: HostOptions, head: LoadedHead | undefined, backend: Backend): Promise<SkeletonConfig> {
  const tapPatterns = nftPatterns(opts.tapPatterns ?? head?.skeleton.tapPatterns ?? DEFAULT_SKELETON_CONFIG.tapPatterns);
  const bridges = [...(opts.bridges ?? head?.skeleton.bridges ?? [])];
  let bridgeMeta = true;
  if (bridges.length) {
    const same = head && JSON.stringify(head.skeleton.bridges) === JSON.stringify(bridges);
    bridgeMeta = same ? head.skeleton.bridgeMeta : await probeBridgeMeta(opts);
  }
  // the optimizer's fast paths in the base chain (opt/fast-base.ts), whichever ports fill them: nft enforces L2 under nft and both
  return { tapPatterns, bridges, bridgeMeta, ...(backend === 'bpf' ? {} : { fastBase: DEFAULT_SKELETON_CONFIG.fastBase ?? [] }) };
}

const skeletonPart = (cfg: SkeletonConfig, families: readonly L3Family[]): Part => ({ id: 'skeleton', commands: lowerSkeleton(cfg, families) });

/** The skeleton a record says is loaded: one written before the snoop chain was conditional (no `snoop`) had it. */
const recordedSkeleton = (head: LoadedHead): SkeletonConfig => (head.snoop === undefined ? { ...head.skeleton, snoop: true } : head.skeleton);

/** The recorded ports that snoop (LoadedHead.snoop; an older record without it: read from its ports). */
function recordedSnoopers(head: LoadedHead | undefined, store: LoadedStore): Set<string> {
  if (!head) return new Set();
  if (head.snoop) return new Set(head.snoop);
  const out = new Set<string>();
  for (const n of store.portNames()) {
    try {
      const p = store.readPort(n);
      if (p && portSnoops(p.nft)) out.add(n);
    } catch {
      out.add(n); // a damaged port record: keep the hook (it costs a hook; without it a dhcp port would not learn)
    }
  }
  return out;
}
const shapePart = (s: ShapePart): Part => ({ id: `shape ${s.name}`, commands: s.commands });
const portPart = (p: PortPart): Part => ({ id: `port ${p.iface}`, commands: p.commands });
/** MarkInfo.learn of a port's learning identity (none: not learning). */
const markLearn = (l: PortPart['learn']): Pick<MarkInfo, 'learn'> => (l ? { learn: l.mode === 'dhcp' ? 'dhcp' : true } : {});
const markPart = (iface: string, m: MarkInfo): Part => ({ id: `mark ${iface}`, commands: markCommands(iface, m.id, m.families, m.learn ?? false) });

function familiesOfMarks(marks: Record<string, MarkInfo>): L3Family[] {
  return familiesOf(Object.values(marks).map((m) => ({ l3: m.families })));
}

/** Every part of a recorded state (a full replacement, a drift check). */
function allParts(head: LoadedHead, shapes: Iterable<ShapePart>, ports: Iterable<LoadedPort>): Part[] {
  const marks = head.marks ?? {};
  const out: Part[] = [skeletonPart(recordedSkeleton(head), familiesOfMarks(marks))];
  for (const s of shapes) out.push(shapePart(s));
  for (const p of ports) {
    out.push(portPart(p.nft));
    const m = marks[p.iface];
    if (m) out.push(markPart(p.iface, m));
  }
  return out;
}

const commandsOf = (parts: readonly Part[]): NftCommand[] => {
  const out: NftCommand[] = [];
  for (const p of parts) for (const c of p.commands) out.push(c);
  return out;
};

function inNs<T>(opts: HostOptions, fn: () => T): T {
  return opts.netns ? withNetns(opts.netns, fn) : fn();
}

/** Whether the kernel's tables hold exactly what `record` says (the snapshot built from the record, not a listing). */
async function kernelMatches(record: LoadedRecord, opts: HostOptions): Promise<{ ok: boolean; drift: string[]; inventory: KernelInventory }> {
  const inventory = kernelInventory(await listOurs(opts));
  const expected = expectedSnapshot(tagCommands(orderBatch(commandsOf(allParts(record.head as LoadedHead, record.shapes.values(), record.ports.values()))), record.head.tag));
  const drift = snapshotDiff(expected, listingSnapshot(inventory));
  return { ok: drift.length === 0, drift, inventory };
}

/**
 * Applies a change set: the typed diff against the recorded state when the
 * kernel holds it, else a full replacement; eBPF before and after as
 * bpf-apply.ts says; the record written last.
 */
export interface CommitContext {
  /** The tables named like ours with their owner (preflight): a full replacement lists and marks only these. */
  tables?: TableProbe[];
  /** The state directory's owner id, marked on tables the commit creates. */
  owner?: string;
  /** Called once the kernel has changed (the journal: what a failure from here on leaves). */
  touched?: (what: string) => void;
}

/**
 * Creates the tables `cmds` adds that are absent, with nwf-fast's owner mark
 * (table-owner.ts), before the transaction that fills them: the owner id
 * of the context (a load's preflight), else the state directory's.
 */
async function markTables(cmds: readonly NftCommand[], ctx: CommitContext, opts: HostOptions): Promise<void> {
  const families = new Set(cmds.filter((c) => c.op === 'add' && c.object.kind === 'table').map((c) => (c.object as { family: NftFamily }).family));
  if (!families.size) return;
  if (!ctx.owner) {
    const state = new StateDir(opts.stateDir);
    ctx.owner = state.ownerId();
    if (!ctx.owner) {
      ctx.owner = randomBytes(8).toString('hex');
      state.writeOwnerId(ctx.owner);
    }
  }
  const owner = ctx.owner;
  ctx.tables ??= probeTables(opts, owner);
  const created = await createMarkedTables(ctx.tables, families, owner, opts);
  if (created.length) ctx.tables = ctx.tables.map((t) => (created.includes(t.family) ? { ...t, state: 'ours' as const, owner } : t));
}

export async function commit(change: ChangeSet, opts: HostOptions, ctx: CommitContext = {}): Promise<CommitResult> {
  const t0 = performance.now();
  const store = new LoadedStore(opts.stateDir);
  // a damaged record is no record: the load replaces everything (and records it again)
  let damagedRecord: string | undefined;
  let prevHead: LoadedHead | undefined;
  try {
    prevHead = store.readHead();
  } catch (e) {
    damagedRecord = (e as Error).message;
  }
  // bpf and both: the skeleton has the gate of eBPF-enforced ports (backends/nft/skeleton.ts)
  const cfg: SkeletonConfig = { ...(await skeletonConfig(opts, prevHead, change.backend)), ...(change.backend !== 'nft' ? { gate: true } : {}) };
  const whole = change.whole;

  // the previous records of the ports that change (every port for a whole change)
  const prevPorts = new Map<string, LoadedPort>();
  const names = whole ? store.portNames() : [...change.ports.keys()];
  for (const n of names) {
    let p: LoadedPort | undefined;
    try {
      p = store.readPort(n);
    } catch (e) {
      damagedRecord ??= (e as Error).message;
    }
    if (p) prevPorts.set(n, p);
  }
  const ports = new Map(change.ports);
  if (whole) for (const n of prevPorts.keys()) if (!ports.has(n)) ports.set(n, null);

  // the dhcp snoop base chain while some port learns from DHCPACKs in nft: added in the transaction
  // that adds the first such port, removed with the last (a whole change: only its own ports count)
  const snoopers = whole ? new Set<string>() : recordedSnoopers(prevHead, store);
  for (const [iface, d] of ports) {
    if (d && portSnoops(d.record.nft)) snoopers.add(iface);
    else snoopers.delete(iface);
  }
  if (snoopers.size) cfg.snoop = true;

  // port ids: kept while a port has L3 rules, the lowest free id for a new one
  // (a record of another mark layout keeps its ids, which mean the same port in this one: the load is whole)
  const markLayoutChanged = prevHead !== undefined && (prevHead.markLayout ?? 1) !== MARK_LAYOUT && Object.keys(prevHead.marks ?? {}).length > 0;
  const prevMarks = prevHead?.marks ?? {};
  const marks: Record<string, MarkInfo> = { ...prevMarks };
  const wantsMark: string[] = [];
  for (const [iface, d] of ports) {
    const fam = d?.record.nft.l3;
    const learn = markLearn(d?.record.nft.learn);
    if (!d || !fam?.length) delete marks[iface];
    else if (marks[iface]) marks[iface] = { id: (marks[iface] as MarkInfo).id, families: fam, ...learn };
    else wantsMark.push(iface);
  }
  const usedIds = new Set(Object.values(marks).map((m) => m.id));
  if (maxOf(usedIds, 0) > MAX_L3_PORTS) throw new NwfError(CODES.POLICY_UNSUPPORTED, `the loaded state has L3 port ids above ${MAX_L3_PORTS} (an earlier mark layout): at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`, { hint: 'unload, then load a generation with fewer interfaces with L3 rules' });
  let nextId = 1;
  for (const iface of wantsMark.sort()) {
    while (usedIds.has(nextId)) nextId++;
    if (nextId > MAX_L3_PORTS) throw new NwfError(CODES.POLICY_UNSUPPORTED, `at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`);
    usedIds.add(nextId);
    const rec = (ports.get(iface) as DesiredPort).record.nft;
    marks[iface] = { id: nextId, families: rec.l3 as L3Family[], ...markLearn(rec.learn) };
  }

  // shapes: how many ports use each
  const refs: Record<string, number> = { ...(prevHead?.shapeRefs ?? {}) };
  for (const [iface, d] of ports) {
    for (const s of prevPorts.get(iface)?.nft.shapes ?? []) refs[s] = (refs[s] ?? 1) - 1;
    for (const s of d?.record.nft.shapes ?? []) refs[s] = (refs[s] ?? 0) + 1;
  }
  const addedShapes: ShapePart[] = [];
  const removedShapes: ShapePart[] = [];
  const shapeOf = (name: string): ShapePart => {
    const s = change.shapes.get(name) ?? store.readShape(name);
    if (!s) throw new NwfError(CODES.STATE_INVALID, `shape ${name} is neither in the change nor recorded`, { hint: 'load a generation whole (nwf-fast load DIR --full)' });
    return s;
  };
  for (const [name, n] of Object.entries(refs)) {
    const was = (prevHead?.shapeRefs ?? {})[name] ?? 0;
    if (n > 0 && was === 0) addedShapes.push(shapeOf(name));
    if (n <= 0) {
      if (was > 0) {
        const s = store.readShape(name);
        if (s) removedShapes.push(s);
      }
      delete refs[name];
    }
  }

  // parts before and after (only what changes; the diff skips equal parts)
  const prevParts: Part[] = [];
  const nextParts: Part[] = [];
  if (prevHead) prevParts.push(skeletonPart(recordedSkeleton(prevHead), familiesOfMarks(prevMarks)));
  nextParts.push(skeletonPart(cfg, familiesOfMarks(marks)));
  for (const s of removedShapes) prevParts.push(shapePart(s));
  for (const s of addedShapes) nextParts.push(shapePart(s));
  const shapesInvolved = new Map<string, ShapePart>();
  for (const [iface, d] of ports) {
    const old = prevPorts.get(iface);
    if (old) {
      prevParts.push(portPart(old.nft));
      const m = prevMarks[iface];
      if (m) prevParts.push(markPart(iface, m));
      for (const s of old.nft.shapes) if (!shapesInvolved.has(s)) shapesInvolved.set(s, store.readShape(s) ?? shapeOf(s));
    }
    if (d) {
      nextParts.push(portPart(d.record.nft));
      const m = marks[iface];
      if (m) nextParts.push(markPart(iface, m));
      for (const s of d.record.nft.shapes) if (!shapesInvolved.has(s)) shapesInvolved.set(s, shapeOf(s));
    }
  }
  const index = setIndexOf([...prevParts.map((p) => p.commands), ...nextParts.map((p) => p.commands), ...[...shapesInvolved.values()].map((s) => s.commands)]);

  // which path: a diff on a kernel that holds the record, or a full replacement
  let fullReason: string | undefined = damagedRecord
    ? `the record of what is loaded is damaged (${damagedRecord})`
    : !prevHead
    ? 'nothing is recorded as loaded'
    : prevHead.pending
      ? `a change did not finish (${prevHead.pending.what}, ${prevHead.pending.since})`
      : prevHead.backend !== change.backend
        ? `the backend changes (${prevHead.backend} -> ${change.backend})`
        : opts.full
          ? '--full'
          : markLayoutChanged
            ? `the L3 mark layout changes (${prevHead.markLayout ?? 1} -> ${MARK_LAYOUT})`
            : undefined;
  const drift: string[] = [];
  let inventory: KernelInventory | undefined;
  let record: LoadedRecord | undefined;
  const readRecord = (): LoadedRecord => (record ??= store.read() as LoadedRecord);
  const tc0 = performance.now();
  // one netlink socket for the whole commit: a socket closed after a transaction that deleted
  // something waits for the kernel, so it is closed once, at the end, on a worker thread
  const sock = inProcessNetlink(opts) ? openSocket(opts) : undefined;
  const closeSock = (): void => void sock?.closeAsync().catch(() => undefined);
  let plan: ReturnType<typeof diffParts>;
  let tc1 = tc0;
  let bpf: BpfCommit;
  try {
    if (!fullReason && prevHead) {
      const gen = currentGen(opts, sock);
      if (gen === undefined || prevHead.nfgen === undefined || gen !== prevHead.nfgen) {
        const m = await kernelMatches(readRecord(), opts);
        inventory = m.inventory;
        if (!m.ok) {
          appendAll(drift, m.drift);
          fullReason = `the kernel does not hold what was loaded (${m.drift[0] ?? ''})`;
        }
      }
    }
    plan = fullReason ? undefined : diffParts(prevParts, nextParts, index);
    if (!fullReason && !plan) fullReason = 'an object changes its definition';
    tc1 = performance.now();

    // eBPF: load and verify what must be loaded, before anything changes
    const bpfChanges = new Map<string, BpfPortChange>();
    for (const [iface, d] of ports) {
      const before = prevPorts.get(iface)?.bpf;
      const want = d?.bpf ?? null;
      if (!before && !want) continue;
      bpfChanges.set(iface, { want, ...(before ? { before } : {}) });
    }
    bpf = new BpfCommit(
      {
        pinDir: pinDirOf(opts),
        ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
        prev: (prevHead?.bpf ?? {}) as BpfState,
        ...(opts.full ? { reloadAll: true } : {}),
        hook: opts.bpfHook ?? recordedHook(opts.stateDir) ?? 'auto',
      },
      bpfChanges,
      change.bpfObjects,
      (iface) => prevPorts.get(iface)?.bpf ?? store.readPort(iface)?.bpf,
      (shapeId) => (existsSync(store.bpfObject(shapeId)) ? store.bpfObject(shapeId) : undefined),
    );
    bpf.prepare();
  } catch (e) {
    closeSock();
    throw e;
  }

  // from here on the kernel changes: a process killed now leaves `pending`
  const revision = (prevHead?.revision ?? 0) + 1;
  let tag = prevHead?.tag ?? newTag();
  let path: CommitResult['path'] = 'none';
  let via: CommitResult['via'];
  /** The cleanup of a full replacement (tagged), or of a diff (untagged: sent through sendCommands). */
  let cleanup: NftCommand[] = [];
  let cleanupUntagged: NftCommand[] = [];
  let commits = 0;
  let gen0: number | undefined;
  const ta0 = performance.now();
  let nftMs = 0;
  let nftKernelMs: number | undefined;
  let nftFallback: string | undefined;
  let bpfMs = 0;
  const timed = async <T>(fn: () => T | Promise<T>, add: (ms: number) => void): Promise<T> => {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      add(performance.now() - t);
    }
  };
  try {
    if (prevHead) store.writeHead({ ...prevHead, pending: { since: new Date().toISOString(), what: change.generation ? `load of generation ${change.generation}` : `change of ${ports.size} port(s)` } });
    await timed(() => bpf.attachNew(), (ms) => (bpfMs += ms));
    await faultPoint('pause-before-apply');
    if (fullReason) {
      // every part of the next state, under a fresh tag next to what the kernel holds
      const rec = whole ? undefined : readRecord();
      const nextPorts = new Map<string, PortPart>();
      if (rec) for (const [n, p] of rec.ports) nextPorts.set(n, p.nft);
      for (const [n, d] of ports) {
        if (d) nextPorts.set(n, d.record.nft);
        else nextPorts.delete(n);
      }
      const shapes = new Map<string, ShapePart>();
      for (const p of nextPorts.values()) for (const s of p.shapes) if (!shapes.has(s)) shapes.set(s, change.shapes.get(s) ?? rec?.shapes.get(s) ?? shapeOf(s));
      const cmds: NftCommand[] = [...lowerSkeleton(cfg, familiesOfMarks(marks))];
      for (const s of shapes.values()) for (const c of s.commands) cmds.push(c);
      for (const p of nextPorts.values()) {
        for (const c of p.commands) cmds.push(c);
        const m = marks[p.iface];
        if (m) for (const c of markCommands(p.iface, m.id, m.families, m.learn ?? false)) cmds.push(c);
      }
      inventory ??= kernelInventory(await listOurs(opts, ctx.tables));
      tag = newTag(tagsIn(inventory));
      const full = planFullLoad(inventory, tagCommands(orderBatch(cmds), tag), tag);
      const sent = await applyFullTransaction(full.apply, opts, sock, async () => {
        await markTables(cmds, ctx, opts);
        gen0 = currentGen(opts, sock);
      });
      nftMs += sent.applyMs;
      via = sent.via;
      if (sent.fallback !== undefined) nftFallback = sent.fallback;
      commits++;
      cleanup = full.cleanup;
      path = 'full';
    } else if (plan && plan.apply.length) {
      await markTables(plan.apply, ctx, opts);
      gen0 = currentGen(opts, sock);
      const sent = await timed(() => sendCommands(plan.apply, tag, index, opts, sock), (ms) => (nftMs += ms));
      via = sent.via;
      nftKernelMs = sent.kernelMs;
      path = plan.deltas ? 'elements' : 'diff';
      commits++;
      cleanupUntagged = plan.cleanup;
    } else {
      gen0 = currentGen(opts, sock);
      cleanupUntagged = plan?.cleanup ?? [];
    }
  } catch (e) {
    bpf.abort();
    closeSock();
    if (prevHead) store.writeHead(prevHead);
    throw e;
  }
  if (path !== 'none' || bpf.attachedAny) ctx.touched?.(`${change.generation ? `generation ${change.generation}` : `a change of ${ports.size} port(s)`}: nftables ${path === 'none' ? 'unchanged' : 'changed'}, eBPF programs on some taps at most`);
  // a full replacement may have created the gate's set anew: every port's instance goes in again
  const b = await timed(() => bpf.finish(fullReason ? 'all' : change.verify), (ms) => (bpfMs += ms));
  const tcl = performance.now();
  let gen1: number | undefined;
  try {
    // the gate: the tap instances the programs are on now go in (after the attach), the others out
    const gate = bpf.gateChanges();
    const gateCmds = cfg.gate ? gateElementCommands(gate.add, gate.remove) : [];
    if (gateCmds.length) {
      await timed(() => sendCommands(gateCmds, tag, index, opts, sock), (ms) => (bpfMs += ms));
      commits++;
    }
    if (cleanup.length || cleanupUntagged.length) {
      try {
        if (cleanupUntagged.length) await sendCommands(cleanupUntagged, tag, index, opts, sock);
        else await nftApply(toNftJson(cleanup), opts);
        commits++;
      } catch {
        // leftovers nothing refers to: the next full load removes them (status shows them as not ours)
      }
    }
    gen1 = currentGen(opts, sock);
  } finally {
    closeSock();
  }
  const cleanupMs = performance.now() - tcl;
  const ta1 = performance.now();

  // the record: what was loaded
  for (const s of addedShapes) store.writeShape(s);
  for (const [iface, d] of ports) {
    if (!d) {
      store.removePort(iface);
      continue;
    }
    const bpfRec = bpf.recordFor(iface) ?? (d.bpf ? prevPorts.get(iface)?.bpf : undefined);
    const m = marks[iface];
    store.writePort({ ...d.record, ...(m ? { markId: m.id } : {}), ...(bpfRec ? { bpf: bpfRec } : {}) });
  }
  for (const s of removedShapes) store.removeShape(s.name);
  // a whole load also forgets shapes a killed change recorded and never put in force
  if (whole) for (const n of store.shapeNames()) if (!(n in refs)) store.removeShape(n);
  for (const shapeId of bpf.shapesRemoved) store.removeBpfObject(shapeId);
  for (const [shapeId, path_] of change.bpfObjects) if (bpf.nextState[shapeId]) store.keepBpfObject(shapeId, path_);
  const head: LoadedHead = {
    format: 'nwf-fast-loaded/1',
    backend: change.backend,
    tag,
    generation: change.generation ?? prevHead?.generation ?? null,
    revision,
    id: hashId(prevHead?.id, { generation: change.generation, ports: [...ports.keys()], revision }),
    loadedAt: new Date().toISOString(),
    skeleton: cfg,
    ...(gen0 !== undefined && gen1 !== undefined && gen1 - gen0 === commits ? { nfgen: gen1 } : {}),
    bpf: bpf.nextState,
    marks,
    markLayout: MARK_LAYOUT,
    shapeRefs: refs,
    snoop: [...snoopers].sort(),
  };
  store.writeHead(head);
  const failed: FailedInterface[] = [];
  let protectedPorts = 0;
  if (whole) {
    for (const d of ports.values()) {
      if (!d) continue;
      if (d.record.status === 'failed') failed.push(failureOfRecord(d.record));
      else protectedPorts++;
    }
  } else {
    for (const d of ports.values()) if (d?.record.status === 'failed') failed.push(failureOfRecord(d.record));
    protectedPorts = -1;
  }
  return {
    path,
    ...(via ? { via } : {}),
    ...(nftFallback !== undefined ? { viaFallback: nftFallback } : {}),
    ...(fullReason ? { fullReason } : {}),
    drift,
    missingTaps: b.missing,
    repairedTaps: b.repaired,
    bpfHooks: b.hooks,
    notes: b.notes,
    failed,
    ports: protectedPorts,
    ms: { check: tc1 - tc0, nft: nftMs, ...(nftKernelMs !== undefined ? { nftKernel: nftKernelMs } : {}), bpf: bpfMs, cleanup: cleanupMs, apply: ta1 - ta0, total: performance.now() - t0 },
    head,
  };
}

function failureOfRecord(r: DesiredPort['record']): FailedInterface {
  return { iface: r.iface, owner: r.owner, mac: r.mac, filter: r.filter, code: r.error?.code ?? 'NWF1404', message: r.error?.message ?? 'failed', ...(r.error?.file ? { file: r.error.file } : {}) };
}

// ---- load, rollback, unload --------------------------------------------------------------

export interface LoadResult {
  generation: Generation;
  previous: string | null;
  ms: { check: number; apply: number; total: number };
  /** Taps of the generation's eBPF programs that do not exist (attached by a later load). */
  missingTaps: string[];
  /** Applied as a diff (elements only, or typed changes), not as a full replacement. */
  incremental: boolean;
  /** The hook of each tap's eBPF programs, when this load attached them. */
  bpfHooks?: Record<string, HookPlan>;
  /** Things worth saying (tables left alone, a replaced stored copy, stale files removed, eBPF attachment fallbacks). */
  notes: string[];
  /** What this load repaired: an interrupted or failed change, a damaged state file. */
  repaired: string[];
  /** Stored generations removed (keep_generations). */
  pruned: string[];
  commit: CommitResult;
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

function safeLoad(state: StateDir, id: string, notes?: string[]): Generation | undefined {
  try {
    return state.load(id);
  } catch (e) {
    notes?.push(`the stored copy of the loaded generation ${id} is unusable (${(e as Error).message}): this load replaces everything`);
    return undefined;
  }
}

/** Loads a generation: checks it, applies it as a verified diff (or in full), records it. */
export async function loadGeneration(dir: string, opts: HostOptions, op: 'load' | 'rollback' = 'load'): Promise<LoadResult> {
  const state = new StateDir(opts.stateDir);
  const change = startChange(state, op);
  try {
    return await loadChecked(readGeneration(dir), state, change, opts);
  } catch (e) {
    throw change.fail(e);
  }
}

function checkNotEmptyingRecord(g: Generation, stateDir: string): void {
  const store = new LoadedStore(stateDir);
  let head: LoadedHead | undefined;
  try {
    head = store.readHead();
  } catch {
    return;
  }
  const before = head ? store.portNames() : [];
  if (!head || !before.length) return;
  const shown = before.length > 8 ? `${before.slice(0, 8).join(', ')}, ...` : before.join(', ');
  throw new NwfError(
    CODES.LOAD_REFUSED,
    `refusing to load generation ${g.manifest.id}: it protects no interface, and the loaded generation ${head.id} protects ${before.length} (${shown}); loading it would leave every one of them unprotected`,
    {
      location: { file: g.dir },
      hint: "check its sources (compile --libvirt on a host whose /run/libvirt is still empty compiles nothing); give --allow-empty to load it on purpose, or use `nwf-fast unload` to remove nwf-fast's rules",
    },
  );
}

async function loadChecked(g: Generation, state: StateDir, change: StateChange, opts: HostOptions): Promise<LoadResult> {
  const t0 = performance.now();
  const notes: string[] = [];
  const { s, repaired } = stateForChange(state, notes);
  const previous = s.current ? safeLoad(state, s.current, notes) : undefined;
  change.describe(g.manifest.id, s.current, { backend: g.manifest.backend, interfaces: interfaceChanges(previous ? readPolicy(previous.dir) : undefined, readPolicy(g.dir)) });
  if (g.manifest.l3) {
    const k = await probeKernel(opts);
    if (!k.brNetfilterIpv4) {
      throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'this generation has L3/L4 rules, which need br_netfilter: net.bridge.bridge-nf-call-iptables is not 1', {
        hint: 'modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 (libvirt needs the same)',
      });
    }
  }
  // A generation that protects no port over a record that protects some (the last load and the port changes since).
  if (!opts.allowEmpty && g.manifest.interfaces.length === 0) checkNotEmptyingRecord(g, opts.stateDir);
  // Everything that can be checked before the kernel is touched (preflight.ts; emptying: checked above against the record).
  const pre = preflightLoad(state, g, previous, { ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.pinDir ? { pinDir: opts.pinDir } : {}), allowEmpty: true });
  const families = new Set<NftFamily>(g.manifest.backend === 'bpf' ? [] : ['bridge', ...(g.manifest.l3 ? (['ip', 'ip6'] as const) : [])]);
  appendAll(notes, checkTables(pre, families, state.dir));
  // The generation is on disk (verified) before anything changes, and so is the journal.
  const stored = state.store(g, notes);
  change.journal(stored.manifest.id, s.current);
  if (pre.freshOwner) state.writeOwnerId(pre.owner);
  const hook = opts.bpfHook ?? s.bpfHook;
  // an interrupted change or a rebuilt state: the kernel is unknown, only a full load repairs it;
  // another hook than the loaded one: the programs move
  const full = opts.full || repaired.length > 0 || (opts.bpfHook !== undefined && opts.bpfHook !== s.bpfHook);
  const learning = learningPortsWithIndex(opts.stateDir);
  const c = await commit(changeSetOf(stored), { ...opts, ...(full ? { full: true } : {}), ...(hook ? { bpfHook: hook } : {}) }, {
    tables: pre.tables,
    owner: pre.owner,
    touched: (what) => change.touched(`${what} (${s.current ?? 'nothing'} was in force before)`),
  });
  // without a readable record of what was attached before: every tap with nwf-fast's programs that is not this generation's
  if (repaired.length || (s.current && !previous)) {
    const now = new Set(stored.bpf?.interfaces.map((i) => i.iface) ?? []);
    inNs(opts, () => detachEverywhere(now, opts.pinDir));
  }
  change.touched(`generation ${stored.manifest.id} (not recorded as loaded: the state directory was not updated)`);
  await faultPoint('fail-after-apply');
  const keep = opts.keepGenerations ?? DEFAULT_KEEP_GENERATIONS;
  const next: HostState = {
    current: stored.manifest.id,
    history: [...s.history, stored.manifest.id].slice(-Math.max(20, keep)),
    loadedAt: new Date().toISOString(),
    ...(hook ? { bpfHook: hook } : {}),
  };
  state.write(next);
  const pruned = state.prune(next, keep);
  const incremental = c.path === 'elements' || c.path === 'diff' || c.path === 'none';
  change.done({ incremental, ...(repaired.length ? { repaired } : {}) });
  appendAll(notes, c.notes);
  const lopts = { stateDir: opts.stateDir, pinDir: pinDirOf(opts), ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) };
  // learning ports that left (or whose tap another VM took) forget what they learned
  await forgetLearned(departedPorts(learning, opts.stateDir), lopts);
  // --backend both: what the eBPF programs learned moves the nft line of those ports to their static path
  if (stored.manifest.backend === 'both') await copyBpfLearnedToNft(lopts);
  return {
    generation: stored,
    previous: s.current,
    ms: { check: c.ms.check, apply: c.ms.apply, total: performance.now() - t0 },
    missingTaps: c.missingTaps,
    incremental,
    ...(Object.keys(c.bpfHooks).length ? { bpfHooks: c.bpfHooks } : {}),
    notes,
    repaired,
    pruned,
    commit: c,
  };
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

export type { UnloadResult };

export interface UnloadOptions extends HostOptions {
  /** From the kernel alone (force-unload.ts): no state read, every nwf-fast-marked table. */
  force?: boolean;
}

/** Removes nwf-fast's tables (and nothing else) in one transaction, its programs on the taps and its pins. */
export async function unload(opts: UnloadOptions): Promise<UnloadResult> {
  if (opts.force) {
    const r = await forceUnload(opts);
    try {
      new LoadedStore(opts.stateDir).clear();
    } catch {
      // --force works from the kernel alone: a state directory it cannot change stays as it is
    }
    return r;
  }
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
    const store = new LoadedStore(opts.stateDir);
    change.journal(null, s.current, repaired.length ? { repaired } : {});
    if (ours.length) await nftApply(toNftJson(unloadBatch(ours)), opts);
    change.touched(`no nwf-fast tables; eBPF programs of ${s.current ?? 'the previous generation'} possibly still on taps`);
    const head = store.readHead();
    // without a readable record of what was attached: every tap with nwf-fast's programs
    if (head && !repaired.length) {
      const ifaces = store.portNames().filter((n) => store.readPort(n)?.bpf);
      inNs(opts, () => detachTaps(ifaces, pinDirOf(opts)));
    } else inNs(opts, () => detachEverywhere(new Set(), opts.pinDir));
    unpinAll(pinDirOf(opts));
    store.clear();
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

/** The kernel's listing of our tables (for status). */
export async function listingNow(opts: HostOptions, tables: readonly TableProbe[]): Promise<Listing> {
  return listOurs(opts, tables);
}

/**
 * Applies an nft build over whatever nwf-fast's tables hold now, as a full
 * load does (nothing recorded): `build` gives the commands under the tag it
 * is handed. Returns the tag. (Benchmarks and tests.) In-process, over
 * netlink where the encoder covers the build (`netlink: false`: libnftables).
 */
export async function applyNft(build: (tag: string) => readonly NftCommand[], opts: NftRunOptions & { netlink?: boolean }): Promise<string> {
  const k = kernelInventory(await listOurs(opts));
  const tag = newTag(tagsIn(k));
  const plan = planFullLoad(k, build(tag), tag);
  const sock = opts.netlink !== false && inProcessNetlink(opts) ? openSocket(opts) : undefined;
  try {
    await applyFullTransaction(plan.apply, opts, sock);
  } finally {
    sock?.close();
  }
  try {
    if (plan.cleanup.length) await nftApply(toNftJson(plan.cleanup), opts);
  } catch {
    // removed by the next load
  }
  return tag;
}

// ---- status ---------------------------------------------------------------------------------

export interface PortStatus {
  iface: string;
  owner: string;
  filter: string;
  /** protected; failed: its policy failed, its traffic is dropped (unprotected, with the error). */
  status: 'protected' | 'failed';
  error?: { code: string; message: string };
  /** nft drops by reason (the port's counting-map elements and L3 counters). */
  drops: Record<string, number>;
  /** eBPF drops by reason. */
  bpfDrops?: Record<string, number>;
  /** eBPF: the tap does not exist (nothing attached: not drift). */
  tapAbsent?: boolean;
  /** eBPF: where nwf-fast's programs run on the tap, per direction (null: none). */
  bpfHooks?: Record<'out' | 'in', 'tc' | 'tcx' | 'xdp' | null>;
  /** eBPF, a port behind the nft gate: whether the gate lets its tap on (closed: its frames are dropped as unprotected). */
  gate?: 'open' | 'closed';
  /** --backend both: the rules only one layer enforces (eBPF: L2 tests nft cannot express; nft: L3/L4 rules). */
  oneLayer?: OneLayerRule[];
}

export interface LoadedStatus {
  stateDir: string;
  /** The generation last loaded whole. */
  current: string | null;
  history: string[];
  loadedAt?: string;
  backend?: Backend;
  /** Identity and revision of what is loaded (changes with every load and port change). */
  loaded?: { id: string; revision: number; tag: string; tapPatterns: readonly string[]; bridges: readonly string[] };
  interfaces: PortStatus[];
  /** Frames of ports without an entry (unknown ports matching the tap patterns), dropped. */
  unprotected: { fromVm: number; toVm: number };
  /** True when the kernel differs from what was recorded when it was loaded (nft tables, eBPF programs and maps). */
  drift: boolean;
  driftDetail?: string;
  driftDetails: string[];
  tablesPresent: { bridge: boolean; l3: boolean };
}

const isFromVm = (dir: string): boolean => dir === 'out';

/** What is loaded, per port, verified against the kernel (nft tables, eBPF programs and maps): status.ts presents it. */
export async function loadedStatus(opts: HostOptions, tables?: readonly TableProbe[]): Promise<LoadedStatus> {
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  const store = new LoadedStore(opts.stateDir);
  const record = store.read();
  const listing = await listOurs(opts, tables);
  const present = { bridge: !!listing.bridge, l3: !!(listing.ip || listing.ip6 || listing.inet) };
  const out: LoadedStatus = { stateDir: opts.stateDir, current: s.current, history: s.history, interfaces: [], unprotected: { fromVm: 0, toVm: 0 }, drift: false, driftDetails: [], tablesPresent: present };
  if (s.loadedAt) out.loadedAt = s.loadedAt;
  if (!record) {
    if (present.bridge || present.l3) {
      out.drift = true;
      out.driftDetail = 'nothing is recorded as loaded, but nwf-fast tables exist in the kernel';
      out.driftDetails = [out.driftDetail];
    }
    return out;
  }
  const head = record.head as LoadedHead;
  out.backend = head.backend;
  out.loaded = { id: head.id, revision: head.revision, tag: head.tag, tapPatterns: head.skeleton.tapPatterns, bridges: head.skeleton.bridges };
  const k = kernelInventory(listing);
  // per-port drops: the counting sets' element counters, the L3 counters
  const drops = new Map<string, Record<string, number>>();
  const addDrop = (iface: string, reason: string, n: number): void => {
    const rec = drops.get(iface) ?? {};
    rec[reason] = (rec[reason] ?? 0) + n;
    drops.set(iface, rec);
  };
  for (const set of k.sets.values()) {
    const c = parseCountName(set.id.name);
    if (!c || c.kind !== 'cnt') continue;
    for (const e of set.elements) {
      const counter = listedElementCounter(e);
      if (counter) addDrop(listedElementText(e).split(' : ')[0] as string, c.reason, counter.packets);
    }
  }
  for (const c of k.counters.values()) {
    const l3 = parseL3Counter(c.id.name);
    if (l3) addDrop(l3.iface, l3.reason, c.packets);
    const d = parseCountName(c.id.name);
    if (d?.kind === 'dropc' && d.reason === 'unprotected') out.unprotected[isFromVm(d.dir) ? 'fromVm' : 'toVm'] += c.packets;
  }
  // eBPF: programs, slots and values of every port with programs, and the gate that lets their taps on
  const bpfPorts = [...record.ports.values()].filter((p) => p.bpf).map((p) => ({ iface: p.iface, bpf: p.bpf as NonNullable<LoadedPort['bpf']>, gated: isGated(p.nft) }));
  const gateSet = head.skeleton.gate ? [...k.sets.values()].find((x) => x.id.family === 'bridge' && x.id.kind === 'set' && x.id.name === nftNames.gateSet()) : undefined;
  const checks = bpfPorts.length ? inNs(opts, () => checkBpfPorts(pinDirOf(opts), head.bpf as BpfState, bpfPorts, head.skeleton.gate ? gateInstances(gateSet?.elements ?? []) : undefined)) : [];
  const checkOf = new Map(checks.map((c) => [c.iface, c]));
  for (const p of record.ports.values()) {
    const ps: PortStatus = { iface: p.iface, owner: p.owner, filter: p.filter, status: p.status, drops: drops.get(p.iface) ?? {} };
    if (p.error) ps.error = { code: p.error.code, message: p.error.message };
    if (p.oneLayer?.length) ps.oneLayer = p.oneLayer;
    if (p.bpf) {
      const st = bpfPortStats(pinDirOf(opts), p.bpf.shapeId, p.bpf.index);
      if (st) {
        const d: Record<string, number> = {};
        for (const dir of DIRECTIONS) for (const [key, v] of Object.entries(st[dir])) if (key !== 'accepted' && v > 0n) d[key] = (d[key] ?? 0) + Number(v);
        ps.bpfDrops = d;
      }
      const ck = checkOf.get(p.iface);
      if (ck?.absent) ps.tapAbsent = true;
      if (ck?.hooks) ps.bpfHooks = ck.hooks;
      if (ck?.gate) ps.gate = ck.gate;
    }
    out.interfaces.push(ps);
  }
  out.interfaces.sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0));
  // drift: the kernel against the record
  const expected = expectedSnapshot(tagCommands(orderBatch(commandsOf(allParts(head, record.shapes.values(), record.ports.values()))), head.tag));
  const details = snapshotDiff(expected, listingSnapshot(k));
  for (const c of checks) for (const pr of c.problems) details.push(`eBPF on ${c.iface}: ${pr}`);
  if (head.pending) details.unshift(`a change did not finish (${head.pending.what}, started ${head.pending.since}): the next load replaces everything`);
  if (details.length) {
    out.drift = true;
    out.driftDetails = details;
    out.driftDetail = !present.bridge ? 'the bridge table nwf_fast is missing' : (details[0] as string);
  }
  return out;
}


