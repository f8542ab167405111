// The narrow interface between the live host (hook, reconcile, restore) and
// the loader: apply the desired ports, and say which taps nwf-fast's rules
// protect in the kernel right now. Today applyDesiredPorts compiles the whole
// desired state (bundled filters + /etc/libvirt/nwfilter, the ports as
// bindings) and loads it with loadGeneration (an element delta when only
// addresses changed, else a gapless full replacement); the per-port
// incremental engine replaces these bodies, not their callers.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileGeneration } from '../../compile.js';
import { BASE_CHAINS, BRIDGE_TABLE, nftNames } from '../../backends/nft/names.js';
import type { NftJsonDocument } from '../../backends/nft/model.js';
import { resolveInterface } from '../../resolve/resolve.js';
import { BUNDLED_FILTERS_DIR, LIBVIRT_PATHS, loadFilterDir, type LoadedSources } from '../../resolve/sources.js';
import { NwfError } from '../../util/errors.js';
import type { FilterDef } from '../../xml/ast.js';
import type { PolicyIR } from '../../ir/types.js';
import { loadGeneration, type HostOptions, type LoadResult } from '../apply.js';
import { StateDir, writeGeneration } from '../generation.js';
import { nftListTable } from '../nft.js';
import { TC_HANDLE, TC_PRIORITY } from '../bpf-apply.js';
import { tcQuery } from '../bpf/tc.js';
import { ifIndex, withNetns } from '../netns.js';
import type { ConfigBackend } from '../config.js';
import { bindingOfPort, portsFile, type DesiredPort } from './ports.js';

export interface ApplyOptions extends HostOptions {
  backend: ConfigBackend;
  /** Filter directories over the bundled library. Default: /etc/libvirt/nwfilter when it exists. */
  filterDirs?: readonly string[];
  /** Generations kept in the state directory besides the current one. Default 10. */
  keepGenerations?: number;
  /** Load even when the new generation protects nothing and the loaded one protected ports. */
  allowEmpty?: boolean;
}

export interface ApplyResult {
  load: LoadResult;
  /** Taps the new generation protects. */
  taps: string[];
  ms: { compile: number; load: number };
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

/** Compiles the desired ports and loads them (under the caller's lock). Throws without changing anything when a port does not compile. */
export async function applyDesiredPorts(ports: readonly DesiredPort[], opts: ApplyOptions): Promise<ApplyResult> {
  const t0 = performance.now();
  const failures = portFailures(ports, opts);
  if (failures.length) throw portError(failures);
  const { filters, files } = filterLibrary(opts.filterDirs);
  const pf = portsFile(opts.stateDir);
  const src: LoadedSources = { filters, bindings: ports.map((p) => bindingOfPort(p, pf)), notes: [], files: existsSync(pf) ? [...files, pf] : files };
  const tmp = mkdtempSync(join(tmpdir(), 'nwf-fast-live-'));
  try {
    await writeGeneration(tmp, compileGeneration(src, opts.backend));
    const t1 = performance.now();
    // loadGeneration refuses an emptying generation (opts.allowEmpty) and prunes (opts.keepGenerations)
    const load = await loadGeneration(tmp, opts);
    const t2 = performance.now();
    return { load, taps: load.generation.manifest.interfaces.map((i) => i.iface), ms: { compile: t1 - t0, load: t2 - t1 } };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
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

/** What the loaded generation puts in the kernel for each tap: a dispatch entry per direction with L2 rules, a mark entry with L3 rules. */
function expectations(stateDir: string): Map<string, Expected> {
  const state = new StateDir(stateDir);
  const s = state.read();
  const out = new Map<string, Expected>();
  if (!s.current) return out;
  let ir: PolicyIR;
  try {
    ir = state.load(s.current).ir;
  } catch {
    return out;
  }
  for (const p of ir.interfaces) out.set(p.iface, { out: p.l2.out.root.length > 0, in: p.l2.in.root.length > 0, l3: Object.values(p.l3).some((r) => r.length > 0) });
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
  const plain = nftNames().bridge;
  const from = mapKeys(doc, referencedMap(doc, BASE_CHAINS.bridgePre, plain.outMap));
  const to = mapKeys(doc, referencedMap(doc, BASE_CHAINS.bridgePost, plain.inMap));
  const marks = mapKeys(doc, referencedMap(doc, undefined, plain.markInMap));
  for (const t of wanted) {
    const e = expect.get(t) as Expected;
    if ((!e.out || from.has(t)) && (!e.in || to.has(t)) && (!e.l3 || marks.has(t))) out.add(t);
  }
  return out;
}
