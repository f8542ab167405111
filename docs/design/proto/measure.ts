// CPU per valid frame through each variant, with the benchmark's method
// (bench/lib/dataplane.ts, bench/lib/host.ts): the benchmark's host with N
// clean-traffic ports (default 1000), trafgen sending a bounded number of
// identical 60-byte frames, the CPU time of the sender (which runs the whole
// bridge path in its softirq context) plus ksoftirqd, divided by the frames
// sent; every figure also divided by the no-filter figure of the same round
// and the same frame kind. Configurations interleaved in an order shuffled per
// round; medians with min and max over rounds.
//
// Unlike the benchmark, every variant is loaded once, in its own table
// (bridge opt_<variant>), and all but the one measured are dormant (`flags
// dormant`: their hooks unregistered); switching is one small transaction, so
// many short interleaved rounds fit where the benchmark has few long ones: the
// defence against a shared, busy machine. Before the rounds, a spoofed flood
// through each exact variant must be dropped entirely (the table switched on
// is the one enforcing).
//
// Steadier lenses were tried and are not available here: this kernel has no
// function tracer (fentry/fexit on nft_do_chain is refused with EPERM, there is
// no /sys/kernel/tracing) and the VM exposes no PMU (perf: cycles and
// instructions "not supported"). The exact per-frame work (rules,
// expressions, lookups) comes from walk.ts instead.
//
// Four frame kinds: IPv4 and ARP from the VM (vm0 -> peer: the benchmark's
// "valid frame" is IPv4 from the VM) and to the VM (peer -> vm0).
//
//   npx tsx docs/design/proto/measure.ts [--ports N] [--rounds R] [--seconds S] [--variants a,b] [--kinds k1,k2]
//   npx tsx docs/design/proto/measure.ts --report results/measure-1000.json[,more.json]   (the report again, runs pooled)
//
// Root; everything in namespaces it creates and removes, every flood bounded
// in count and time. Writes results/measure-<N>.md and .json.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createBenchHost, flood, type BenchHost } from '../../../bench/lib/host.js';
import { log, onCleanup, stat, type Stat } from '../../../bench/lib/util.js';
import { fromVm, KIND_LABELS, KINDS, writeTrafgenConfigs, type Kind } from './frames.js';
import { benchPorts, checkRunning, mdTable, nftText, option, runScript, writeResult } from './lab.js';
import { trafgenConfigOf } from './frames.js';
import * as F from '../../../src/lab/frames/build.js';
import { PEER_IP, PEER_MAC, portMac, SPOOF_IP } from '../../../bench/lib/policy.js';
import { writeFileSync } from 'node:fs';
import { familyOf, renameTable, VARIANTS, type Variant } from './variants.js';

interface Sample {
  round: number;
  config: string;
  kind: Kind;
  sent: number;
  delivered: number;
  nsPerFrame: number;
  ratio?: number;
}

