// The IP-learning path (issue 11 item 5, the coverage issue's learning):
// vnet0 bound to clean-traffic WITHOUT an IP (CTRL_IP_LEARNING=any), so the
// port learns its address from the VM's first IPv4 frame. Per round, on a
// fresh binding: vm0 sends the teaching frame (its own address), then at once
// a spoofed flood (vm0's MAC, another source IP) and a trickle of legitimate
// frames (the taught address), for a bounded time. Every frame carries a
// sequence tag and its send time is kept, so the peer's arrivals give:
// spoofed frames delivered after the teaching frame, when the last one was
// sent, when the first one was dropped, and whether the legitimate frames
// passed. Meanwhile the learned address is read back until it shows: for
// nwf-fast from the kernel directly (the eBPF map lookup, the nft set listed
// through libnftables in-process), after the flood also through
// readLearnedFromKernel (what status and reconcile report); for libvirt from
// its ebtables rules (ebtables-save shows the address).
//
// Methods: nwf-fast nft and nwf-fast eBPF (tc, the default hook), each loaded
// with `loadGeneration` as `nwf-fast load` does, and libvirt: the bench's
// private libvirtd on the same host, the same binding through
// `virsh nwfilter-binding-create` (skipped with the reason when libvirt is
// unavailable or busy).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, unload } from '../../src/host/apply.js';
import { writeGeneration } from '../../src/host/generation.js';
import { BRIDGE_TABLE, nftNames } from '../../src/backends/nft/names.js';
import { concatElements, readBpfLearned, readLearnedFromKernel } from '../../src/host/learn/kernel.js';
import { listed, runLibnftables } from '../../src/host/nft.js';
import { libvirtAvailable, type Libvirtd } from '../../src/lab/libvirt.js';
import * as F from '../../src/lab/frames/build.js';
import { frameTag, PacketSocket } from '../../src/lab/packet-io.js';
import { loadSources } from '../../src/resolve/sources.js';
import { createBenchHost, type BenchHost } from './host.js';
import { startPrivateLibvirtd } from './libvirt-phase.js';
import { learnBindingXml, PEER_IP, PEER_MAC, portIp, portMac, portName, SPOOF_IP } from './policy.js';
import { log, onCleanup, sleep, stat, type Stat } from './util.js';

export type LearnMethod = 'nft' | 'ebpf' | 'libvirt';

export const LEARN_LABELS: Record<LearnMethod, string> = {
  nft: 'nwf-fast nft',
  ebpf: 'nwf-fast eBPF (tc)',
  libvirt: 'libvirt (nwfilter-binding-create)',
};

export interface LearnRound {
  /** Setting the binding up: nwf-fast's loadGeneration, libvirt's binding delete + create (not part of the window). */
  setupMs: number;
  /** libvirt: from binding-create returning to its learning rules being in force (none before). */
  learningRulesMs?: number;
  teachDelivered: boolean;
  /** Spoofed frames sent after the teaching frame, and how many reached the peer. */
  spoofSent: number;
  spoofDelivered: number;
  /** Legitimate frames (the taught address) sent meanwhile, and how many reached the peer. */
  legitSent: number;
  legitDelivered: number;
  /** How long the flood ran (ms after the teaching frame). */
  floodMs: number;
  /** Send time (ms after the teaching frame) of the last spoofed frame that reached the peer. */
  lastLeakMs?: number;
  /** Send time of the first spoofed frame that did not. */
  firstDropMs?: number;
  /** End of the first read that showed the address (ms after the teaching frame), when that read started, and reads made until then. */
  readableMs?: number;
  readStartMs?: number;
  reads: number;
  /** The address the read showed (must be the teaching frame's). */
  learned?: string;
  /** nwf-fast: the addresses readLearnedFromKernel reports after the flood (exactly the taught one). */
  reported?: string[];
}

export interface LearnRow {
  method: LearnMethod;
  rounds: LearnRound[];
  spoofSent: Stat;
  spoofDelivered: Stat;
  lastLeakMs: Stat;
  firstDropMs: Stat;
  readableMs: Stat;
  readStartMs: Stat;
  setupMs: Stat;
  /** Legitimate frames over all rounds. */
  legitSent: number;
  legitDelivered: number;
  /** Rounds in which the teaching frame arrived and the address read back was the taught one. */
  learnedRight: number;
}

