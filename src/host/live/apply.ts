// The narrow interface between the live host (hook, reconcile, restore) and
// the loader: apply the desired ports, and say which taps nwf-fast's rules
// protect in the kernel right now. applyDesiredPorts takes the per-port
// path (port-changes.ts: only the ports that differ from what it applied
// last are resolved, lowered and changed, as one verified typed diff) when
// what is loaded is what it applied last (live-applied.json names the
// loaded record's id); otherwise, or with `full`, it compiles the whole
// desired state (bundled filters + /etc/libvirt/nwfilter, the ports as
// bindings) and loads it with loadGeneration.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileGeneration } from '../../compile.js';
import { BASE_CHAINS, BRIDGE_TABLE, FIXED } from '../../backends/nft/names.js';
import type { NftJsonDocument } from '../../backends/nft/model.js';
import { resolveInterface } from '../../resolve/resolve.js';
import { BUNDLED_FILTERS_DIR, LIBVIRT_PATHS, loadFilterDir, type LoadedSources } from '../../resolve/sources.js';
import { CODES, NwfError } from '../../util/errors.js';
import type { FilterDef } from '../../xml/ast.js';
import type { FailedInterface } from '../../ir/types.js';
import { loadGeneration, type HostOptions, type LoadResult } from '../apply.js';
import { writeAtomic, writeGeneration } from '../generation.js';
import { LoadedStore } from '../loaded.js';
import { applyPortChanges, type PortChangeResult } from '../port-changes.js';
import { nftListTable } from '../nft.js';
import { TC_HANDLE, TC_PRIORITY } from '../bpf-apply.js';
import { tcQuery } from '../bpf/tc.js';
import { ifIndex, withNetns } from '../netns.js';
import type { ConfigBackend } from '../config.js';
import { bindingOfPort, portsFile, UNFILTERED_FILTER, type DesiredPort } from './ports.js';

export interface ApplyOptions extends HostOptions {
  backend: ConfigBackend;
  /** Filter directories over the bundled library. Default: /etc/libvirt/nwfilter when it exists. */
  filterDirs?: readonly string[];
  /** Generations kept in the state directory besides the current one. Default 10. */
  keepGenerations?: number;
  /** Load even when the new generation protects nothing and the loaded one protected ports. */
  allowEmpty?: boolean;
  /** A port whose policy does not resolve or lower fails closed (dropped, with its error) instead of failing the change (issue 10 item 4). */
  partial?: boolean;
  /** Config dhcp_kernel_lease: seconds a dhcp lease learned by the nft packet path lasts. */
  dhcpKernelLease?: number;
}

export interface ApplyResult {
  /** The whole generation loaded (the full path). */
  load?: LoadResult;
  /** The ports changed one by one (the per-port path). */
  ports?: PortChangeResult;
  /** What is loaded now: the generation id (full path) or the loaded record's id (per-port path). */
  id: string;
  /** Applied as a diff (per-port changes, or an incremental load). */
  incremental: boolean;
  /** Taps protected now. */
  taps: string[];
  /** Ports that fail closed after the change (their policy failed; with `partial`). */
  failed: FailedInterface[];
  ms: { compile: number; load: number };
}

/** What applyDesiredPorts applied last: the loaded record's id and each port's fingerprint. */
interface Applied {
  format: 'nwf-fast-live-applied/1';
  loadedId: string;
  backend: ConfigBackend;
  ports: Record<string, string>;
}

const appliedFile = (stateDir: string): string => join(stateDir, 'live-applied.json');

function readApplied(stateDir: string): Applied | undefined {
  try {
    const a = JSON.parse(readFileSync(appliedFile(stateDir), 'utf8')) as Applied;
    return a.format === 'nwf-fast-live-applied/1' && typeof a.loadedId === 'string' && a.ports && typeof a.ports === 'object' ? a : undefined;
  } catch {
    return undefined;
  }
}

/** What of a port its policy depends on (not when or where it was read). */
function fingerprint(p: DesiredPort): string {
  return createHash('sha256')
    .update(JSON.stringify([p.mac, p.owner, p.bridge ?? null, p.filterref]))
    .digest('hex')
    .slice(0, 16);
}

/** A port whose policy does not compile, with the diagnostic. */
export interface PortFailure {
  port: DesiredPort;
  error: NwfError;
}

