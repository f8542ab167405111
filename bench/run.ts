// nwf-fast benchmark: `npm run bench` (full, ~8 min here) or `npm run bench -- --quick` (CI, ~2 min here).
//
// Writes bench/results/latest.{json,md,svg}. Everything runs in network
// namespaces it creates (named nwfbench-<pid>-<rand>-*) and removes, also on
// failure and on SIGINT/SIGTERM; namespaces of earlier runs whose process is
// gone are removed at the start. At most one libvirtd runs on the machine: if
// another one is running, the libvirt phase waits for it (bounded) and is
// otherwise skipped, with the reason in the results. See bench/README.md.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { compileThroughput, type CompileRow } from './lib/compile-bench.js';
import { dataplanePhase, type DpResult } from './lib/dataplane.js';
import { loadTemplate, type EbtablesTemplate } from './lib/ebtables.js';
import { environment, type Environment } from './lib/env.js';
import { buildRefObject, buildTapWriter, createBenchHost, type BenchHost } from './lib/host.js';
import { libvirtPhase, type LibvirtResult } from './lib/libvirt-phase.js';
import { protectPhase, type ProtectResult } from './lib/protect.js';
import { renderMarkdown, renderSvg, targets } from './lib/report.js';
import { updatePhase, type UpdateRow } from './lib/update.js';
import { portsPhase, type PortRow } from './lib/ports.js';
import { learnPhase, type LearnResult } from './lib/learn.js';
import { cmd, log, removeStale, runCleanups } from './lib/util.js';

export interface BenchConfig {
  mode: 'quick' | 'full';
  ns: number[];
  protectRounds: number;
  dpRounds: number;
  dpTargetSeconds: number;
  /** N of the veth data-plane rows (the tap path and the tc/xdp eBPF hooks: the largest only). */
  dpNs: number[];
  libvirtBindings: number;
  libvirtFillTo: number[];
  libvirtSamplesPerFill: number;
  libvirtChanges: number;
  libvirtLeakChanges: number;
  libvirtWaitMs: number;
  updateChanges: number;
  ebpfUpdateChanges: number;
  updateLeakChanges: number;
  /** Timed removals and additions of one port (per-domain changes), and those made during the spoofed flood. */
  portChanges?: number;
  portLeakChanges?: number;
  /** IP learning: rounds per method, and how long the spoofed flood runs after the teaching frame (ms). */
  learnRounds?: number;
  learnFloodMs?: number;
}

export interface BenchResults {
  schema: 1;
  mode: 'quick' | 'full';
  startedAt: string;
  durationS: number;
  config: BenchConfig;
  env: Environment;
  brNetfilterDefault: boolean;
  compile?: CompileRow[];
  libvirt?: LibvirtResult;
  protect?: ProtectResult;
  update?: UpdateRow[];
  ports?: PortRow[];
  dataplane?: DpResult;
  learn?: LearnResult;
  targets?: ReturnType<typeof targets>;
  errors: { phase: string; message: string }[];
  notes: string[];
}

const PHASES = ['compile', 'libvirt', 'protect', 'update', 'ports', 'dataplane', 'learn'] as const;
type Phase = (typeof PHASES)[number];

