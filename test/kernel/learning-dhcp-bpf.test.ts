// CTRL_IP_LEARNING=dhcp in the eBPF backend (docs/design/ip-learning.md 2.2,
// 3 "dhcp", 5.1; bpf/lib/nwf_learn.h). Kept apart from the nft backend's
// dhcp tests (learning-dhcp.test.ts).
//  1. The program alone, by BPF_PROG_TEST_RUN: which DHCPACKs teach (53 and
//     51 anywhere among the options, after PAD or long options; not without
//     END, lease 0, another chaddr, an untrusted server, ...), lease slots
//     (renewal never shortens, a fifth lease is refused, RELEASE by ciaddr,
//     expiry), the seeds' conversion from wall-clock to boot time.
//  2. A real bridge in namespaces, --backend bpf and both: the DHCP-only
//     table before, a trusted ACK locks in the same packet with 0 of a
//     spoofed flood leaked, an untrusted server teaches nothing before and
//     after the lock, leases, RELEASE, expiry (4 s), a load keeps them, a
//     seed locks from the first frame (an expired one does not).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { compileBpf } from '../../src/host/bpf-build.js';
import type { SeedLease } from '../../src/backends/bpf/lower.js';
import { loadInterface, type LoadedInterface } from '../../src/host/bpf-load.js';
import { openPinnedMap, TC_ACT, XDP_ACT, type BpfMap } from '../../src/host/bpf/libbpf.js';
import { loadGeneration, unload } from '../../src/host/apply.js';
import { writeGeneration } from '../../src/host/generation.js';
import { copyBpfLearnedToNft, readLearnedFromKernel, readNftLeases } from '../../src/host/learn/kernel.js';
import { BPF_LEASES_MAP, bootTimeNs, decodeLeases, INFINITE_NS, seedLeases } from '../../src/host/learn/seed.js';
import { learnKey, type LearnedEntry } from '../../src/ir/learning.js';
import * as F from '../../src/lab/frames/build.js';
import { DHCP, dhcpClientFrame, dhcpServerFrame, fillerOptions, type DhcpMessage } from '../../src/lab/frames/dhcp.js';
import { expectedVerdicts, floodAfter, lockedProbes, outFrames, passes, probeVerdicts, type Probe } from '../../src/lab/learning.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml, policyFor } from '../support/policy.js';
import { isRoot, PEER_MAC, VM_MAC } from './support/differential.js';
import { learningHost } from './support/learning-host.js';

const UUID = '00000000-0000-0000-0000-000000000001'; // bindingXml's owner
const S = '10.77.0.1'; // the trusted server (DHCPSERVER)
const R = '10.77.0.200'; // an untrusted one
const OTHER_MAC = '52:54:00:00:00:66';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let xid = 0x4e57_1000;
/** A server's DHCP message to the VM (an ACK of `yiaddr` for 60 s from S unless told otherwise). */
function reply(yiaddr: string, o: Partial<DhcpMessage> & { server?: string; dstMac?: string } = {}): Uint8Array {
  const { server, dstMac, ...m } = o;
  return dhcpServerFrame({ srcMac: PEER_MAC, ...(dstMac ? { dstMac } : {}), srcIp: server ?? S, dstIp: '255.255.255.255', message: { op: 2, xid: xid++, yiaddr, chaddr: VM_MAC, type: DHCP.ACK, leaseSeconds: 60, ...m } });
}
/** A client's message from the VM (a DISCOVER unless told otherwise). */
function request(o: Partial<DhcpMessage> & { srcMac?: string; srcIp?: string } = {}): Uint8Array {
  const { srcMac, srcIp, ...m } = o;
  return dhcpClientFrame({ srcMac: srcMac ?? VM_MAC, srcIp: srcIp ?? '0.0.0.0', dstIp: '255.255.255.255', message: { op: 1, xid: xid++, chaddr: VM_MAC, type: DHCP.DISCOVER, ...m } });
}
const release = (ip: string, o: Partial<DhcpMessage> = {}): Uint8Array => request({ srcIp: ip, ciaddr: ip, type: DHCP.RELEASE, ...o });

