// Adding and removing ports (one domain's interfaces, when it starts or
// stops) on a host where a generation is loaded, without rebuilding the
// rest: the added ports are resolved and lowered alone (their shape is
// lowered again only to know what a port adds to it; a shape that is new is
// lowered once and added), and the change goes through the same verified
// typed diff as every load (apply.ts commit), restricted to those ports:
// their records, their shapes' records and the head are all it reads and
// writes. The kernel part is then a few set elements and, for shapes with
// per-interface rules, the port's small chains (nftables), and a few map
// updates and an attach (eBPF).
//
// A port whose policy does not resolve or lower fails closed: its traffic is
// dropped and counted as unprotected, `status` shows it with its error, and
// the result lists it; the others are protected.
import { portSeedOf, seedOf } from '../backends/nft/learn.js';
import type { LearnedEntry } from '../ir/learning.js';
import { copyBpfLearnedToNft, departedPorts, forgetLearned, learningPortsWithIndex } from './learn/kernel.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import type { Backend } from '../compile.js';
import type { FailedInterface, InterfacePolicy } from '../ir/types.js';
import { ruleCounts } from '../ir/facts.js';
import { resolveInterface } from '../resolve/resolve.js';
import type { FilterDef, InterfaceBinding } from '../xml/ast.js';
import { acceptPortPart, failedPortPart, failureOf, NftPortLowering } from '../backends/nft/lower.js';
import type { PortPart, ShapePart } from '../backends/nft/parts.js';
import { lowerBpfInterface, type BpfInterfaceLowering } from '../backends/bpf/lower.js';
import { MAP_NAMES } from '../backends/bpf/names.js';
import { portOneLayerRules } from '../backends/layers.js';
import { nftExpressesL2 } from '../backends/nft/second-line.js';
import { emitPolicyHeader } from '../backends/bpf/emit.js';
import { buildBpf, defaultCacheDir } from './bpf-build.js';
import { commit, type ChangeSet, type CommitResult, type DesiredPort, type HostOptions } from './apply.js';
import { LoadedStore } from './loaded.js';

export interface PortChanges {
  /** Ports to protect (or to protect differently: a port already loaded is replaced). */
  add?: readonly InterfaceBinding[];
  /** Taps to stop protecting. */
  remove?: readonly string[];
}

export interface PortChangeOptions extends HostOptions {
  /** The filters the added ports' filterrefs refer to (the bundled library and the host's). */
  filters: ReadonlyMap<string, FilterDef>;
  /** Backend of the added ports: the loaded one (default); nothing loaded: nft. */
  backend?: Backend;
  /** Learned state to start learning ports from (ir/learning.ts; key learnKey(owner UUID, MAC)). */
  seeds?: ReadonlyMap<string, LearnedEntry>;
  /** Where clang's objects are cached (a new eBPF shape is built). */
  cacheDir?: string;
  /** Config dhcp_kernel_lease: seconds a dhcp lease learned by the nft packet path lasts (default 3600). */
  dhcpKernelLease?: number;
}

export interface PortChangeResult {
  commit: CommitResult;
  /** Ports protected by this change. */
  added: string[];
  removed: string[];
  /** Ports whose policy failed: they fail closed (their traffic is dropped, counted as unprotected). */
  failed: FailedInterface[];
}

/** A port as the change wants it (its record and its eBPF values). */
function desired(b: InterfaceBinding, p: InterfacePolicy | undefined, nft: PortPart, error: FailedInterface | undefined, bpf: BpfInterfaceLowering | undefined, backend: Backend, nftOnly?: string): DesiredPort {
  const cfg = bpf?.maps.find((m) => m.map === MAP_NAMES.cfg)?.value;
  const oneLayer = p && !error && backend === 'both' ? portOneLayerRules(p, nftOnly) : [];
  return {
    record: {
      iface: b.iface,
      owner: b.owner,
      mac: b.mac,
      filter: b.filterref.filter,
      status: nft.status,
      ...(error ? { error: { code: error.code, message: error.message, ...(error.file ? { file: error.file } : {}) } } : {}),
      ...(p && !error ? { rules: ruleCounts(p) } : {}),
      ...(oneLayer.length ? { oneLayer } : {}),
      nft,
    },
    ...(bpf && cfg && !error ? { bpf: { shapeId: bpf.shapeId, cfg: Buffer.from(cfg).toString('hex'), ...(bpf.learnSeed !== undefined ? { learnSeed: bpf.learnSeed } : {}), ...(bpf.learnDhcp !== undefined ? { learnDhcp: bpf.learnDhcp } : {}) } } : {}),
  };
}

