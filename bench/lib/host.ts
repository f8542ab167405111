// The benchmark host: a namespace "KVM host" (bridge br0) with one sending VM
// on port vnet0, a peer (vpeer0) that receives, and dummy veths
// vnet1..vnet{N-1} as further bridge ports so that the rules of N protected
// ports exist. The dummies' far ends stay down, so those ports never carry
// traffic (the bridge does not flood to a port without carrier), and static
// FDB entries keep vm0 -> peer unicast from flooding at all.
//
// vnet0 is either a veth whose far end is vm0's eth0 in a namespace of its
// own, fed by trafgen there (path 'veth'), or a real tap device fed by
// bench/tap-writer.c, which writes frames into /dev/net/tun as QEMU does
// (path 'tap').
//
// Filters are put on and taken off the running host: libvirt's ebtables rules
// (ebtables-restore), nwf-fast nft (libnftables in-process), nwf-fast eBPF
// (one object per policy shape, attached as `nwf-fast load` attaches, with a
// chosen hook: tc, tcx or xdp), and reference programs on vnet0's from-VM
// hook (pass everything; drop everything = the floor for dropping a frame)
// for each mechanism.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { compileBpf, type BpfCompileResult } from '../../src/host/bpf-build.js';
import { detachTaps, unpinAll, type BpfHookChoice } from '../../src/host/bpf-apply.js';
import { attachPorts, hasTcx, linksPersist, planHooks } from '../../src/host/bpf/hook.js';
import { loadShape, type LoadedShape } from '../../src/host/bpf-load.js';
import { MAP_NAMES } from '../../src/backends/bpf/names.js';
import { attachTcx, attachXdp, BpfObject, ifIndex, tcAttach, tcHookCreate, tcHookDestroy, withNetns, type BpfLink } from '../../src/host/bpf/libbpf.js';
import * as F from '../../src/lab/frames/build.js';
import { runLibnftables } from '../../src/host/nft.js';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { replicate, type EbtablesTemplate } from './ebtables.js';
import { PEER_IP, PEER_MAC, portIp, portMac, portName, SPOOF_IP } from './policy.js';
import { cmd, dropCleanup, inNs, ksoftirqdPids, machineBusyMs, onCleanup, PREFIX, runtimeNs, sleep } from './util.js';

/** How vm0's frames enter the host: a veth fed by trafgen, or a real tap fed by bench/tap-writer.c. */
export type DpPath = 'veth' | 'tap';

export interface BenchHost {
  tb: Testbed;
  hostNs: string;
  /** Where vm0's frames are written: vm0's namespace (veth), or the host's (the tap writer). */
  vmNs: string;
  peerNs: string;
  /** Ports vnet0..vnet{ports-1} exist. */
  ports: number;
  path: DpPath;
  /** The process feeding the tap (path 'tap'). */
  writer?: TapWriter;
  workDir: string;
  destroy(): Promise<void>;
}

/**
 * Builds the host with `ports` protected-port candidates: vnet0 is vm0's port,
 * a veth to vm0's namespace, or with `tap` a tap device fed by the tap writer
 * (the compiled bench/tap-writer.c).
 */