function filterLibrary(dirs: readonly string[] | undefined): { filters: Map<string, FilterDef>; files: string[] } {
  const filters = new Map<string, FilterDef>();
  const files: string[] = [];
  loadFilterDir(BUNDLED_FILTERS_DIR, filters, files);
  for (const d of dirs ?? (existsSync(LIBVIRT_PATHS.filters) ? [LIBVIRT_PATHS.filters] : [])) loadFilterDir(d, filters, files);
  // unfiltered ports (no filterref) refer to the reserved empty filter
  filters.set(UNFILTERED_FILTER.name, UNFILTERED_FILTER);
  return { filters, files };
}

/** The ports whose policy does not resolve with the filters the host has (each on its own). */
export function portFailures(ports: readonly DesiredPort[], opts: Pick<ApplyOptions, 'filterDirs' | 'stateDir'>): PortFailure[] {
  const { filters } = filterLibrary(opts.filterDirs);
  const out: PortFailure[] = [];
  for (const p of ports) {
    try {
      resolveInterface(filters, bindingOfPort(p, portsFile(opts.stateDir)));
    } catch (e) {
      if (e instanceof NwfError) out.push({ port: p, error: e });
      else throw e;
    }
  }
  return out;
}

/** A port failure as one error naming the port and its domain (and how many more failed). */
export function portError(failures: readonly PortFailure[]): NwfError {
  const f = failures[0] as PortFailure;
  const more = failures.length > 1 ? ` (and ${failures.length - 1} more port(s))` : '';
  return new NwfError(f.error.code, `port ${f.port.tap} of domain ${f.port.owner.name}: ${f.error.message}${more}`, { ...f.error.details, iface: f.port.tap });
}

/**
 * Applies the desired ports (under the caller's lock): the ports that differ
 * from what was applied last, one by one, when the loaded record is what
 * this function applied last; else the whole desired state compiled and
 * loaded. Throws without changing anything when a changed port (the whole
 * path: any port) does not compile.
 */
