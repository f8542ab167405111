// CPU cost per frame through the bridge, vm0 -> peer, with N protected ports.
//
// Each measurement sends a bounded number of identical 60-byte UDP/IPv4
// frames with trafgen from vm0 and takes the CPU time that the sending
// process consumed (bash `times`: trafgen's user + system time, which with
// this kernel's tick-free accounting of task runtime includes the softirq work
// that veth -> bridge -> filter -> veth -> peer does in the sender's context)
// plus the runtime of the ksoftirqd threads (softirq work deferred out of
// it). Dividing by the frames sent gives ns per frame; every figure is also
// divided by the no-filter figure of the same round.
//
// Configurations: none (the physical limit here; br_netfilter on, the
// default), none with br_netfilter off, a pass-all tc program on vnet0
// (plain clsact eBPF), a drop-all tc program on vnet0 (the floor for dropping
// a frame: produce it and drop it at once at the tap), and per N: libvirt's
// ebtables rules, nwf-fast nft, nwf-fast eBPF.
import { join } from 'node:path';
import type { EbtablesTemplate } from './ebtables.js';
import { flood, loadEbpf, loadEbtables, loadNft, loadRef, setBrNetfilter, writeTrafgenConfigs, type BenchHost, type Traffic, type Unload } from './host.js';
import { bindingTexts, compileNft, parseBindings, resolveAll } from './policy.js';
import { log, stat, type Stat } from './util.js';

export type DpConfig = 'none' | 'none-brnf-off' | 'tc-pass' | 'tc-drop' | 'libvirt-ebtables' | 'nft' | 'ebpf';

export const DP_LABELS: Record<DpConfig, string> = {
  none: 'no filter (br_netfilter on)',
  'none-brnf-off': 'no filter, br_netfilter off',
  'tc-pass': 'tc pass-all program on the tap',
  'tc-drop': 'tc drop-all program on the tap (floor)',
  'libvirt-ebtables': "libvirt's ebtables rules",
  nft: 'nwf-fast nft',
  ebpf: 'nwf-fast eBPF',
};

export interface DpSample {
  round: number;
  config: DpConfig;
  /** Protected ports (0 for the references). */
  n: number;
  traffic: Traffic;
  sent: number;
  delivered: number;
  cpuNs: number;
  machineNs: number;
  wallMs: number;
  nsPerFrame: number;
  /** ns per frame / the same round's no-filter ns per frame of the same traffic. */
  ratio?: number;
  /** Spoofed traffic: ns per frame / the same round's drop-all floor. */
  ratioFloor?: number;
}

export interface DpCell {
  config: DpConfig;
  n: number;
  traffic: Traffic;
  nsPerFrame: Stat;
  ratio: Stat;
  ratioFloor?: Stat;
  deliveredFraction: Stat;
  mpps: Stat;
  machineNsPerFrame: Stat;
}

export interface DpResult {
  rounds: number;
  ns: number[];
  cells: DpCell[];
  samples: DpSample[];
  /** Seconds of traffic per measurement aimed at. */
  targetSeconds: number;
  ebtablesRulesPerPort: number;
  ebtablesSource?: string;
  setupMs: Record<string, Stat>;
}

export interface DataplaneOptions {
  ns: readonly number[];
  rounds: number;
  targetSeconds: number;
  template?: EbtablesTemplate;
  refObject: string;
  workDir: string;
}

interface Setup {
  config: DpConfig;
  n: number;
  traffic: Traffic[];
}