export async function createBenchHost(ports: number, workDir: string, opts: { vmIpPrefix?: number; tap?: { writerBin: string } } = {}): Promise<BenchHost> {
  const tb = await createTestbed({
    prefix: PREFIX,
    vms: opts.tap ? [] : [{ name: 'vm0', tap: portName(0), mac: portMac(0), ipv4: [`${portIp(0)}/${opts.vmIpPrefix ?? 8}`] }],
    // The peer has no address: frames addressed to it are counted on arrival and dropped by its IP layer at once.
    peers: [{ name: 'peer', mac: PEER_MAC }],
  });
  const destroy = onCleanup(`testbed ${tb.id}`, () => tb.destroy());
  let writer: TapWriter | undefined;
  try {
    const lines: string[] = opts.tap ? [`tuntap add dev ${portName(0)} mode tap`, `link set ${portName(0)} master br0`, `link set ${portName(0)} up`] : [];
    for (let i = 1; i < ports; i++) {
      lines.push(`link add ${portName(i)} type veth peer name vd${i}`, `link set ${portName(i)} master br0`, `link set ${portName(i)} up`);
    }
    if (lines.length) await cmd(['ip', '-n', tb.hostNs, '-batch', '-'], { input: `${lines.join('\n')}\n`, timeoutMs: 300_000 });
    await cmd(['bridge', '-n', tb.hostNs, 'fdb', 'replace', PEER_MAC, 'dev', 'vpeer0', 'master', 'static']);
    await cmd(['bridge', '-n', tb.hostNs, 'fdb', 'replace', portMac(0), 'dev', portName(0), 'master', 'static']);
    if (opts.tap) writer = await startTapWriter(tb.hostNs, portName(0), opts.tap.writerBin);
  } catch (e) {
    await writer?.close();
    await destroy();
    throw e;
  }
  mkdirSync(workDir, { recursive: true });
  const w = writer;
  return {
    tb,
    hostNs: tb.hostNs,
    vmNs: opts.tap ? tb.hostNs : tb.guest('vm0').ns,
    peerNs: tb.guest('peer').ns,
    ports,
    path: opts.tap ? 'tap' : 'veth',
    ...(w ? { writer: w } : {}),
    workDir,
    destroy: async () => {
      await w?.close();
      await destroy();
    },
  };
}

// ---- the tap writer ---------------------------------------------------------------------------

/** bench/tap-writer.c, built with the host's C compiler (clang-19, which the eBPF build needs anyway). */
export async function buildTapWriter(workDir: string): Promise<string> {
  const out = join(workDir, 'tap-writer');
  await cmd(['clang-19', '-O2', '-Wall', '-Werror', join(import.meta.dirname, '..', 'tap-writer.c'), '-o', out], { timeoutMs: 120_000 });
  return out;
}

export interface TapWriter {
  /** Writes `frame` `count` times (at most maxMs); the writer's CPU time over its loop. */
  send(frame: Uint8Array, count: number, maxMs: number): Promise<{ sent: number; failed: number; cpuNs: number; wallNs: number }>;
  close(): Promise<void>;
}

/**
 * Starts the tap writer on `tap` in namespace `ns` (pinned to CPU0, like
 * trafgen -P 1) and waits until the tap is a forwarding bridge port (the
 * writer's attach raises the carrier).
 */