export async function applyDesiredPorts(ports: readonly DesiredPort[], opts: ApplyOptions): Promise<ApplyResult> {
  const t0 = performance.now();
  const head = new LoadedStore(opts.stateDir).readHead();
  const applied = readApplied(opts.stateDir);
  if (!opts.full && head && !head.pending && applied && applied.loadedId === head.id && applied.backend === opts.backend && head.backend === opts.backend) {
    const want = new Map(ports.map((p) => [p.tap, p]));
    const add = ports.filter((p) => applied.ports[p.tap] !== fingerprint(p));
    const remove = Object.keys(applied.ports).filter((t) => !want.has(t));
    const failures = opts.partial ? [] : portFailures(add, opts);
    if (failures.length) throw portError(failures);
    // an emptying change is refused as a load of an empty generation would be
    if (!opts.allowEmpty && ports.length === 0 && remove.length > 0) {
      throw new NwfError(CODES.LOAD_REFUSED, `refusing to apply the desired state: it protects no port, and ${remove.length} port(s) are protected now`, { hint: 'pass allowEmpty (nwf-fast load --allow-empty) to remove them all' });
    }
    if (!add.length && !remove.length) {
      return { id: head.id, incremental: true, taps: ports.map((p) => p.tap), failed: [], ms: { compile: performance.now() - t0, load: 0 } };
    }
    const { filters } = filterLibrary(opts.filterDirs);
    const pf = portsFile(opts.stateDir);
    const t1 = performance.now();
    const r = await applyPortChanges({ add: add.map((p) => bindingOfPort(p, pf)), remove }, { ...opts, filters, backend: opts.backend });
    const t2 = performance.now();
    writeApplied(opts.stateDir, r.commit.head.id, opts.backend, ports);
    return { ports: r, id: r.commit.head.id, incremental: true, taps: ports.map((p) => p.tap), failed: r.commit.failed, ms: { compile: t1 - t0, load: t2 - t1 } };
  }
  const failures = opts.partial ? [] : portFailures(ports, opts);
  if (failures.length) throw portError(failures);
  const { filters, files } = filterLibrary(opts.filterDirs);
  const pf = portsFile(opts.stateDir);
  const src: LoadedSources = { filters, bindings: ports.map((p) => bindingOfPort(p, pf)), notes: [], files: existsSync(pf) ? [...files, pf] : files };
  const tmp = mkdtempSync(join(tmpdir(), 'nwf-fast-live-'));
  try {
    await writeGeneration(tmp, compileGeneration(src, opts.backend, { ...(opts.partial ? { partial: true } : {}), ...(opts.seeds ? { seeds: opts.seeds } : {}), ...(opts.dhcpKernelLease !== undefined ? { dhcpKernelLease: opts.dhcpKernelLease } : {}) }));
    const t1 = performance.now();
    // loadGeneration refuses an emptying generation (opts.allowEmpty) and prunes (opts.keepGenerations)
    const load = await loadGeneration(tmp, opts);
    const t2 = performance.now();
    writeApplied(opts.stateDir, load.commit.head.id, opts.backend, ports);
    return { load, id: load.generation.manifest.id, incremental: load.incremental, taps: load.generation.manifest.interfaces.map((i) => i.iface), failed: load.commit.failed, ms: { compile: t1 - t0, load: t2 - t1 } };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function writeApplied(stateDir: string, loadedId: string, backend: ConfigBackend, ports: readonly DesiredPort[]): void {
  const doc: Applied = { format: 'nwf-fast-live-applied/1', loadedId, backend, ports: Object.fromEntries(ports.map((p) => [p.tap, fingerprint(p)])) };
  writeAtomic(appliedFile(stateDir), JSON.stringify(doc) + '\n');
}

/** The map that a rule of `chain` (any chain when undefined) looks up by name ending in `suffix` (`iifname vmap @g1a2b3c_from_vm`). */
function referencedMap(doc: NftJsonDocument, chain: string | undefined, suffix: string): string | undefined {
  for (const o of doc.nftables) {
    const r = (o as { rule?: { chain?: string } }).rule;
    if (!r || (chain !== undefined && r.chain !== chain)) continue;
    const m = new RegExp(`"@([^"]*${suffix})"`).exec(JSON.stringify(r));
    if (m) return m[1];
  }
  return undefined;
}

function mapKeys(doc: NftJsonDocument, name: string | undefined): Set<string> {
  for (const o of doc.nftables) {
    const m = (o as { map?: { name?: string; elem?: unknown[] } }).map;
    if (name === undefined || m?.name !== name) continue;
    return new Set((m.elem ?? []).map((e) => (Array.isArray(e) ? String(e[0]) : '')));
  }
  return new Set();
}

interface Expected {
  out: boolean;
  in: boolean;
  l3: boolean;
}

/** What is loaded for each tap: every protected port has an entry in both dispatch maps (an accept where it has no rules), a mark entry with L3 rules. */
function expectations(stateDir: string): Map<string, Expected> {
  const store = new LoadedStore(stateDir);
  const out = new Map<string, Expected>();
  if (!store.readHead()) return out;
  for (const n of store.portNames()) {
    const p = store.readPort(n);
    // a port whose policy failed is dropped, not protected
    if (p && p.status !== 'failed') out.set(n, { out: true, in: true, l3: p.markId !== undefined });
  }
  return out;
}

/**
 * Which of `taps` nwf-fast's rules protect in the kernel right now, as the
 * loaded generation says they should: for nft and both, the tap's entries
 * in the bridge table's dispatch maps (from_vm looked up in `pre`, to_vm in
 * `post`, for each direction that has rules) and in its mark map when it has
 * L3 rules; for bpf, nwf-fast's tc filter on both hooks of the tap. A tap
 * the loaded generation does not protect is never in force.
 */
export async function tapsInForce(taps: readonly string[], opts: Pick<ApplyOptions, 'backend' | 'netns' | 'inProcess' | 'runner' | 'stateDir'>): Promise<Set<string>> {
  const out = new Set<string>();
  const expect = expectations(opts.stateDir);
  const wanted = taps.filter((t) => expect.has(t));
  if (!wanted.length) return out;
  if (opts.backend === 'bpf') {
    const check = (): void => {
      for (const tap of wanted) {
        let ifindex = 0;
        try {
          ifindex = ifIndex(tap);
        } catch {
          continue;
        }
        const q = (direction: 'ingress' | 'egress'): boolean => tcQuery({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY }) !== undefined;
        if (q('ingress') && q('egress')) out.add(tap);
      }
    };
    if (opts.netns) withNetns(opts.netns, check);
    else check();
    return out;
  }
  let doc: NftJsonDocument;
  try {
    doc = await nftListTable('bridge', BRIDGE_TABLE, opts);
  } catch {
    return out;
  }
  const from = mapKeys(doc, referencedMap(doc, BASE_CHAINS.bridgePre, FIXED.fromVm));
  const to = mapKeys(doc, referencedMap(doc, BASE_CHAINS.bridgePost, FIXED.toVm));
  const marks = mapKeys(doc, referencedMap(doc, undefined, FIXED.markIn));
  for (const t of wanted) {
    const e = expect.get(t) as Expected;
    if ((!e.out || from.has(t)) && (!e.in || to.has(t)) && (!e.l3 || marks.has(t))) out.add(t);
  }
  return out;
}
