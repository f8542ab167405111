// CTRL_IP_LEARNING=dhcp on a namespaced host (docs/design/ip-learning.md 1.3,
// 2.1, 3 and 5.1 for `dhcp`): clean-traffic without IP, DHCPSERVER the peer's
// trusted address S; R is an untrusted server (the peer with another source
// address). Each describe block is one backend (nft here).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileGeneration, type GenerationOptions } from '../../src/compile.js';
import { loadGeneration, unload } from '../../src/host/apply.js';
import { status } from '../../src/host/status.js';
import { writeGeneration } from '../../src/host/generation.js';
import { readLearnedFromKernel, readNftLeases } from '../../src/host/learn/kernel.js';
import { learnKey, type LearnedEntry } from '../../src/ir/learning.js';
import { expectedVerdicts, floodAfter, inFrames, LEARN_SERVER, OTHER_MAC, outFrames, passes, probeVerdicts, type Probe } from '../../src/lab/learning.js';
import { DHCP, dhcpClientFrame, dhcpServerFrame, fillerOptions, type DhcpMessage } from '../../src/lab/frames/dhcp.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { applyPortChanges } from '../../src/host/port-changes.js';
import { nftListTable } from '../../src/host/nft.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { isRoot, PEER_MAC, VM_MAC } from './support/differential.js';
import { learningHost } from './support/learning-host.js';

const UUID = '00000000-0000-0000-0000-000000000001'; // bindingXml's owner
const S = LEARN_SERVER; // trusted (DHCPSERVER)
const R = '10.77.0.200'; // untrusted
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A DHCP message from a server at `src` to the VM (ACK by default, 53 first, lease 60 s). */
function fromServer(src: string, yiaddr: string, m: Partial<DhcpMessage> = {}): Uint8Array {
  return dhcpServerFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, srcIp: src, dstIp: yiaddr, message: { op: 2, yiaddr, siaddr: src, chaddr: VM_MAC, type: DHCP.ACK, leaseSeconds: 60, ...m } });
}

/** A DHCPRELEASE from the VM for `ciaddr` (RFC 2131: the address is in ciaddr). */
function release(ciaddr: string): Uint8Array {
  return dhcpClientFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, srcIp: ciaddr, dstIp: S, message: { op: 1, ciaddr, chaddr: VM_MAC, type: DHCP.RELEASE } });
}

