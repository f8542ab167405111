// The tc/eBPF backend's compiler: PolicyIR -> one BPF object per policy shape
// plus, per interface, the map contents that specialise it.
//
// Design (see also plan.ts and bpf/nwf.bpf.c):
//  - L2 only. The programs enforce libvirt's ebtables layer (the root chain
//    with its rules and guarded jumps into sub-chains; accept / drop / return
//    / continue; falling off a chain accepts; RETURN from root accepts).
//    L3/L4 rules (tcp, udp, icmp, all, ... with connection state) were
//    iptables rules in libvirt, seen through br_netfilter after the L2
//    verdict; they stay with the nftables backend (`--backend both`), which
//    sees the frames the tc programs accepted (TC_ACT_OK hands the frame on to
//    the bridge, where br_netfilter and nft run). With the bpf backend alone
//    a policy with L3 rules is refused (NwfError) rather than half enforced.
//  - Shape sharing: the rule structure is compiled; the values live in the
//    nwf_cfg map. Every interface whose policy has the same shape uses the same
//    object file (content-hash cache: same source, same object, no clang run).
//  - Verdicts: TC_ACT_OK for accept, TC_ACT_SHOT for drop; per-interface
//    counters by direction and drop reason in nwf_stats.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, endianness } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { Direction, PolicyIR } from '../../ir/types.js';
import { ruleCounts } from '../../ir/facts.js';
import { CODES, NwfError, type NwfErrorDetails } from '../../util/errors.js';
import { emitPolicyHeader, PROGRAM_NAMES } from './emit.js';
import { encodeConfig, planInterface, type BpfPlan } from './plan.js';

export const DEFAULT_CLANG = 'clang-19';
/** Flags every object is built with (style.md point 8). */
export const CLANG_FLAGS = ['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror'] as const;

/** Names of the maps a loader fills. */
export const MAP_NAMES = { cfg: 'nwf_cfg', ifx: 'nwf_ifx', slot: 'nwf_slot', stats: 'nwf_stats' } as const;

/** tc hook of each direction's program on the tap. */
export const TC_HOOKS: Readonly<Record<Direction, 'ingress' | 'egress'>> = { out: 'ingress', in: 'egress' };

export interface BpfMapWrite {
  map: string;
  key: Uint8Array;
  value: Uint8Array;
}