export interface LearnResult {
  rows: LearnRow[];
  /** libvirt's side: measured, or why not; `error` when it failed (a failed phase). */
  libvirt: { available: boolean; reason?: string; error?: string; waitedMs?: number; alongside?: string };
  rounds: number;
  floodMs: number;
  maxMs: number;
  spoofPerMs: number;
  legitPerMs: number;
  teachIp: string;
  spoofIp: string;
  loadavg: { start: number[]; end: number[] };
}

export interface LearnOptions {
  rounds: number;
  /** The flood runs at least this long after the teaching frame ... */
  floodMs: number;
  /** ... and until the address is readable plus tailMs, at most maxMs. */
  maxMs: number;
  tailMs?: number;
  /** Spoofed and legitimate frames per ms (the sender catches up when a timer fires late). */
  spoofPerMs?: number;
  legitPerMs?: number;
  workDir: string;
  cacheDir: string;
  /** Skip libvirt with this reason (--no-libvirt). */
  noLibvirt?: string;
  libvirtWaitMs: number;
}

// Tags (frameTag salts) of the three kinds of frames, at the UDP payload (offset 42).
const SALT = { teach: 0x7401, spoof: 0x7402, legit: 0x7403 } as const;
const PAYLOAD_AT = 42;

function frame(srcIp: string, salt: number, seq: number): Uint8Array {
  return F.udpFrame({ srcMac: portMac(0), dstMac: PEER_MAC, srcIp, dstIp: PEER_IP, sport: 1024, dport: 9, payload: frameTag(seq, salt) });
}

type Probe = () => Promise<string | undefined>;

/**
 * Sends the teaching frame from vm0, then spoofed and legitimate frames at
 * the given rates; reads the peer's arrivals as they come and calls `probe`
 * (one read in flight at a time) until it shows an address. Runs floodMs,
 * longer while the address is not readable yet or spoofed frames still get
 * through (until tailMs after both), never more than maxMs. Bounded in frames as well (the rates times maxMs).
 */
