// Generations on disk: a compiled generation's files (nft JSON, nft text,
// manifest, resolved policy, and for bpf/both the eBPF objects and their
// index), and the state directory that records which generation is loaded
// and which came before it.
//
// The state directory (default /var/lib/nwf-fast):
//   state.json          the loaded generation, the history, the live load tag
//   owner               this state directory's owner id: the mark in the comment of its nft tables
//   journal.json        present only while a change is applied, or after one failed or was killed (journal.ts)
//   audit.log           one JSON line per load, rollback, unload and takeover (audit.ts)
//   generations/<id>/   stored copies of loaded generations, with kernel.json, the listing recorded at load
// Every file is written atomically (temp file in the same directory, fsync,
// rename); a temp file of a process that died is removed by the next command
// that changes the state (cleanStale).
import { closeSync, copyFileSync, cpSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, statSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import type { PolicyIR } from '../ir/types.js';
import { objectFile } from '../backends/bpf/names.js';
import {
  BPF_INDEX_FORMAT,
  GENERATION_FILES,
  GENERATION_FORMAT,
  generationId,
  NFT_PARTS_FORMAT,
  sha256,
  type CompiledGeneration,
  type Manifest,
  type StoredBpf,
  type StoredNftParts,
} from '../compile.js';
import { buildBpf, defaultCacheDir } from './bpf-build.js';
import type { CommandRunner } from './runner.js';

export { GENERATION_FILES, sha256, type Manifest, type StoredBpf };
export type { StoredBpfInterface } from '../compile.js';

export const DEFAULT_STATE_DIR = '/var/lib/nwf-fast';
/** How many generations the state directory keeps by default (config `keep_generations`). */
export const DEFAULT_KEEP_GENERATIONS = 10;

/** A generation read back from disk. */
export interface Generation {
  dir: string;
  manifest: Manifest;
  /** The nft part as `load` puts it together: shapes and ports, lowered once at compile time. */
  parts: StoredNftParts;
  /** The eBPF index (bpf, both). */
  bpf?: StoredBpf;
}

const TMP_SUFFIX = /\.tmp-(\d+)$/;

/** What an errno means for the state directory, in words. */
function fsProblem(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'EROFS':
      return 'the file system is read-only';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'EDQUOT':
      return 'the disk quota is exhausted';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return code ?? (e as Error).message;
  }
}

function unwritable(what: string, e: unknown): NwfError {
  return new NwfError(CODES.STATE_UNWRITABLE, `cannot write ${what}: ${fsProblem(e)}`, {
    location: { file: what },
    hint: 'free space or make the state directory writable (--state-dir, NWF_FAST_STATE_DIR); nothing was changed in the kernel by this step',
    cause: e,
  });
}

/** Writes a file atomically (temp file + fsync + rename in the same directory); the temp file never outlives a failure. */
export function writeAtomic(file: string, data: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    removeQuietly(tmp);
    throw unwritable(file, e);
  }
}

/** Removes a file or tree; a failure (it could not have been created either) is ignored. */
function removeQuietly(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // nothing to remove
  }
}

export interface WriteOptions {
  /** The eBPF object cache (default NWF_FAST_CACHE or /var/cache/nwf-fast). */
  cacheDir?: string;
  /** Runs clang (tests record it). */
  runner?: CommandRunner;
}

/**
 * Writes a compiled generation to `dir`, building its eBPF objects first; the
 * manifest last (a directory with a manifest is complete). The manifest then
 * also holds the objects' hashes.
 */
