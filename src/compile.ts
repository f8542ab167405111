// The pipeline in one place: sources -> resolve -> lower -> a generation in
// memory (its files, as they will be stored, and its id, the hash of its
// artifacts). Writing a generation to disk, building its eBPF objects and
// loading it are the host's (host/generation.ts, host/apply.ts); the
// backends only turn the IR into an nft model, or C headers plus map values.
//
// A generation's nft part is stored as parts (backends/nft/parts.ts): the
// shapes, each lowered once, and what every port adds. `load` puts them
// together with its host's skeleton, port ids and load tag: it never lowers
// again.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolvePolicy } from './resolve/resolve.js';
import type { LoadedSources } from './resolve/sources.js';
import type { FailedInterface, InterfacePolicy, PolicyIR } from './ir/types.js';
import { ruleCounts } from './ir/facts.js';
import { failureOf, lowerToNft, type NftLowering } from './backends/nft/lower.js';
import type { NftParts } from './backends/nft/parts.js';
import { printNftText } from './backends/nft/printer.js';
import { nftJsonText } from './backends/nft/serialize.js';
import { lowerToBpf, type BpfLowering, type SeedLease } from './backends/bpf/lower.js';
import { oneLayerReport, type OneLayerGroup } from './backends/layers.js';
import { nftExpressesL2 } from './backends/nft/second-line.js';
import { objectFile } from './backends/bpf/names.js';
import type { Direction } from './ir/types.js';
import { CODES, NwfError } from './util/errors.js';
import { appendAll } from './util/arrays.js';
import type { LearnedEntry } from './ir/learning.js';

/** nft: the nftables ruleset; bpf: tc programs on the taps; both: programs plus the ruleset as a second line. */
export type Backend = 'nft' | 'bpf' | 'both';

export const GENERATION_FORMAT = 'nwf-fast-generation/2';
/**
 * The format of bpf.json and of the objects it names. 2: the objects carry
 * the XDP program, the ifindex array and drop-only counters (a generation of
 * format 1 must be compiled again).
 */
export const BPF_INDEX_FORMAT = 'nwf-fast-bpf/2';
export const NFT_PARTS_FORMAT = 'nwf-fast-nft-parts/1';

/** The files of a generation directory. */
export const GENERATION_FILES = {
  /** The whole ruleset as one libnftables batch (default skeleton), for people and tools. */
  nftJson: 'nft.json',
  nftText: 'ruleset.nft',
  /** The nft part as `load` uses it: shapes and ports (StoredNftParts). */
  nftParts: 'nft-parts.json',
  manifest: 'manifest.json',
  policy: 'policy.json',
  bpfIndex: 'bpf.json',
  /** Directory of the eBPF objects, one per policy shape. */
  bpfDir: 'bpf',
} as const;

export interface ManifestInterface {
  iface: string;
  mac: string;
  owner: string;
  filter: string;
  l2Rules: number;
  l3Rules: number;
}

export interface Manifest {
  format: typeof GENERATION_FORMAT;
  /** The generation's identity: the hash of its nft parts and its eBPF index (generationId). */
  id: string;
  createdAt: string;
  backend: Backend;
  /** Whether the generation has L3/L4 rules (ip/ip6 tables through br_netfilter). */
  l3: boolean;
  /** Hash of policy.json, the resolved policy. */
  policySha256: string;
  inputs: { file: string; sha256: string }[];
  /** The protected interfaces. */
  interfaces: ManifestInterface[];
  /** Interfaces whose policy failed: their traffic is dropped (a partial generation). */
  failed: FailedInterface[];
  /** --backend both: the rules only one layer enforces (eBPF: L2 tests nft cannot express; nft: L3/L4 rules). */
  oneLayer?: OneLayerGroup[];
  notes: string[];
  /** The eBPF objects' hashes (bpf, both), added when the objects are built (host/generation.ts writeGeneration). */
  objects?: { file: string; sha256: string }[];
}

/** nft-parts.json. */
export interface StoredNftParts extends NftParts {
  format: typeof NFT_PARTS_FORMAT;
}

/** One interface's eBPF part as stored in bpf.json. */
export interface StoredBpfInterface {
  iface: string;
  shapeId: string;
  /** Object file, relative to the generation directory. */
  object: string;
  programs: Record<Direction, string>;
  /** The from-VM policy as an XDP program (in the same object). */
  xdpProgram: string;
  hooks: Record<Direction, 'ingress' | 'egress'>;
  maps: { map: string; key: string; value: string }[];
  /** A learning port's seed address (written before the tap is enabled). */
  learnSeed?: string;
  /** A dhcp learning port: its seeded leases (the lease entry is created with them before the tap is enabled). */
  learnDhcp?: SeedLease[];
}