export async function teachAndFlood(host: BenchHost, probe: Probe, o: { floodMs: number; maxMs: number; tailMs: number; spoofPerMs: number; legitPerMs: number }): Promise<Omit<LearnRound, 'setupMs'>> {
  const tx = PacketSocket.open(host.vmNs, 'eth0', { receive: false });
  const rx = PacketSocket.open(host.peerNs, 'eth0');
  const spoofAt: number[] = [];
  const spoofGot = new Set<number>();
  let legitSent = 0;
  const legitGot = new Set<number>();
  let teachDelivered = false;
  /** Send time of the latest spoofed frame seen at the peer so far. */
  let lastLeakAt = 0;
  const read = (): void => {
    for (const f of rx.receiveNow()) {
      if (f.length < PAYLOAD_AT + 8 || f[PAYLOAD_AT] !== 0x4e || f[PAYLOAD_AT + 1] !== 0x57) continue;
      const v = new DataView(f.buffer, f.byteOffset + PAYLOAD_AT);
      const salt = v.getUint16(2);
      const seq = v.getUint32(4);
      if (salt === SALT.spoof) {
        spoofGot.add(seq);
        lastLeakAt = Math.max(lastLeakAt, spoofAt[seq] ?? 0);
      }
      else if (salt === SALT.legit) legitGot.add(seq);
      else if (salt === SALT.teach) teachDelivered = true;
    }
  };
  let reads = 0;
  let readableMs: number | undefined;
  let readStartMs: number | undefined;
  let learned: string | undefined;
  let probeError: unknown;
  let inFlight: Promise<void> | undefined;
  let floodMs = 0;
  try {
    rx.drain();
    const teach = frame(portIp(0), SALT.teach, 0);
    const t0 = performance.now();
    tx.send(teach);
    for (;;) {
      const now = performance.now() - t0;
      // done: floodMs passed, the address is readable, and for tailMs since then no spoofed frame got through (libvirt links its new chains after writing them)
      const done = now >= o.maxMs || (now >= o.floodMs && readableMs !== undefined && now >= Math.max(readableMs, lastLeakAt) + o.tailMs);
      if (done || probeError) {
        floodMs = now;
        break;
      }
      // catch up to the rate (at most 100 frames a turn: a late timer does not become a burst)
      const wantSpoof = Math.min(spoofAt.length + 100, Math.floor(now * o.spoofPerMs) + 1);
      while (spoofAt.length < wantSpoof && tx.trySend(frame(SPOOF_IP, SALT.spoof, spoofAt.length))) spoofAt.push(performance.now() - t0);
      const wantLegit = Math.min(legitSent + 100, Math.floor(now * o.legitPerMs) + 1);
      while (legitSent < wantLegit && tx.trySend(frame(portIp(0), SALT.legit, legitSent))) legitSent++;
      read();
      if (!inFlight && readableMs === undefined) {
        const s = performance.now() - t0;
        reads++;
        inFlight = probe()
          .then((ip) => {
            if (ip !== undefined && readableMs === undefined) {
              readableMs = performance.now() - t0;
              readStartMs = s;
              learned = ip;
            }
          }, (e: unknown) => void (probeError = e))
          .finally(() => void (inFlight = undefined));
      }
      await sleep(1);
    }
    await inFlight;
    // frames still on their way
    for (let i = 0; i < 10; i++) {
      await sleep(30);
      read();
    }
  } finally {
    tx.close();
    rx.close();
  }
  if (probeError) throw probeError instanceof Error ? probeError : new Error(String(probeError));
  let lastLeakMs: number | undefined;
  for (const seq of spoofGot) lastLeakMs = Math.max(lastLeakMs ?? 0, spoofAt[seq] ?? 0);
  let firstDropMs: number | undefined;
  for (let seq = 0; seq < spoofAt.length; seq++) {
    if (!spoofGot.has(seq)) {
      firstDropMs = spoofAt[seq];
      break;
    }
  }
  return {
    teachDelivered,
    spoofSent: spoofAt.length,
    spoofDelivered: spoofGot.size,
    legitSent,
    legitDelivered: legitGot.size,
    floodMs,
    ...(lastLeakMs !== undefined ? { lastLeakMs } : {}),
    ...(firstDropMs !== undefined ? { firstDropMs } : {}),
    ...(readableMs !== undefined ? { readableMs } : {}),
    ...(readStartMs !== undefined ? { readStartMs } : {}),
    reads,
    ...(learned !== undefined ? { learned } : {}),
  };
}

function summarize(method: LearnMethod, rounds: LearnRound[]): LearnRow {
  const of = (f: (r: LearnRound) => number | undefined): Stat => stat(rounds.map(f).filter((x): x is number => x !== undefined));
  return {
    method,
    rounds,
    spoofSent: of((r) => r.spoofSent),
    spoofDelivered: of((r) => r.spoofDelivered),
    lastLeakMs: of((r) => r.lastLeakMs),
    firstDropMs: of((r) => r.firstDropMs),
    readableMs: of((r) => r.readableMs),
    readStartMs: of((r) => r.readStartMs),
    setupMs: of((r) => r.setupMs),
    legitSent: rounds.reduce((s, r) => s + r.legitSent, 0),
    legitDelivered: rounds.reduce((s, r) => s + r.legitDelivered, 0),
    learnedRight: rounds.filter((r) => r.teachDelivered && r.learned === portIp(0) && (r.reported === undefined || (r.reported.length === 1 && r.reported[0] === portIp(0)))).length,
  };
}

function logRound(method: LearnMethod, i: number, r: LearnRound): void {
  const at = (x: number | undefined): string => (x === undefined ? '-' : `${x.toFixed(1)} ms`);
  log(
    `learn ${method} round ${i + 1}: teach ${r.teachDelivered ? 'delivered' : 'LOST'}; ${r.spoofDelivered} of ${r.spoofSent} spoofed delivered (last sent at ${at(r.lastLeakMs)}, first dropped at ${at(r.firstDropMs)}); ` +
      `legit ${r.legitDelivered}/${r.legitSent}; learned ${r.learned ?? 'nothing'} readable at ${at(r.readableMs)} (${r.reads} reads, the last started at ${at(r.readStartMs)})${r.reported ? `, readLearnedFromKernel: ${r.reported.join(', ') || 'nothing'}` : ''}; setup ${r.setupMs.toFixed(0)} ms${r.learningRulesMs !== undefined ? `, learning rules after ${r.learningRulesMs.toFixed(0)} ms` : ''}`,
  );
}