async function startTapWriter(ns: string, tap: string, bin: string): Promise<TapWriter> {
  const child = spawn('ip', ['netns', 'exec', ns, bin, tap, '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => void (stderr = (stderr + b.toString()).slice(-2000)));
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  createInterface({ input: child.stdout }).on('line', (l) => {
    lines.push(l);
    wake?.();
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
    wake?.();
  });
  const next = async (ms: number): Promise<string> => {
    const end = Date.now() + ms;
    while (!lines.length) {
      if (exited) throw new Error(`tap writer exited: ${stderr.trim()}`);
      if (Date.now() > end) throw new Error(`tap writer: no answer in ${ms} ms`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    return lines.shift() as string;
  };
  const kill = async (): Promise<void> => {
    if (exited) return;
    child.stdin.end('quit\n');
    for (let i = 0; i < 40 && !exited; i++) await sleep(50);
    if (!exited && child.pid) process.kill(child.pid, 'SIGKILL');
  };
  const undo = onCleanup(`tap writer ${child.pid}`, kill);
  const ready = await next(10_000);
  if (!ready.startsWith('ready')) throw new Error(`tap writer: ${ready}`);
  // bounded: the port forwards once the carrier is up (link watch may take about a second)
  for (let i = 0; i < 100; i++) {
    const r = await cmd(['bridge', '-n', ns, '-j', 'link', 'show', 'dev', tap], { check: false });
    if (/"state":"forwarding"/.test(r.stdout)) break;
    await sleep(50);
  }
  return {
    async send(frame, count, maxMs) {
      child.stdin.write(`send ${Math.floor(count)} ${Math.floor(maxMs)} ${Buffer.from(frame).toString('hex')}\n`);
      const a = (await next(maxMs + 10_000)).split(' ');
      if (a[0] !== 'ok') throw new Error(`tap writer: ${a.join(' ')}`);
      return { sent: Number(a[1]), failed: Number(a[2]), cpuNs: Number(a[3]), wallNs: Number(a[4]) };
    },
    close: undo,
  };
}

// ---- traffic ---------------------------------------------------------------------------------

export type Traffic = 'valid' | 'spoof';

function bytesOf(s: string, sep: string, radix: number): number[] {
  return s.split(sep).map((x) => parseInt(x, radix));
}

/** trafgen config: one 60-byte UDP/IPv4 frame vm0 -> peer; `spoof` has a source IP that is no VM's. */
export function trafgenConfig(kind: Traffic, srcIp = kind === 'valid' ? portIp(0) : SPOOF_IP): string {
  const hx = (b: number[]): string => b.map((x) => `0x${x.toString(16).padStart(2, '0')}`).join(', ');
  return [
    '{',
    `  ${hx(bytesOf(PEER_MAC, ':', 16))},`,
    `  ${hx(bytesOf(portMac(0), ':', 16))},`,
    '  0x08, 0x00,',
    // IPv4: version/IHL, TOS, total length 46, id, DF, TTL 64, UDP, checksum over bytes 14..33
    '  0x45, 0x00, const16(46), const16(1), 0x40, 0x00, 64, 17, csumip(14, 33),',
    `  ${bytesOf(srcIp, '.', 10).join(', ')},`,
    `  ${bytesOf(PEER_IP, '.', 10).join(', ')},`,
    // UDP 1024 -> 9 (discard), length 26, no checksum; 18 bytes of payload
    '  const16(1024), const16(9), const16(26), const16(0),',
    '  fill(0x00, 18)',
    '}',
    '',
  ].join('\n');
}

/** The frame of trafgenConfig as bytes, for the tap writer. */
export function trafficFrame(kind: Traffic): Uint8Array {
  return F.udpFrame({ srcMac: portMac(0), dstMac: PEER_MAC, srcIp: kind === 'valid' ? portIp(0) : SPOOF_IP, dstIp: PEER_IP, sport: 1024, dport: 9, payload: new Uint8Array(18) });
}

export function writeTrafgenConfigs(host: BenchHost): Record<Traffic, string> {
  const out = {} as Record<Traffic, string>;
  for (const kind of ['valid', 'spoof'] as const) {
    const f = join(host.workDir, `trafgen-${kind}.cfg`);
    writeFileSync(f, trafgenConfig(kind));
    out[kind] = f;
  }
  return out;
}

async function linkPackets(ns: string, dev: string): Promise<{ rx: number; tx: number }> {
  const r = await cmd(['ip', '-j', '-s', '-n', ns, 'link', 'show', 'dev', dev]);
  const j = JSON.parse(r.stdout) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[];
  const s = j[0]?.stats64;
  return { rx: s?.rx.packets ?? 0, tx: s?.tx.packets ?? 0 };
}

/** Runs argv in its own process group; past timeoutMs the whole group gets SIGINT, then SIGKILL. */
async function runGroup(argv: readonly string[], timeoutMs: number): Promise<{ exitCode: number; stdout: string; stderr: string; timedOut: boolean }> {
  const { execa } = await import('execa');
  const [file, ...args] = argv as [string, ...string[]];
  const child = execa(file, args, { reject: false, detached: true, stdin: 'ignore' });
  const pgid = child.pid;
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (pgid) process.kill(-pgid, sig);
    } catch {
      /* gone */
    }
  };
  let timedOut = false;
  const t1 = setTimeout(() => {
    timedOut = true;
    signal('SIGINT');
  }, timeoutMs);
  const t2 = setTimeout(() => signal('SIGKILL'), timeoutMs + 5000);
  const undo = onCleanup(`process group ${pgid}`, () => signal('SIGKILL'));
  try {
    const r = await child;
    return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), timedOut };
  } finally {
    clearTimeout(t1);
    clearTimeout(t2);
    // The group is done: forget the undo step without running it.
    dropCleanup(undo);
  }
}

export interface FloodResult {
  /** Frames that left vm0 (its eth0 tx counter). */
  sent: number;
  /** Frames that reached the peer (its eth0 rx counter). */
  delivered: number;
  /** CPU time of the sender (trafgen, which also runs the bridge path in its softirq context) + ksoftirqd, ns. */
  cpuNs: number;
  /** Machine-wide busy time over the run (all CPUs, tick-sampled, includes other work on the machine), ns. */
  machineNs: number;
  wallMs: number;
}

