// Shared by the IP-learning prototypes: checks that print and count, frame
// probes through a real bridge, the frames the scenarios send, and the
// CPU-pinned senders of the race tests.
import { execa, type ResultPromise } from 'execa';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { canonicalFrame, deliver, frameTag, PacketSocket, type Endpoint } from '../../../src/lab/packet-io.js';
import type { Testbed } from '../../../src/lab/testbed.js';
import * as F from '../../../src/lab/frames/build.js';
import { DHCP, dhcpClientFrame, dhcpServerFrame, filler } from './dhcp.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Check {
  scenario: string;
  what: string;
  expected: unknown;
  observed: unknown;
  ok: boolean;
}

/** Checks print as they run; the script's exit code is 1 when one does not hold. */
export class Checks {
  readonly all: Check[] = [];
  readonly notes: Record<string, unknown> = {};

  check(scenario: string, what: string, expected: unknown, observed: unknown): boolean {
    const ok = JSON.stringify(expected) === JSON.stringify(observed);
    this.all.push({ scenario, what, expected, observed, ok });
    console.log(`${ok ? 'ok      ' : 'MISMATCH'} [${scenario}] ${what}: ${JSON.stringify(observed)}${ok ? '' : ` (expected ${JSON.stringify(expected)})`}`);
    return ok;
  }

  note(key: string, value: unknown): void {
    this.notes[key] = value;
  }

  finish(): void {
    console.log('--- notes');
    for (const [k, v] of Object.entries(this.notes)) console.log(`${k}:\n${typeof v === 'string' ? v : JSON.stringify(v, null, 1)}\n`);
    const bad = this.all.filter((c) => !c.ok);
    console.log(`${this.all.length - bad.length}/${this.all.length} checks hold`);
    process.exitCode = bad.length ? 1 : 0;
  }
}

/** Sends one frame from `from` and reports whether it arrived at `to`. */
export async function passes(from: Endpoint, to: Endpoint, frame: Uint8Array): Promise<boolean> {
  const r = await deliver(from, to, [frame], { key: canonicalFrame, maxWaitMs: 400 });
  return r.arrived[0] === true;
}

let tagSeq = 1000;
/** A fresh 8-byte payload, so that no two probes are alike. */
export const uniqueTag = (): Uint8Array => frameTag(tagSeq++, 7);

export const SERVER = '10.77.0.1'; // the trusted DHCP server (DHCPSERVER)
export const ROGUE = '10.77.0.200'; // an untrusted one
export const OTHER_MAC = '52:54:00:00:00:66';

/** Frames from a VM (MAC `vm`) towards the peer (MAC `peer`). */
export function outFrames(vm: string, peer: string) {
  return {
    udp: (src: string, o: Partial<{ srcMac: string; dstMac: string; vlan: F.VlanTag; proto: 'udp' | 'tcp' }> = {}) =>
      o.proto === 'tcp'
        ? F.tcpFrame({ srcMac: o.srcMac ?? vm, dstMac: o.dstMac ?? peer, srcIp: src, dstIp: '10.77.0.9', sport: 5000, dport: 6000, flags: ['SYN'], payload: uniqueTag() })
        : F.udpFrame({ srcMac: o.srcMac ?? vm, dstMac: o.dstMac ?? peer, srcIp: src, dstIp: '10.77.0.9', sport: 5000, dport: 6000, payload: uniqueTag(), ...(o.vlan ? { vlan: o.vlan } : {}) }),
    arp: (op: 'Request' | 'Reply', spa: string, tpa: string) => F.arpFrame({ srcMac: vm, dstMac: op === 'Request' ? F.BROADCAST_MAC : peer, op, spa, tpa, tha: op === 'Request' ? '00:00:00:00:00:00' : peer }),
    ipv6: () => F.ipv6UdpFrame({ srcMac: vm, dstMac: peer, srcIp: 'fe80::5054:ff:fe00:1', dstIp: 'fe80::1', sport: 5000, dport: 6000, payload: uniqueTag() }),
    rarpAnnounce: () => F.rarpAnnounceFrame(vm),
    announce0835: () => F.ether({ dst: F.BROADCAST_MAC, src: vm, type: 0x0835, payload: uniqueTag() }),
    discover: (srcMac = vm) => dhcpClientFrame({ srcMac, srcIp: '0.0.0.0', dstIp: '255.255.255.255', message: { op: 1, chaddr: vm, type: DHCP.DISCOVER } }),
    /** RFC 2131: the released address in ciaddr, yiaddr 0. */
    release: (ip: string) => dhcpClientFrame({ srcMac: vm, dstMac: peer, srcIp: ip, dstIp: SERVER, message: { op: 1, ciaddr: ip, chaddr: vm, type: DHCP.RELEASE } }),
  };
}