async function which(cmd: string): Promise<boolean> {
  return (await execa(cmd, ['--version'], { reject: false, timeout: 10_000 })).exitCode === 0;
}
const canBuild = isRoot && (await which('clang-19'));

describe.skipIf(!canBuild)('dhcp learning in the eBPF program, by BPF_PROG_TEST_RUN (kernel; skipped unless root with clang-19)', () => {
  let work: string;
  let pinRoot: string;
  let l: LoadedInterface;
  let map: BpfMap;
  const key = Buffer.from([1, 0, 0, 0]); // BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1
  const leases = () => decodeLeases(map.lookup(key) ?? Buffer.alloc(0), bootTimeNs());
  const ips = () => leases().map((x) => x.ip);
  const reset = (seed: SeedLease[] = []): void => {
    map.delete(key);
    expect(seedLeases(pinRoot, 1, seed)).toBe(true);
  };
  const toVm = (f: Uint8Array): number => l.programs.in.testRun(f).retval;
  const fromVm = (f: Uint8Array): number => l.programs.out.testRun(f).retval;
  const o = outFrames(VM_MAC, PEER_MAC);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'nwf-dhcp-bpf-'));
    pinRoot = `/sys/fs/bpf/nwf-fast-test-dhcp-${process.pid}`;
    mkdirSync(pinRoot, { recursive: true });
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: S }, [], { mac: VM_MAC });
    const build = await compileBpf({ version: 1, interfaces: [p], notes: [] }, { outDir: join(work, 'out'), cacheDir: join(work, 'cache') });
    l = loadInterface(build.interfaces[0]!, { xdp: true, pinRoot });
    map = openPinnedMap(join(pinRoot, BPF_LEASES_MAP));
  });
  afterAll(() => {
    map?.close();
    l?.close();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinRoot) rmSync(pinRoot, { recursive: true, force: true });
  });

  it('a trusted ACK teaches with 53 and 51 first, after 6 long options (past byte 255), after PAD; an infinite lease never expires', () => {
    const cases: [string, Uint8Array][] = [
      ['53 first', reply('10.77.0.2')],
      ['after 6 options of 40 bytes', reply('10.77.0.2', { leading: fillerOptions(6) })],
      ['after 3 PAD', reply('10.77.0.2', { padAfterMagic: 3 })],
      ['unicast to the VM', reply('10.77.0.2', { dstMac: VM_MAC })],
    ];
    for (const [what, f] of cases) {
      reset();
      expect(toVm(f), what).toBe(TC_ACT.OK);
      expect(ips(), what).toEqual(['10.77.0.2']);
      const left = Number(leases()[0]!.deadline - bootTimeNs()) / 1e9;
      expect(left, what).toBeGreaterThan(58);
      expect(left, what).toBeLessThanOrEqual(60);
    }
    reset();
    toVm(reply('10.77.0.2', { leaseSeconds: 0xffffffff }));
    expect(leases()).toEqual([{ ip: '10.77.0.2', deadline: INFINITE_NS, server: S }]);
    // the last address below 224.0.0.0/3 is learned
    reset();
    expect(toVm(reply('223.255.255.254'))).toBe(TC_ACT.OK);
    expect(ips()).toEqual(['223.255.255.254']);
  });

  it('teaches nothing: no 51, lease 0, OFFER, NAK, another chaddr, yiaddr 0 or in 224.0.0.0/3, no END, 70 options before 53, cut inside 51, a second 53, an untrusted server', () => {
    const full = reply('10.77.0.2');
    const cases: [string, Uint8Array, number][] = [
      ['no option 51', reply('10.77.0.2', { leaseSeconds: undefined as unknown as number }), TC_ACT.OK],
      ['lease time 0', reply('10.77.0.2', { leaseSeconds: 0 }), TC_ACT.OK],
      ['OFFER', reply('10.77.0.2', { type: DHCP.OFFER }), TC_ACT.OK],
      ['NAK', reply('10.77.0.2', { type: DHCP.NAK }), TC_ACT.OK],
      ['another chaddr', reply('10.77.0.2', { chaddr: OTHER_MAC }), TC_ACT.OK],
      ['yiaddr 0.0.0.0', reply('0.0.0.0'), TC_ACT.OK],
      // as the nft backend (and libvirt's `any` learner): no multicast or class E address is learned
      ['yiaddr 224.0.0.1 (multicast)', reply('224.0.0.1'), TC_ACT.OK],
      ['yiaddr 239.255.255.250 (multicast)', reply('239.255.255.250'), TC_ACT.OK],
      ['yiaddr 240.0.0.1 (class E)', reply('240.0.0.1'), TC_ACT.OK],
      ['yiaddr 255.255.255.255', reply('255.255.255.255'), TC_ACT.OK],
      ['no END, the frame ends', reply('10.77.0.2', { noEnd: true }), TC_ACT.OK],
      ['70 options before 53', reply('10.77.0.2', { leading: fillerOptions(70, 1) }), TC_ACT.OK],
      ['cut inside option 51', full.subarray(0, full.length - 3), TC_ACT.OK],
      ['a second 53', reply('10.77.0.2', { leading: [{ code: 53, value: Uint8Array.of(DHCP.ACK) }] }), TC_ACT.OK],
      ['from an untrusted server (dropped)', reply('10.77.0.2', { server: R }), TC_ACT.SHOT],
      ['to another MAC (dropped)', reply('10.77.0.2', { dstMac: OTHER_MAC }), TC_ACT.SHOT],
    ];
    for (const [what, f, verdict] of cases) {
      reset();
      expect(toVm(f), what).toBe(verdict);
      expect(ips(), what).toEqual([]);
    }
  });

  it('before the lock the DHCP-only table; after it the static path with the live leases', () => {
    reset();
    expect(fromVm(request())).toBe(TC_ACT.OK);
    expect(fromVm(request({ srcMac: OTHER_MAC }))).toBe(TC_ACT.SHOT);
    expect(fromVm(o.udp('10.77.0.2'))).toBe(TC_ACT.SHOT);
    expect(fromVm(o.arp('Request', '10.77.0.2', S))).toBe(TC_ACT.SHOT);
    expect(toVm(F.arpFrame({ srcMac: PEER_MAC, dstMac: F.BROADCAST_MAC, op: 'Request', spa: S, tpa: '10.77.0.2' }))).toBe(TC_ACT.SHOT);
    expect(toVm(F.udpFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, srcIp: S, dstIp: '10.77.0.2', sport: 53, dport: 5000 }))).toBe(TC_ACT.SHOT);
    expect(toVm(reply('10.77.0.2', { type: DHCP.OFFER }))).toBe(TC_ACT.OK);
    expect(toVm(reply('10.77.0.2'))).toBe(TC_ACT.OK);
    expect(fromVm(o.udp('10.77.0.2'))).toBe(TC_ACT.OK);
    expect(fromVm(o.udp('10.77.0.66'))).toBe(TC_ACT.SHOT);
    expect(fromVm(o.udp('0.0.0.0', { tcp: true }))).toBe(TC_ACT.SHOT);
    expect(fromVm(o.arp('Request', '10.77.0.2', S))).toBe(TC_ACT.OK);
    expect(fromVm(o.arp('Request', '10.77.0.5', S))).toBe(TC_ACT.SHOT);
    // the XDP form of the from-VM policy reads the same leases
    expect(l.xdp!.testRun(o.udp('10.77.0.2')).retval).toBe(XDP_ACT.PASS);
    expect(l.xdp!.testRun(o.udp('10.77.0.66')).retval).toBe(XDP_ACT.DROP);
    // after the lock an untrusted server's ACK passes (clean-traffic) and teaches nothing
    expect(toVm(reply('10.77.0.41', { server: R }))).toBe(TC_ACT.OK);
    expect(ips()).toEqual(['10.77.0.2']);
  });

  it('leases: a renewal never shortens; a fifth is refused; RELEASE ends the one named by ciaddr (not yiaddr); expiry', async () => {
    reset();
    toVm(reply('10.77.0.2'));
    const d1 = leases()[0]!.deadline;
    toVm(reply('10.77.0.2', { leaseSeconds: 120 }));
    const d2 = leases()[0]!.deadline;
    expect(d2 > d1).toBe(true);
    toVm(reply('10.77.0.2', { leaseSeconds: 10 }));
    expect(leases()[0]!.deadline).toBe(d2);
    for (const ip of ['10.77.0.3', '10.77.0.4', '10.77.0.5', '10.77.0.6']) toVm(reply(ip));
    expect(ips()).toEqual(['10.77.0.2', '10.77.0.3', '10.77.0.4', '10.77.0.5']);
    expect(fromVm(o.udp('10.77.0.6'))).toBe(TC_ACT.SHOT);
    // libvirt's reading (yiaddr) releases nothing; ciaddr does
    expect(fromVm(release('10.77.0.3', { ciaddr: '0.0.0.0', yiaddr: '10.77.0.3' }))).toBe(TC_ACT.OK);
    expect(ips()).toContain('10.77.0.3');
    expect(fromVm(release('10.77.0.3'))).toBe(TC_ACT.OK);
    expect(ips()).toEqual(['10.77.0.2', '10.77.0.4', '10.77.0.5']);
    expect(fromVm(o.udp('10.77.0.3'))).toBe(TC_ACT.SHOT);
    // through the XDP program too
    expect(l.xdp!.testRun(release('10.77.0.4')).retval).toBe(XDP_ACT.PASS);
    expect(ips()).toEqual(['10.77.0.2', '10.77.0.5']);
    // the freed slot takes a new lease; a 1 s lease ends in the program, exactly
    toVm(reply('10.77.0.7', { leaseSeconds: 1 }));
    expect(fromVm(o.udp('10.77.0.7'))).toBe(TC_ACT.OK);
    await sleep(1100);
    expect(fromVm(o.udp('10.77.0.7'))).toBe(TC_ACT.SHOT);
    expect(ips()).toEqual(['10.77.0.2', '10.77.0.5']);
    // with no live lease the port is DHCP-only again
    fromVm(release('10.77.0.2'));
    fromVm(release('10.77.0.5'));
    expect(ips()).toEqual([]);
    expect(fromVm(o.arp('Request', '10.77.0.2', S))).toBe(TC_ACT.SHOT);
    expect(fromVm(request())).toBe(TC_ACT.OK);
  });

  it('without DHCPSERVER any server is trusted: its OFFER passes the DHCP-only table and its ACK teaches', async () => {
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' }, [], { mac: VM_MAC });
    const build = await compileBpf({ version: 1, interfaces: [p], notes: [] }, { outDir: join(work, 'out2'), cacheDir: join(work, 'cache') });
    expect(build.interfaces[0]!.shapeId).toBe(l.shapeId); // the servers are values of the same shape
    const any = loadInterface(build.interfaces[0]!, { pinRoot }); // the same pinned lease map
    try {
      reset();
      expect(any.programs.in.testRun(reply('10.77.0.2', { type: DHCP.OFFER, server: R })).retval).toBe(TC_ACT.OK);
      expect(any.programs.in.testRun(reply('10.77.0.2', { server: R })).retval).toBe(TC_ACT.OK);
      expect(ips()).toEqual(['10.77.0.2']);
      // the same ACK through the program of the port with DHCPSERVER: refused
      reset();
      expect(toVm(reply('10.77.0.2', { server: R }))).toBe(TC_ACT.SHOT);
      expect(ips()).toEqual([]);
    } finally {
      any.close();
    }
  });

  it('seeds: wall-clock expiries become boot-time deadlines; an expired lease is not seeded; the kernel entry wins', () => {
    const now = Date.now();
    reset([
      { ip: '10.77.0.8', expires: new Date(now + 3600_000).toISOString() },
      { ip: '10.77.0.9', expires: new Date(now - 1000).toISOString() },
      { ip: '10.77.0.10', server: S },
    ]);
    const got = leases();
    expect(got.map((x) => x.ip)).toEqual(['10.77.0.8', '10.77.0.10']);
    const left = Number(got[0]!.deadline - bootTimeNs()) / 1e9;
    expect(Math.abs(left - 3600)).toBeLessThan(2);
    expect(got[1]).toEqual({ ip: '10.77.0.10', deadline: INFINITE_NS, server: S });
    expect(fromVm(o.udp('10.77.0.8'))).toBe(TC_ACT.OK);
    expect(fromVm(o.udp('10.77.0.9'))).toBe(TC_ACT.SHOT);
    expect(seedLeases(pinRoot, 1, [{ ip: '10.77.0.11' }])).toBe(false);
    expect(ips()).toEqual(['10.77.0.8', '10.77.0.10']);
  });
});

