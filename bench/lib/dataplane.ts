// CPU cost per frame through the bridge, vm0 -> peer, with N protected ports,
// on two paths into the host:
//  - veth: trafgen in vm0's namespace writes frames into a veth whose host end
//    is the bridge port (the TX ring: skbs whose linear part is the Ethernet
//    header only);
//  - tap: a real tap device as the bridge port, fed by bench/tap-writer.c the
//    way QEMU's user-space virtio-net backend feeds it (non-blocking writes
//    into /dev/net/tun; tun builds each frame in a page fragment and runs an
//    XDP program on it natively, before an skb exists).
//
// Each measurement sends a bounded number of identical 60-byte UDP/IPv4
// frames and takes the CPU time of the sender: trafgen's user + system time
// (bash `times`), or the writer thread's CPU time over its write loop
// (CLOCK_THREAD_CPUTIME_ID). With this kernel's tick-free accounting of task
// runtime, that includes the softirq work the frame's path does in the
// sender's context (veth or tun -> bridge -> filter -> veth -> peer); the
// runtime of the ksoftirqd threads (work deferred out of it) is added.
// Dividing by the frames sent gives ns per frame; every figure is also
// divided by the no-filter figure of the same round and path.
//
// Configurations: none (the physical limit here; br_netfilter on, the
// default), none with br_netfilter off (veth), a pass-all and a drop-all
// program on vnet0's from-VM hook for each mechanism (tc clsact, tcx, XDP:
// the cost of having the hook; the floor for dropping a frame there), and per
// N: libvirt's ebtables rules, nwf-fast nft, nwf-fast eBPF with each hook
// (tc, the default, at every N; tcx and xdp at the largest N).
import { join } from 'node:path';
import type { EbtablesTemplate } from './ebtables.js';
import { loadEbpf, loadEbtables, loadNft, loadRef, sendTraffic, setBrNetfilter, writeTrafgenConfigs, type BenchHost, type DpPath, type RefHook, type Traffic, type Unload } from './host.js';
import { bindingTexts, compileNft, parseBindings, resolveAll } from './policy.js';
import { log, stat, type Stat } from './util.js';

export type { DpPath };

export type DpConfig =
  | 'none'
  | 'none-brnf-off'
  | 'tc-pass'
  | 'tcx-pass'
  | 'xdp-pass'
  | 'tc-drop'
  | 'tcx-drop'
  | 'xdp-drop'
  | 'libvirt-ebtables'
  | 'nft'
  | 'nft-noopt'
  | 'ebpf-tc'
  | 'ebpf-tcx'
  | 'ebpf-xdp';

export const DP_LABELS: Record<DpConfig, string> = {
  none: 'no filter (br_netfilter on)',
  'none-brnf-off': 'no filter, br_netfilter off',
  'tc-pass': 'tc pass-all program on the tap (clsact)',
  'tcx-pass': 'tcx pass-all program on the tap',
  'xdp-pass': 'XDP pass-all program on the tap',
  'tc-drop': 'tc drop-all program on the tap (tc floor)',
  'tcx-drop': 'tcx drop-all program on the tap (tcx floor)',
  'xdp-drop': 'XDP drop-all program on the tap (XDP floor)',
  'libvirt-ebtables': "libvirt's ebtables rules",
  nft: 'nwf-fast nft',
  'nft-noopt': 'nwf-fast nft (no optimizer)',
  'ebpf-tc': 'nwf-fast eBPF, --bpf-hook tc (auto)',
  'ebpf-tcx': 'nwf-fast eBPF, --bpf-hook tcx',
  'ebpf-xdp': 'nwf-fast eBPF, --bpf-hook xdp',
};

export const PATH_LABELS: Record<DpPath, string> = {
  veth: 'veth (trafgen in the VM namespace)',
  tap: 'tap (written by tap-writer, as QEMU does)',
};

/** The drop-all floor each configuration's spoofed frames are compared with: the same hook's, tc's for the rest. */
export function floorOf(config: DpConfig): DpConfig {
  return config === 'ebpf-tcx' ? 'tcx-drop' : config === 'ebpf-xdp' ? 'xdp-drop' : 'tc-drop';
}

export interface DpSample {
  path: DpPath;
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
  /** ns per frame / the same round's no-filter ns per frame of the same traffic and path. */
  ratio?: number;
  /** Spoofed traffic: ns per frame / the same round's drop-all floor of the same hook (floorOf). */
  ratioFloor?: number;
  /** Spoofed traffic: ns per frame / the same round's tc drop-all floor. */
  ratioTcFloor?: number;
}

