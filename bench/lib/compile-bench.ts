// Compile throughput (tinybench): from binding XML to the nft JSON text of one
// generation, and the BPF backend's per-interface plan + encode (no clang: the
// object of a policy shape is built once and cached), for 10 .. 10 000
// interfaces under clean-traffic.
//
// And one cold compile per size in a fresh process (this file, forked with
// NWF_BENCH_COMPILE_ONCE=N): the time of each stage and the process's peak
// RSS, which an in-process measurement cannot give (the benchmark's own heap,
// and the peak of an earlier size, would be in it).
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { nftJsonText } from '../../src/backends/nft/serialize.js';
import { bindingTexts, filters, parseBindings, planAndEncode, resolveAll } from './policy.js';
import { log, type Stat } from './util.js';
import { appendAll } from '../../src/util/arrays.js';

export interface CompileRow {
  n: number;
  task: string;
  /** Milliseconds per compile of all n interfaces (median = tinybench p50). */
  ms: Stat & { mean: number };
  samples: number;
  /** Interfaces per second (n / median time). */
  ifacesPerSec: number;
  /** Output size in bytes (nft JSON text), where it applies. */
  outputBytes?: number;
  /** Cold compile in a fresh process: the process's peak RSS, and the time of each stage. */
  peakRssMB?: number;
  stagesMs?: CompileOnce['ms'];
}

/** One cold compile of n interfaces in a fresh process. */
export interface CompileOnce {
  n: number;
  /** Milliseconds per stage: parse (binding XML), resolve, lower (nft model), json (serialize + stringify); and their sum. */
  ms: { parse: number; resolve: number; lower: number; json: number; total: number };
  /** Peak resident set of the process (includes Node itself, about 50 MB, and the input texts). */
  peakRssMB: number;
  /** Resident set before the compile (Node, the modules, the input texts). */
  baseRssMB: number;
  outputBytes: number;
}

export const COMPILE_TASKS = {
  total: 'nft: parse + resolve + lower + JSON',
  resolve: 'resolve (bindings -> PolicyIR)',
  lower: 'nft: lower + JSON text',
  bpf: 'bpf: plan + encode nwf_cfg',
  cold: 'nft, once in a fresh process: parse + resolve + lower + JSON (peak RSS)',
} as const;

const ONCE_ENV = 'NWF_BENCH_COMPILE_ONCE';

/** The child's side: compile n interfaces once, report stages and peak RSS on stdout. */
function compileOnceHere(n: number): CompileOnce {
  const texts = bindingTexts(n);
  filters();
  const baseRssMB = process.memoryUsage().rss / 2 ** 20;
  const t0 = performance.now();
  const parsed = parseBindings(texts);
  const t1 = performance.now();
  const ir = resolveAll(parsed);
  const t2 = performance.now();
  const lowered = lowerToNft(ir);
  const t3 = performance.now();
  const outputBytes = nftJsonText(lowered.batch).length;
  const t4 = performance.now();
  return {
    n,
    ms: { parse: t1 - t0, resolve: t2 - t1, lower: t3 - t2, json: t4 - t3, total: t4 - t0 },
    peakRssMB: process.resourceUsage().maxRSS / 1024,
    baseRssMB,
    outputBytes,
  };
}

if (process.env[ONCE_ENV]) process.stdout.write(JSON.stringify(compileOnceHere(Number(process.env[ONCE_ENV]))) + '\n');

/** One cold compile of n interfaces in a fresh process (the same loader flags as this one). */
export function compileOnce(n: number): Promise<CompileOnce> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, [ONCE_ENV]: String(n) }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => void (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`compile of ${n} interfaces in a fresh process exited ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() as string) as CompileOnce);
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/** Cold compiles of 1000 and 10 000 interfaces, each in a fresh process, as rows. */
export async function compileColdRows(): Promise<CompileRow[]> {
  const rows: CompileRow[] = [];
  for (const n of [1000, 10_000]) {
    const r = await compileOnce(n);
    log(`compile n=${n} once, fresh process: parse ${r.ms.parse.toFixed(0)} ms, resolve ${r.ms.resolve.toFixed(0)} ms, lower ${r.ms.lower.toFixed(0)} ms, JSON ${r.ms.json.toFixed(0)} ms; peak RSS ${r.peakRssMB.toFixed(0)} MB (${r.baseRssMB.toFixed(0)} MB before)`);
    const t = r.ms.total;
    rows.push({ n, task: COMPILE_TASKS.cold, ms: { median: t, min: t, max: t, n: 1, mean: t }, samples: 1, ifacesPerSec: n / (t / 1000), outputBytes: r.outputBytes, peakRssMB: r.peakRssMB, stagesMs: r.ms });
  }
  return rows;
}

export async function compileThroughput(quick: boolean): Promise<CompileRow[]> {
  const rows: CompileRow[] = [];
  for (const n of [10, 100, 1000, 10_000]) {
    const texts = bindingTexts(n);
    const parsed = parseBindings(texts);
    const ir = resolveAll(parsed);
    let outputBytes = 0;
    const big = n >= 10_000;
    // Each iteration of the 10 000-interface compile takes seconds: bound the count, not the time.
    const bench = new Bench({
      name: `compile ${n}`,
      time: quick ? (big ? 0 : 300) : big ? 0 : 1500,
      iterations: big ? (quick ? 1 : 3) : quick ? 3 : 10,
      warmupTime: 0,
      warmupIterations: big ? 0 : 2,
      retainSamples: true,
    });
    bench.add(COMPILE_TASKS.total, () => {
      outputBytes = nftJsonText(lowerToNft(resolveAll(parseBindings(texts))).batch).length;
    });
    if (!(quick && big)) {
      bench.add(COMPILE_TASKS.resolve, () => {
        resolveAll(parsed);
      });
      bench.add(COMPILE_TASKS.lower, () => {
        nftJsonText(lowerToNft(ir).batch);
      });
      bench.add(COMPILE_TASKS.bpf, () => {
        planAndEncode(ir);
      });
    }
    await bench.run();
    for (const task of bench.tasks) {
      const r = task.result;
      if (r.state !== 'completed') {
        log(`compile ${n} ${task.name}: ${r.state}${'error' in r ? ` ${String((r as { error?: unknown }).error)}` : ''}`);
        continue;
      }
      const lat = r.latency;
      rows.push({
        n,
        task: task.name,
        ms: { median: lat.p50 ?? lat.mean, min: lat.min, max: lat.max, n: lat.samplesCount ?? 0, mean: lat.mean },
        samples: lat.samplesCount ?? 0,
        ifacesPerSec: n / ((lat.p50 ?? lat.mean) / 1000),
        ...(task.name === COMPILE_TASKS.total ? { outputBytes } : {}),
      });
      log(`compile n=${n} ${task.name}: median ${(lat.p50 ?? lat.mean).toFixed(2)} ms (${Math.round(n / ((lat.p50 ?? lat.mean) / 1000))} interfaces/s)`);
    }
  }
  return appendAll(rows, await compileColdRows());
}