/** nwf-fast: a generation with vnet0 learning, loaded fresh per round (a new port), the address read back from the kernel. */
async function nwfRounds(host: BenchHost, method: 'nft' | 'ebpf', o: LearnOptions & { tailMs: number; spoofPerMs: number; legitPerMs: number }): Promise<LearnRound[]> {
  const backend: Backend = method === 'ebpf' ? 'bpf' : 'nft';
  const work = mkdtempSync(join(o.workDir, `learn-${method}-`));
  const bdir = join(work, 'bindings');
  mkdirSync(bdir);
  writeFileSync(join(bdir, `${portName(0)}.xml`), learnBindingXml(0));
  const gen = join(work, 'g');
  await writeGeneration(gen, compileGeneration(loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false }), backend, { partial: true }), { cacheDir: o.cacheDir });
  const opts = { stateDir: join(work, 'state'), netns: host.hostNs, pinDir: `/sys/fs/bpf/nwfbench-${process.pid}-learn-${method}`, cacheDir: o.cacheDir };
  const done = onCleanup(`learn ${method}`, async () => {
    await unload(opts).catch(() => undefined);
    rmSync(opts.pinDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });
  // The window's clock: a direct kernel read (the eBPF map lookup; the nft set listed through libnftables in-process), one at a time.
  const probe: Probe = async () => (method === 'ebpf' ? readBpfLearned(new Map([[portName(0), { mode: 'any' as const }]]), opts).get(portName(0))?.[0]?.ip : nftLearnedNow(host.hostNs).get(portName(0))?.[0]);
  const rounds: LearnRound[] = [];
  try {
    for (let i = 0; i < o.rounds; i++) {
      const t = performance.now();
      const r = await loadGeneration(gen, opts);
      const setupMs = performance.now() - t;
      if (r.commit.failed.length) throw new Error(`learn ${method}: load failed: ${JSON.stringify(r.commit.failed).slice(0, 500)}`);
      const before = await probe();
      if (before !== undefined) throw new Error(`learn ${method}: a fresh port already holds ${before}`);
      const flood = await teachAndFlood(host, probe, o);
      // what nwf-fast itself reports (status, reconcile): readLearnedFromKernel on the loaded generation's record
      const reported = (await readLearnedFromKernel(opts))[0]?.addresses.map((a) => a.ip) ?? [];
      const round: LearnRound = { setupMs, ...flood, reported };
      rounds.push(round);
      logRound(method, i, round);
      await unload(opts); // the next round starts from a fresh port (the learned state goes with the table and the pins)
    }
  } finally {
    await done();
  }
  return rounds;
}

/** nwf-fast nft's learned addresses by port, listed through libnftables in-process (empty without the set). */
function nftLearnedNow(netns: string): Map<string, string[]> {
  const r = runLibnftables(`list set bridge ${BRIDGE_TABLE} ${nftNames.learnedAddrs()}`, { netns, json: true });
  if (r.rc !== 0) return new Map();
  return concatElements(listed(JSON.parse(r.output) as Parameters<typeof listed>[0], 'set')[0]?.elem);
}

/** The vnet0 lines of libvirt's ebtables rules. */
async function vnet0Rules(lv: Libvirtd): Promise<string> {
  return (await lv.ebtablesSave())
    .split('\n')
    .filter((l) => l.includes(portName(0)) && !l.startsWith('#'))
    .join('\n');
}

/** The address libvirt's rules for vnet0 enforce (an `--ip-src`/`--arp-ip-src` other than 0.0.0.0), if any. */
export function lockedAddress(rules: string): string | undefined {
  for (const m of rules.matchAll(/--(?:arp-)?ip-src (\d+\.\d+\.\d+\.\d+)/g)) if (m[1] !== '0.0.0.0') return m[1];
  return undefined;
}

/** libvirt's learning rules (design 1.2): vnet0's frames go to a chain (libvirt-J- or libvirt-I-) that accepts any IPv4; no address yet. */
export function learningRulesInForce(rules: string): boolean {
  const p = portName(0);
  const jump = new RegExp(`-A PREROUTING -i ${p} -j (libvirt-[IJ]-${p})\\b`).exec(rules);
  return !!jump && rules.includes(`-A ${jump[1]} -p IPv4 -j ACCEPT`) && lockedAddress(rules) === undefined;
}

