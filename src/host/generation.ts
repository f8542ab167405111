// Generations on disk: a compiled generation's files (nft JSON, nft text,
// manifest, resolved policy, and for bpf/both the eBPF objects and their
// index), and the state directory that records which generation is loaded
// and which came before it.
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import type { PolicyIR } from '../ir/types.js';
import { objectFile } from '../backends/bpf/names.js';
import { BPF_INDEX_FORMAT, GENERATION_FILES, GENERATION_FORMAT, generationId, sha256, type CompiledGeneration, type Manifest, type StoredBpf } from '../compile.js';
import { buildBpf, defaultCacheDir } from './bpf-build.js';
import type { CommandRunner } from './runner.js';

export { GENERATION_FILES, sha256, type Manifest, type StoredBpf };
export type { StoredBpfInterface } from '../compile.js';

export const DEFAULT_STATE_DIR = '/var/lib/nwf-fast';

/** A generation read back from disk. */
export interface Generation {
  dir: string;
  manifest: Manifest;
  /** The resolved policy, which `load` lowers under its load tag. */
  ir: PolicyIR;
  /** The eBPF index (bpf, both). */
  bpf?: StoredBpf;
}

/** Writes a file atomically (temp file + rename in the same directory). */
export function writeAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o644 });
  renameSync(tmp, file);
}

export interface WriteOptions {
  /** The eBPF object cache (default NWF_FAST_CACHE or /var/cache/nwf-fast). */
  cacheDir?: string;
  /** Runs clang (tests record it). */
  runner?: CommandRunner;
}

/** Writes a compiled generation to `dir`, building its eBPF objects first; the manifest last (a directory with a manifest is complete). */
export async function writeGeneration(dir: string, g: CompiledGeneration, opts: WriteOptions = {}): Promise<Manifest> {
  mkdirSync(dir, { recursive: true });
  if (g.bpf) {
    const build = join(dir, '.bpf-build');
    try {
      const r = await buildBpf(g.bpf, { outDir: build, cacheDir: join(opts.cacheDir ?? defaultCacheDir(), 'bpf'), ...(opts.runner ? { runner: opts.runner } : {}) });
      mkdirSync(join(dir, GENERATION_FILES.bpfDir), { recursive: true });
      for (const s of r.shapes) copyFileSync(s.objectPath, join(dir, GENERATION_FILES.bpfDir, objectFile(s.shapeId)));
    } finally {
      rmSync(build, { recursive: true, force: true });
    }
  }
  writeAtomic(join(dir, GENERATION_FILES.nftJson), g.files.nftJson + '\n');
  writeAtomic(join(dir, GENERATION_FILES.nftText), g.files.nftText);
  writeAtomic(join(dir, GENERATION_FILES.policy), g.files.policy);
  if (g.files.bpfIndex !== undefined) writeAtomic(join(dir, GENERATION_FILES.bpfIndex), g.files.bpfIndex);
  writeAtomic(join(dir, GENERATION_FILES.manifest), JSON.stringify(g.manifest, null, 2) + '\n');
  return g.manifest;
}

function unreadable(dir: string, what: string, e: unknown): NwfError {
  return new NwfError(CODES.STATE_INVALID, `${what} of generation ${dir} is unreadable: ${(e as Error).message}`, { location: { file: dir }, cause: e });
}

/** Reads a generation and checks it against its manifest (id and policy hash). */
export function readGeneration(dir: string): Generation {
  const mf = join(dir, GENERATION_FILES.manifest);
  if (!existsSync(mf)) {
    throw new NwfError(CODES.STATE_INVALID, `${dir} is not a generation (no ${GENERATION_FILES.manifest})`, {
      location: { file: dir },
      hint: 'create one with: nwf-fast compile [sources] --out DIR',
    });
  }
  let manifest: Manifest;
  let nftJson: string;
  let policy: string;
  try {
    manifest = JSON.parse(readFileSync(mf, 'utf8')) as Manifest;
    nftJson = readFileSync(join(dir, GENERATION_FILES.nftJson), 'utf8').replace(/\n$/, '');
    policy = readFileSync(join(dir, GENERATION_FILES.policy), 'utf8');
  } catch (e) {
    throw unreadable(dir, 'a file', e);
  }
  if (manifest.format !== GENERATION_FORMAT || !['nft', 'bpf', 'both'].includes(manifest.backend)) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} has an unknown format`, { location: { file: dir } });
  }
  let bpfIndex: string | undefined;
  if (manifest.backend !== 'nft') {
    try {
      bpfIndex = readFileSync(join(dir, GENERATION_FILES.bpfIndex), 'utf8');
    } catch (e) {
      throw unreadable(dir, 'the eBPF part', e);
    }
  }
  // (generations written before policySha256 existed carry none)
  if (generationId(nftJson, bpfIndex) !== manifest.id || (manifest.policySha256 !== undefined && sha256(policy) !== manifest.policySha256)) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} does not match its manifest (edited or truncated?)`, { location: { file: dir } });
  }
  let ir: PolicyIR;
  let bpf: StoredBpf | undefined;
  try {
    ir = JSON.parse(policy) as PolicyIR;
    if (bpfIndex !== undefined) bpf = JSON.parse(bpfIndex) as StoredBpf;
  } catch (e) {
    throw unreadable(dir, 'the policy or eBPF index', e);
  }
  if (bpf && bpf.format !== BPF_INDEX_FORMAT) {
    throw new NwfError(CODES.STATE_INVALID, `the eBPF part of generation ${dir} has format ${String(bpf.format)}, this nwf-fast loads ${BPF_INDEX_FORMAT}`, {
      location: { file: join(dir, GENERATION_FILES.bpfIndex) },
      expected: BPF_INDEX_FORMAT,
      hint: 'compile the generation again with this nwf-fast (nwf-fast compile --out DIR), then load it',
    });
  }
  return { dir, manifest, ir, ...(bpf ? { bpf } : {}) };
}

// ---- the state directory ---------------------------------------------------------

export interface HostState {
  /** The loaded generation, or null when nothing is loaded. */
  current: string | null;
  /** Generation ids in the order they were loaded (the last is current unless unloaded). */
  history: string[];
  loadedAt?: string;
  /** The load tag of the live nft objects (load-plan.ts), so an incremental load needs no listing. */
  tag?: string;
  /** The eBPF hook asked for by the last load that named one (--bpf-hook); later loads keep it. */
  bpfHook?: 'auto' | 'tc' | 'tcx' | 'xdp';
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
      return {
        current: s.current ?? null,
        history: Array.isArray(s.history) ? s.history : [],
        ...(s.loadedAt ? { loadedAt: s.loadedAt } : {}),
        ...(s.tag ? { tag: s.tag } : {}),
        ...(s.bpfHook && ['auto', 'tc', 'tcx', 'xdp'].includes(s.bpfHook) ? { bpfHook: s.bpfHook } : {}),
      };
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