export interface DpCell {
  path: DpPath;
  config: DpConfig;
  n: number;
  traffic: Traffic;
  nsPerFrame: Stat;
  ratio: Stat;
  ratioFloor?: Stat;
  ratioTcFloor?: Stat;
  deliveredFraction: Stat;
  mpps: Stat;
  machineNsPerFrame: Stat;
}

export interface DpResult {
  rounds: number;
  ns: number[];
  paths: DpPath[];
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
  /** Quick run: leave out what takes long to set up (eBPF with tcx links). */
  quick?: boolean;
}

interface Setup {
  path: DpPath;
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

const HOOKS: readonly RefHook[] = ['tc', 'tcx', 'xdp'];

/**
 * What each path measures (see the module comment). nwf-fast eBPF with tcx
 * links runs on the tap path only and not in quick runs: attaching and
 * detaching 2000 tcx links takes about a minute (each waits for an RCU grace
 * period).
 */
function setupsOf(path: DpPath, ns: readonly number[], libvirt: boolean, quick: boolean): Setup[] {
  const nMax = Math.max(...ns);
  const s: Setup[] = [{ path, config: 'none', n: 0, traffic: ['valid', 'spoof'] }];
  if (path === 'veth') s.push({ path, config: 'none-brnf-off', n: 0, traffic: ['valid'] });
  for (const h of HOOKS) s.push({ path, config: `${h}-pass`, n: 0, traffic: ['valid'] }, { path, config: `${h}-drop`, n: 0, traffic: ['spoof'] });
  for (const n of path === 'veth' ? ns : [nMax]) {
    const both: Traffic[] = ['valid', 'spoof'];
    if (libvirt) s.push({ path, config: 'libvirt-ebtables', n, traffic: both });
    s.push({ path, config: 'nft', n, traffic: both }, { path, config: 'nft-noopt', n, traffic: both }, { path, config: 'ebpf-tc', n, traffic: both });
    if (n === nMax) s.push({ path, config: 'ebpf-xdp', n, traffic: both });
    if (n === nMax && path === 'tap' && !quick) s.push({ path, config: 'ebpf-tcx', n, traffic: both });
  }
  return s;
}

export async function dataplanePhase(hosts: Partial<Record<DpPath, BenchHost>>, o: DataplaneOptions): Promise<DpResult> {
  const paths = (['veth', 'tap'] as const).filter((p) => hosts[p]);
  const trafgen = new Map(paths.map((p) => [p, writeTrafgenConfigs(hosts[p] as BenchHost)]));
  const samples: DpSample[] = [];
  const setupTimes: Record<string, number[]> = {};
  const ppsEstimate = new Map<string, number>();
  const nftJson = new Map<number, string>();
  const nftJsonNoOpt = new Map<number, string>();
  const irs = new Map<number, ReturnType<typeof resolveAll>>();
  for (const n of o.ns) {
    nftJson.set(n, compileNft(bindingTexts(n)));
    nftJsonNoOpt.set(n, compileNft(bindingTexts(n), { optimize: false }));
    irs.set(n, resolveAll(parseBindings(bindingTexts(n))));
  }
  const setups = paths.flatMap((p) => setupsOf(p, o.ns, o.template !== undefined, o.quick === true));

  const load = async (s: Setup): Promise<Unload> => {
    const host = hosts[s.path] as BenchHost;
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
      case 'tcx-pass':
      case 'xdp-pass':
      case 'tc-drop':
      case 'tcx-drop':
      case 'xdp-drop': {
        const [mech, which] = s.config.split('-') as [RefHook, 'pass' | 'drop'];
        unload = (await loadRef(host, o.refObject, which, mech)).unload;
        break;
      }
      case 'libvirt-ebtables':
        unload = (await loadEbtables(host, o.template as EbtablesTemplate, s.n)).unload;
        break;
      case 'nft':
        unload = loadNft(host, nftJson.get(s.n) as string).unload;
        break;
      case 'nft-noopt':
        unload = loadNft(host, nftJsonNoOpt.get(s.n) as string).unload;
        break;
      case 'ebpf-tc':
      case 'ebpf-tcx':
      case 'ebpf-xdp': {
        const hook = s.config.slice('ebpf-'.length) as RefHook;
        const dirs = { outDir: join(o.workDir, `dp-bpf-${s.path}-${s.n}`), cacheDir: join(o.workDir, 'bpf-cache') };
        unload = (await loadEbpf(host.hostNs, irs.get(s.n) as ReturnType<typeof resolveAll>, dirs, hook)).unload;
        break;
      }
    }
    const k = `${s.path}:${s.config}@${s.n}`;
    (setupTimes[k] ??= []).push(performance.now() - t0);
    return unload;
  };

