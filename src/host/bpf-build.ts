// Building the eBPF backend's objects: the C header of each policy shape
// (backends/bpf/lower.ts) compiled with the templates in bpf/ by clang, run
// through the CommandRunner, with a content-addressed cache (same source,
// same flags, same clang: same object, no clang run).
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODES, NwfError } from '../util/errors.js';
import { lowerToBpf, type BpfInterfaceLowering, type BpfLowering, type BpfShapeSource } from '../backends/bpf/lower.js';
import { CommandError, type CommandRunner } from './runner.js';
import { hostRunner } from './netns.js';

export const DEFAULT_CLANG = 'clang-19';
/** Flags every object is built with (style.md point 8). */
export const CLANG_FLAGS = ['-O2', '-g', '-target', 'bpf', '-mcpu=v3', '-Wall', '-Werror'] as const;

/** An interface's lowering with the object its shape was built into. */
export interface BpfInterfaceBuild extends BpfInterfaceLowering {
  /** The compiled object (in outDir, a copy of the cached one). */
  objectPath: string;
}

export interface BpfShapeBuild {
  shapeId: string;
  objectPath: string;
  sourcePath: string;
  headerPath: string;
  /** Key of the object in cacheDir (hash of every source byte, the flags and the clang version). */
  cacheKey: string;
  /** True when the object came from the cache (clang did not run). */
  cached: boolean;
  /** Wall time of this shape's build (clang or cache copy), in ms. */
  ms: number;
  interfaces: string[];
}

export interface BpfCompileResult {
  interfaces: BpfInterfaceBuild[];
  shapes: BpfShapeBuild[];
}

export interface BpfBuildOptions {
  /** Where the per-shape sources and objects are written (outDir/<shapeId>/). */
  outDir: string;
  /** Content-addressed object cache (cacheDir/<key>/). */
  cacheDir: string;
  /** The clang binary (default clang-19). */
  clang?: string;
  /** Directory with nwf.bpf.c and lib/ (default: the package's bpf/). */
  templateDir?: string;
  /** Extra -D / -I flags (tests). */
  extraFlags?: readonly string[];
  /** Runs clang (default: the host runner). */
  runner?: CommandRunner;
}

export interface BpfCompileOptions extends BpfBuildOptions {
  /**
   * 'bpf' (default): the programs are the only enforcement, so L3/L4 rules
   * are refused. 'both': the nftables backend enforces the L3/L4 rules.
   */
  backend?: 'bpf' | 'both';
}

/** The object cache: NWF_FAST_CACHE, else /var/cache/nwf-fast for root, ~/.cache/nwf-fast otherwise. */
export function defaultCacheDir(): string {
  return process.env.NWF_FAST_CACHE ?? (process.getuid?.() === 0 ? '/var/cache/nwf-fast' : join(process.env.HOME ?? '/tmp', '.cache', 'nwf-fast'));
}

// ---- template files -------------------------------------------------------------------

/** The package's bpf/ directory (works from src/ with tsx and from dist/). */
export function defaultTemplateDir(): string {
  // import.meta.dirname would need Node 20.11; the runtime supports 18.19 (package.json engines).
  const here = dirname(fileURLToPath(import.meta.url));
  let d = here;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(d, 'bpf', 'nwf.bpf.c'))) return join(d, 'bpf');
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  throw new NwfError(CODES.FILE_UNREADABLE, `cannot find the BPF templates (bpf/nwf.bpf.c) above ${here}`, {
    hint: 'reinstall nwf-fast: the bpf/ directory is part of the package',
  });
}

/** Template files as relative path -> content (nwf.bpf.c and lib/*.h), sorted. */
export function readTemplate(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const main = join(dir, 'nwf.bpf.c');
  if (!existsSync(main)) throw new NwfError(CODES.FILE_UNREADABLE, `BPF template ${main} is missing`);
  files.set('nwf.bpf.c', readFileSync(main, 'utf8'));
  const lib = join(dir, 'lib');
  if (existsSync(lib)) for (const f of readdirSync(lib).filter((x) => x.endsWith('.h')).sort()) files.set(`lib/${f}`, readFileSync(join(lib, f), 'utf8'));
  return files;
}

// ---- clang ----------------------------------------------------------------------------

const clangVersions = new Map<string, Promise<string>>();

/** `clang --version`, first line (part of the cache key); memoised per binary. */
export function clangVersion(clang: string, runner: CommandRunner = hostRunner()): Promise<string> {
  let v = clangVersions.get(clang);
  if (!v) {
    v = runner.run([clang, '--version'], { check: false, timeoutMs: 30_000 }).then((r) => {
      if (r.exitCode !== 0 || r.failure !== undefined) {
        throw new CommandError(CODES.CLANG_FAILED, `cannot run ${clang}: ${r.failure ?? (r.stderr.trim() || `exit ${r.exitCode}`)}`, r, {
          hint: 'install clang-19 (scripts/install-deps.sh) or pass another clang',
        });
      }
      return r.stdout.split('\n')[0] ?? '';
    });
    v.catch(() => clangVersions.delete(clang));
    clangVersions.set(clang, v);
  }
  return v;
}

function archInclude(): string {
  const triple = process.arch === 'arm64' ? 'aarch64-linux-gnu' : process.arch === 'x64' ? 'x86_64-linux-gnu' : `${process.arch}-linux-gnu`;
  return `/usr/include/${triple}`;
}