export interface BpfInterfaceBuild {
  iface: string;
  shapeId: string;
  /** The compiled object (in outDir, a copy of the cached one). */
  objectPath: string;
  /** Program name per direction: out = from the VM (tc ingress), in = to the VM (tc egress). */
  programs: Readonly<Record<Direction, string>>;
  hooks: Readonly<Record<Direction, 'ingress' | 'egress'>>;
  /** The interface's values: nwf_cfg's value (the loader places it at the tap's index in its shape's object). */
  maps: BpfMapWrite[];
  /** The shape/value split, for explanations (group index -> IR rule ids). */
  plan: BpfPlan;
  /** L3/L4 rules of the interface left to the nftables backend. */
  l3Rules: number;
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

export interface BpfCompileOptions {
  /** Where the per-shape sources and objects are written (outDir/<shapeId>/). */
  outDir: string;
  /** Content-addressed object cache (cacheDir/<key>/). */
  cacheDir: string;
  /**
   * 'bpf' (default): the programs are the only enforcement, so L3/L4 rules
   * are refused. 'both': the nftables backend enforces the L3/L4 rules.
   */
  backend?: 'bpf' | 'both';
  /** The clang binary (default clang-19). */
  clang?: string;
  /** Directory with nwf.bpf.c and lib/ (default: the package's bpf/). */
  templateDir?: string;
  /** Extra -D / -I flags (tests). */
  extraFlags?: readonly string[];
}

/** A failed clang run: the relevant compiler lines are in the message and in `lines`. */
export class ClangError extends NwfError {
  declare readonly details: NwfErrorDetails & { command: string[]; exitCode: number | undefined; stderr: string; lines: string[] };
  constructor(message: string, details: NwfErrorDetails & { command: string[]; exitCode: number | undefined; stderr: string; lines: string[] }) {
    super(CODES.CLANG_FAILED, message, details);
    this.name = 'ClangError';
  }
  get lines(): string[] {
    return this.details.lines;
  }
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
export function clangVersion(clang: string): Promise<string> {
  let v = clangVersions.get(clang);
  if (!v) {
    v = execa(clang, ['--version'], { reject: false, timeout: 30_000 }).then((r) => {
      if (r.exitCode !== 0 || r.failed) {
        throw new NwfError(CODES.CLANG_FAILED, `cannot run ${clang}: ${r.shortMessage ?? r.stderr}`, {
          hint: 'install clang-19 (scripts/install-deps.sh) or pass another clang',
          cause: r,
        });
      }
      return String(r.stdout).split('\n')[0] ?? '';
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

interface ShapeSource {
  shapeId: string;
  header: string;
  template: Map<string, string>;
}

async function buildShape(src: ShapeSource, opts: Required<Pick<BpfCompileOptions, 'outDir' | 'cacheDir' | 'clang'>> & { extraFlags: readonly string[] }): Promise<Omit<BpfShapeBuild, 'interfaces'>> {
  const t0 = performance.now();
  const version = await clangVersion(opts.clang);
  const flags = [...CLANG_FLAGS, `-I${archInclude()}`, ...opts.extraFlags];
  const h = createHash('sha256');
  h.update(`clang ${version}\0flags ${flags.join(' ')}\0`);
  h.update(`nwf_policy.h\0${src.header}\0`);
  for (const [name, text] of src.template) h.update(`${name}\0${text}\0`);
  const cacheKey = h.digest('hex').slice(0, 32);

  const buildDir = resolve(opts.cacheDir, cacheKey);
  const cachedObj = join(buildDir, 'nwf.bpf.o');
  const cached = existsSync(cachedObj);
  if (!cached) {
    // Build in a private directory named by the key, so the debug info (paths) depends on the key only.
    const tmp = `${buildDir}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    mkdirSync(join(tmp, 'lib'), { recursive: true });
    try {
      for (const [name, text] of src.template) writeFileSync(join(tmp, name), text);
      writeFileSync(join(tmp, 'nwf_policy.h'), src.header);
      const argv = [...flags, `-I${join(buildDir, 'lib')}`, `-I${buildDir}`, '-c', join(buildDir, 'nwf.bpf.c'), '-o', join(buildDir, 'nwf.bpf.o')];
      // Compile inside tmp with the final paths mapped: clang sees tmp's files under buildDir.
      const mapped = argv.map((a) => a.replace(buildDir, tmp));
      const r = await execa(opts.clang, [...mapped, `-fdebug-prefix-map=${tmp}=${buildDir}`], { reject: false, timeout: 300_000, cwd: tmp });
      if (r.exitCode !== 0 || r.failed) {
        const stderr = String(r.stderr ?? '').replaceAll(tmp, buildDir);
        const lines = relevantCompilerLines(stderr);
        throw new ClangError(`${opts.clang} failed to compile the tc program of policy shape ${src.shapeId} (exit ${r.exitCode ?? r.signal ?? '?'}):\n  ${lines.join('\n  ')}`, {
          command: [opts.clang, ...argv],
          exitCode: r.exitCode,
          stderr,
          lines,
          hint: 'this is a bug in nwf-fast\'s BPF templates or generator unless the templates were changed; the generated header is in the cache directory',
          cause: r,
        });
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
  for (const [name, text] of src.template) writeFileSync(join(outShape, name), text);
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

// ---- L3 ---------------------------------------------------------------------------------

/** The bpf backend alone cannot enforce L3/L4 rules: refuse rather than half enforce. */
export function checkL3(ir: PolicyIR, backend: 'bpf' | 'both'): void {
  if (backend === 'both') return;
  for (const p of ir.interfaces) {
    const n = ruleCounts(p).l3Rules;
    if (n === 0) continue;
    const all = [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost];
    const filters = [...new Set(all.map((r) => r.origin.filter))];
    const first = all[0]!;
    throw new NwfError(
      CODES.USAGE,
      `interface ${p.iface}: its policy has ${n} L3/L4 rule placement${n === 1 ? '' : 's'} (tcp/udp/icmp/all ... elements, from ${filters.join(', ')}), which the bpf backend does not enforce: its tc programs implement the L2 (ebtables) layer only`,
      {
        location: { file: first.origin.file, ...(first.origin.line !== undefined ? { line: first.origin.line } : {}) },
        iface: p.iface,
        filter: first.origin.filter,
        expected: 'a policy made of L2 elements only (mac, vlan, stp, arp, rarp, ip, ipv6) for --backend bpf',
        hint: 'use --backend both: the tc programs enforce L2 and nftables enforces the L3/L4 rules with connection tracking (or --backend nft)',
      },
    );
  }
}

// ---- entry point -------------------------------------------------------------------------

/** A __u32 map key or value, in host byte order. */
function u32(n: number): Uint8Array {
  const b = Buffer.alloc(4);
  if (endianness() === 'LE') b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

/** Compile every interface of `ir`: one object per distinct shape, one map set per interface. */
export async function compileBpf(ir: PolicyIR, opts: BpfCompileOptions): Promise<BpfCompileResult> {
  const backend = opts.backend ?? 'bpf';
  checkL3(ir, backend);
  const template = readTemplate(opts.templateDir ?? defaultTemplateDir());
  const plans = ir.interfaces.map((p) => ({ p, plan: planInterface(p) }));
  const byShape = new Map<string, { header: string; ifaces: string[] }>();
  for (const { p, plan } of plans) {
    let s = byShape.get(plan.shapeId);
    if (!s) byShape.set(plan.shapeId, (s = { header: emitPolicyHeader(plan.shape, plan.shapeId), ifaces: [] }));
    s.ifaces.push(p.iface);
  }
  const clang = opts.clang ?? DEFAULT_CLANG;
  const shapeList = [...byShape.entries()];
  const built = await mapLimit(shapeList, Math.max(1, availableParallelism()), ([shapeId, s]) =>
    buildShape({ shapeId, header: s.header, template }, { outDir: opts.outDir, cacheDir: opts.cacheDir, clang, extraFlags: opts.extraFlags ?? [] }),
  );
  const shapes: BpfShapeBuild[] = built.map((b, i) => ({ ...b, interfaces: shapeList[i]![1].ifaces }));
  const objectOf = new Map(shapes.map((s) => [s.shapeId, s.objectPath]));
  const interfaces = plans.map(
    ({ p, plan }): BpfInterfaceBuild => ({
      iface: p.iface,
      shapeId: plan.shapeId,
      objectPath: objectOf.get(plan.shapeId)!,
      programs: PROGRAM_NAMES,
      hooks: TC_HOOKS,
      maps: [
        { map: MAP_NAMES.cfg, key: u32(0), value: encodeConfig(plan) },
      ],
      plan,
      l3Rules: ruleCounts(p).l3Rules,
    }),
  );
  return { interfaces, shapes };
}