async function libvirtRounds(host: BenchHost, lv: Libvirtd, o: LearnOptions & { tailMs: number; spoofPerMs: number; legitPerMs: number }): Promise<LearnRound[]> {
  const rounds: LearnRound[] = [];
  const probe: Probe = async () => lockedAddress(await vnet0Rules(lv));
  for (let i = 0; i < o.rounds; i++) {
    const t = performance.now();
    if ((await lv.listBindings()).includes(portName(0))) await lv.deleteBinding(portName(0));
    await lv.createBinding(learnBindingXml(0));
    const created = performance.now();
    // binding-create returns before the learning thread has written its rules (design 1.2): wait for them, bounded
    let rules = await vnet0Rules(lv);
    for (let k = 0; k < 200 && !learningRulesInForce(rules); k++) {
      await sleep(50);
      rules = await vnet0Rules(lv);
    }
    if (!learningRulesInForce(rules)) throw new Error(`learn libvirt: no learning rules for ${portName(0)} 10 s after binding-create:\n${rules.slice(0, 1500)}`);
    const learningRulesMs = performance.now() - created;
    const setupMs = performance.now() - t;
    await sleep(200);
    const round = { setupMs, learningRulesMs, ...(await teachAndFlood(host, probe, o)) };
    rounds.push(round);
    logRound('libvirt', i, round);
  }
  if ((await lv.listBindings()).includes(portName(0))) await lv.deleteBinding(portName(0));
  return rounds;
}

export async function learnPhase(o: LearnOptions): Promise<LearnResult> {
  const start = loadavg().map((x) => Math.round(x * 100) / 100);
  const full = { ...o, tailMs: o.tailMs ?? 300, spoofPerMs: o.spoofPerMs ?? 5, legitPerMs: o.legitPerMs ?? 1 };
  // A one-port host: vm0 on vnet0 (a veth), the peer; libvirt runs in the same host namespace after nwf-fast is unloaded.
  const host = await createBenchHost(1, join(o.workDir, 'learn-host'));
  const rows: LearnRow[] = [];
  let libvirt: LearnResult['libvirt'];
  try {
    for (const method of ['nft', 'ebpf'] as const) rows.push(summarize(method, await nwfRounds(host, method, full)));
    const avail = libvirtAvailable();
    if (o.noLibvirt) libvirt = { available: false, reason: o.noLibvirt };
    else if (!avail.ok) libvirt = { available: false, reason: avail.reason ?? 'unavailable' };
    else {
      // Waits (bounded) for the machine to have no other libvirtd; then runs alongside the others (noted: their work is load on the 2 CPUs).
      const started = await startPrivateLibvirtd(host.hostNs, o.libvirtWaitMs, performance.now(), { alongside: true });
      const lv = started.lv;
      if (!lv) libvirt = { available: false, reason: started.reason ?? 'busy', waitedMs: started.waitedMs };
      else {
        const stop = onCleanup('libvirtd (learn)', () => lv.stop());
        try {
          log(`learn: libvirtd ${lv.pid} up in ${lv.startMs.toFixed(0)} ms in ${host.hostNs}`);
          rows.push(summarize('libvirt', await libvirtRounds(host, lv, full)));
          libvirt = { available: true, waitedMs: started.waitedMs, ...(started.alongside ? { alongside: started.alongside } : {}) };
        } catch (e) {
          // nwf-fast's rows stand; the caller reports the failure as a failed phase
          libvirt = { available: false, reason: 'failed', error: e instanceof Error ? e.message : String(e), waitedMs: started.waitedMs };
        } finally {
          await stop();
        }
      }
    }
    if (!libvirt.available) log(`learn: libvirt not measured: ${libvirt.reason}`);
  } finally {
    await host.destroy();
  }
  return {
    rows,
    libvirt,
    rounds: o.rounds,
    floodMs: o.floodMs,
    maxMs: o.maxMs,
    spoofPerMs: full.spoofPerMs,
    legitPerMs: full.legitPerMs,
    teachIp: portIp(0),
    spoofIp: SPOOF_IP,
    loadavg: { start, end: loadavg().map((x) => Math.round(x * 100) / 100) },
  };
}