/** Deterministic shuffle per round (xorshift). */
function shuffle<T>(xs: readonly T[], seed: number): T[] {
  let s = seed * 2654435761 || 1;
  const rnd = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const cell = (s: Stat, f: (x: number) => string): string => `${f(s.median)} (${f(s.min)}-${f(s.max)})`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const n = Number(option(argv, 'ports') ?? 1000);
  const rounds = Number(option(argv, 'rounds') ?? 15);
  const seconds = Number(option(argv, 'seconds') ?? 0.4);
  const names = option(argv, 'variants')?.split(',');
  const kinds = (option(argv, 'kinds')?.split(',') as Kind[] | undefined) ?? [...KINDS];
  const variants: (Variant | undefined)[] = [undefined, ...VARIANTS.filter((v) => !names || names.includes(v.name))];
  const label = (v: Variant | undefined): string => v?.name ?? 'none';
  const { ports, ir } = benchPorts(n);
  const table = (v: Variant): string => `${families.get(v.name)} opt_${v.name.replace(/-/g, '_')}`;
  const families = new Map<string, string>();
  const workDir = mkdtempSync(join(tmpdir(), 'nwf-measure-'));
  onCleanup('measure work dir', () => rmSync(workDir, { recursive: true, force: true }));
  const startLoad = loadavg();
  log(`building the benchmark host with ${n} ports (load average ${startLoad})`);
  const host = await createBenchHost(n, workDir);
  onCleanup('bench host', () => host.destroy());
  const real = variants.filter((v): v is Variant => !!v);
  for (const v of real) {
    checkRunning();
    const built = v.build({ ports, ir });
    families.set(v.name, familyOf(built));
    const r = renameTable(built, table(v).split(' ')[1] as string);
    await nftText(host.hostNs, r.body, r.format === 'json');
    await nftText(host.hostNs, `add table ${table(v)} { flags dormant; }\n`, false);
  }
  log(`loaded ${real.length} variants, dormant`);
  let active: Variant | undefined;
  const activate = async (v: Variant | undefined): Promise<void> => {
    // two transactions: the kernel refuses to wake one table and put another to sleep in one
    if (active) await nftText(host.hostNs, `add table ${table(active)} { flags dormant; }\n`, false);
    active = undefined;
    if (v) await nftText(host.hostNs, `add table ${table(v)}\n`, false);
    active = v;
  };
  const cfg = writeTrafgenConfigs(workDir);
  // Frames to the VM are sent by the peer and counted at vm0.
  const reversed: BenchHost = { ...host, vmNs: host.peerNs, peerNs: host.vmNs };
  // The switched-on table enforces: a spoofed flood (vm0's MAC, another source IP) must not get through.
  const spoofCfg = join(workDir, 'trafgen-spoof.cfg');
  writeFileSync(spoofCfg, trafgenConfigOf(F.udpFrame({ srcMac: portMac(0), dstMac: PEER_MAC, srcIp: SPOOF_IP, dstIp: PEER_IP, sport: 1024, dport: 9, payload: new Uint8Array(18) })));
  const enforced: string[] = [];
  for (const v of variants) {
    await activate(v);
    const m = await flood(host, spoofCfg, 2000, 30_000);
    enforced.push(`${label(v)} ${m.delivered}/${m.sent}`);
    if (v?.exact && m.delivered > 0) throw new Error(`variant ${v.name}: ${m.delivered} of ${m.sent} spoofed frames delivered: the switched-on table does not enforce`);
    if (!v && m.delivered < m.sent * 0.99) throw new Error(`no filter: only ${m.delivered} of ${m.sent} frames delivered`);
  }
  log(`spoofed frames delivered (exact variants must show 0): ${enforced.join(', ')}`);
  const pps = new Map<string, number>();
  const samples: Sample[] = [];
  const loads: string[] = [];
  for (let r = 0; r < rounds; r++) {
    const roundSamples: Sample[] = [];
    for (const v of shuffle(variants, r + 1)) {
      checkRunning();
      await activate(v);
      for (const kind of kinds) {
        const h = fromVm(kind) ? host : reversed;
        const key = `${label(v)}|${kind}`;
        const warm = await flood(h, cfg[kind], pps.has(key) ? 5_000 : 20_000, 60_000);
        if (!pps.has(key)) pps.set(key, warm.sent / Math.max(1e-3, warm.cpuNs / 1e9));
        const rate = pps.get(key) as number;
        const count = Math.round(Math.min(8_000_000, Math.max(20_000, rate * seconds)));
        const m = await flood(h, cfg[kind], count, Math.max(20_000, (count / rate) * 5000 + 5_000));
        pps.set(key, m.sent / Math.max(1e-3, m.cpuNs / 1e9));
        const sample: Sample = { round: r, config: label(v), kind, sent: m.sent, delivered: m.delivered, nsPerFrame: m.cpuNs / Math.max(1, m.sent) };
        roundSamples.push(sample);
      }
    }
    for (const s of roundSamples) {
      const none = roundSamples.find((x) => x.config === 'none' && x.kind === s.kind)?.nsPerFrame;
      if (none) s.ratio = s.nsPerFrame / none;
    }
    samples.push(...roundSamples);
    loads.push(loadavg());
    log(`round ${r + 1}/${rounds} (load average ${loads[loads.length - 1]}): ${roundSamples.filter((x) => x.kind === kinds[0]).map((x) => `${x.config} ${x.ratio?.toFixed(2)}x`).join(', ')}`);
  }

  const data: MeasureData = { n, rounds, seconds, startLoad, loads, enforced, configs: variants.map(label), kinds, samples };
  writeResult(`measure-${n}.json`, `${JSON.stringify(data, null, 1)}\n`);
  const md = render([data], `npx tsx docs/design/proto/measure.ts --ports ${n} --rounds ${rounds} --seconds ${seconds}`);
  console.log(md);
  log(`wrote ${writeResult(`measure-${n}.md`, md)}`);
}

