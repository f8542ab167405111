// The nft gate of eBPF-enforced ports (backends/nft/skeleton.ts), on a
// namespaced host: under --backend bpf and both, a tap deleted and
// re-created outside nwf-fast (same name, a new ifindex, no program) must
// fail closed. Before the gate nft accepted its frames (bpf: every frame;
// both: every frame of the rules only eBPF enforces, here the VM's
// gratuitous ARP). For each backend:
//  - loaded: valid frames pass both ways, spoofed ones and the gratuitous
//    ARP drop, the gate holds the tap's ifindex;
//  - the tap re-created: nothing is delivered either way (valid, spoofed,
//    gratuitous ARP, to the VM), the drops are counted as the port's
//    `unprotected` drops, `status` reports the port (drift, gate closed);
//  - `load` of the generation repairs it (programs on the new tap, its
//    ifindex in the gate, the old one out): valid frames pass, spoofed drop;
//  - re-created again: the hook's per-port path (applyPortChanges of the
//    port) repairs it the same way.
// And under both, a learning port that has learned nothing (the eBPF
// program is the learner; nft keeps it in libvirt's learning table, which
// passes any IPv4 from its MAC): its re-created tap passes nothing.
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, unload, type HostOptions } from '../../src/host/apply.js';
import { gateInstances } from '../../src/host/bpf-apply.js';
import { queryPort } from '../../src/host/bpf/hook.js';
import { writeGeneration } from '../../src/host/generation.js';
import { ifIndex, withNetns } from '../../src/host/netns.js';
import { nftListTable } from '../../src/host/nft.js';
import { applyPortChanges } from '../../src/host/port-changes.js';
import { status } from '../../src/host/status.js';
import * as F from '../../src/lab/frames/build.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import type { Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, isRoot, PEER_MAC, ROOT_REASON, VM_MAC } from './support/differential.js';

const SPOOF_MAC = '52:54:00:00:00:66';
const VM_IP = '10.77.0.2';
const PEER_IP = '10.77.0.9';
const BCAST = 'ff:ff:ff:ff:ff:ff';
// clean-traffic and no gratuitous ARP from the VM: nft cannot express that test, under both only eBPF enforces it
const FILTER = `<filter name='no-garp' chain='root'>
  <rule action='drop' direction='out' priority='-950'><arp gratuitous='true'/></rule>
  <filterref filter='clean-traffic'/>
</filter>`;
const N = 5;