/** The lines of clang's output worth showing: each diagnostic with its source excerpt and caret. */
export function relevantCompilerLines(stderr: string, max = 40): string[] {
  const lines = stderr.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length && out.length < max; i++) {
    const l = lines[i] as string;
    if (/\b(error|fatal error|warning):/.test(l)) {
      out.push(l);
      for (let j = i + 1; j < Math.min(lines.length, i + 3); j++) {
        const n = lines[j] as string;
        if (/\b(error|fatal error|warning|note):/.test(n) || /^In file included/.test(n)) break;
        out.push(n);
      }
    }
  }
  return out.length ? out : lines.filter((l) => l.trim()).slice(0, max);
}

interface BuildSettings {
  outDir: string;
  cacheDir: string;
  clang: string;
  extraFlags: readonly string[];
  runner: CommandRunner;
}

async function buildShape(src: BpfShapeSource, template: ReadonlyMap<string, string>, opts: BuildSettings): Promise<BpfShapeBuild> {
  const t0 = performance.now();
  const version = await clangVersion(opts.clang, opts.runner);
  const flags = [...CLANG_FLAGS, `-I${archInclude()}`, ...opts.extraFlags];
  const h = createHash('sha256');
  h.update(`clang ${version}\0flags ${flags.join(' ')}\0`);
  h.update(`nwf_policy.h\0${src.header}\0`);
  for (const [name, text] of template) h.update(`${name}\0${text}\0`);
  const cacheKey = h.digest('hex').slice(0, 32);

  const buildDir = resolve(opts.cacheDir, cacheKey);
  const cachedObj = join(buildDir, 'nwf.bpf.o');
  const cached = existsSync(cachedObj);
  if (!cached) {
    // Build in a private directory named by the key, so the debug info (paths) depends on the key only.
    const tmp = `${buildDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    mkdirSync(join(tmp, 'lib'), { recursive: true });
    try {
      for (const [name, text] of template) writeFileSync(join(tmp, name), text);
      writeFileSync(join(tmp, 'nwf_policy.h'), src.header);
      const argv = [...flags, `-I${join(buildDir, 'lib')}`, `-I${buildDir}`, '-c', join(buildDir, 'nwf.bpf.c'), '-o', join(buildDir, 'nwf.bpf.o')];
      // Compile inside tmp with the final paths mapped: clang sees tmp's files under buildDir.
      const mapped = argv.map((a) => a.replace(buildDir, tmp));
      const r = await opts.runner.run([opts.clang, ...mapped, `-fdebug-prefix-map=${tmp}=${buildDir}`], { check: false, timeoutMs: 300_000, cwd: tmp });
      if (r.exitCode !== 0 || r.failure !== undefined) {
        const stderr = (r.stderr || r.failure || '').replaceAll(tmp, buildDir);
        const lines = relevantCompilerLines(stderr);
        throw new CommandError(
          CODES.CLANG_FAILED,
          `${opts.clang} failed to compile the tc program of policy shape ${src.shapeId} (exit ${r.exitCode}):\n  ${lines.join('\n  ')}`,
          { argv: [opts.clang, ...argv], exitCode: r.exitCode, stderr },
          { hint: "this is a bug in nwf-fast's BPF templates or generator unless the templates were changed; the generated header is in the cache directory" },
        );
      }
      mkdirSync(dirname(buildDir), { recursive: true });
      try {
        renameSync(tmp, buildDir);
      } catch (e) {
        // Another process built the same key meanwhile: theirs is identical.
        if (!existsSync(cachedObj)) throw e;
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  // Per-shape output: the sources and the object, readable next to each other.
  const outShape = resolve(opts.outDir, src.shapeId);
  mkdirSync(join(outShape, 'lib'), { recursive: true });
  for (const [name, text] of template) writeFileSync(join(outShape, name), text);
  writeFileSync(join(outShape, 'nwf_policy.h'), src.header);
  const objectPath = join(outShape, 'nwf.bpf.o');
  copyFileSync(cachedObj, objectPath);
  return {
    shapeId: src.shapeId,
    objectPath,
    sourcePath: join(outShape, 'nwf.bpf.c'),
    headerPath: join(outShape, 'nwf_policy.h'),
    cacheKey,
    cached,
    ms: performance.now() - t0,
    interfaces: src.interfaces,
  };
}

async function mapLimit<T, R>(items: readonly T[], limit: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Builds one object per shape of a lowering (clang, or the cache). */
export async function buildBpf(l: BpfLowering, opts: BpfBuildOptions): Promise<BpfCompileResult> {
  const template = readTemplate(opts.templateDir ?? defaultTemplateDir());
  const settings: BuildSettings = { outDir: opts.outDir, cacheDir: opts.cacheDir, clang: opts.clang ?? DEFAULT_CLANG, extraFlags: opts.extraFlags ?? [], runner: opts.runner ?? hostRunner() };
  const shapes = await mapLimit(l.shapes, Math.max(1, availableParallelism()), (s) => buildShape(s, template, settings));
  const objectOf = new Map(shapes.map((s) => [s.shapeId, s.objectPath]));
  return { interfaces: l.interfaces.map((i) => ({ ...i, objectPath: objectOf.get(i.shapeId) as string })), shapes };
}

/** Lowers every interface of `ir` and builds its objects: one per distinct shape, one map set per interface. */
export async function compileBpf(ir: Parameters<typeof lowerToBpf>[0], opts: BpfCompileOptions): Promise<BpfCompileResult> {
  return buildBpf(lowerToBpf(ir, opts.backend ?? 'bpf'), opts);
}