/** Deterministic shuffle (xorshift), so rounds interleave configurations differently but reproducibly. */
function shuffle<T>(xs: T[], seed: number): T[] {
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

export async function dataplanePhase(host: BenchHost, o: DataplaneOptions): Promise<DpResult> {
  const cfg = writeTrafgenConfigs(host);
  const samples: DpSample[] = [];
  const setupTimes: Record<string, number[]> = {};
  const ppsEstimate = new Map<string, number>();
  const nftJson = new Map<number, string>();
  const irs = new Map<number, ReturnType<typeof resolveAll>>();
  for (const n of o.ns) {
    nftJson.set(n, compileNft(bindingTexts(n)));
    irs.set(n, resolveAll(parseBindings(bindingTexts(n))));
  }
  const setups: Setup[] = [
    { config: 'none', n: 0, traffic: ['valid', 'spoof'] },
    { config: 'none-brnf-off', n: 0, traffic: ['valid'] },
    { config: 'tc-pass', n: 0, traffic: ['valid'] },
    { config: 'tc-drop', n: 0, traffic: ['spoof'] },
  ];
  for (const n of o.ns) {
    if (o.template) setups.push({ config: 'libvirt-ebtables', n, traffic: ['valid', 'spoof'] });
    setups.push({ config: 'nft', n, traffic: ['valid', 'spoof'] }, { config: 'ebpf', n, traffic: ['valid', 'spoof'] });
  }

  const load = async (s: Setup): Promise<Unload> => {
    const t0 = performance.now();
    let unload: Unload;
    switch (s.config) {
      case 'none':
        unload = async () => {};
        break;
      case 'none-brnf-off':
        await setBrNetfilter(host, false);
        unload = () => setBrNetfilter(host, true);
        break;
      case 'tc-pass':
        unload = (await loadRef(host, o.refObject, 'pass')).unload;
        break;
      case 'tc-drop':
        unload = (await loadRef(host, o.refObject, 'drop')).unload;
        break;
      case 'libvirt-ebtables':
        unload = (await loadEbtables(host, o.template as EbtablesTemplate, s.n)).unload;
        break;
      case 'nft':
        unload = loadNft(host, nftJson.get(s.n) as string).unload;
        break;
      case 'ebpf':
        unload = (await loadEbpf(host.hostNs, irs.get(s.n) as ReturnType<typeof resolveAll>, { outDir: join(o.workDir, `dp-bpf-${s.n}`), cacheDir: join(o.workDir, 'bpf-cache') })).unload;
        break;
    }
    const k = `${s.config}@${s.n}`;
    (setupTimes[k] ??= []).push(performance.now() - t0);
    return unload;
  };

  for (let r = 0; r < o.rounds; r++) {
    const order = shuffle(setups, r + 1);
    const roundSamples: DpSample[] = [];
    for (const s of order) {
      const unload = await load(s);
      try {
        for (const traffic of s.traffic) {
          const key = `${s.config}|${s.n}|${traffic}`;
          // Warm-up (and, the first time, calibration of the frame rate).
          const warm = await flood(host, cfg[traffic], ppsEstimate.has(key) ? 5_000 : 20_000, 60_000);
          if (!ppsEstimate.has(key)) ppsEstimate.set(key, warm.sent / Math.max(1e-3, warm.cpuNs / 1e9));
          const pps = ppsEstimate.get(key) as number;
          const count = Math.round(Math.min(8_000_000, Math.max(20_000, pps * o.targetSeconds)));
          const expectMs = (count / pps) * 1000;
          const m = await flood(host, cfg[traffic], count, Math.max(20_000, expectMs * 5 + 5_000));
          ppsEstimate.set(key, m.sent / Math.max(1e-3, m.cpuNs / 1e9));
          const sample: DpSample = {
            round: r,
            config: s.config,
            n: s.n,
            traffic,
            sent: m.sent,
            delivered: m.delivered,
            cpuNs: m.cpuNs,
            machineNs: m.machineNs,
            wallMs: m.wallMs,
            nsPerFrame: m.cpuNs / Math.max(1, m.sent),
          };
          roundSamples.push(sample);
        }
      } finally {
        await unload();
      }
    }
    // Ratios to this round's references.
    const ref = (config: DpConfig, traffic: Traffic): number | undefined => roundSamples.find((x) => x.config === config && x.traffic === traffic)?.nsPerFrame;
    for (const x of roundSamples) {
      const none = ref('none', x.traffic);
      if (none) x.ratio = x.nsPerFrame / none;
      const floor = ref('tc-drop', 'spoof');
      if (x.traffic === 'spoof' && floor) x.ratioFloor = x.nsPerFrame / floor;
    }
    samples.push(...roundSamples);
    const brief = roundSamples
      .filter((x) => x.n === 0 || x.n === Math.max(...o.ns))
      .map((x) => `${x.config}${x.n ? `@${x.n}` : ''}/${x.traffic} ${x.nsPerFrame.toFixed(0)}ns${x.ratio ? ` ${x.ratio.toFixed(2)}x` : ''}`)
      .join(', ');
    log(`dataplane round ${r + 1}/${o.rounds}: ${brief}`);
  }

  const cells: DpCell[] = [];
  for (const s of setups) {
    for (const traffic of s.traffic) {
      const ss = samples.filter((x) => x.config === s.config && x.n === s.n && x.traffic === traffic);
      cells.push({
        config: s.config,
        n: s.n,
        traffic,
        nsPerFrame: stat(ss.map((x) => x.nsPerFrame)),
        ratio: stat(ss.map((x) => x.ratio ?? Number.NaN)),
        ...(traffic === 'spoof' ? { ratioFloor: stat(ss.map((x) => x.ratioFloor ?? Number.NaN)) } : {}),
        deliveredFraction: stat(ss.map((x) => x.delivered / Math.max(1, x.sent))),
        mpps: stat(ss.map((x) => x.sent / (x.cpuNs / 1e9) / 1e6)),
        machineNsPerFrame: stat(ss.map((x) => x.machineNs / Math.max(1, x.sent))),
      });
    }
  }
  return {
    rounds: o.rounds,
    ns: [...o.ns],
    cells,
    samples,
    targetSeconds: o.targetSeconds,
    ebtablesRulesPerPort: o.template ? o.template.pre.length + o.template.post.length + o.template.rules.length : 0,
    ...(o.template ? { ebtablesSource: o.template.source } : {}),
    setupMs: Object.fromEntries(Object.entries(setupTimes).map(([k, v]) => [k, stat(v)])),
  };
}