function parseArgs(argv: string[]): { quick: boolean; out: string; only: Set<Phase>; noLibvirt: boolean; rounds?: number } {
  let quick = false;
  let out = resolve(import.meta.dirname, 'results');
  let only = new Set<Phase>(PHASES);
  let noLibvirt = false;
  let rounds: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--quick') quick = true;
    else if (a === '--full') quick = false;
    else if (a === '--out') out = resolve(argv[++i] ?? out);
    else if (a === '--no-libvirt') noLibvirt = true;
    else if (a === '--rounds') rounds = Math.max(1, Number(argv[++i]));
    else if (a === '--only') {
      const list = (argv[++i] ?? '').split(',').filter(Boolean);
      for (const p of list) if (!(PHASES as readonly string[]).includes(p)) throw new Error(`--only: unknown phase ${p} (${PHASES.join(', ')})`);
      only = new Set(list as Phase[]);
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: npm run bench [-- --quick] [--out DIR] [--only compile,libvirt,protect,update,ports,dataplane,learn] [--no-libvirt] [--rounds N]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  return { quick, out, only, noLibvirt, ...(rounds !== undefined ? { rounds } : {}) };
}

async function requireTools(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, nftables, BPF); run it as root');
  const missing: string[] = [];
  for (const [tool, pkg] of [
    ['trafgen', 'netsniff-ng'],
    ['clang-19', 'clang-19'],
    ['ebtables-restore', 'ebtables'],
    ['nft', 'nftables'],
    ['bridge', 'iproute2'],
  ] as const) {
    const r = await cmd(['sh', '-c', `command -v ${tool}`], { check: false });
    if (r.exitCode !== 0) missing.push(`${tool} (Debian package ${pkg})`);
  }
  if (missing.length) throw new Error(`missing tools: ${missing.join(', ')}; scripts/install-deps.sh installs them`);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const quick = args.quick;
  const config: BenchConfig = {
    mode: quick ? 'quick' : 'full',
    ns: [1, 10, 100, 1000],
    protectRounds: args.rounds ?? (quick ? 2 : 5),
    dpRounds: args.rounds ?? (quick ? 2 : 5),
    dpTargetSeconds: quick ? 0.3 : 1.0,
    dpNs: quick ? [1, 1000] : [1, 10, 100, 1000],
    libvirtBindings: quick ? 10 : 40,
    libvirtFillTo: [100, 1000],
    libvirtSamplesPerFill: quick ? 1 : 3,
    libvirtChanges: quick ? 1 : 4,
    libvirtLeakChanges: quick ? 1 : 2,
    libvirtWaitMs: quick ? 90_000 : 900_000,
    updateChanges: quick ? 4 : 15,
    ebpfUpdateChanges: quick ? 200 : 2000,
    updateLeakChanges: quick ? 4 : 10,
    portChanges: quick ? 5 : 20,
    portLeakChanges: quick ? 3 : 10,
    learnRounds: args.rounds ?? (quick ? 2 : 5),
    learnFloodMs: quick ? 1000 : 1500,
  };
  const t0 = performance.now();
  await requireTools();
  const stale = await removeStale();
  if (stale.length) log(`removed ${stale.length} stale namespaces of earlier runs: ${stale.join(', ')}`);
  mkdirSync(args.out, { recursive: true });
  const workDir = mkdtempSync(join(tmpdir(), 'nwfbench-work-'));
  const templateFile = join(args.out, 'libvirt-ebtables-clean-traffic.txt');

  const env = await environment();
  log(`${config.mode} run on ${env.cpuModel} x${env.cpus}, ${env.kernel}; results to ${args.out}`);
  const results: BenchResults = {
    schema: 1,
    mode: config.mode,
    startedAt: new Date().toISOString(),
    durationS: 0,
    config,
    env,
    brNetfilterDefault: true,
    errors: [],
    notes: [],
  };
  const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
    const p0 = performance.now();
    log(`phase ${name} ...`);
    try {
      const v = await fn();
      log(`phase ${name} done in ${((performance.now() - p0) / 1000).toFixed(1)} s`);
      return v;
    } catch (e) {
      const message = e instanceof Error ? `${e.message}` : String(e);
      log(`phase ${name} FAILED: ${message}`);
      results.errors.push({ phase: name, message: message.slice(0, 4000) });
      return undefined;
    }
  };

  let host: BenchHost | undefined;
  let template: EbtablesTemplate | undefined;
  try {
    if (args.only.has('compile')) results.compile = await phase('compile', () => compileThroughput(quick));

    const runLibvirt = async (maxWaitMs: number): Promise<void> => {
      const r = await phase('libvirt', () =>
        libvirtPhase({
          workDir,
          bindings: config.libvirtBindings,
          changes: config.libvirtChanges,
          leakChanges: config.libvirtLeakChanges,
          fillTo: config.libvirtFillTo,
          samplesPerFill: config.libvirtSamplesPerFill,
          maxWaitMs,
          templateFile,
        }),
      );
      if (r) {
        results.libvirt = r.result;
        if (r.template) template = r.template;
        if (!r.result.available) log(`libvirt: not measured: ${r.result.reason}`);
      }
    };
    const wantLibvirt = args.only.has('libvirt') && !args.noLibvirt;
    // Try now without waiting long; if another libvirtd is busy, the other phases run first.
    if (wantLibvirt) await runLibvirt(quick ? 5_000 : 30_000);

    if (args.only.has('protect') || args.only.has('update') || args.only.has('ports') || args.only.has('dataplane')) {
      const nMax = Math.max(...config.ns);
      host = await createBenchHost(nMax, join(workDir, 'host'));
      results.brNetfilterDefault = host.tb.brNfCallIptables;
      log(`host ${host.hostNs}: bridge with ${nMax} ports + peer; br_netfilter call-iptables=${host.tb.brNfCallIptables ? 1 : 0}`);
      const h = host;
      if (args.only.has('protect')) results.protect = await phase('protect', () => protectPhase(h, config.ns, config.protectRounds, workDir));
      if (args.only.has('update')) {
        results.update = await phase('update', () =>
          updatePhase(h, { n: nMax, changes: config.updateChanges, ebpfChanges: config.ebpfUpdateChanges, leakChanges: config.updateLeakChanges, workDir }),
        );
      }
      if (args.only.has('ports')) {
        results.ports = await phase('ports', () =>
          portsPhase(h, { n: nMax, changes: config.portChanges ?? 20, leakChanges: config.portLeakChanges ?? 10, workDir, cacheDir: join(workDir, 'bpf-cache') }),
        );
      }
      if (wantLibvirt && !results.libvirt?.available) await runLibvirt(config.libvirtWaitMs);
      if (args.only.has('dataplane')) {
        if (!template) {
          template = loadTemplate(templateFile);
          if (template) results.notes.push(`libvirt's ebtables rules were not captured by this run; the data-plane runs use the capture of an earlier run (${template.source})`);
          else results.notes.push("libvirt's ebtables rules could not be captured (libvirt not measured) and no earlier capture exists: the data-plane runs have no libvirt row");
        }
        const refObject = await buildRefObject(workDir);
        results.dataplane = await phase('dataplane', async () => {
          // A second host whose vnet0 is a real tap, fed as QEMU feeds it.
          const writerBin = await buildTapWriter(workDir);
          const tapHost = await createBenchHost(nMax, join(workDir, 'tap-host'), { tap: { writerBin } });
          log(`host ${tapHost.hostNs}: bridge with ${nMax} ports (vnet0 a tap fed by tap-writer) + peer`);
          try {
            return await dataplanePhase({ veth: h, tap: tapHost }, { ns: config.dpNs, rounds: config.dpRounds, targetSeconds: config.dpTargetSeconds, ...(template ? { template } : {}), refObject, workDir, quick });
          } finally {
            await tapHost.destroy();
          }
        });
      }
    } else if (wantLibvirt && !results.libvirt?.available) {
      await runLibvirt(config.libvirtWaitMs);
    }
    if (args.only.has('learn')) {
      results.learn = await phase('learn', () =>
        learnPhase({
          rounds: config.learnRounds ?? 5,
          floodMs: config.learnFloodMs ?? 1500,
          maxMs: 8000,
          workDir,
          cacheDir: join(workDir, 'bpf-cache'),
          libvirtWaitMs: quick ? 30_000 : 120_000,
          ...(args.noLibvirt ? { noLibvirt: '--no-libvirt' } : {}),
        }),
      );
      if (results.learn?.libvirt.error) results.errors.push({ phase: 'learn (libvirt)', message: results.learn.libvirt.error.slice(0, 4000) });
    }
  } finally {
    await runCleanups();
    rmSync(workDir, { recursive: true, force: true });
  }

  results.durationS = Math.round((performance.now() - t0) / 100) / 10;
  results.targets = targets(results);
  writeFileSync(join(args.out, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(args.out, 'latest.md'), renderMarkdown(results));
  writeFileSync(join(args.out, 'latest.svg'), renderSvg(results));
  log(`wrote ${join(args.out, 'latest.{json,md,svg}')} after ${results.durationS} s${results.errors.length ? ` with ${results.errors.length} failed phase(s)` : ''}`);
  return results.errors.length ? 1 : 0;
}

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: cleaning up`);
    void runCleanups().finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    log(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    await runCleanups();
    process.exit(1);
  },
);