const TIMES_RE = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s\s*$/;

/**
 * Sends `count` frames from vm0 with trafgen (TX ring, -P 1: one process
 * pinned to CPU0, --no-sock-mem: no machine-wide sysctl changes, -Q: no IRQ
 * affinity changes) and measures the CPU time it took. Bounded by timeoutMs.
 */
export async function flood(host: BenchHost, cfgFile: string, count: number, timeoutMs: number): Promise<FloodResult> {
  const ks = ksoftirqdPids();
  const [p0, v0] = await Promise.all([linkPackets(host.peerNs, 'eth0'), linkPackets(host.vmNs, 'eth0')]);
  const k0 = runtimeNs(ks);
  const m0 = machineBusyMs();
  const t0 = performance.now();
  // bash's `times` prints the children's (trafgen's) user and system time: exact runtime, ms resolution.
  const script = `trafgen -i '${cfgFile}' -o eth0 -n ${Math.floor(count)} -P 1 --no-sock-mem -Q -C >/dev/null 2>'${cfgFile}.err'; rc=$?; times; exit $rc`;
  const r = await runGroup(['ip', 'netns', 'exec', host.vmNs, 'bash', '-c', script], timeoutMs);
  const wallMs = performance.now() - t0;
  const m1 = machineBusyMs();
  const k1 = runtimeNs(ks);
  const [p1, v1] = await Promise.all([linkPackets(host.peerNs, 'eth0'), linkPackets(host.vmNs, 'eth0')]);
  if (r.exitCode !== 0 || r.timedOut) throw new Error(`trafgen failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''}, ${wallMs.toFixed(0)} ms of at most ${timeoutMs}): ${r.stderr.slice(-500)}`);
  const m = TIMES_RE.exec(r.stdout.trim());
  if (!m) throw new Error(`cannot read trafgen's CPU time from: ${r.stdout}`);
  const childS = Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
  return {
    sent: v1.tx - v0.tx,
    delivered: p1.rx - p0.rx,
    cpuNs: childS * 1e9 + (k1 - k0),
    machineNs: (m1 - m0) * 1e6,
    wallMs,
  };
}

/**
 * Sends `count` frames of `traffic` from vm0 the way the host is fed: trafgen
 * in vm0's namespace (veth; CPU = trafgen's time from bash `times`), or the
 * tap writer (tap; CPU = the writer thread's CPU time over its write loop).
 * Both add the ksoftirqd threads' runtime over the run.
 */
export async function sendTraffic(host: BenchHost, traffic: Traffic, trafgenCfg: Record<Traffic, string>, count: number, timeoutMs: number): Promise<FloodResult> {
  if (!host.writer) return flood(host, trafgenCfg[traffic], count, timeoutMs);
  const ks = ksoftirqdPids();
  const p0 = await linkPackets(host.peerNs, 'eth0');
  const k0 = runtimeNs(ks);
  const m0 = machineBusyMs();
  const t0 = performance.now();
  const r = await host.writer.send(trafficFrame(traffic), count, timeoutMs);
  const wallMs = performance.now() - t0;
  const m1 = machineBusyMs();
  const k1 = runtimeNs(ks);
  // frames the peer got may still be in its backlog: let them land (bounded)
  let p1 = await linkPackets(host.peerNs, 'eth0');
  for (let i = 0; i < 10; i++) {
    await sleep(20);
    const p = await linkPackets(host.peerNs, 'eth0');
    if (p.rx === p1.rx) break;
    p1 = p;
  }
  if (r.failed > r.sent / 100) throw new Error(`tap writer: ${r.failed} of ${r.sent + r.failed} writes failed`);
  return { sent: r.sent, delivered: p1.rx - p0.rx, cpuNs: r.cpuNs + (k1 - k0), machineNs: (m1 - m0) * 1e6, wallMs };
}

