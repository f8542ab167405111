// A/B of the nft valid-frame cost of the optimizer as built, with the
// benchmark's method (bench/lib/host.ts, bench/lib/dataplane.ts): the
// benchmark's 1000-port clean-traffic host, veth path, trafgen vm0 -> peer,
// sender + ksoftirqd CPU per frame, configurations shuffled per round, each
// divided by the same round's no-filter figure. Configurations: no filter,
// lowerToNft with every pass, with fast-accept alone, without the optimizer.
// Prints every round (with the load average) and medians; the design's
// status section pools the rounds by a median polish of log(ns).
// Root; bounded like the benchmark (its host removes itself on exit).
// Usage: npx tsx docs/design/proto/frame-ab.ts [ROUNDS=6] [SECONDS=0.5]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBenchHost, loadNft, sendTraffic, writeTrafgenConfigs, type Unload } from '../../../bench/lib/host.js';
import { bindingTexts, parseBindings, resolveAll } from '../../../bench/lib/policy.js';
import { runCleanups, removeStale } from '../../../bench/lib/util.js';
import { lowerToNft } from '../../../src/backends/nft/lower.js';
import { toNftJson } from '../../../src/backends/nft/serialize.js';

const ROUNDS = Number(process.argv[2] ?? 6);
const SECONDS = Number(process.argv[3] ?? 0.5);
const N = 1000;
const ir = resolveAll(parseBindings(bindingTexts(N)));
const json = (o: Parameters<typeof lowerToNft>[1]) => JSON.stringify(toNftJson(lowerToNft(ir, o).batch));
const CONFIGS: Record<string, string | undefined> = {
  none: undefined,
  'nft(p4+p6)': json({}),
  'nft(p4)': json({ passes: ['fast-accept'] }),
  'nft(noopt)': json({ optimize: false }),
};
function shuffle<T>(xs: T[], seed: number): T[] {
  let s = seed * 2654435761 || 1;
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const j = Math.floor(((s >>> 0) / 2 ** 32) * (i + 1));
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}
const med = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  await removeStale();
  const work = mkdtempSync(join(tmpdir(), 'nwf-ab-'));
  const host = await createBenchHost(N, work);
  const tg = writeTrafgenConfigs(host);
  const pps = new Map<string, number>();
  const ratios: Record<string, number[]> = {};
  const ns: Record<string, number[]> = {};
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const la0 = loadavg().map((x) => x.toFixed(2)).join(' ');
      const round: Record<string, number> = {};
      for (const name of shuffle(Object.keys(CONFIGS), r + 1)) {
        const j = CONFIGS[name];
        const unload: Unload = j ? loadNft(host, j).unload : async () => {};
        try {
          const warm = await sendTraffic(host, 'valid', tg, pps.has(name) ? 5000 : 20000, 60000);
          if (!pps.has(name)) pps.set(name, warm.sent / Math.max(1e-3, warm.cpuNs / 1e9));
          const count = Math.round(Math.min(8e6, Math.max(20000, (pps.get(name) as number) * SECONDS)));
          const m = await sendTraffic(host, 'valid', tg, count, 60000);
          if (m.delivered < m.sent * 0.9) throw new Error(`${name}: delivered ${m.delivered} of ${m.sent}`);
          round[name] = m.cpuNs / m.sent;
        } finally {
          await unload();
        }
      }
      const line = Object.entries(round).map(([k, v]) => {
        (ns[k] ??= []).push(v);
        const ratio = v / (round.none as number);
        (ratios[k] ??= []).push(ratio);
        return `${k} ${v.toFixed(0)}ns ${ratio.toFixed(3)}x`;
      });
      console.log(`round ${r + 1}/${ROUNDS} (load ${la0} -> ${loadavg().map((x) => x.toFixed(2)).join(' ')}): ${line.join(', ')}`);
    }
    console.log('\nconfig        median ratio (min-max)   median ns/frame');
    for (const k of Object.keys(CONFIGS)) {
      const rs = ratios[k] as number[];
      console.log(`${k.padEnd(13)} ${med(rs).toFixed(3)} (${Math.min(...rs).toFixed(2)}-${Math.max(...rs).toFixed(2)})   ${med(ns[k] as number[]).toFixed(0)}`);
    }
    // paired: p4+p6 vs p4 in the same round
    const pair = (ratios['nft(p4+p6)'] as number[]).map((x, i) => x / (ratios['nft(p4)'] as number[])[i]!);
    console.log(`p4+p6 / p4 per round: median ${med(pair).toFixed(3)} (${pair.map((x) => x.toFixed(2)).join(' ')})`);
  } finally {
    await host.destroy();
    await runCleanups();
    rmSync(work, { recursive: true, force: true });
  }
}
main().catch(async (e) => {
  console.error(e);
  await runCleanups();
  process.exit(1);
});