export interface MeasureData {
  n: number;
  rounds: number;
  seconds: number;
  startLoad: string;
  loads: string[];
  enforced?: string[];
  configs?: string[];
  kinds?: Kind[];
  samples: Sample[];
}

/**
 * Tukey's median polish of log(ns per frame) over rounds x configurations, for
 * one frame kind: log ns = overall + round effect + configuration effect +
 * residual. The round effect takes out what moves every configuration of a
 * round together (the load of the machine while the round ran); the ratio of
 * configuration c to no filter is exp(effect c - effect none), and its spread
 * is that of exp(residual + effect c - effect none) over rounds.
 */
function polish(samples: readonly Sample[], configs: readonly string[]): Map<string, { ratio: number; q1: number; q3: number }> {
  const rounds = [...new Set(samples.map((x) => x.round))];
  const cell = new Map(samples.map((x) => [`${x.round}|${x.config}`, Math.log(x.nsPerFrame)]));
  const row = new Map(rounds.map((r) => [r, 0]));
  const col = new Map(configs.map((c) => [c, 0]));
  const resid = (r: number, c: string): number | undefined => {
    const v = cell.get(`${r}|${c}`);
    return v === undefined ? undefined : v - (row.get(r) as number) - (col.get(c) as number);
  };
  const med = (xs: number[]): number => stat(xs).median;
  for (let it = 0; it < 20; it++) {
    for (const r of rounds) row.set(r, (row.get(r) as number) + med(configs.map((c) => resid(r, c)).filter((x): x is number => x !== undefined)));
    for (const c of configs) col.set(c, (col.get(c) as number) + med(rounds.map((r) => resid(r, c)).filter((x): x is number => x !== undefined)));
  }
  const out = new Map<string, { ratio: number; q1: number; q3: number }>();
  const base = col.get('none') ?? 0;
  for (const c of configs) {
    const per = rounds
      .map((r) => resid(r, c))
      .filter((x): x is number => x !== undefined)
      .map((e) => Math.exp(e + (col.get(c) as number) - base))
      .sort((a, b) => a - b);
    const q = (f: number): number => per[Math.min(per.length - 1, Math.floor(f * (per.length - 1)))] ?? Number.NaN;
    out.set(c, { ratio: Math.exp((col.get(c) as number) - base), q1: q(0.25), q3: q(0.75) });
  }
  return out;
}

/**
 * The report of one or more runs (their rounds pooled). Two estimators, both
 * against no filter: the median over rounds of each round's ratio (the
 * benchmark's), with its min-max; and the median polish above, with its
 * interquartile range. They differ when the machine is busy.
 */