/** Starts an open-ended flood (bounded by maxMs); stop() ends it with SIGINT and returns the peer's and vm0's counters. */
export async function startFlood(host: BenchHost, cfgFile: string, maxMs: number): Promise<{ stop: () => Promise<{ sent: number; delivered: number; spoofArrived: number }> }> {
  const { execa } = await import('execa');
  // Count exactly the flood's frames that reach the peer (its eth0 ingress, source IP = SPOOF_IP).
  const counterTable = `table netdev nwfb_leak {\n chain c {\n  type filter hook ingress device "eth0" priority 0; policy accept;\n  ip saddr ${SPOOF_IP} counter\n }\n}\n`;
  await inNs(host.peerNs, ['nft', '-f', '-'], { input: counterTable });
  const dropCounter = onCleanup('leak counter', async () => {
    await inNs(host.peerNs, ['nft', 'delete', 'table', 'netdev', 'nwfb_leak'], { check: false });
  });
  const readCounter = async (): Promise<number> => {
    const r = await inNs(host.peerNs, ['nft', '-j', 'list', 'table', 'netdev', 'nwfb_leak']);
    const doc = JSON.parse(r.stdout) as { nftables: Record<string, { expr?: { counter?: { packets: number } }[] }>[] };
    for (const item of doc.nftables) for (const e of item.rule?.expr ?? []) if (e.counter) return e.counter.packets;
    throw new Error('leak counter not found');
  };
  const [p0, v0] = await Promise.all([linkPackets(host.peerNs, 'eth0'), linkPackets(host.vmNs, 'eth0')]);
  // Its own process group, so SIGINT reaches trafgen's worker too (by group id: only what we started).
  const child = execa('ip', ['netns', 'exec', host.vmNs, 'trafgen', '-i', cfgFile, '-o', 'eth0', '-n', '200000000', '-P', '1', '--no-sock-mem', '-Q', '-C'], {
    reject: false,
    stdio: 'ignore',
    detached: true,
  });
  const pgid = child.pid;
  const signal = (sig: NodeJS.Signals): void => {
    try {
      if (pgid) process.kill(-pgid, sig);
    } catch {
      /* already gone */
    }
  };
  const timer = setTimeout(() => signal('SIGINT'), maxMs);
  const undo = onCleanup('trafgen flood', async () => {
    clearTimeout(timer);
    signal('SIGINT');
    await Promise.race([child, new Promise((r) => setTimeout(r, 3000))]);
    if (child.exitCode === null || child.exitCode === undefined) signal('SIGKILL');
    await Promise.race([child, new Promise((r) => setTimeout(r, 2000))]);
  });
  // Wait until frames flow (bounded).
  for (let i = 0; i < 50; i++) {
    const v = await linkPackets(host.vmNs, 'eth0');
    if (v.tx - v0.tx > 100) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    stop: async () => {
      await undo();
      const [p1, v1] = await Promise.all([linkPackets(host.peerNs, 'eth0'), linkPackets(host.vmNs, 'eth0')]);
      const spoofArrived = await readCounter();
      await dropCounter();
      return { sent: v1.tx - v0.tx, delivered: p1.rx - p0.rx, spoofArrived };
    },
  };
}

// ---- filters --------------------------------------------------------------------------------

export type Unload = () => Promise<void>;

/** libvirt's ebtables rules for n ports (vnet0's jumps in the middle). */
export async function loadEbtables(host: BenchHost, t: EbtablesTemplate, n: number): Promise<{ unload: Unload; ms: number; rules: number }> {
  const text = replicate(t, n, Math.floor(n / 2));
  const r = await inNs(host.hostNs, ['ebtables-restore'], { input: text, timeoutMs: 600_000 });
  const unload: Unload = async () => {
    await inNs(host.hostNs, ['nft', 'delete', 'table', 'bridge', 'nat'], { check: false });
    await inNs(host.hostNs, ['nft', 'delete', 'table', 'bridge', 'filter'], { check: false });
  };
  return { unload, ms: r.ms, rules: text.split('\n').filter((l) => l.startsWith('-A ')).length };
}

export function nftUnloadText(): string {
  return JSON.stringify({
    nftables: [
      { add: { table: { family: 'bridge', name: 'nwf_fast' } } },
      { delete: { table: { family: 'bridge', name: 'nwf_fast' } } },
      { add: { table: { family: 'inet', name: 'nwf_fast' } } },
      { delete: { table: { family: 'inet', name: 'nwf_fast' } } },
    ],
  });
}