/** bpf.json: every interface's shape and map values, and each shape's object. */
export interface StoredBpf {
  format: typeof BPF_INDEX_FORMAT;
  interfaces: StoredBpfInterface[];
  shapes: { shapeId: string; object: string; interfaces: string[] }[];
}

/** A generation in memory, before it is written. */
export interface CompiledGeneration {
  id: string;
  manifest: Manifest;
  ir: PolicyIR;
  /** The nft part: parts for `load`, and the whole batch for `compile` to print. */
  nft: NftLowering;
  /** The eBPF part (bpf, both): one header per shape, map values per interface. */
  bpf?: BpfLowering;
  /** The text files, exactly as stored. */
  files: { nftJson: string; nftText: string; nftParts: string; policy: string; bpfIndex?: string };
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A generation's identity: the hash of its nft parts and, for bpf/both, its eBPF index. */
export function generationId(nftParts: string, bpfIndex: string | undefined): string {
  return sha256(nftParts + (bpfIndex ?? '')).slice(0, 16);
}

/**
 * The nft part of a generation for a backend. bpf: the eBPF programs enforce
 * L2, nftables only dispatches (every port accepted, failed ports dropped)
 * and fails closed for unknown ports. both: nftables is the second line for
 * L2 (it leaves out the tests it cannot express) and enforces L3.
 */
export function lowerNftFor(backend: Backend, ir: PolicyIR, opts: { strict?: boolean; seeds?: ReadonlyMap<string, LearnedEntry>; optimize?: boolean; noProgram?: ReadonlySet<string>; dhcpKernelLease?: number } = {}): NftLowering {
  const mode = backend === 'bpf' ? 'dispatch' : backend === 'both' ? 'second-line' : 'rules';
  return lowerToNft(ir, {
    mode,
    strict: opts.strict === true,
    ...(opts.seeds ? { seeds: opts.seeds } : {}),
    ...(opts.optimize === false ? { optimize: false } : {}),
    ...(opts.noProgram?.size ? { noProgram: opts.noProgram } : {}),
    ...(opts.dhcpKernelLease !== undefined ? { dhcpKernelLease: opts.dhcpKernelLease } : {}),
  });
}

export interface ResolveSourcesOptions {
  /** An interface whose policy fails to resolve fails closed instead of failing everything (PolicyIR.failed). */
  partial?: boolean;
  /**
   * Learned state (learned.json, migration metadata, the kernel): a learning
   * port with an entry here starts locked to its addresses (ir/learning.ts).
   */
  seeds?: ReadonlyMap<string, LearnedEntry>;
}

export interface GenerationOptions extends ResolveSourcesOptions {
  /** Run the nft optimizer's passes (default true; `compile --no-opt` turns them off). */
  optimize?: boolean;
  /** Seconds a dhcp lease learned by the nft packet path lasts (config dhcp_kernel_lease; default 3600). */
  dhcpKernelLease?: number;
}

export function resolveSources(src: LoadedSources, opts: ResolveSourcesOptions = {}): PolicyIR {
  if (!opts.partial) return resolvePolicy(src.filters, src.bindings, src.notes);
  const failed: FailedInterface[] = [];
  const ir = resolvePolicy(src.filters, src.bindings, src.notes, {
    onInterfaceError: (b, e) => failed.push(failureOf({ iface: b.iface, owner: b.owner, mac: b.mac, filter: b.filterref.filter, file: b.loc.file }, e)),
  });
  return failed.length ? { ...ir, failed } : ir;
}

function storedBpf(l: BpfLowering): StoredBpf {
  const object = (shapeId: string): string => `${GENERATION_FILES.bpfDir}/${objectFile(shapeId)}`;
  return {
    format: BPF_INDEX_FORMAT,
    interfaces: l.interfaces.map((i) => ({
      iface: i.iface,
      shapeId: i.shapeId,
      object: object(i.shapeId),
      programs: { ...i.programs },
      xdpProgram: i.xdpProgram,
      hooks: { ...i.hooks },
      maps: i.maps.map((m) => ({ map: m.map, key: Buffer.from(m.key).toString('hex'), value: Buffer.from(m.value).toString('hex') })),
      ...(i.learnSeed !== undefined ? { learnSeed: i.learnSeed } : {}),
      ...(i.learnDhcp !== undefined ? { learnDhcp: i.learnDhcp } : {}),
    })),
    shapes: l.shapes.map((s) => ({ shapeId: s.shapeId, object: object(s.shapeId), interfaces: s.interfaces })),
  };
}

function inputHashes(files: readonly string[]): Manifest['inputs'] {
  return [...new Set(files)].map((file) => {
    try {
      return { file, sha256: sha256(readFileSync(file)) };
    } catch (e) {
      throw new NwfError(CODES.FILE_UNREADABLE, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { location: { file }, cause: e });
    }
  });
}

/** Resolves the sources and lowers them for a backend: the generation in memory. */
export function compileGeneration(src: LoadedSources, backend: Backend, opts: GenerationOptions = {}): CompiledGeneration {
  const ir = resolveSources(src, opts);
  return generationOf(ir, backend, inputHashes(src.files), opts);
}

/**
 * The generation of a resolved policy (inputs: the hashes of the files it
 * came from). Without `partial`, an interface a backend refuses fails the
 * whole generation; with it, that interface fails closed.
 */
export function generationOf(ir: PolicyIR, backend: Backend, inputs: Manifest['inputs'] = [], opts: GenerationOptions = {}): CompiledGeneration {
  const failed: FailedInterface[] = [...(ir.failed ?? [])];
  const onError = opts.partial ? (p: InterfacePolicy, e: NwfError) => void failed.push(failureOf(p, e)) : undefined;
  // both: a port whose policy the eBPF programs cannot hold (a capacity limit) and that nft
  // expresses whole is enforced by nft alone, without a program (reported in oneLayer)
  const nftOnly = new Map<string, string>();
  const onBpfError = (p: InterfacePolicy, e: NwfError): void => {
    if (backend === 'both' && nftExpressesL2(p)) nftOnly.set(p.iface, e.message);
    else if (onError) onError(p, e);
    else throw e;
  };
  let bpf = backend === 'nft' ? undefined : lowerToBpf(ir, backend, onBpfError, opts.seeds);
  const isFailed = (iface: string): boolean => failed.some((f) => f.iface === iface);
  // a port fails closed in every layer: what one backend refuses, the other does not protect alone
  let nftIr: PolicyIR = failed.length ? { ...ir, interfaces: ir.interfaces.filter((p) => !isFailed(p.iface)), failed: [...failed] } : ir;
  const nft = lowerNftFor(backend, nftIr, {
    strict: !opts.partial,
    ...(opts.seeds ? { seeds: opts.seeds } : {}),
    ...(opts.optimize === false ? { optimize: false } : {}),
    ...(opts.dhcpKernelLease !== undefined ? { dhcpKernelLease: opts.dhcpKernelLease } : {}),
    noProgram: new Set(nftOnly.keys()),
  });
  if (nft.failed.length) {
    appendAll(failed, nft.failed);
    if (bpf) bpf = { shapes: bpf.shapes, interfaces: bpf.interfaces.filter((i) => !isFailed(i.iface)) };
    nftIr = { ...nftIr, failed: [...failed] };
  }
  if (bpf) {
    const used = new Set(bpf.interfaces.map((i) => i.shapeId));
    bpf = { shapes: bpf.shapes.filter((s) => used.has(s.shapeId)).map((s) => ({ ...s, interfaces: s.interfaces.filter((i) => !isFailed(i)) })), interfaces: bpf.interfaces };
  }
  const parts: StoredNftParts = { format: NFT_PARTS_FORMAT, shapes: nft.parts.shapes, ports: nft.parts.ports };
  const files: CompiledGeneration['files'] = {
    nftJson: nftJsonText(nft.batch),
    nftText: printNftText(nft.batch),
    nftParts: JSON.stringify(parts) + '\n',
    policy: JSON.stringify(ir, null, 1) + '\n',
    ...(bpf ? { bpfIndex: JSON.stringify(storedBpf(bpf), null, 1) + '\n' } : {}),
  };
  const id = generationId(files.nftParts, files.bpfIndex);
  const protectedIfaces = ir.interfaces.filter((p) => !isFailed(p.iface));
  const manifest: Manifest = {
    format: GENERATION_FORMAT,
    id,
    createdAt: new Date().toISOString(),
    backend,
    l3: nft.l3,
    policySha256: sha256(files.policy),
    inputs,
    interfaces: protectedIfaces.map((p) => ({ iface: p.iface, mac: p.mac, owner: p.owner, filter: p.filter, ...ruleCounts(p) })),
    failed,
    notes: ir.notes,
  };
  if (backend === 'both') {
    const oneLayer = oneLayerReport({ ...ir, interfaces: protectedIfaces }, nftOnly);
    if (oneLayer.length) manifest.oneLayer = oneLayer;
  }
  return { id, manifest, ir: nftIr, nft, ...(bpf ? { bpf } : {}), files };
}