export async function writeGeneration(dir: string, g: CompiledGeneration, opts: WriteOptions = {}): Promise<Manifest> {
  mkdirSync(dir, { recursive: true });
  let manifest = g.manifest;
  if (g.bpf) {
    const build = join(dir, '.bpf-build');
    try {
      const r = await buildBpf(g.bpf, { outDir: build, cacheDir: join(opts.cacheDir ?? defaultCacheDir(), 'bpf'), ...(opts.runner ? { runner: opts.runner } : {}) });
      mkdirSync(join(dir, GENERATION_FILES.bpfDir), { recursive: true });
      const objects: { file: string; sha256: string }[] = [];
      for (const s of r.shapes) {
        const file = `${GENERATION_FILES.bpfDir}/${objectFile(s.shapeId)}`;
        copyFileSync(s.objectPath, join(dir, file));
        objects.push({ file, sha256: sha256(readFileSync(join(dir, file))) });
      }
      manifest = { ...manifest, objects };
    } finally {
      rmSync(build, { recursive: true, force: true });
    }
  }
  writeAtomic(join(dir, GENERATION_FILES.nftJson), g.files.nftJson + '\n');
  writeAtomic(join(dir, GENERATION_FILES.nftText), g.files.nftText);
  writeAtomic(join(dir, GENERATION_FILES.nftParts), g.files.nftParts);
  writeAtomic(join(dir, GENERATION_FILES.policy), g.files.policy);
  if (g.files.bpfIndex !== undefined) writeAtomic(join(dir, GENERATION_FILES.bpfIndex), g.files.bpfIndex);
  writeAtomic(join(dir, GENERATION_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

function damaged(dir: string, what: string): NwfError {
  return new NwfError(CODES.STATE_INVALID, `generation ${dir} is damaged: ${what}`, {
    location: { file: dir },
    hint: 'compile it again (nwf-fast compile ... --out DIR) and load that',
  });
}

function unreadable(dir: string, what: string, e: unknown): NwfError {
  return damaged(dir, `${what} is unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
}

/**
 * Reads a generation and checks it against its manifest: the id (hash of
 * nft.json and bpf.json), the policy's hash and every eBPF object's hash. A
 * missing, truncated or edited file is refused (STATE_INVALID) naming it.
 */
export function readGeneration(dir: string): Generation {
  const mf = join(dir, GENERATION_FILES.manifest);
  if (!existsSync(mf)) {
    throw new NwfError(CODES.STATE_INVALID, `${dir} is not a generation (no ${GENERATION_FILES.manifest})`, {
      location: { file: dir },
      hint: 'create one with: nwf-fast compile [sources] --out DIR',
    });
  }
  let manifest: Manifest;
  let partsText: string;
  let policy: string;
  try {
    manifest = JSON.parse(readFileSync(mf, 'utf8')) as Manifest;
  } catch (e) {
    throw unreadable(dir, GENERATION_FILES.manifest, e);
  }
  if (!manifest || manifest.format !== GENERATION_FORMAT || !['nft', 'bpf', 'both'].includes(manifest.backend)) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} has an unknown format (${String(manifest?.format)})`, {
      location: { file: dir },
      expected: GENERATION_FORMAT,
      hint: 'compile the generation again with this version of nwf-fast',
    });
  }
  const read = (file: string): string => {
    try {
      return readFileSync(join(dir, file), 'utf8');
    } catch (e) {
      throw unreadable(dir, file, e);
    }
  };
  partsText = read(GENERATION_FILES.nftParts);
  policy = read(GENERATION_FILES.policy);
  const bpfIndex = manifest.backend !== 'nft' ? read(GENERATION_FILES.bpfIndex) : undefined;
  if (generationId(partsText, bpfIndex) !== manifest.id || sha256(policy) !== manifest.policySha256) {
    throw new NwfError(CODES.STATE_INVALID, `generation ${dir} does not match its manifest (edited or truncated?)`, { location: { file: dir } });
  }
  let parts: StoredNftParts;
  let bpf: StoredBpf | undefined;
  try {
    parts = JSON.parse(partsText) as StoredNftParts;
    if (parts.format !== NFT_PARTS_FORMAT) throw new Error(`unknown format ${String(parts.format)}`);
    if (bpfIndex !== undefined) bpf = JSON.parse(bpfIndex) as StoredBpf;
  } catch (e) {
    throw unreadable(dir, 'the nft parts or eBPF index', e);
  }
  if (bpf && bpf.format !== BPF_INDEX_FORMAT) {
    throw new NwfError(CODES.STATE_INVALID, `the eBPF part of generation ${dir} has format ${String(bpf.format)}, this nwf-fast loads ${BPF_INDEX_FORMAT}`, {
      location: { file: join(dir, GENERATION_FILES.bpfIndex) },
      expected: BPF_INDEX_FORMAT,
      hint: 'compile the generation again with this nwf-fast (nwf-fast compile --out DIR), then load it',
    });
  }
  if (bpf) {
    const hashes = new Map((manifest.objects ?? []).map((o) => [o.file, o.sha256]));
    for (const sh of bpf.shapes) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(join(dir, sh.object));
      } catch (e) {
        throw unreadable(dir, `eBPF object ${sh.object}`, e);
      }
      const want = hashes.get(sh.object);
      // (generations written before object hashes existed: an empty object is still refused)
      if (want !== undefined ? sha256(bytes) !== want : bytes.length === 0) throw damaged(dir, `eBPF object ${sh.object} does not match its manifest (edited or truncated?)`);
    }
  }
  return { dir, manifest, parts, ...(bpf ? { bpf } : {}) };
}