/** Frames from the peer (MAC `peer`) to a VM (MAC `vm`). */
export function inFrames(vm: string, peer: string) {
  return {
    udp: (src: string, dst = '10.77.0.2') => F.udpFrame({ srcMac: peer, dstMac: vm, srcIp: src, dstIp: dst, sport: 6000, dport: 5000, payload: uniqueTag() }),
    arp: () => F.arpFrame({ srcMac: peer, dstMac: F.BROADCAST_MAC, op: 'Request', spa: SERVER, tpa: '10.77.0.2' }),
    ipv6: () => F.ipv6UdpFrame({ srcMac: peer, dstMac: vm, srcIp: 'fe80::1', dstIp: 'fe80::5054:ff:fe00:1', sport: 6000, dport: 5000, payload: uniqueTag() }),
    other: () => F.ether({ dst: vm, src: peer, type: 0x88b5, payload: uniqueTag() }),
    /** A server reply (OFFER, ACK, NAK) for the VM; `leading` long options come before 53 and 51, `pad` PAD bytes right after the cookie. */
    reply: (type: number, server: string, yiaddr: string, o: { lease?: number; dstMac?: string; chaddr?: string; leading?: number; pad?: number; noServerId?: boolean } = {}) =>
      dhcpServerFrame({
        srcMac: peer,
        dstMac: o.dstMac ?? F.BROADCAST_MAC,
        srcIp: server,
        dstIp: o.dstMac && o.dstMac !== F.BROADCAST_MAC ? yiaddr : '255.255.255.255',
        message: {
          op: 2,
          yiaddr,
          siaddr: server,
          chaddr: o.chaddr ?? vm,
          type,
          ...(o.lease !== undefined ? { leaseSeconds: o.lease } : {}),
          ...(o.pad ? { padAfterMagic: o.pad } : {}),
          leading: [...(o.noServerId ? [] : [{ code: 54, value: F.ipv4(server) }]), ...filler(o.leading ?? 0)],
        },
      }),
  };
}

/** A sender process pinned to one CPU (sender.ts), driven over stdin. */
export class PinnedSender {
  private readonly lines: string[] = [];
  private readonly waiters: ((l: string) => void)[] = [];

  private constructor(private readonly proc: ResultPromise) {
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    rl.on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
  }

  static start(cpu: number, ep: Endpoint, srcMac: string, dstMac: string, dstIp: string): PinnedSender {
    const script = fileURLToPath(new URL('./sender.ts', import.meta.url));
    const proc = execa('taskset', ['-c', String(cpu), process.execPath, '--import', 'tsx', script, ep.ns, ep.ifname, srcMac, dstMac, dstIp], { stdin: 'pipe', reject: false, cleanup: true, timeout: 30 * 60_000 });
    return new PinnedSender(proc);
  }

