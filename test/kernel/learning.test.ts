// IP learning on a namespaced host, nft and bpf backends
// (docs/design/ip-learning.md 5.1 items 1-4 and 8, 5.4 first two bullets):
// clean-traffic without IP (CTRL_IP_LEARNING any by default), loaded into the
// host namespace. Before the lock libvirt's learning table holds frame by frame
// and nothing is learned; the first IPv4 frame locks the port in the same
// packet, with 0 of a spoofed flood leaked; then the static path; the learned
// address survives a load of a changed generation and a rollback.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, rollback, unload } from '../../src/host/apply.js';
import { status } from '../../src/host/status.js';
import { writeGeneration } from '../../src/host/generation.js';
import { copyBpfLearnedToNft, readLearnedFromKernel, readNftLearned } from '../../src/host/learn/kernel.js';
import { learnKey } from '../../src/ir/learning.js';
import { anyBeforeProbes, expectedVerdicts, floodAfter, lockedProbes, outFrames, passes, probeVerdicts } from '../../src/lab/learning.js';
import { PacketSocket } from '../../src/lab/packet-io.js';
import { PinnedSender, raceTrial } from '../../src/lab/pinned-sender.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml } from '../support/policy.js';
import { isRoot, PEER_MAC, VM_MAC } from './support/differential.js';
import { learningHost } from './support/learning-host.js';

const UUID = '00000000-0000-0000-0000-000000000001'; // bindingXml's owner