/** The resolved policy of a generation (policy.json; its hash is checked by readGeneration). */
export function readPolicy(dir: string): PolicyIR {
  try {
    return JSON.parse(readFileSync(join(dir, GENERATION_FILES.policy), 'utf8')) as PolicyIR;
  } catch (e) {
    throw unreadable(dir, 'the policy', e);
  }
}

/** Bytes of the files of a directory tree (a generation's size on disk). */
function treeBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? treeBytes(p) : statSync(p).size;
  }
  return n;
}

/** Whether process `pid` runs (a process we may not signal runs too). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---- the state directory ---------------------------------------------------------

export interface HostState {
  /** The generation last loaded whole (load, rollback), or null when nothing is loaded. */
  current: string | null;
  /** Generation ids in the order they were loaded (the last is current unless unloaded). */
  history: string[];
  loadedAt?: string;
  /** The load tag of the live nft objects (load-plan.ts), so an incremental load needs no listing. */
  tag?: string;
  /** The eBPF hook asked for by the last load that named one (--bpf-hook); later loads keep it. */
  bpfHook?: 'auto' | 'tc' | 'tcx' | 'xdp';
}

/** The state as a command that repairs it reads it: a damaged state.json is rebuilt from the audit log. */
export interface RepairRead {
  state: HostState;
  /** What was wrong with state.json, when it was damaged. */
  damaged?: string;
}

/** The kernel listing recorded when a generation was loaded, as status finds it. */
export type SnapshotRead = { kind: 'ok'; doc: unknown } | { kind: 'missing'; file: string } | { kind: 'damaged'; file: string; error: string };

/** The generation `rollback` re-applies: the last one in the history before the current one. */
export function rollbackTarget(s: HostState): string | undefined {
  return [...s.history].reverse().find((id, i, arr) => i > 0 && id !== (s.current ?? arr[0]));
}

const ID = /^[0-9a-f]{16}$/;

export class StateDir {
  constructor(readonly dir: string) {}

  get stateFile(): string {
    return join(this.dir, 'state.json');
  }
  get ownerFile(): string {
    return join(this.dir, 'owner');
  }
  generationDir(id: string): string {
    return join(this.dir, 'generations', id);
  }

  private parse(text: string): HostState {
    const s = JSON.parse(text) as Partial<HostState> | null;
    if (!s || typeof s !== 'object' || !Array.isArray(s.history) || !(s.current === null || typeof s.current === 'string')) throw new Error('not a state record');
    return {
      current: s.current ?? null,
      history: s.history.filter((x) => typeof x === 'string'),
      ...(s.loadedAt ? { loadedAt: s.loadedAt } : {}),
      ...(s.tag ? { tag: s.tag } : {}),
      ...(s.bpfHook && ['auto', 'tc', 'tcx', 'xdp'].includes(s.bpfHook) ? { bpfHook: s.bpfHook } : {}),
    };
  }

  /** The recorded state. A damaged state.json is refused with what is wrong and how to recover. */
  read(): HostState {
    const r = this.readRaw();
    if (r.damaged === undefined) return r.state;
    throw new NwfError(CODES.STATE_INVALID, `state file ${this.stateFile} is damaged (${r.damaged})`, {
      location: { file: this.stateFile },
      hint:
        'the kernel is not affected. `nwf-fast load DIR` (or `nwf-fast rollback`) rebuilds it from the audit log and the stored generations; ' +
        '`nwf-fast unload --force` removes nwf-fast from the kernel without it',
    });
  }

