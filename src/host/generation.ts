// Generations: one compiled ruleset on disk (nft JSON, nft text, manifest,
// resolved policy), and the state directory that records which generation
// is loaded and which came before it.
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import type { NftJsonDocument } from '../backends/nft/model.js';
import type { PolicyIR } from '../ir/types.js';

export const DEFAULT_STATE_DIR = '/var/lib/nwf-fast';
export const GENERATION_FILES = { nftJson: 'nft.json', nftText: 'ruleset.nft', manifest: 'manifest.json', policy: 'policy.json' } as const;

export interface Manifest {
  format: 'nwf-fast-generation/1';
  /** Content hash of the nft JSON: the generation's identity. */
  id: string;
  createdAt: string;
  /** nft: the nftables ruleset; bpf: tc programs on the taps; both: programs plus the ruleset as a second line. */
  backend: 'nft' | 'bpf' | 'both';
  /** Whether the generation has L3/L4 rules (inet table through br_netfilter). */
  l3: boolean;
  inputs: { file: string; sha256: string }[];
  interfaces: { iface: string; mac: string; owner: string; filter: string; l2Rules: number; l3Rules: number }[];
  notes: string[];
}

export interface Generation {
  dir: string;
  manifest: Manifest;
  nft: NftJsonDocument;
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes a file atomically (temp file + rename in the same directory). */
export function writeAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o644 });
  renameSync(tmp, file);
}

export function writeGeneration(dir: string, g: { nft: NftJsonDocument; text: string; manifest: Omit<Manifest, 'id'>; policy: PolicyIR }): Manifest {
  mkdirSync(dir, { recursive: true });
  const json = JSON.stringify(g.nft);
  const manifest: Manifest = { ...g.manifest, id: generationId(dir, json) };
  writeAtomic(join(dir, GENERATION_FILES.nftJson), json + '\n');
  writeAtomic(join(dir, GENERATION_FILES.nftText), g.text);
  writeAtomic(join(dir, GENERATION_FILES.policy), JSON.stringify(g.policy, null, 1) + '\n');
  // the manifest last: a directory with a manifest is complete
  writeAtomic(join(dir, GENERATION_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/** A generation's identity: the hash of its nft JSON and, if present, its eBPF index. */
function generationId(dir: string, nftJson: string): string {
  const bpf = join(dir, 'bpf.json');
  return sha256(nftJson + (existsSync(bpf) ? readFileSync(bpf, 'utf8') : '')).slice(0, 16);
}

export function readGeneration(dir: string): Generation {
  const mf = join(dir, GENERATION_FILES.manifest);
  if (!existsSync(mf)) {
    throw new NwfError(CODES.STATE_INVALID, `${dir} is not a generation (no ${GENERATION_FILES.manifest})`, {
      location: { file: dir },
      hint: 'create one with: nwf-fast compile [sources] --out DIR',
    });
  }
  let manifest: Manifest;
  let nft: NftJsonDocument;
  try {
    manifest = JSON.parse(readFileSync(mf, 'utf8')) as Manifest;
    nft = JSON.parse(readFileSync(join(dir, GENERATION_FILES.nftJson), 'utf8')) as NftJsonDocument;
  } catch (e) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} is unreadable: ${(e as Error).message}`, { location: { file: dir }, cause: e });
  }
  if (manifest.format !== 'nwf-fast-generation/1' || !Array.isArray(nft.nftables)) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} has an unknown format`, { location: { file: dir } });
  }
  if (generationId(dir, JSON.stringify(nft)) !== manifest.id) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} does not match its manifest (edited or truncated?)`, { location: { file: dir } });
  }
  return { dir, manifest, nft };
}

// ---- the state directory ---------------------------------------------------------

export interface HostState {
  /** The loaded generation, or null when nothing is loaded. */
  current: string | null;
  /** Generation ids in the order they were loaded (the last is current unless unloaded). */
  history: string[];
  loadedAt?: string;
  /** The load tag of the live nft objects (teardown.ts), so an incremental load needs no listing. */
  tag?: string;
}

export class StateDir {
  constructor(readonly dir: string) {}

  private get stateFile(): string {
    return join(this.dir, 'state.json');
  }
  generationDir(id: string): string {
    return join(this.dir, 'generations', id);
  }

  read(): HostState {
    if (!existsSync(this.stateFile)) return { current: null, history: [] };
    try {
      const s = JSON.parse(readFileSync(this.stateFile, 'utf8')) as HostState;
      return { current: s.current ?? null, history: Array.isArray(s.history) ? s.history : [], ...(s.loadedAt ? { loadedAt: s.loadedAt } : {}), ...(s.tag ? { tag: s.tag } : {}) };
    } catch (e) {
      throw new NwfError(CODES.STATE_INVALID, `state file ${this.stateFile} is unreadable: ${(e as Error).message}`, { location: { file: this.stateFile }, cause: e });
    }
  }

  write(s: HostState): void {
    mkdirSync(this.dir, { recursive: true });
    writeAtomic(this.stateFile, JSON.stringify(s, null, 2) + '\n');
  }

  /** Copies a generation into the state directory (kept for rollback) and returns the stored copy. */
  store(g: Generation): Generation {
    const target = this.generationDir(g.manifest.id);
    if (!existsSync(join(target, GENERATION_FILES.manifest))) {
      mkdirSync(target, { recursive: true });
      for (const f of readdirSync(g.dir)) {
        if (f === GENERATION_FILES.manifest || f === 'kernel.json') continue;
        cpSync(join(g.dir, f), join(target, basename(f)), { recursive: true });
      }
      copyFileSync(join(g.dir, GENERATION_FILES.manifest), join(target, GENERATION_FILES.manifest));
    }
    return readGeneration(target);
  }

  load(id: string): Generation {
    return readGeneration(this.generationDir(id));
  }

  /** The kernel listing recorded right after a generation was applied (for drift). */
  writeKernelSnapshot(id: string, doc: unknown): void {
    writeAtomic(join(this.generationDir(id), 'kernel.json'), JSON.stringify(doc) + '\n');
  }
  readKernelSnapshot(id: string): unknown | undefined {
    const f = join(this.generationDir(id), 'kernel.json');
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as unknown) : undefined;
  }
}