describe.skipIf(!isRoot)('IP learning with CTRL_IP_LEARNING=dhcp, nft backend (kernel; skipped unless root: network namespaces)', () => {
  const h = learningHost('nwldn', 'dhcpnft');
  const { opts, vm, peer } = h;
  const learned = () => readLearnedFromKernel(opts());
  const leases = async (): Promise<string[]> => ((await learned())[0]?.addresses.map((a) => a.ip) ?? []).sort();
  const o = () => outFrames(VM_MAC, PEER_MAC);
  /** Whether the ACK reached the VM. */
  const ack = (src: string, yiaddr: string, m: Partial<DhcpMessage> = {}) => passes(peer(), vm(), fromServer(src, yiaddr, m));
  let gen = 0;

  /** A generation of vnet0 (clean-traffic, dhcp, DHCPSERVER S) and, with `extra`, a second (static) binding. */
  async function generation(g: GenerationOptions = {}, extra = false, params: Record<string, string> = { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: S }, mac = VM_MAC): Promise<string> {
    const bdir = mkdtempSync(join(tmpdir(), 'nwf-ldb-'));
    writeFileSync(join(bdir, 'vnet0.xml'), bindingXml('vnet0', mac, 'clean-traffic', params));
    if (extra) writeFileSync(join(bdir, 'vnet9.xml'), bindingXml('vnet9', '52:54:00:00:00:09', 'clean-traffic', { IP: '10.77.0.99' }));
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false });
    const dir = join(h.work, `g${gen++}`);
    await writeGeneration(dir, compileGeneration(src, 'nft', { partial: true, ...g }));
    rmSync(bdir, { recursive: true });
    return dir;
  }
  async function fresh(g: GenerationOptions = {}, params?: Record<string, string>): Promise<void> {
    await unload(opts());
    const r = await loadGeneration(await generation(g, false, params), opts());
    expect(r.commit.failed).toEqual([]);
  }

  it("before a lease: libvirt's DHCP-only table, frame by frame; an untrusted ACK, an OFFER and an ACK whose 53 is not first teach nothing", async () => {
    await fresh();
    const i = inFrames(VM_MAC, PEER_MAC);
    const probes: Probe[] = [
      { what: 'out DHCP discover', dir: 'out', frame: o().discover(), pass: true },
      { what: 'out DHCP from another MAC', dir: 'out', frame: dhcpClientFrame({ srcMac: OTHER_MAC, srcIp: '0.0.0.0', dstIp: '255.255.255.255', message: { op: 1, chaddr: OTHER_MAC, type: DHCP.DISCOVER } }), pass: false },
      { what: 'out UDP from .2', dir: 'out', frame: o().udp('10.77.0.2'), pass: false },
      { what: 'out ARP', dir: 'out', frame: o().arp('Request', '10.77.0.2', S), pass: false },
      { what: 'out IPv6', dir: 'out', frame: o().ipv6(), pass: false },
      { what: 'in ARP', dir: 'in', frame: i.arp(), pass: false },
      { what: 'in UDP from S, not DHCP', dir: 'in', frame: i.udp(S), pass: false },
      { what: 'in OFFER from S', dir: 'in', frame: fromServer(S, '10.77.0.2', { type: DHCP.OFFER }), pass: true },
      { what: 'in OFFER from R', dir: 'in', frame: fromServer(R, '10.77.0.2', { type: DHCP.OFFER }), pass: false },
      { what: 'in ACK from R', dir: 'in', frame: fromServer(R, '10.77.0.41'), pass: false },
      { what: 'in ACK from S, 53 after 6 long options', dir: 'in', frame: fromServer(S, '10.77.0.42', { leading: fillerOptions(6) }), pass: true },
      { what: 'in ACK from S, 53 after PAD', dir: 'in', frame: fromServer(S, '10.77.0.43', { padAfterMagic: 3 }), pass: true },
      { what: 'in ACK from S for another chaddr', dir: 'in', frame: fromServer(S, '10.77.0.44', { chaddr: OTHER_MAC }), pass: true },
    ];
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
    // nothing taught: the port still fails closed for the addresses of those ACKs
    expect(await learned()).toEqual([]);
    for (const ip of ['10.77.0.2', '10.77.0.41', '10.77.0.42', '10.77.0.43', '10.77.0.44']) expect(await passes(vm(), peer(), o().udp(ip)), `out from ${ip}`).toBe(false);
    expect((await status(opts())).driftDetail).toBeUndefined();
  });

  it('a trusted ACK (53 first) locks the port: 0 of a spoofed flood right after it leaks', async () => {
    const t0 = Date.now();
    expect(await ack(S, '10.77.0.2')).toBe(true);
    const f = await floodAfter(vm(), peer(), o().udp('10.77.0.2'), { mac: VM_MAC, peerMac: PEER_MAC, ip: '10.77.0.66' }, 1500);
    console.info(`nft dhcp learning: first frame from the lease ${f.teachArrived ? 'delivered' : 'LOST'}, ${f.leaked} of ${f.sent} spoofed frames leaked`);
    expect(f.teachArrived).toBe(true);
    expect(f.sent).toBeGreaterThan(1000);
    expect(f.leaked).toBe(0);
    const l = await learned();
    expect(l.map((e) => ({ ...e, addresses: e.addresses.map((a) => ({ ip: a.ip, source: a.source })) }))).toEqual([{ owner: { name: 'vm', uuid: UUID }, mac: VM_MAC, mode: 'dhcp', addresses: [{ ip: '10.77.0.2', source: 'kernel' }] }]);
    // dhcp_kernel_lease (default 3600 s) from the ACK, as wall-clock time
    const expires = Date.parse(l[0]?.addresses[0]?.expires ?? '');
    expect(expires - t0).toBeGreaterThan(3590_000);
    expect(expires - t0).toBeLessThan(3610_000);
    // the static path: ARP from the lease passes, ARP from another address and TCP from 0.0.0.0 drop
    expect(await passes(vm(), peer(), o().arp('Request', '10.77.0.2', S))).toBe(true);
    expect(await passes(vm(), peer(), o().arp('Request', '10.77.0.5', S))).toBe(false);
    expect(await passes(vm(), peer(), o().udp('0.0.0.0', { tcp: true }))).toBe(false);
    expect((await status(opts())).driftDetail).toBeUndefined();
  });

  it('after the lock an untrusted ACK reaches the VM (clean-traffic) and teaches nothing', async () => {
    expect(await ack(R, '10.77.0.41')).toBe(true);
    expect(await leases()).toEqual(['10.77.0.2']);
    expect(await passes(vm(), peer(), o().udp('10.77.0.41'))).toBe(false);
  });

  it('the learned lease survives a load of a changed generation, and a full load', async () => {
    for (const full of [false, true]) {
      const r = await loadGeneration(await generation({}, !full), { ...opts(), ...(full ? { full: true } : {}) });
      expect(r.commit.failed).toEqual([]);
      expect(r.incremental, 'full').toBe(!full);
      expect(await passes(vm(), peer(), o().udp('10.77.0.66'))).toBe(false);
      expect(await passes(vm(), peer(), o().udp('10.77.0.2')), `full ${full}`).toBe(true);
      expect(await leases()).toEqual(['10.77.0.2']);
    }
  });

  it('another VM on the tap, or the port leaving dhcp learning, forgets the leases and the lock', async () => {
    const other = '52:54:00:00:00:77';
    expect((await loadGeneration(await generation({}, false, { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: S }, other), opts())).commit.failed).toEqual([]);
    expect((await readNftLeases(['vnet0'], { netns: h.tb.hostNs })).get('vnet0')).toEqual([]);
    expect(await learned()).toEqual([]);
    // back to the VM: learns from scratch
    expect((await loadGeneration(await generation(), opts())).commit.failed).toEqual([]);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(false);
    expect(await ack(S, '10.77.0.2')).toBe(true);
    expect(await leases()).toEqual(['10.77.0.2']);
    // a static IP: the lease set goes with the port's learning
    expect((await loadGeneration(await generation({}, false, { IP: '10.77.0.7' }), opts())).commit.failed).toEqual([]);
    expect((await readNftLeases(['vnet0'], { netns: h.tb.hostNs })).size).toBe(0);
    expect((await loadGeneration(await generation(), opts())).commit.failed).toEqual([]);
    expect(await learned()).toEqual([]);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(false);
    expect(await ack(S, '10.77.0.2')).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true);
  });

  it('up to 4 leases: a fifth while 4 are live teaches nothing', async () => {
    for (const ip of ['10.77.0.51', '10.77.0.52', '10.77.0.53']) expect(await ack(S, ip)).toBe(true);
    expect(await leases()).toEqual(['10.77.0.2', '10.77.0.51', '10.77.0.52', '10.77.0.53']);
    expect(await ack(S, '10.77.0.55')).toBe(true); // delivered (clean-traffic), not learned
    expect(await leases()).toEqual(['10.77.0.2', '10.77.0.51', '10.77.0.52', '10.77.0.53']);
    expect(await passes(vm(), peer(), o().udp('10.77.0.55'))).toBe(false);
    for (const ip of ['10.77.0.2', '10.77.0.51', '10.77.0.52', '10.77.0.53']) expect(await passes(vm(), peer(), o().udp(ip)), `out from ${ip}`).toBe(true);
  });

  it('a DHCPRELEASE (ciaddr) ends its lease and the lock: the port is DHCP-only again (fails closed)', async () => {
    expect(await passes(vm(), peer(), release('10.77.0.51'))).toBe(true);
    expect(await leases()).toEqual(['10.77.0.2', '10.77.0.52', '10.77.0.53']);
    expect(await passes(vm(), peer(), o().udp('10.77.0.51'))).toBe(false);
    // the approximation of the nft path: a RELEASE of one lease ends the lock while others are live, until the next ACK
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(false);
    expect(await passes(vm(), peer(), o().discover())).toBe(true);
    expect(await ack(S, '10.77.0.2')).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true);
    // a RELEASE of an address the port does not hold changes nothing
    expect(await passes(vm(), peer(), release('10.77.0.77'))).toBe(false); // locked: clean-traffic drops a source it does not hold
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true);
  });

  it('a 4 s lease expires (the port is DHCP-only again); a renewal extends it past its first end', { timeout: 30_000 }, async () => {
    await fresh({ dhcpKernelLease: 4 });
    expect(await ack(S, '10.77.0.50')).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.50'))).toBe(true);
    await sleep(2500);
    expect(await ack(S, '10.77.0.50')).toBe(true); // renewal at 2.5 s: now ends at 6.5 s
    await sleep(2500); // 5 s: past the first ACK's 4 s
    expect(await passes(vm(), peer(), o().udp('10.77.0.50')), 'renewed').toBe(true);
    await sleep(2500); // 7.5 s: past the renewal's end
    expect(await passes(vm(), peer(), o().udp('10.77.0.50')), 'expired').toBe(false);
    expect(await learned()).toEqual([]);
    expect(await passes(vm(), peer(), o().discover())).toBe(true);
    expect(await passes(vm(), peer(), o().arp('Request', '10.77.0.50', S))).toBe(false);
  });

  it('a seeded lease locks the port from its first frame, until its remaining time ends', { timeout: 30_000 }, async () => {
    const ends = Date.now() + 6000;
    const seed: LearnedEntry = { owner: { name: 'vm', uuid: UUID }, mac: VM_MAC, mode: 'dhcp', addresses: [{ ip: '10.77.0.60', expires: new Date(ends).toISOString(), source: 'state' }] };
    await fresh({ seeds: new Map([[learnKey(UUID, VM_MAC), seed]]) });
    expect(await passes(vm(), peer(), o().udp('10.77.0.60'))).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(false);
    expect(await leases()).toEqual(['10.77.0.60']);
    await sleep(Math.max(0, ends - Date.now()) + 300);
    expect(await passes(vm(), peer(), o().udp('10.77.0.60'))).toBe(false);
    // a generation loaded after its seeded lease ended does not bring it back
    const late: LearnedEntry = { ...seed, addresses: [{ ip: '10.77.0.61', expires: new Date(Date.now() + 2000).toISOString(), source: 'state' }] };
    const g = await generation({ seeds: new Map([[learnKey(UUID, VM_MAC), late]]) });
    await sleep(2500);
    await unload(opts());
    expect((await loadGeneration(g, opts())).commit.failed).toEqual([]);
    expect(await passes(vm(), peer(), o().udp('10.77.0.61'))).toBe(false);
    expect(await learned()).toEqual([]);
  });

  it('without DHCPSERVER an ACK from any server teaches', async () => {
    await fresh({}, { CTRL_IP_LEARNING: 'dhcp' });
    expect(await ack(R, '10.77.0.41')).toBe(true);
    expect(await leases()).toEqual(['10.77.0.41']);
    expect(await passes(vm(), peer(), o().udp('10.77.0.41'))).toBe(true);
  });

  it('the lrn_snoop hook exists only while a dhcp port does: a per-port add of the first dhcp port adds it in the same change, and learning works; removing it removes the hook', async () => {
    const hasSnoop = async (): Promise<boolean> => {
      const doc = await nftListTable('bridge', 'nwf_fast', { netns: h.tb.hostNs });
      return doc.nftables.some((o) => 'chain' in o && (o as { chain: { name: string } }).chain.name === 'lrn_snoop');
    };
    const popts = () => ({ ...opts(), filters: bundledFilters() });
    const dhcpBinding = () => parseFilterBindingXml(bindingXml('vnet0', VM_MAC, 'clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: S }), 'vnet0.xml');
    await fresh({}, { IP: '10.77.0.7' });
    expect(await hasSnoop()).toBe(false);
    expect(await passes(vm(), peer(), o().udp('10.77.0.7'))).toBe(true);
    // the port becomes a dhcp port, alone (the domain's interface changes): the hook comes with it
    const a = await applyPortChanges({ add: [dhcpBinding()] }, popts());
    expect(a.failed).toEqual([]);
    expect(a.commit.fullReason).toBeUndefined();
    expect(a.commit.path).toBe('diff');
    expect(await hasSnoop()).toBe(true);
    expect((await status(opts())).driftDetail).toBeUndefined();
    expect(await passes(vm(), peer(), o().udp('10.77.0.7'))).toBe(false); // DHCP-only until a lease
    expect(await ack(S, '10.77.0.2')).toBe(true);
    expect(await leases()).toEqual(['10.77.0.2']);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.66'))).toBe(false);
    // the last dhcp port goes: so does the hook; a later load of a dhcp generation brings it back
    const r = await applyPortChanges({ remove: ['vnet0'] }, popts());
    expect(r.commit.fullReason).toBeUndefined();
    expect(await hasSnoop()).toBe(false);
    expect((await status(opts())).driftDetail).toBeUndefined();
    const back = await loadGeneration(await generation(), opts());
    expect(back.incremental).toBe(true);
    expect(await hasSnoop()).toBe(true);
    expect(await ack(S, '10.77.0.3')).toBe(true);
    expect(await passes(vm(), peer(), o().udp('10.77.0.3'))).toBe(true);
    // a record written before the hook was conditional (no `snoop` in its head): read as having the hook,
    // its dhcp ports found from their records; the change that removes the last one removes the hook
    const headFile = join(h.state, 'loaded', 'head.json');
    const { snoop: _snoop, ...older } = JSON.parse(readFileSync(headFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(headFile, JSON.stringify(older));
    const gone = await applyPortChanges({ add: [parseFilterBindingXml(bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: '10.77.0.7' }), 'vnet0.xml')] }, popts());
    expect(gone.commit.fullReason).toBeUndefined();
    expect(await hasSnoop()).toBe(false);
    expect((await status(opts())).driftDetail).toBeUndefined();
    expect(await passes(vm(), peer(), o().udp('10.77.0.7'))).toBe(true);
  });

  it('(any) a learned address survives a full load too: the learned-state sets the packet path updated are kept, not declared again', async () => {
    await fresh({}, {});
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true); // teaches .2
    const r = await loadGeneration(await generation({}, false, {}), { ...opts(), full: true });
    expect(r.commit.failed).toEqual([]);
    expect(r.incremental).toBe(false);
    expect(await passes(vm(), peer(), o().udp('10.77.0.3'))).toBe(false);
    expect(await passes(vm(), peer(), o().udp('10.77.0.2'))).toBe(true);
    expect((await learned())[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
    await unload(opts());
  });
});