  private readRaw(): { state: HostState; damaged?: string } {
    let text: string;
    try {
      text = readFileSync(this.stateFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: { current: null, history: [] } };
      throw new NwfError(CODES.STATE_INVALID, `state file ${this.stateFile} is unreadable: ${fsProblem(e)}`, { location: { file: this.stateFile }, cause: e });
    }
    try {
      return { state: this.parse(text) };
    } catch (e) {
      return { state: { current: null, history: [] }, damaged: text.length === 0 ? 'empty' : (e as Error).message };
    }
  }

  /**
   * The state for a command that rewrites it (load, rollback, unload): a
   * damaged state.json is rebuilt from the audit log (the generations loaded,
   * in order, that are still stored) and kept as state.json.damaged.
   */
  readForRepair(rebuild: () => HostState): RepairRead {
    const r = this.readRaw();
    if (r.damaged === undefined) return { state: r.state };
    try {
      copyFileSync(this.stateFile, `${this.stateFile}.damaged`);
    } catch {
      // best effort: the copy is for forensics only
    }
    const rebuilt = rebuild();
    const stored = rebuilt.history.filter((id) => existsSync(join(this.generationDir(id), GENERATION_FILES.manifest)));
    const current = rebuilt.current !== null && stored.includes(rebuilt.current) ? rebuilt.current : null;
    return { state: { current, history: stored }, damaged: r.damaged };
  }

  write(s: HostState): void {
    try {
      mkdirSync(this.dir, { recursive: true });
    } catch (e) {
      throw unwritable(this.dir, e);
    }
    writeAtomic(this.stateFile, JSON.stringify(s, null, 2) + '\n');
  }

  /** This state directory's owner id (the mark of its nft tables), or undefined before the first load. */
  ownerId(): string | undefined {
    let text: string;
    try {
      text = readFileSync(this.ownerFile, 'utf8').trim();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new NwfError(CODES.STATE_INVALID, `owner file ${this.ownerFile} is unreadable: ${fsProblem(e)}`, { location: { file: this.ownerFile } });
    }
    if (!ID.test(text)) {
      throw new NwfError(CODES.STATE_INVALID, `owner file ${this.ownerFile} is damaged (expected 16 hex digits)`, {
        location: { file: this.ownerFile },
        hint: `it must hold the id in the comment of this host's nwf_fast tables ('nft list table bridge nwf_fast' shows 'comment "nwf-fast owner=ID"'): printf 'ID\\n' > ${this.ownerFile}`,
      });
    }
    return text;
  }

  /** Records the owner id (16 hex digits) of a state directory that has none yet. */
  writeOwnerId(id: string): void {
    if (!ID.test(id)) throw new NwfError(CODES.STATE_INVALID, `invalid owner id '${id}' (expected 16 hex digits)`);
    mkdirSync(this.dir, { recursive: true });
    writeAtomic(this.ownerFile, id + '\n');
  }

  /**
   * Copies a generation into the state directory (kept for rollback) and
   * returns the stored copy, verified. A stored copy that does not match its
   * hashes is replaced from `g` (and the replacement is reported in `notes`).
   * The copy is built next to its place and renamed into it.
   */
  store(g: Generation, notes?: string[]): Generation {
    const target = this.generationDir(g.manifest.id);
    if (g.dir === target) return g;
    if (existsSync(target)) {
      try {
        return readGeneration(target);
      } catch (e) {
        notes?.push(`the stored copy of generation ${g.manifest.id} was damaged (${(e as Error).message}); replaced from ${g.dir}`);
      }
    }
    const tmp = join(this.dir, 'generations', `.tmp-${g.manifest.id}.tmp-${process.pid}`);
    try {
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      for (const f of readdirSync(g.dir)) {
        if (f === GENERATION_FILES.manifest || f === 'kernel.json' || TMP_SUFFIX.test(f)) continue;
        cpSync(join(g.dir, f), join(tmp, basename(f)), { recursive: true });
      }
      copyFileSync(join(g.dir, GENERATION_FILES.manifest), join(tmp, GENERATION_FILES.manifest));
      rmSync(target, { recursive: true, force: true });
      renameSync(tmp, target);
    } catch (e) {
      removeQuietly(tmp);
      throw e instanceof NwfError ? e : unwritable(target, e);
    }
    return { ...g, dir: target };
  }

  /** A stored generation, verified by hash. */
  load(id: string): Generation {
    return readGeneration(this.generationDir(id));
  }