describe.skipIf(!isRoot).each(['nft', 'bpf', 'both'] as const)('IP learning, %s backend (kernel; skipped unless root: network namespaces)', (backend: Backend) => {
  const h = learningHost(`nwl${backend[0]}`, 'learn');
  const { opts, vm, peer } = h;
  const learned = () => readLearnedFromKernel(opts());

  /** A generation of vnet0 (clean-traffic with `params`) and, with `extra`, a second binding. */
  async function generation(name: string, params: Record<string, string | string[]>, extra = false, seeds?: Parameters<typeof compileGeneration>[2]): Promise<string> {
    const bdir = mkdtempSync(join(tmpdir(), 'nwf-lb-'));
    writeFileSync(join(bdir, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', params));
    if (extra) writeFileSync(join(bdir, 'vnet9.xml'), bindingXml('vnet9', '52:54:00:00:00:09', 'clean-traffic', { IP: '10.77.0.99' }));
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false });
    const dir = join(h.work, name);
    await writeGeneration(dir, compileGeneration(src, backend, { partial: true, ...(seeds ?? {}) }));
    rmSync(bdir, { recursive: true });
    return dir;
  }

  it('before the lock: libvirt learning table, frame by frame, and nothing is learned', async () => {
    const r = await loadGeneration(await generation('g1', {}), opts());
    expect(r.commit.failed).toEqual([]);
    const probes = anyBeforeProbes(VM_MAC, PEER_MAC);
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
    expect(await learned()).toEqual([]);
    expect((await status(opts())).driftDetail).toBeUndefined();
  });

  it('the first IPv4 frame locks the port: 0 of a spoofed flood right after it leaks', async () => {
    const teach = outFrames(VM_MAC, PEER_MAC).udp('10.77.0.2');
    const f = await floodAfter(vm(), peer(), teach, { mac: VM_MAC, peerMac: PEER_MAC, ip: '10.77.0.66' }, 1500);
    console.info(`${backend} learning: teaching frame ${f.teachArrived ? 'delivered' : 'LOST'}, ${f.leaked} of ${f.sent} spoofed frames leaked`);
    expect(f.teachArrived).toBe(true);
    expect(f.sent).toBeGreaterThan(1000);
    expect(f.leaked).toBe(0);
    expect(await learned()).toEqual([{ owner: { name: 'vm', uuid: UUID }, mac: VM_MAC, mode: 'any', addresses: [{ ip: '10.77.0.2', source: 'kernel' }] }]);
    if (backend === 'both') {
      // the nft line learned nothing on its own; the copy locks it to the program's address
      expect((await readNftLearned({ netns: h.tb.hostNs })).size).toBe(0);
      expect(await copyBpfLearnedToNft(opts())).toEqual(['vnet0']);
      expect([...(await readNftLearned({ netns: h.tb.hostNs }))]).toEqual([['vnet0', ['10.77.0.2']]]);
    }
  });

  it('after the lock: the static path with the learned address; no second address is learned', async () => {
    const probes = lockedProbes(VM_MAC, PEER_MAC, '10.77.0.2');
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
    expect((await learned())[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
    // the learned elements are not drift
    expect((await status(opts())).driftDetail).toBeUndefined();
  });

  it('survives a load of a changed generation and a rollback', async () => {
    const o = outFrames(VM_MAC, PEER_MAC);
    for (const step of ['load', 'rollback'] as const) {
      const r = step === 'load' ? await loadGeneration(await generation('g2', {}, true), opts()) : await rollback(opts());
      expect(r.commit.failed).toEqual([]);
      expect(await passes(vm(), peer(), o.udp('10.77.0.66')), `${step}: spoofed .66`).toBe(false);
      expect(await passes(vm(), peer(), o.udp('10.77.0.3')), `${step}: .3 is not learned`).toBe(false);
      expect(await passes(vm(), peer(), o.udp('10.77.0.2')), `${step}: the learned .2`).toBe(true);
      expect((await learned())[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
    }
  });

  it('a port that stops learning forgets its address; learning again starts from scratch', async () => {
    const o = outFrames(VM_MAC, PEER_MAC);
    expect((await loadGeneration(await generation('g5', { IP: '10.77.0.7' }), opts())).commit.failed).toEqual([]);
    expect((await readNftLearned({ netns: h.tb.hostNs })).size).toBe(0);
    expect((await loadGeneration(await generation('g6', {}), opts())).commit.failed).toEqual([]);
    expect(await learned()).toEqual([]);
    expect(await passes(vm(), peer(), o.arp('Request', '10.77.0.5', '10.77.0.1'))).toBe(true); // the learning table again
    expect(await passes(vm(), peer(), o.udp('10.77.0.3'))).toBe(true); // teaches .3
    expect((await learned())[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.3']);
    expect(await passes(vm(), peer(), o.udp('10.77.0.2'))).toBe(false);
  });

  it('a seed locks the port from its first frame (a new port with learned state)', async () => {
    await unload(opts());
    const seeds = new Map([[learnKey(UUID, VM_MAC), { owner: { name: 'vm', uuid: UUID }, mac: VM_MAC, mode: 'any' as const, addresses: [{ ip: '10.77.0.5', source: 'state' as const }] }]]);
    const r = await loadGeneration(await generation('g3', {}, false, { seeds }), opts());
    expect(r.commit.failed).toEqual([]);
    const o = outFrames(VM_MAC, PEER_MAC);
    expect(await passes(vm(), peer(), o.udp('10.77.0.2'))).toBe(false);
    expect(await passes(vm(), peer(), o.udp('10.77.0.5'))).toBe(true);
    expect((await learned())[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.5']);
  });

  it('race: two CPUs, two sources, a fresh port: exactly one address learned, 0 frames of the other delivered (30 trials)', { timeout: 240_000 }, async () => {
    await unload(opts());
    const g = await generation('race', {});
    const senders = [PinnedSender.start(0, vm(), VM_MAC, PEER_MAC, '10.77.0.9'), PinnedSender.start(1, vm(), VM_MAC, PEER_MAC, '10.77.0.9')] as const;
    const rx = PacketSocket.open(peer().ns, peer().ifname);
    const both: number[] = [];
    let lostDelivered = 0;
    try {
      for (let trial = 0; trial < 30; trial++) {
        await loadGeneration(g, opts());
        const r = await raceTrial(senders, rx, ['10.77.1.1', '10.77.1.2']);
        const ips = (await learned())[0]?.addresses.map((a) => a.ip) ?? [];
        expect(ips.length, `trial ${trial}: learned ${ips.join(', ')}`).toBe(1);
        const winner = ips[0] === '10.77.1.1' ? 0 : 1;
        if (r.got[0] > 0 && r.got[1] > 0) both.push(trial);
        lostDelivered += r.got[1 - winner] as number;
        expect(r.got[winner]).toBeGreaterThan(0);
        await unload(opts()); // a fresh port for the next trial (the learned state goes with the table and the pins)
      }
    } finally {
      rx.close();
      await Promise.all(senders.map((s) => s.stop()));
    }
    console.info(`${backend} race: 30 trials, both sources delivered in ${both.length}, frames of the losing source delivered ${lostDelivered}`);
    expect(both).toEqual([]);
    expect(lostDelivered).toBe(0);
  });

  it('CTRL_IP_LEARNING none: the port fails closed with NWF1206, nothing passes', async () => {
    const r = await loadGeneration(await generation('g4', { CTRL_IP_LEARNING: 'none' }, true), opts());
    expect(r.commit.failed.map((f) => [f.iface, f.code])).toEqual([['vnet0', 'NWF1206']]);
    expect(JSON.stringify(await status(opts()))).toContain('NWF1206');
    const o = outFrames(VM_MAC, PEER_MAC);
    expect(await passes(vm(), peer(), o.udp('10.77.0.5'))).toBe(false);
    expect(await passes(vm(), peer(), o.arp('Request', '10.77.0.5', '10.77.0.1'))).toBe(false);
    await unload(opts());
  });
});