function render(runs: readonly MeasureData[], command: string): string {
  const first = runs[0] as MeasureData;
  const samples = runs.flatMap((d, i) => d.samples.map((x) => ({ ...x, round: x.round + i * 1000 })));
  const seen = new Set(samples.map((x) => x.config));
  const configs = ['none', ...VARIANTS.map((v) => v.name)].filter((c) => seen.has(c));
  const kinds = KINDS.filter((k) => samples.some((x) => x.kind === k));
  const rounds = new Set(samples.map((x) => x.round)).size;
  const rows: string[][] = [];
  const polished = new Map(kinds.map((k) => [k, polish(samples.filter((x) => x.kind === k), configs)]));
  for (const c of configs) {
    const v = VARIANTS.find((x) => x.name === c);
    const row = [c, v ? (v.exact ? 'yes' : 'no') : '-'];
    for (const kind of kinds) {
      const ss = samples.filter((x) => x.config === c && x.kind === kind);
      const ns = stat(ss.map((x) => x.nsPerFrame));
      const p = polished.get(kind)?.get(c);
      const ratio = stat(ss.map((x) => x.ratio ?? Number.NaN));
      const delivered = stat(ss.map((x) => x.delivered / Math.max(1, x.sent)));
      row.push(`${cell(ratio, f2)}<br>**${f2(p?.ratio ?? Number.NaN)}** (${f2(p?.q1 ?? Number.NaN)}-${f2(p?.q3 ?? Number.NaN)}), ${f0(ns.median)} ns${delivered.min < 0.99 ? ` (delivered ${(delivered.min * 100).toFixed(0)}%)` : ''}`);
    }
    rows.push(row);
  }
  const noise = kinds.map((k) => {
    const s = stat(samples.filter((x) => x.config === 'none' && x.kind === k).map((x) => x.nsPerFrame));
    return `${KIND_LABELS[k]}: no filter ${f0(s.min)}-${f0(s.max)} ns/frame over ${s.n} rounds (spread ${(((s.max - s.min) / s.median) * 100).toFixed(0)}% of the median)`;
  });
  return [
    `# CPU per valid frame, ${first.n} clean-traffic ports`,
    '',
    `Generated by \`${command}\` on ${new Date().toISOString()}${runs.length > 1 ? ` from ${runs.length} runs` : ''}: ${rounds} rounds of ${first.seconds} s of traffic per measurement.`,
    'Each cell: the median over rounds of the ratio to no filter of the same round and frame kind (min-max over rounds);',
    'below it, in bold, the ratio from a median polish of log(ns per frame) over rounds x configurations (the round effect, what moved',
    'every configuration of a round together, taken out), with its interquartile range over rounds; then the median ns per frame.',
    ...runs.map((d, i) => `Run ${i + 1}: load average at the start ${d.startLoad}; after each round: ${d.loads.join('; ')}.`),
    ...(first.enforced ? [`Spoofed frames delivered per configuration before the rounds (sent by vm0 with another source IP; every exact variant must show 0): ${first.enforced.join(', ')}.`] : []),
    '',
    mdTable(['variant', 'exact', ...kinds.map((k) => KIND_LABELS[k])], rows),
    '',
    'Variants:',
    '',
    ...VARIANTS.filter((v) => configs.includes(v.name)).map((v) => `- \`${v.name}\`: ${v.what}`),
    '',
    'Noise:',
    '',
    ...noise.map((x) => `- ${x}`),
    '',
  ].join('\n');
}

/** `--report a.json[,b.json]`: the report again from stored samples (several runs pooled), no measuring. */
function report(files: string): void {
  const runs = files.split(',').map((f) => JSON.parse(readFileSync(f, 'utf8')) as MeasureData);
  const md = render(runs, `npx tsx docs/design/proto/measure.ts --report ${files.split(',').map((f) => basename(f)).join(',')}`);
  console.log(md);
  console.log(`wrote ${writeResult(`measure-${runs[0]?.n}.md`, md)}`);
}

const reportFiles = option(process.argv.slice(2), 'report');
if (reportFiles) report(reportFiles);
else runScript('measure', main);