  private next(timeoutMs: number): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sender: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }

  /** Sends `count` frames from `srcIp` starting at epoch ms `at`; resolves with how many were sent. */
  async go(at: number, count: number, srcIp: string, salt: number): Promise<number> {
    this.proc.stdin?.write(`go ${at} ${count} ${srcIp} ${salt}\n`);
    const l = await this.next(20_000 + Math.max(0, at - Date.now()));
    return Number(l.split(' ')[1]);
  }

  async stop(): Promise<void> {
    this.proc.stdin?.write('quit\n');
    this.proc.stdin?.end();
    await Promise.race([this.proc, sleep(3000)]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

// ---- libvirt's learning tables, as probes -----------------------------------------------

/** One frame and whether it must pass: 'out' VM -> peer, 'in' peer -> VM. */
export interface Probe {
  what: string;
  dir: 'out' | 'in';
  frame: Uint8Array;
  pass: boolean;
}

/**
 * CTRL_IP_LEARNING=any before the lock (section 1.2): from the VM the right
 * MAC with IPv4 or ARP passes, the rest drops; to the VM everything passes.
 * None of these teaches (sources 0.0.0.0 and 224.0.0.0/3, ARP).
 */
export function anyBeforeProbes(vm: string, peer: string): Probe[] {
  const o = outFrames(vm, peer);
  const i = inFrames(vm, peer);
  return [
    { what: 'out DHCP discover 0.0.0.0', dir: 'out', frame: o.discover(), pass: true },
    { what: 'out TCP from 0.0.0.0', dir: 'out', frame: o.udp('0.0.0.0', { proto: 'tcp' }), pass: true },
    { what: 'out IPv4 from 224.0.0.5 (multicast source)', dir: 'out', frame: o.udp('224.0.0.5'), pass: true },
    { what: 'out IPv4 from 255.255.255.255', dir: 'out', frame: o.udp('255.255.255.255'), pass: true },
    { what: 'out ARP request (spa .5, tpa .1)', dir: 'out', frame: o.arp('Request', '10.77.0.5', SERVER), pass: true },
    { what: 'out ARP reply (spa .6)', dir: 'out', frame: o.arp('Reply', '10.77.0.6', SERVER), pass: true },
    { what: 'out IPv6', dir: 'out', frame: o.ipv6(), pass: false },
    { what: 'out RARP announce', dir: 'out', frame: o.rarpAnnounce(), pass: false },
    { what: 'out 0x0835 announce', dir: 'out', frame: o.announce0835(), pass: false },
    { what: 'out IPv4 with another source MAC', dir: 'out', frame: o.udp('10.77.0.70', { srcMac: OTHER_MAC }), pass: false },
    { what: 'in IPv4', dir: 'in', frame: i.udp('10.77.0.9'), pass: true },
    { what: 'in ARP', dir: 'in', frame: i.arp(), pass: true },
    { what: 'in IPv6', dir: 'in', frame: i.ipv6(), pass: true },
    { what: 'in EtherType 0x88b5', dir: 'in', frame: i.other(), pass: true },
  ];
}

/** clean-traffic once locked to `ip` (the static path): what changes against the learning rules. */
export function lockedProbes(vm: string, peer: string, ip: string): Probe[] {
  const o = outFrames(vm, peer);
  const i = inFrames(vm, peer);
  return [
    { what: `out from ${ip}`, dir: 'out', frame: o.udp(ip), pass: true },
    { what: 'out from .3', dir: 'out', frame: o.udp('10.77.0.3'), pass: false },
    { what: 'out TCP from 0.0.0.0 (only UDP from 0.0.0.0 now)', dir: 'out', frame: o.udp('0.0.0.0', { proto: 'tcp' }), pass: false },
    { what: `out ARP spa ${ip}`, dir: 'out', frame: o.arp('Request', ip, SERVER), pass: true },
    { what: 'out ARP spa .5', dir: 'out', frame: o.arp('Request', '10.77.0.5', SERVER), pass: false },
    { what: 'out IPv6', dir: 'out', frame: o.ipv6(), pass: false },
    { what: 'in IPv6', dir: 'in', frame: i.ipv6(), pass: false },
    { what: 'out RARP announce', dir: 'out', frame: o.rarpAnnounce(), pass: true },
  ];
}

/** CTRL_IP_LEARNING=dhcp before the lock, DHCPSERVER = SERVER (section 1.3). */
export function dhcpBeforeProbes(vm: string, peer: string): Probe[] {
  const o = outFrames(vm, peer);
  const i = inFrames(vm, peer);
  return [
    { what: 'out DHCP discover', dir: 'out', frame: o.discover(), pass: true },
    { what: 'out DHCP discover with another source MAC', dir: 'out', frame: o.discover(OTHER_MAC), pass: false },
    { what: 'out IPv4 (not DHCP)', dir: 'out', frame: o.udp('10.77.0.2'), pass: false },
    { what: 'out ARP', dir: 'out', frame: o.arp('Request', '10.77.0.2', SERVER), pass: false },
    { what: 'in ARP', dir: 'in', frame: i.arp(), pass: false },
    { what: 'in IPv4 from the server, not DHCP', dir: 'in', frame: i.udp(SERVER), pass: false },
    { what: 'in OFFER from the trusted server', dir: 'in', frame: i.reply(DHCP.OFFER, SERVER, '10.77.0.2', { lease: 60 }), pass: true },
    { what: 'in OFFER from an untrusted server', dir: 'in', frame: i.reply(DHCP.OFFER, ROGUE, '10.77.0.2', { lease: 60 }), pass: false },
    { what: 'in ACK from an untrusted server', dir: 'in', frame: i.reply(DHCP.ACK, ROGUE, '10.77.0.40', { lease: 60 }), pass: false },
  ];
}

/** Sends every probe and checks its verdict. */
export async function runProbes(c: Checks, scenario: string, label: string, probes: readonly Probe[], send: (dir: 'out' | 'in', frame: Uint8Array) => Promise<boolean>): Promise<void> {
  for (const p of probes) c.check(scenario, `${label}: ${p.what} ${p.pass ? 'passes' : 'drops'}`, p.pass, await send(p.dir, p.frame));
}

// ---- the spoofed flood after the teaching frame ----------------------------------------

export interface FloodResult {
  /** Spoofed frames sent after the teaching frame. */
  sent: number;
  leaked: number;
  /** When the last leaked one was sent, in ms after the teaching frame. */
  lastLeakMs: number | null;
  teachArrived: boolean;
}

/**
 * Sends `teach` (a UDP frame: its 8-byte payload at offset 42 identifies it)
 * from `vm`, then `perMs` spoofed UDP frames from (vmMac, spoofIp) every
 * millisecond for `ms`, and reports which arrived at `peer`. Bounded: 200 000 frames.
 */
export async function floodAfter(vm: Endpoint, peer: Endpoint, teach: Uint8Array, spoof: { mac: string; peerMac: string; ip: string }, ms: number, perMs = 20): Promise<FloodResult> {
  const tx = PacketSocket.open(vm.ns, vm.ifname, { receive: false });
  const rx = PacketSocket.open(peer.ns, peer.ifname);
  rx.drain();
  const sentAt: number[] = [];
  const got = new Set<number>();
  let teachArrived = false;
  const teachTag = Buffer.from(teach.subarray(42, 50)).toString('latin1');
  const read = (): void => {
    for (const f of rx.receiveNow()) {
      const s = Buffer.from(f).toString('latin1');
      const k = s.indexOf('NW\u0000\u0009');
      if (k >= 0) got.add(Buffer.from(f).readUInt32BE(k + 4));
      else if (s.includes(teachTag)) teachArrived = true;
    }
  };
  try {
    const t0 = performance.now();
    tx.send(teach);
    while (performance.now() - t0 < ms && sentAt.length < 200_000) {
      for (let k = 0; k < perMs; k++) {
        tx.send(F.udpFrame({ srcMac: spoof.mac, dstMac: spoof.peerMac, srcIp: spoof.ip, dstIp: '10.77.0.9', sport: 5000, dport: 6000, payload: frameTag(sentAt.length, 9) }));
        sentAt.push(performance.now() - t0);
      }
      read();
      await sleep(1);
    }
    await sleep(300);
    read();
  } finally {
    tx.close();
    rx.close();
  }
  const times = [...got].map((i) => sentAt[i] ?? 0);
  return { sent: sentAt.length, leaked: got.size, lastLeakMs: times.length ? Math.round(Math.max(...times)) : null, teachArrived };
}

// ---- script plumbing ---------------------------------------------------------------------

/** --only a,b and --trials N. */
export function scriptArgs(defaultTrials = 20): { only: string[] | undefined; trials: number; json: string | undefined } {
  const argv = process.argv.slice(2);
  const val = (k: string): string | undefined => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : undefined);
  return { only: val('--only')?.split(','), trials: Number(val('--trials') ?? defaultTrials), json: val('--json') };
}

/** Makes the bridge a hub on these ports: frames the rules accept must not teach it wrong ports. */
export async function makeHub(tb: Testbed, ports: readonly string[]): Promise<void> {
  for (const port of ports) await tb.exec(tb.hostNs, ['bridge', 'link', 'set', 'dev', port, 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
}

/** Runs a scenario unless --only leaves it out; an exception is a failed check, the next scenario still runs. */
export async function runScenario(c: Checks, only: readonly string[] | undefined, name: string, f: () => Promise<void> | void): Promise<void> {
  if (only && !only.includes(name)) return;
  console.log(`--- ${name}`);
  try {
    await f();
  } catch (e) {
    c.check(name, 'scenario ran to the end', true, String(e));
  }
}

/** False (and says why) when not root. */
export function isRootOrSay(needs: string): boolean {
  if (process.getuid?.() === 0) return true;
  console.log(`skipped: needs root (${needs})`);
  return false;
}

/**
 * One race trial: both pinned senders send 300 frames at the same instant,
 * from 10.77.1.1 (salt 1) and 10.77.1.2 (salt 2); how many of each reached `rx`.
 */
export async function raceTrial(s0: PinnedSender, s1: PinnedSender, rx: PacketSocket): Promise<{ sent: [number, number]; got: { 1: number; 2: number } }> {
  rx.drain();
  const at = Date.now() + 400;
  const sent = await Promise.all([s0.go(at, 300, '10.77.1.1', 1), s1.go(at, 300, '10.77.1.2', 2)]);
  await sleep(150);
  const got = { 1: 0, 2: 0 };
  for (const f of rx.receiveNow()) {
    const s = Buffer.from(f).toString('latin1');
    if (s.includes('NW\u0000\u0001')) got[1]++;
    else if (s.includes('NW\u0000\u0002')) got[2]++;
  }
  return { sent: sent as [number, number], got };
}