/** nwf-fast nft generation, applied in-process. */
export function loadNft(host: BenchHost, json: string): { unload: Unload; ms: number } {
  const t = performance.now();
  const r = runLibnftables(json, { netns: host.hostNs });
  const ms = performance.now() - t;
  if (r.rc !== 0) throw new Error(`libnftables refused the generation: ${r.error.slice(0, 2000)}`);
  return {
    ms,
    unload: async () => {
      runLibnftables(nftUnloadText(), { netns: host.hostNs });
    },
  };
}

interface PreparedShape {
  shape: LoadedShape;
  /** Taps attached with this shape's programs, with their index in its maps. */
  members: { iface: string; ifindex: number; index: number }[];
}
interface PreparedBpf {
  shapes: PreparedShape[];
  close(): void;
}

/** One object per shape with every tap of the shape as a member (its index: its position among the shape's taps). */
function loadShapes(taps: readonly (BpfCompileResult['interfaces'][number] & { cfg?: Uint8Array })[], ifindexOf: (iface: string) => number, hook: BpfHookChoice): PreparedBpf {
  const byShape = new Map<string, (typeof taps)[number][]>();
  for (const t of taps) byShape.set(t.shapeId, [...(byShape.get(t.shapeId) ?? []), t]);
  const shapes: PreparedShape[] = [];
  try {
    for (const ifaces of byShape.values()) {
      const members = ifaces.map((t, index) => ({ iface: t.iface, ifindex: ifindexOf(t.iface), index, cfg: t.cfg }));
      const shape = loadShape(ifaces[0] as (typeof taps)[number], ifaces.length, members.map((m) => ({ index: m.index, ifindexes: [m.ifindex], ...(m.cfg ? { cfg: m.cfg } : {}) })), { xdp: hook === 'xdp' });
      shapes.push({ shape, members: members.map(({ iface, ifindex, index }) => ({ iface, ifindex, index })) });
    }
  } catch (e) {
    for (const p of shapes) p.shape.close();
    throw e;
  }
  return { shapes, close: () => shapes.forEach((p) => p.shape.close()) };
}

/** Every member of every shape on its tap, with `hook`'s mechanisms (bpf/hook.ts, as load does). */
function attachShapes(p: PreparedBpf, hook: BpfHookChoice, pinDir: string): void {
  const first = p.shapes[0];
  if (!first) return;
  const plan = planHooks(hook, { tcx: hook === 'tcx' && hasTcx(first.shape.programs.out), links: linksPersist() });
  for (const { shape, members } of p.shapes) {
    const out = plan.out === 'xdp' && shape.xdp ? shape.xdp : shape.programs.out;
    const programs = { out, in: shape.programs.in, outTc: shape.programs.out };
    attachPorts(members.map((m) => ({ port: { iface: m.iface, ifindex: m.ifindex }, programs })), plan, pinDir);
  }
}

export interface EbpfLoad {
  prepared: PreparedBpf;
  unload: Unload;
  compileMs: number;
  loadMs: number;
  attachMs: number;
  build: BpfCompileResult;
}

/** The benchmark's bpffs directory for the pins of nwf-fast's maps and links (removed by unload). */
export const BENCH_PIN_DIR = `/sys/fs/bpf/${PREFIX}-${process.pid}`;

/**
 * nwf-fast eBPF as `load` does it: compile (object cache warm after the first
 * shape build), load one object per policy shape with every tap of the shape
 * as a member (loadShapes), and attach every tap with `hook` (attachShapes,
 * hook.ts attachPorts: tc filters in batched rtnetlink requests, tcx links or
 * XDP + tc, pinned under BENCH_PIN_DIR).
 */
