// Compile throughput (tinybench): from binding XML to the nft JSON text of one
// generation, and the BPF backend's per-interface plan + encode (no clang: the
// object of a policy shape is built once and cached), for 10 .. 10 000
// interfaces under clean-traffic.
import { Bench } from 'tinybench';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { bindingTexts, parseBindings, planAndEncode, resolveAll } from './policy.js';
import { log, type Stat } from './util.js';

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
}

export const COMPILE_TASKS = {
  total: 'nft: parse + resolve + lower + JSON',
  resolve: 'resolve (bindings -> PolicyIR)',
  lower: 'nft: lower + JSON text',
  bpf: 'bpf: plan + encode nwf_cfg',
} as const;

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
      outputBytes = JSON.stringify(toNftJson(lowerToNft(resolveAll(parseBindings(texts))).batch)).length;
    });
    if (!(quick && big)) {
      bench.add(COMPILE_TASKS.resolve, () => {
        resolveAll(parsed);
      });
      bench.add(COMPILE_TASKS.lower, () => {
        JSON.stringify(toNftJson(lowerToNft(ir).batch));
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
  return rows;
}
