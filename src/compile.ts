// The pipeline in one place: sources -> resolve -> lower -> a generation in
// memory (its files, as they will be stored, and its id, the hash of its
// artifacts). Writing a generation to disk, building its eBPF objects and
// loading it are the host's (host/generation.ts, host/apply.ts); the
// backends only turn the IR into an nft model, or C headers plus map values.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolvePolicy } from './resolve/resolve.js';
import type { LoadedSources } from './resolve/sources.js';
import type { PolicyIR } from './ir/types.js';
import { ruleCounts } from './ir/facts.js';
import { lowerToNft, type NftLowering } from './backends/nft/lower.js';
import { printNftText } from './backends/nft/printer.js';
import { toNftJson } from './backends/nft/serialize.js';
import { lowerToBpf, type BpfLowering } from './backends/bpf/lower.js';
import { objectFile } from './backends/bpf/names.js';
import type { Direction } from './ir/types.js';
import { CODES, NwfError } from './util/errors.js';

/** nft: the nftables ruleset; bpf: tc programs on the taps; both: programs plus the ruleset as a second line. */
export type Backend = 'nft' | 'bpf' | 'both';

export const GENERATION_FORMAT = 'nwf-fast-generation/1';
/**
 * The format of bpf.json and of the objects it names. 2: the objects carry
 * the XDP program, the ifindex array and drop-only counters (a generation of
 * format 1 must be compiled again).
 */
export const BPF_INDEX_FORMAT = 'nwf-fast-bpf/2';

/** The files of a generation directory. */
export const GENERATION_FILES = {
  nftJson: 'nft.json',
  nftText: 'ruleset.nft',
  manifest: 'manifest.json',
  policy: 'policy.json',
  bpfIndex: 'bpf.json',
  /** Directory of the eBPF objects, one per policy shape. */
  bpfDir: 'bpf',
} as const;

export interface Manifest {
  format: typeof GENERATION_FORMAT;
  /** The generation's identity: the hash of its nft JSON and its eBPF index (generationId). */
  id: string;
  createdAt: string;
  backend: Backend;
  /** Whether the generation has L3/L4 rules (ip/ip6 tables through br_netfilter). */
  l3: boolean;
  /** Hash of policy.json, the resolved policy that `load` lowers. */
  policySha256: string;
  inputs: { file: string; sha256: string }[];
  interfaces: { iface: string; mac: string; owner: string; filter: string; l2Rules: number; l3Rules: number }[];
  notes: string[];
  /** The eBPF objects' hashes (bpf, both), added when the objects are built (host/generation.ts writeGeneration). */
  objects?: { file: string; sha256: string }[];
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
  /** The nft part without a load tag (what `compile` prints; `load` lowers again under its tag). */
  nft: NftLowering;
  /** The eBPF part (bpf, both): one header per shape, map values per interface. */
  bpf?: BpfLowering;
  /** The text files, exactly as stored. */
  files: { nftJson: string; nftText: string; policy: string; bpfIndex?: string };
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A generation's identity: the hash of its nft JSON and, for bpf/both, its eBPF index. */
export function generationId(nftJson: string, bpfIndex: string | undefined): string {
  return sha256(nftJson + (bpfIndex ?? '')).slice(0, 16);
}

/**
 * The nft part of a generation for a backend, every object named under `tag`
 * (names.ts). bpf alone has no nft rules: its batch is empty (a load of it
 * removes nwf-fast's tables).
 */
export function lowerNftFor(backend: Backend, ir: PolicyIR, tag?: string): NftLowering {
  if (backend === 'bpf') return { batch: [], l3: false };
  return lowerToNft(ir, tag === undefined ? {} : { tag });
}

export function resolveSources(src: LoadedSources): PolicyIR {
  return resolvePolicy(src.filters, src.bindings, src.notes);
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
export function compileGeneration(src: LoadedSources, backend: Backend): CompiledGeneration {
  const ir = resolveSources(src);
  return generationOf(ir, backend, inputHashes(src.files));
}

/** The generation of a resolved policy (inputs: the hashes of the files it came from). */
export function generationOf(ir: PolicyIR, backend: Backend, inputs: Manifest['inputs'] = []): CompiledGeneration {
  const nft = lowerNftFor(backend, ir);
  const bpf = backend === 'nft' ? undefined : lowerToBpf(ir, backend);
  const files: CompiledGeneration['files'] = {
    nftJson: JSON.stringify(toNftJson(nft.batch)),
    nftText: printNftText(nft.batch),
    policy: JSON.stringify(ir, null, 1) + '\n',
    ...(bpf ? { bpfIndex: JSON.stringify(storedBpf(bpf), null, 1) + '\n' } : {}),
  };
  const id = generationId(files.nftJson, files.bpfIndex);
  const manifest: Manifest = {
    format: GENERATION_FORMAT,
    id,
    createdAt: new Date().toISOString(),
    backend,
    l3: nft.l3,
    policySha256: sha256(files.policy),
    inputs,
    interfaces: ir.interfaces.map((p) => ({ iface: p.iface, mac: p.mac, owner: p.owner, filter: p.filter, ...ruleCounts(p) })),
    notes: ir.notes,
  };
  return { id, manifest, ir, nft, ...(bpf ? { bpf } : {}), files };
}