  for (let r = 0; r < o.rounds; r++) {
    const order = shuffle(setups, r + 1);
    const roundSamples: DpSample[] = [];
    for (const s of order) {
      const host = hosts[s.path] as BenchHost;
      const unload = await load(s);
      try {
        for (const traffic of s.traffic) {
          const key = `${s.path}|${s.config}|${s.n}|${traffic}`;
          // Warm-up (and, the first time, calibration of the frame rate).
          const warm = await sendTraffic(host, traffic, trafgen.get(s.path) as Record<Traffic, string>, ppsEstimate.has(key) ? 5_000 : 20_000, 60_000);
          if (!ppsEstimate.has(key)) ppsEstimate.set(key, warm.sent / Math.max(1e-3, warm.cpuNs / 1e9));
          const pps = ppsEstimate.get(key) as number;
          const count = Math.round(Math.min(8_000_000, Math.max(20_000, pps * o.targetSeconds)));
          const expectMs = (count / pps) * 1000;
          const m = await sendTraffic(host, traffic, trafgen.get(s.path) as Record<Traffic, string>, count, Math.max(20_000, expectMs * 5 + 5_000));
          ppsEstimate.set(key, m.sent / Math.max(1e-3, m.cpuNs / 1e9));
          roundSamples.push({
            path: s.path,
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
          });
        }
      } finally {
        await unload();
      }
    }
    // Ratios to this round's references on the same path.
    const ref = (path: DpPath, config: DpConfig, traffic: Traffic): number | undefined =>
      roundSamples.find((x) => x.path === path && x.config === config && x.traffic === traffic)?.nsPerFrame;
    for (const x of roundSamples) {
      const none = ref(x.path, 'none', x.traffic);
      if (none) x.ratio = x.nsPerFrame / none;
      if (x.traffic !== 'spoof') continue;
      const floor = ref(x.path, floorOf(x.config), 'spoof');
      const tcFloor = ref(x.path, 'tc-drop', 'spoof');
      if (floor) x.ratioFloor = x.nsPerFrame / floor;
      if (tcFloor) x.ratioTcFloor = x.nsPerFrame / tcFloor;
    }
    samples.push(...roundSamples);
    const nMax = Math.max(...o.ns);
    const brief = roundSamples
      .filter((x) => x.n === 0 || x.n === nMax)
      .map((x) => `${x.path}:${x.config}${x.n ? `@${x.n}` : ''}/${x.traffic} ${x.nsPerFrame.toFixed(0)}ns${x.ratio ? ` ${x.ratio.toFixed(2)}x` : ''}`)
      .join(', ');
    log(`dataplane round ${r + 1}/${o.rounds}: ${brief}`);
  }

  const cells: DpCell[] = [];
  for (const s of setups) {
    for (const traffic of s.traffic) {
      const ss = samples.filter((x) => x.path === s.path && x.config === s.config && x.n === s.n && x.traffic === traffic);
      cells.push({
        path: s.path,
        config: s.config,
        n: s.n,
        traffic,
        nsPerFrame: stat(ss.map((x) => x.nsPerFrame)),
        ratio: stat(ss.map((x) => x.ratio ?? Number.NaN)),
        ...(traffic === 'spoof' ? { ratioFloor: stat(ss.map((x) => x.ratioFloor ?? Number.NaN)), ratioTcFloor: stat(ss.map((x) => x.ratioTcFloor ?? Number.NaN)) } : {}),
        deliveredFraction: stat(ss.map((x) => x.delivered / Math.max(1, x.sent))),
        mpps: stat(ss.map((x) => x.sent / (x.cpuNs / 1e9) / 1e6)),
        machineNsPerFrame: stat(ss.map((x) => x.machineNs / Math.max(1, x.sent))),
      });
    }
  }
  return {
    rounds: o.rounds,
    ns: [...o.ns],
    paths: [...paths],
    cells,
    samples,
    targetSeconds: o.targetSeconds,
    ebtablesRulesPerPort: o.template ? o.template.pre.length + o.template.post.length + o.template.rules.length : 0,
    ...(o.template ? { ebtablesSource: o.template.source } : {}),
    setupMs: Object.fromEntries(Object.entries(setupTimes).map(([k, v]) => [k, stat(v)])),
  };
}