describe.skipIf(!isRoot).each(['bpf', 'both'] as const)('dhcp learning on a bridge, %s backend (kernel; skipped unless root: network namespaces)', (backend: Backend) => {
  const h = learningHost(`nwd${backend[1]}`, 'ldhcp');
  const { opts, vm, peer } = h;
  const learned = () => readLearnedFromKernel(opts());
  const ips = async () => (await learned())[0]?.addresses.map((a) => a.ip) ?? [];
  const toVm = (f: Uint8Array) => passes(peer(), vm(), f);
  const fromVm = (f: Uint8Array) => passes(vm(), peer(), f);
  /** under both, what reconcile does: copy the program's leases to the nft line */
  const copy = async () => (backend === 'both' ? copyBpfLearnedToNft(opts()) : []);
  // the nft line's copy of the leases (the port's own lease set, backends/nft/learn.ts)
  const nftLeaseIps = async () => ((await readNftLeases(['vnet0'], { netns: h.tb.hostNs })).get('vnet0') ?? []).map((l) => l.ip).sort();
  const o = outFrames(VM_MAC, PEER_MAC);

  async function generation(name: string, extra = false, seeds?: ReadonlyMap<string, LearnedEntry>): Promise<string> {
    const bdir = mkdtempSync(join(tmpdir(), 'nwf-ldb-'));
    writeFileSync(join(bdir, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: S }));
    if (extra) writeFileSync(join(bdir, 'vnet9.xml'), bindingXml('vnet9', '52:54:00:00:00:09', 'clean-traffic', { IP: '10.77.0.99' }));
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false });
    const dir = join(h.work, name);
    await writeGeneration(dir, compileGeneration(src, backend, { partial: true, ...(seeds ? { seeds } : {}) }));
    rmSync(bdir, { recursive: true });
    return dir;
  }

  it('before the lock: the DHCP-only table frame by frame (an untrusted server is dropped), nothing learned', async () => {
    const r = await loadGeneration(await generation('g1'), opts());
    expect(r.commit.failed).toEqual([]);
    const probes: Probe[] = [
      { what: 'out DISCOVER', dir: 'out', frame: request(), pass: true },
      { what: 'out DISCOVER from another MAC', dir: 'out', frame: request({ srcMac: OTHER_MAC }), pass: false },
      { what: 'out IPv4', dir: 'out', frame: o.udp('10.77.0.2'), pass: false },
      { what: 'out ARP', dir: 'out', frame: o.arp('Request', '10.77.0.2', S), pass: false },
      { what: 'in ARP', dir: 'in', frame: F.arpFrame({ srcMac: PEER_MAC, dstMac: F.BROADCAST_MAC, op: 'Request', spa: S, tpa: '10.77.0.2' }), pass: false },
      { what: 'in IPv4 from S, not DHCP', dir: 'in', frame: F.udpFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, srcIp: S, dstIp: '10.77.0.2', sport: 53, dport: 5000, payload: Uint8Array.of(0x4e, 0x57, 0, 1, 2, 3, 4, 5) }), pass: false },
      { what: 'in OFFER from S', dir: 'in', frame: reply('10.77.0.2', { type: DHCP.OFFER }), pass: true },
      { what: 'in OFFER from R', dir: 'in', frame: reply('10.77.0.2', { type: DHCP.OFFER, server: R }), pass: false },
      { what: 'in ACK from R', dir: 'in', frame: reply('10.77.0.2', { server: R }), pass: false },
    ];
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
    expect(await learned()).toEqual([]);
    expect(await copy()).toEqual([]);
  });

  it('a trusted ACK locks the port in the same packet: 0 of a spoofed flood right after it leaks', async () => {
    expect(await toVm(reply('10.77.0.2'))).toBe(true);
    const l = await learned();
    expect(l.map((e) => [e.mode, e.mac, e.addresses.map((a) => [a.ip, a.server])])).toEqual([['dhcp', VM_MAC, [['10.77.0.2', S]]]]);
    const left = (Date.parse(l[0]!.addresses[0]!.expires as string) - Date.now()) / 1000;
    expect(left).toBeGreaterThan(55);
    expect(left).toBeLessThanOrEqual(61);
    if (backend === 'both') {
      // the nft line learned nothing on its own: it fails closed until the copy
      expect(await nftLeaseIps()).toEqual([]);
      expect(await fromVm(o.udp('10.77.0.2'))).toBe(false);
      expect(await copy()).toEqual(['vnet0']);
      expect(await nftLeaseIps()).toEqual(['10.77.0.2']);
      expect(await copy()).toEqual([]); // in step: nothing written again
    }
    const f = await floodAfter(vm(), peer(), o.udp('10.77.0.2'), { mac: VM_MAC, peerMac: PEER_MAC, ip: '10.77.0.66' }, 1500);
    console.info(`${backend} dhcp learning: legitimate frame ${f.teachArrived ? 'delivered' : 'LOST'}, ${f.leaked} of ${f.sent} spoofed frames leaked`);
    expect(f.teachArrived).toBe(true);
    expect(f.sent).toBeGreaterThan(1000);
    expect(f.leaked).toBe(0);
    const probes = lockedProbes(VM_MAC, PEER_MAC, '10.77.0.2');
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
  });

  it('after the lock an untrusted server teaches nothing (its ACK passes, clean-traffic); ACKs with 53 after long options or PAD teach', async () => {
    expect(await toVm(reply('10.77.0.41', { server: R }))).toBe(true);
    expect(await ips()).toEqual(['10.77.0.2']);
    expect(await toVm(reply('10.77.0.3', { leading: fillerOptions(6) }))).toBe(true);
    expect(await toVm(reply('10.77.0.4', { padAfterMagic: 3 }))).toBe(true);
    expect(await ips()).toEqual(['10.77.0.2', '10.77.0.3', '10.77.0.4']);
    await copy();
    expect(await fromVm(o.udp('10.77.0.41'))).toBe(false);
    expect(await fromVm(o.udp('10.77.0.3'))).toBe(true);
    expect(await fromVm(o.udp('10.77.0.4'))).toBe(true);
  });

  it('a fifth lease is refused; RELEASE (ciaddr) ends one; a renewal extends and never shortens', async () => {
    expect(await toVm(reply('10.77.0.5'))).toBe(true);
    expect(await toVm(reply('10.77.0.6'))).toBe(true);
    expect(await ips()).toEqual(['10.77.0.2', '10.77.0.3', '10.77.0.4', '10.77.0.5']);
    expect(await fromVm(o.udp('10.77.0.6'))).toBe(false);
    if (backend === 'both') {
      // a lease not copied yet: the nft line still fails the address closed
      expect(await fromVm(o.udp('10.77.0.5'))).toBe(false);
      expect(await copy()).toEqual(['vnet0']);
    }
    expect(await fromVm(o.udp('10.77.0.5'))).toBe(true);
    expect(await fromVm(release('10.77.0.5'))).toBe(true);
    expect(await ips()).toEqual(['10.77.0.2', '10.77.0.3', '10.77.0.4']);
    expect(await copy()).toEqual(backend === 'both' ? ['vnet0'] : []);
    expect(await fromVm(o.udp('10.77.0.5'))).toBe(false);
    const exp = async () => Date.parse((await learned())[0]!.addresses.find((a) => a.ip === '10.77.0.2')!.expires as string);
    const before = await exp();
    expect(await toVm(reply('10.77.0.2', { leaseSeconds: 300 }))).toBe(true);
    const renewed = await exp();
    expect(renewed - before).toBeGreaterThan(200_000);
    expect(await toVm(reply('10.77.0.2', { leaseSeconds: 10 }))).toBe(true);
    expect(Math.abs((await exp()) - renewed)).toBeLessThan(1000);
    if (backend === 'both') {
      expect(await copy()).toEqual(['vnet0']); // the renewal reaches the nft line's timeout
      expect(await copy()).toEqual([]);
    }
  });

  it('a 4 s lease ends on time while the others live; a load of a changed generation keeps the leases', async () => {
    await fromVm(release('10.77.0.4'));
    expect(await toVm(reply('10.77.0.50', { leaseSeconds: 4 }))).toBe(true);
    await copy();
    expect(await fromVm(o.udp('10.77.0.50'))).toBe(true);
    await sleep(4200);
    expect(await fromVm(o.udp('10.77.0.50'))).toBe(false);
    expect(await fromVm(o.udp('10.77.0.2'))).toBe(true);
    expect(await ips()).toEqual(['10.77.0.2', '10.77.0.3']);
    const r = await loadGeneration(await generation('g2', true), opts());
    expect(r.commit.failed).toEqual([]);
    expect(await ips()).toEqual(['10.77.0.2', '10.77.0.3']);
    expect(await fromVm(o.udp('10.77.0.2'))).toBe(true);
    expect(await fromVm(o.udp('10.77.0.66'))).toBe(false);
  });

  it('with every lease released the port is DHCP-only again, in both layers', async () => {
    expect(await fromVm(release('10.77.0.2'))).toBe(true);
    expect(await fromVm(release('10.77.0.3'))).toBe(true);
    expect(await learned()).toEqual([]);
    await copy();
    if (backend === 'both') expect(await nftLeaseIps()).toEqual([]);
    expect(await fromVm(o.udp('10.77.0.2'))).toBe(false);
    expect(await fromVm(o.arp('Request', '10.77.0.2', S))).toBe(false);
    expect(await fromVm(request())).toBe(true);
  });

  it('a seed locks the port from its first frame; an expired lease is not seeded', async () => {
    await unload(opts());
    const now = Date.now();
    const seeds = new Map([
      [
        learnKey(UUID, VM_MAC),
        {
          owner: { name: 'vm', uuid: UUID },
          mac: VM_MAC,
          mode: 'dhcp' as const,
          addresses: [
            { ip: '10.77.0.7', expires: new Date(now + 3600_000).toISOString(), source: 'state' as const },
            { ip: '10.77.0.8', expires: new Date(now - 1000).toISOString(), source: 'state' as const },
          ],
        },
      ],
    ]);
    const r = await loadGeneration(await generation('g3', false, seeds), opts());
    expect(r.commit.failed).toEqual([]);
    expect(await fromVm(o.udp('10.77.0.7'))).toBe(true);
    expect(await fromVm(o.udp('10.77.0.8'))).toBe(false);
    const l = await learned();
    expect(l[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.7']);
    expect(Math.abs(Date.parse(l[0]!.addresses[0]!.expires as string) - (now + 3600_000))).toBeLessThan(2000);
    await unload(opts());
  });
});