  /** The kernel listing recorded right after a generation was applied (for drift). */
  writeKernelSnapshot(id: string, doc: unknown): void {
    writeAtomic(join(this.generationDir(id), 'kernel.json'), JSON.stringify(doc) + '\n');
  }

  kernelSnapshot(id: string): SnapshotRead {
    const file = join(this.generationDir(id), 'kernel.json');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing', file };
      return { kind: 'damaged', file, error: fsProblem(e) };
    }
    try {
      return { kind: 'ok', doc: JSON.parse(text) as unknown };
    } catch (e) {
      return { kind: 'damaged', file, error: text.length === 0 ? 'empty' : (e as Error).message };
    }
  }

  /**
   * Deletes stored generations beyond the last `keep` distinct ones of the
   * history, never one in `protect` (the current one, the rollback target).
   * Returns the ids removed.
   */
  prune(s: HostState, keep: number, protect: readonly (string | null | undefined)[] = []): string[] {
    const keepIds = new Set<string>();
    for (let i = s.history.length - 1; i >= 0 && keepIds.size < keep; i--) keepIds.add(s.history[i] as string);
    for (const id of [s.current, rollbackTarget(s), ...protect]) if (id) keepIds.add(id);
    let ids: string[];
    try {
      ids = readdirSync(join(this.dir, 'generations'));
    } catch {
      return [];
    }
    const gone = ids.filter((id) => ID.test(id) && !keepIds.has(id));
    for (const id of gone) rmSync(this.generationDir(id), { recursive: true, force: true });
    return gone;
  }

  /** Removes temp files and directories (`*.tmp-PID`) left by processes that died; returns what it removed. */
  cleanStale(): string[] {
    const out: string[] = [];
    for (const d of [this.dir, join(this.dir, 'generations'), ...this.storedIds().map((id) => this.generationDir(id))]) {
      let names: string[];
      try {
        names = readdirSync(d);
      } catch {
        continue;
      }
      for (const n of names) {
        const m = TMP_SUFFIX.exec(n);
        if (!m || pidAlive(Number(m[1]))) continue;
        rmSync(join(d, n), { recursive: true, force: true });
        out.push(join(d, n));
      }
    }
    return out;
  }

  /** Ids of the stored generations. */
  storedIds(): string[] {
    try {
      return readdirSync(join(this.dir, 'generations')).filter((id) => ID.test(id));
    } catch {
      return [];
    }
  }

  /**
   * Checks, before anything changes, that the state directory can take what
   * a change writes: it exists (or can be created), is writable, and has
   * `bytes` free plus a margin. Throws STATE_UNWRITABLE.
   */
  checkWritable(bytes: number): void {
    try {
      mkdirSync(join(this.dir, 'generations'), { recursive: true });
    } catch (e) {
      throw unwritable(this.dir, e);
    }
    const probe = join(this.dir, `.probe.tmp-${process.pid}`);
    try {
      const fd = openSync(probe, 'w', 0o600);
      closeSync(fd);
    } catch (e) {
      throw unwritable(this.dir, e);
    } finally {
      removeQuietly(probe);
    }
    const need = bytes + 256 * 1024;
    let free: number;
    try {
      const st = statfsSync(this.dir);
      free = Number(st.bavail) * Number(st.bsize);
    } catch {
      return;
    }
    if (free < need) {
      throw new NwfError(CODES.STATE_UNWRITABLE, `the state directory ${this.dir} has ${kib(free)} free, and this change writes about ${kib(need)}`, {
        location: { file: this.dir },
        hint: 'free space on its file system (old generations are pruned after a successful load: keep_generations); nothing was changed in the kernel',
      });
    }
  }

  /** Bytes a load of `g` writes into the state directory: its copy (unless stored already) and the kernel snapshot. */
  bytesToStore(g: Generation): number {
    const stored = existsSync(join(this.generationDir(g.manifest.id), GENERATION_FILES.manifest)) && g.dir !== this.generationDir(g.manifest.id);
    let size = 0;
    try {
      size = treeBytes(g.dir);
    } catch {
      // unreadable files fail later, with their names
    }
    return (stored ? 0 : size) + size;
  }
}

const kib = (n: number): string => `${Math.ceil(n / 1024)} KiB`;