describe.skipIf(!isRoot)('the nft gate: an eBPF-enforced port whose tap is re-created outside nwf-fast fails closed', () => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  let src: ReturnType<typeof loadSources>;
  const ip = (args: string[]) => execa('ip', ['-n', tb.hostNs, ...args]);
  /** Deletes and re-creates vnet0 (the VM's eth0 with it) as a VM restarted without the hook: same name, a new ifindex. */
  const recreateTap = async (): Promise<{ before: number; after: number }> => {
    const before = withNetns(tb.hostNs, () => ifIndex('vnet0'));
    const vm = tb.guest('vm');
    await ip(['link', 'del', 'vnet0']);
    await ip(['link', 'add', 'vnet0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vm.ns]);
    await ip(['link', 'set', 'vnet0', 'master', tb.bridge, 'up']);
    await execa('bridge', ['-n', tb.hostNs, 'link', 'set', 'dev', 'vnet0', 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
    await execa('ip', ['-n', vm.ns, 'link', 'set', 'eth0', 'address', VM_MAC, 'up']);
    return { before, after: withNetns(tb.hostNs, () => ifIndex('vnet0')) };
  };
  /** The ifindexes the gate lets on for vnet0 (read from the kernel's listing). */
  const gated = async (): Promise<number[]> => {
    const doc = await nftListTable('bridge', 'nwf_fast', { netns: tb.hostNs, inProcess: true });
    const set = doc.nftables.map((o) => (o as { set?: { name: string; elem?: unknown[] } }).set).find((s) => s?.name === 'gate-on');
    expect(set).toBeDefined();
    return [...(withNetns(tb.hostNs, () => gateInstances(set?.elem ?? [])).get('vnet0') ?? [])].sort((a, b) => a - b);
  };
  /** The directions in which nwf-fast's programs are on vnet0. */
  const programs = (): string[] =>
    Object.entries(withNetns(tb.hostNs, () => queryPort({ iface: 'vnet0', ifindex: ifIndex('vnet0') }, pinDir)))
      .filter(([, a]) => a !== undefined)
      .map(([d]) => d)
      .sort();

  /** Valid, spoofed and gratuitous-ARP frames from the VM, valid frames to it: how many of each arrived. */
  const traffic = async (): Promise<{ valid: number; spoofed: number; garp: number; toVm: number }> => {
    const udp = (mac: string, srcIp: string, sport: number) => F.udpFrame({ srcMac: mac, dstMac: PEER_MAC, srcIp, dstIp: PEER_IP, sport, dport: 6000 });
    const range = (base: number) => Array.from({ length: N }, (_, i) => base + i);
    const valid = range(5000).map((p) => udp(VM_MAC, VM_IP, p));
    const spoofed = [...range(5100).map((p) => udp(SPOOF_MAC, '10.77.0.66', p)), ...range(5200).map((p) => udp(VM_MAC, '10.77.0.66', p))];
    const garp = F.arpFrame({ srcMac: VM_MAC, dstMac: BCAST, sha: VM_MAC, spa: VM_IP, tpa: VM_IP, tha: '00:00:00:00:00:00', op: 'Request' });
    const from = await deliver(tb.guest('vm').endpoint, tb.guest('peer').endpoint, [...valid, ...spoofed, garp], { key: canonicalFrame, quietMs: 60, maxWaitMs: 2000 });
    const toVmFrames = range(7000).map((p) => F.udpFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, srcIp: PEER_IP, dstIp: VM_IP, sport: p, dport: 6000 }));
    const to = await deliver(tb.guest('peer').endpoint, tb.guest('vm').endpoint, toVmFrames, { key: canonicalFrame, quietMs: 60, maxWaitMs: 2000 });
    const count = (a: boolean[]) => a.filter(Boolean).length;
    return { valid: count(from.arrived.slice(0, N)), spoofed: count(from.arrived.slice(N, 3 * N)), garp: count(from.arrived.slice(3 * N)), toVm: count(to.arrived) };
  };
  const healthy = { valid: N, spoofed: 0, garp: 0, toVm: N };
  const closed = { valid: 0, spoofed: 0, garp: 0, toVm: 0 };

  beforeAll(async () => {
    tb = await createDemoHost('nwfgt');
    work = mkdtempSync(join(tmpdir(), 'nwf-gate-'));
    pinDir = `/sys/fs/bpf/nwf-fast-gate-${process.pid}`;
    const b = mkdtempSync(join(work, 'b-'));
    const f = mkdtempSync(join(work, 'f-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'no-garp', { IP: VM_IP }));
    writeFileSync(join(f, 'no-garp.xml'), FILTER);
    src = loadSources({ filterDirs: [f], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  for (const backend of ['bpf', 'both'] as const satisfies readonly Backend[]) {
    describe(`--backend ${backend}`, () => {
      let gen: string;
      let opts: HostOptions;
      beforeAll(async () => {
        gen = join(work, `gen-${backend}`);
        await writeGeneration(gen, compileGeneration(src, backend));
        opts = { stateDir: join(work, `state-${backend}`), netns: tb.hostNs, pinDir, inProcess: true };
      });
      afterAll(async () => {
        if (opts) await unload(opts).catch(() => undefined);
      });

      it('loaded: valid frames pass both ways, spoofed ones and the gratuitous ARP drop; the gate holds the tap', async () => {
        await loadGeneration(gen, opts);
        expect(await gated()).toEqual([withNetns(tb.hostNs, () => ifIndex('vnet0'))]);
        expect(await traffic()).toEqual(healthy);
        const st = await status(opts);
        expect(st.health).toBe('healthy');
        expect(st.interfaces.find((i) => i.iface === 'vnet0')?.gate).toBe('open');
      });

      it('the tap re-created outside nwf-fast: nothing delivered either way, counted unprotected, status reports the port; load repairs it', async () => {
        const { before, after } = await recreateTap();
        expect(after).not.toBe(before);
        expect(programs()).toEqual([]);
        const unprotectedBefore = (await status(opts)).interfaces.find((i) => i.iface === 'vnet0')?.drops.unprotected ?? 0;
        const seen = await traffic();
        const st = await status(opts);
        const port = st.interfaces.find((i) => i.iface === 'vnet0');
        console.log(`[gate ${backend}] re-created tap (ifindex ${before} -> ${after}): delivered ${JSON.stringify(seen)}, unprotected drops ${unprotectedBefore} -> ${port?.drops.unprotected ?? 0}`);
        expect(seen).toEqual(closed);
        // every frame sent both ways (3N + 1 from, N to the VM) was dropped by the gate, as the port's unprotected drop
        expect((port?.drops.unprotected ?? 0) - unprotectedBefore).toBeGreaterThanOrEqual(4 * N + 1);
        expect(port?.gate).toBe('closed');
        expect(st.health).toBe('drift');
        expect(st.problems.join('\n')).toMatch(/vnet0.*nft gate does not let its tap \(ifindex \d+\) on/);
        // dropped, not unprotected: nothing of the port passes
        expect(st.unprotected).not.toContain('vnet0');
        expect(await gated()).toEqual([before]);

        const r = await loadGeneration(gen, opts);
        expect(r.commit.repairedTaps).toContain('vnet0');
        expect(programs()).toEqual(['in', 'out']);
        expect(await gated()).toEqual([after]);
        expect(await traffic()).toEqual(healthy);
        const again = await status(opts);
        expect(again.health).toBe('healthy');
        expect(again.interfaces.find((i) => i.iface === 'vnet0')?.gate).toBe('open');
      });

      it("re-created again: the hook's per-port path repairs it", async () => {
        const { before, after } = await recreateTap();
        expect(await traffic()).toEqual(closed);
        expect((await status(opts)).interfaces.find((i) => i.iface === 'vnet0')?.gate).toBe('closed');
        const binding = parseFilterBindingXml(bindingXml('vnet0', VM_MAC, 'no-garp', { IP: VM_IP }), 'vnet0.xml');
        await applyPortChanges({ add: [binding] }, { ...opts, filters: src.filters, cacheDir: join(work, 'cache') });
        expect(await gated()).toEqual([after]);
        expect(await gated()).not.toContain(before);
        expect(await traffic()).toEqual(healthy);
        expect((await status(opts)).health).toBe('healthy');
      });
    });
  }

  describe('--backend both, a learning port that has learned nothing yet', () => {
    let gen: string;
    let opts: HostOptions;
    beforeAll(async () => {
      const b = mkdtempSync(join(work, 'bl-'));
      writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic'));
      const lsrc = loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
      gen = join(work, 'gen-both-learning');
      await writeGeneration(gen, compileGeneration(lsrc, 'both'));
      opts = { stateDir: join(work, 'state-both-learning'), netns: tb.hostNs, pinDir, inProcess: true };
    });
    afterAll(async () => {
      if (opts) await unload(opts).catch(() => undefined);
    });

    it("re-created tap: no IPv4 from its MAC passes (nft's learning table alone would pass any); load repairs it and the port learns", async () => {
      const udp = (srcIp: string, sport: number) => F.udpFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, srcIp, dstIp: PEER_IP, sport, dport: 6000 });
      const send = async (frames: Uint8Array[]) => (await deliver(tb.guest('vm').endpoint, tb.guest('peer').endpoint, frames, { key: canonicalFrame, quietMs: 60, maxWaitMs: 2000 })).arrived;
      await loadGeneration(gen, opts);
      await recreateTap();
      expect(await send(Array.from({ length: N }, (_, i) => udp(`10.77.0.${50 + i}`, 5300 + i)))).toEqual(Array(N).fill(false));
      expect((await status(opts)).interfaces.find((i) => i.iface === 'vnet0')?.gate).toBe('closed');
      await loadGeneration(gen, opts);
      // the first IPv4 frame teaches its source (eBPF learns, in the same packet), another source drops
      expect(await send([udp(VM_IP, 5400), udp('10.77.0.60', 5401)])).toEqual([true, false]);
    });
  });
});

if (!isRoot) console.warn(`SKIP nft gate tests: ${ROOT_REASON}`);