/** Adds and removes ports on the loaded host (see the module comment). */
export async function applyPortChanges(changes: PortChanges, opts: PortChangeOptions): Promise<PortChangeResult> {
  const store = new LoadedStore(opts.stateDir);
  const head = store.readHead();
  const backend = opts.backend ?? head?.backend ?? 'nft';
  if (head && head.backend !== backend) {
    throw new NwfError(CODES.USAGE, `the loaded backend is ${head.backend}: ports of the ${backend} backend cannot join it one by one`, {
      hint: 'compile and load a generation with the other backend (nwf-fast load DIR)',
    });
  }
  const add = changes.add ?? [];
  const seen = new Set<string>();
  for (const b of add) {
    if (seen.has(b.iface)) throw new NwfError(CODES.INTERFACE_DUPLICATE, `interface '${b.iface}' is added twice`, { location: b.loc, iface: b.iface });
    seen.add(b.iface);
  }
  // under both: the L2 tests nft cannot express are the programs'; the programs learn, the nft line waits for the copy (backends/nft/learn.ts)
  const lease = opts.dhcpKernelLease !== undefined ? { dhcpKernelLease: opts.dhcpKernelLease } : {};
  const nft = new NftPortLowering(backend === 'both' ? { secondLine: true, learner: 'copy', ...lease } : lease);
  const ports = new Map<string, DesiredPort | null>();
  const failed: FailedInterface[] = [];
  const bpfOf = new Map<string, BpfInterfaceLowering>();
  for (const b of add) {
    let p: InterfacePolicy | undefined;
    let error: FailedInterface | undefined;
    let part: PortPart;
    let bpf: BpfInterfaceLowering | undefined;
    let nftOnly: string | undefined;
    try {
      p = resolveInterface(opts.filters, b);
      const seed = seedOf(p, opts.seeds);
      if (backend !== 'nft') {
        try {
          bpf = lowerBpfInterface(p, backend, seed[0]);
        } catch (e) {
          // both: nft enforces alone a policy the programs cannot hold and nft expresses whole (as compile.ts)
          if (!(backend === 'both' && e instanceof NwfError && nftExpressesL2(p))) throw e;
          nftOnly = e.message;
        }
      }
      part = backend === 'bpf' ? acceptPortPart(p.iface, p) : nft.port(p, portSeedOf(p, opts.seeds), nftOnly !== undefined);
    } catch (e) {
      if (!(e instanceof NwfError)) throw e;
      error = failureOf(p ?? { iface: b.iface, owner: b.owner, mac: b.mac, filter: b.filterref.filter, file: b.loc.file }, e);
      failed.push(error);
      part = failedPortPart(b.iface);
      bpf = undefined;
    }
    if (bpf) bpfOf.set(b.iface, bpf);
    ports.set(b.iface, desired(b, p, part, error, bpf, backend, nftOnly));
  }
  for (const iface of changes.remove ?? []) {
    if (seen.has(iface)) throw new NwfError(CODES.USAGE, `interface '${iface}' is both added and removed`, { iface });
    ports.set(iface, null);
  }
  const shapes = new Map<string, ShapePart>();
  for (const d of ports.values()) for (const s of d?.record.nft.shapes ?? []) if (!shapes.has(s)) shapes.set(s, nft.shape(s) as ShapePart);

  // a new eBPF shape needs its object (clang, through the cache)
  const bpfObjects = new Map<string, string>();
  const newShapes = new Map<string, BpfInterfaceLowering>();
  for (const l of bpfOf.values()) if (!head?.bpf[l.shapeId] && !newShapes.has(l.shapeId)) newShapes.set(l.shapeId, l);
  let work: string | undefined;
  try {
    if (newShapes.size) {
      work = mkdtempSync(join(tmpdir(), 'nwf-fast-shape-'));
      const lowering = {
        shapes: [...newShapes.values()].map((l) => ({ shapeId: l.shapeId, header: emitPolicyHeader(l.plan.shape, l.shapeId), interfaces: [l.iface] })),
        interfaces: [...newShapes.values()],
      };
      const r = await buildBpf(lowering, { outDir: work, cacheDir: join(opts.cacheDir ?? defaultCacheDir(), 'bpf'), ...(opts.runner ? { runner: opts.runner } : {}) });
      for (const s of r.shapes) bpfObjects.set(s.shapeId, s.objectPath);
    }
    const change: ChangeSet = { backend, ports, whole: false, shapes, bpfObjects, verify: 'changed' };
    const learning = learningPortsWithIndex(opts.stateDir);
    const c = await commit(change, opts);
    // removed learning ports forget what they learned (a tap name or ifindex used again inherits nothing)
    const lopts = { stateDir: opts.stateDir, ...(opts.pinDir ? { pinDir: opts.pinDir } : {}), ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.runner ? { runner: opts.runner } : {}) };
    await forgetLearned(departedPorts(learning, opts.stateDir), lopts);
    if (backend === 'both') await copyBpfLearnedToNft(lopts);
    return {
      commit: c,
      added: add.map((b) => b.iface).filter((i) => !failed.some((f) => f.iface === i)),
      removed: [...(changes.remove ?? [])],
      failed,
    };
  } finally {
    if (work) rmSync(work, { recursive: true, force: true });
  }
}