export async function loadEbpf(hostNs: string, ir: PolicyIR, dirs: { outDir: string; cacheDir: string }, hook: BpfHookChoice = 'auto'): Promise<EbpfLoad> {
  const t0 = performance.now();
  const build = await compileBpf(ir, dirs);
  const t1 = performance.now();
  let prepared: PreparedBpf | undefined;
  const ifaces = build.interfaces.map((b) => b.iface);
  const unload: Unload = async () => {
    withNetns(hostNs, () => detachTaps(ifaces, BENCH_PIN_DIR));
    unpinAll(BENCH_PIN_DIR);
    rmSync(BENCH_PIN_DIR, { recursive: true, force: true });
    prepared?.close();
    prepared = undefined;
  };
  const undo = onCleanup('ebpf programs', unload);
  try {
    const taps = build.interfaces.map((b) => {
      const cfg = b.maps.find((m) => m.map === MAP_NAMES.cfg)?.value;
      return { ...b, ...(cfg ? { cfg } : {}) };
    });
    const p = withNetns(hostNs, () => loadShapes(taps, ifIndex, hook));
    prepared = p;
    const t2 = performance.now();
    withNetns(hostNs, () => attachShapes(p, hook, BENCH_PIN_DIR));
    const t3 = performance.now();
    return { prepared: p, unload: undo, compileMs: t1 - t0, loadMs: t2 - t1, attachMs: t3 - t2, build };
  } catch (e) {
    await undo();
    throw e;
  }
}

// ---- reference programs ---------------------------------------------------------------------

const REF_SOURCE = `// Reference programs of the benchmark: the cheapest possible verdicts.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int ref_pass(struct __sk_buff *skb) { return 0; /* TC_ACT_OK */ }
SEC("tc") int ref_drop(struct __sk_buff *skb) { return 2; /* TC_ACT_SHOT */ }
SEC("xdp") int ref_xdp_pass(struct xdp_md *x) { return XDP_PASS; }
SEC("xdp") int ref_xdp_drop(struct xdp_md *x) { return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
`;

/** Builds bench's reference object (pass-all and drop-all programs, tc and XDP) with clang-19. */
export async function buildRefObject(workDir: string): Promise<string> {
  const src = join(workDir, 'ref.bpf.c');
  const obj = join(workDir, 'ref.bpf.o');
  writeFileSync(src, REF_SOURCE);
  const arch = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  await cmd(['clang-19', '-O2', '-g', '-target', 'bpf', `-I/usr/include/${arch}`, '-c', src, '-o', obj], { timeoutMs: 120_000 });
  return obj;
}

/** The reference mechanisms: where a pass-all or drop-all program sits on vnet0 for vm0's frames. */
export type RefHook = 'tc' | 'tcx' | 'xdp';

/** Attaches the pass-all or drop-all program to vnet0's from-VM hook of `mech` (tc ingress, tcx ingress, XDP). */
export async function loadRef(host: BenchHost, objPath: string, which: 'pass' | 'drop', mech: RefHook = 'tc'): Promise<{ unload: Unload }> {
  const obj = BpfObject.open(objPath, { objectName: `nwfb_${which}` }).load();
  let ifindex = 0;
  let link: BpfLink | undefined;
  const unload = onCleanup(`ref ${mech} ${which}`, async () => {
    link?.close();
    if (ifindex && mech === 'tc') withNetns(host.hostNs, () => tcHookDestroy(ifindex));
    obj.close();
  });
  try {
    withNetns(host.hostNs, () => {
      const ix = ifIndex(portName(0));
      if (mech === 'tc') {
        tcHookCreate(ix);
        ifindex = ix;
        tcAttach(obj.program(`ref_${which}`), { ifindex: ix, direction: 'ingress', handle: 1, priority: 1 });
      } else if (mech === 'tcx') {
        link = attachTcx(obj.program(`ref_${which}`), ix, 'ingress', { first: true });
      } else {
        link = attachXdp(obj.program(`ref_xdp_${which}`), ix);
      }
    });
  } catch (e) {
    await unload();
    throw e;
  }
  return { unload };
}

/** br_netfilter's bridge-nf-call-iptables/ip6tables/arptables in the host namespace. */
export async function setBrNetfilter(host: BenchHost, on: boolean): Promise<void> {
  const v = on ? '1' : '0';
  await inNs(host.hostNs, ['sysctl', '-q', '-w', `net.bridge.bridge-nf-call-iptables=${v}`, `net.bridge.bridge-nf-call-ip6tables=${v}`, `net.bridge.bridge-nf-call-arptables=${v}`]);
}
