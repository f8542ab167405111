// Shared machinery of the differential tests: a demo host (bridge, one VM,
// one peer) in namespaces, and "send every corpus frame through the real
// kernel and compare its delivery with the reference evaluator".
import { execa } from 'execa';
import { evaluate } from '../../../src/ir/eval.js';
import type { InterfacePolicy } from '../../../src/ir/types.js';
import type { CorpusFrame } from '../../../src/lab/frames/corpus.js';
import { canonicalFrame, deliver, frameTag, PacketSocket } from '../../../src/lab/packet-io.js';
import * as F from '../../../src/lab/frames/build.js';
import { createTestbed, type Testbed } from '../../../src/lab/testbed.js';

export const VM_MAC = '52:54:00:00:00:01';
export const PEER_MAC = '52:54:00:00:00:99';
export const isRoot = process.getuid?.() === 0;
export const ROOT_REASON = 'skipped: needs root (network namespaces, nftables)';

/** A host with a bridge, the VM `vm` on tap vnet0 and a neighbour `peer`; the bridge floods (no learning). */
export async function createDemoHost(prefix: string): Promise<Testbed> {
  const tb = await createTestbed({ prefix, vms: [{ name: 'vm', tap: 'vnet0', mac: VM_MAC }], peers: [{ name: 'peer', mac: PEER_MAC }] });
  // Hub behaviour: spoofed frames that libvirt accepts must not teach the bridge wrong ports.
  for (const port of ['vnet0', tb.guest('peer').port]) {
    await execa('ip', ['netns', 'exec', tb.hostNs, 'bridge', 'link', 'set', 'dev', port, 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
  }
  return tb;
}

export async function flushConntrack(tb: Testbed): Promise<void> {
  await execa('ip', ['netns', 'exec', tb.hostNs, 'conntrack', '-F'], { reject: false });
}

export interface Mismatch {
  name: string;
  direction: string;
  expected: 'accept' | 'drop';
  delivered: boolean;
  hex: string;
}

export interface DiffResult {
  sent: number;
  accepted: number;
  dropped: number;
  skipped: number;
  mismatches: Mismatch[];
}

/**
 * Sends every frame (VM -> peer for 'out', peer -> VM for 'in') and compares
 * delivery with the evaluator. `oneByOne` frames are sent alone after a
 * conntrack flush, so each sees a NEW connection as the evaluator assumes.
 */
export async function runDifferential(tb: Testbed, policy: InterfacePolicy, corpus: readonly CorpusFrame[], opts: { oneByOne?: (f: CorpusFrame) => boolean } = {}): Promise<DiffResult> {
  const res: DiffResult = { sent: 0, accepted: 0, dropped: 0, skipped: 0, mismatches: [] };
  const vm = tb.guest('vm').endpoint;
  const peer = tb.guest('peer').endpoint;
  const usable = corpus.filter((c) => {
    // runts cannot be sent; frames with a state other than a new connection need a real flow (tested apart)
    const ok = c.frame.length >= 14 && (!c.conn || (c.conn.state === 'new' && c.conn.direction === 'original'));
    if (!ok) res.skipped++;
    return ok;
  });
  const key = (c: CorpusFrame): string => `${c.direction}:${Buffer.from(canonicalFrame(c.frame)).toString('hex')}`;
  const record = (c: CorpusFrame, delivered: boolean): void => {
    const expected = evaluate(policy, c.direction, c.frame).verdict;
    res.sent++;
    if (expected === 'accept') res.accepted++;
    else res.dropped++;
    if ((expected === 'accept') !== delivered) {
      res.mismatches.push({ name: c.name, direction: c.direction, expected, delivered, hex: Buffer.from(c.frame).toString('hex') });
    }
  };
  const single = usable.filter((c) => opts.oneByOne?.(c));
  const bulk = usable.filter((c) => !opts.oneByOne?.(c));
  // Groups whose canonical forms are unique (a tagged frame and its untagged twin look alike once received).
  const groups: CorpusFrame[][] = [];
  for (const c of bulk) {
    const k = key(c);
    let g = groups.find((x) => !x.some((y) => key(y) === k && y.direction === c.direction));
    if (!g) groups.push((g = []));
    g.push(c);
  }
  for (const g of groups) {
    for (const dir of ['out', 'in'] as const) {
      const frames = g.filter((c) => c.direction === dir);
      if (!frames.length) continue;
      const r = await deliver(dir === 'out' ? vm : peer, dir === 'out' ? peer : vm, frames.map((c) => c.frame), { key: canonicalFrame, quietMs: 60, maxWaitMs: 2000 });
      frames.forEach((c, i) => record(c, r.arrived[i] as boolean));
    }
  }
  for (const c of single) {
    await flushConntrack(tb);
    const r = await deliver(c.direction === 'out' ? vm : peer, c.direction === 'out' ? peer : vm, [c.frame], { key: canonicalFrame, quietMs: 40, maxWaitMs: 1000 });
    record(c, r.arrived[0] as boolean);
  }
  return res;
}

export interface FloodResult {
  sent: { spoofed: number; legit: number };
  delivered: { spoofed: number; legit: number };
}

/**
 * Runs `work` (e.g. 50 reloads) while the VM floods spoofed frames (wrong
 * source MAC and IP), 8 for every legitimate one, towards the peer; counts
 * what reaches the peer. Bounded: at most 20 000 legitimate frames, 60 s.
 */
export async function floodDuring(tb: Testbed, work: () => Promise<void>): Promise<FloodResult> {
  const tx = PacketSocket.open(tb.guest('vm').ns, 'eth0');
  const rx = PacketSocket.open(tb.guest('peer').ns, 'eth0', { receive: true });
  rx.drain();
  const sent = { spoofed: 0, legit: 0 };
  const delivered = { spoofed: 0, legit: 0 };
  const frame = (spoofed: boolean, i: number) =>
    F.udpFrame({
      srcMac: spoofed ? '52:54:00:00:00:66' : VM_MAC,
      dstMac: PEER_MAC,
      srcIp: spoofed ? '10.77.0.66' : '10.77.0.2',
      dstIp: '10.77.0.9',
      sport: 5000,
      dport: 6000,
      payload: frameTag(i, spoofed ? 1 : 2),
    });
  const read = () => {
    for (const f of rx.receiveNow()) {
      const s = Buffer.from(f).toString('latin1');
      if (s.includes('NW\u0000\u0001')) delivered.spoofed++;
      else if (s.includes('NW\u0000\u0002')) delivered.legit++;
    }
  };
  const deadline = Date.now() + 60_000;
  const timer = setInterval(() => {
    if (sent.legit > 20_000 || Date.now() > deadline) return;
    for (let k = 0; k < 8; k++) tx.send(frame(true, sent.spoofed++));
    tx.send(frame(false, sent.legit++));
    read();
  }, 1);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  await new Promise((res) => setTimeout(res, 300));
  read();
  tx.close();
  rx.close();
  return { sent, delivered };
}
