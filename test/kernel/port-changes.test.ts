// Per-port changes on a 1000-port generation, fail closed, partial loads, on
// a namespaced host (a bridge, VMs behind veths named like taps, a peer):
//  - one port added and removed, of a shape the host has and of a new one,
//    while a VM floods spoofed frames: none delivered, the VM's legitimate
//    frames keep flowing, and every object of the other ports keeps its
//    kernel handle (nothing of theirs is rebuilt);
//  - the same with the eBPF backend (programs attached and detached);
//  - a port on the bridge named like a tap without an entry: dropped both
//    ways, counted as unprotected;
//  - a partial load (10 good bindings, 1 broken): the 10 protected, the
//    broken one dropped with its error in status, exit code 5.
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, loadedStatus as status, unload, type HostOptions } from '../../src/host/apply.js';
import { applyPortChanges } from '../../src/host/port-changes.js';
import { writeGeneration } from '../../src/host/generation.js';
import { queryPort } from '../../src/host/bpf/hook.js';
import { ifIndex, withNetns } from '../../src/host/netns.js';
import { nftListTable } from '../../src/host/nft.js';
import * as F from '../../src/lab/frames/build.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import { createTestbed, destroyStale, type Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { floodDuring, isRoot, PEER_MAC, ROOT_REASON, VM_MAC } from './support/differential.js';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'nwf-fast.js');
const N = 1000;
const VM2_MAC = '52:54:00:00:10:00';
const VM2_IP = '10.77.1.0';
const VM3_MAC = '52:54:00:00:07:77';
const hex2 = (n: number): string => (n & 255).toString(16).padStart(2, '0');
const macOf = (i: number): string => (i === 0 ? VM_MAC : `52:54:00:01:${hex2(i >> 8)}:${hex2(i)}`);
const ipOf = (i: number): string => (i === 0 ? '10.77.0.2' : `10.78.${(i >> 8) & 255}.${i & 255}`);

/** A generation of N ports vnet0..vnet{N-1} under clean-traffic (vnet0 is the VM's tap). */
async function bigGeneration(dir: string, backend: Backend): Promise<string> {
  const b = mkdtempSync(join(tmpdir(), 'nwf-pb-'));
  for (let i = 0; i < N; i++) writeFileSync(join(b, `vnet${i}.xml`), bindingXml(`vnet${i}`, macOf(i), 'clean-traffic', { IP: ipOf(i) }));
  const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
  await writeGeneration(dir, compileGeneration(src, backend));
  rmSync(b, { recursive: true });
  return dir;
}

const binding = (iface: string, mac: string, filter: string, params: Record<string, string | string[]>) => parseFilterBindingXml(bindingXml(iface, mac, filter, params), `${iface}.xml`);

/** Handles of our objects: `kind name` (and `rule chain handle`) -> handle. */
async function handles(ns: string): Promise<Map<string, number>> {
  const doc = await nftListTable('bridge', 'nwf_fast', { netns: ns, inProcess: true });
  const out = new Map<string, number>();
  for (const o of doc.nftables) {
    const [kind, v] = Object.entries(o)[0] as [string, { name?: string; chain?: string; handle?: number }];
    if (kind === 'rule') out.set(`rule ${v.chain} ${v.handle}`, v.handle as number);
    else if (v?.name !== undefined && v.handle !== undefined) out.set(`${kind} ${v.name}`, v.handle);
  }
  return out;
}

/** Every object of `before` is still there with the same handle (nothing of it rebuilt). */
function untouched(before: Map<string, number>, after: Map<string, number>): string[] {
  return [...before].filter(([k, h]) => after.get(k) !== h).map(([k]) => k);
}

describe.skipIf(!isRoot)('per-port changes, fail closed and partial loads (namespaced host)', () => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  const hub = async (port: string) => execa('ip', ['netns', 'exec', tb.hostNs, 'bridge', 'link', 'set', 'dev', port, 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
  /** A legitimate and a spoofed (source MAC and IP) frame from a VM to the peer: which arrived. */
  const probe = async (vm: string, mac: string, ip: string): Promise<{ legit: boolean; spoofed: boolean }> => {
    const frame = (m: string, i: string, sport: number) => F.udpFrame({ srcMac: m, dstMac: PEER_MAC, srcIp: i, dstIp: '10.77.0.9', sport, dport: 6000 });
    const r = await deliver(tb.guest(vm).endpoint, tb.guest('peer').endpoint, [frame(mac, ip, 5001), frame('52:54:00:00:00:66', '10.77.0.66', 5002)], { key: canonicalFrame, quietMs: 60 });
    return { legit: r.arrived[0] as boolean, spoofed: r.arrived[1] as boolean };
  };
  /** A frame from the peer to a VM: whether it arrived. */
  const toVm = async (vm: string, mac: string): Promise<boolean> => {
    const r = await deliver(tb.guest('peer').endpoint, tb.guest(vm).endpoint, [F.udpFrame({ srcMac: PEER_MAC, dstMac: mac, srcIp: '10.77.0.9', dstIp: '10.77.0.3', sport: 7, dport: 8 })], { key: canonicalFrame, quietMs: 60 });
    return r.arrived[0] as boolean;
  };

  beforeAll(async () => {
    await destroyStale('nwfp');
    tb = await createTestbed({
      prefix: 'nwfp',
      vms: [
        { name: 'vm', tap: 'vnet0', mac: VM_MAC },
        { name: 'vm2', tap: `vnet${N}`, mac: VM2_MAC },
        { name: 'vm3', tap: 'vnet77', mac: VM3_MAC },
      ],
      peers: [{ name: 'peer', mac: PEER_MAC }],
    });
    for (const p of ['vnet0', `vnet${N}`, 'vnet77', tb.guest('peer').port]) await hub(p);
    work = mkdtempSync(join(tmpdir(), 'nwf-ports-'));
    pinDir = `/sys/fs/bpf/nwf-fast-ports-${process.pid}`;
  }, 300_000);
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  it(`nft: one port of an existing shape and one of a new shape, added and removed on a ${N}-port generation under a spoofed flood`, async () => {
    const g = await bigGeneration(join(work, 'g-nft'), 'nft');
    const opts: HostOptions = { stateDir: join(work, 'state-nft'), netns: tb.hostNs, inProcess: true };
    await loadGeneration(g, opts);
    const filters = bundledFilters();
    const popts = { ...opts, filters };
    // before: vm2's tap has no entry and is named like a tap: dropped (fail closed)
    expect(await probe('vm2', VM2_MAC, VM2_IP)).toEqual({ legit: false, spoofed: false });
    const before = await handles(tb.hostNs);
    const ms: string[] = [];
    const seen: { existing?: { legit: boolean; spoofed: boolean }; fresh?: { legit: boolean; spoofed: boolean }; after?: { legit: boolean; spoofed: boolean } } = {};
    const moved: string[] = [];
    const { sent, delivered } = await floodDuring(tb, async () => {
      const a1 = await applyPortChanges({ add: [binding(`vnet${N}`, VM2_MAC, 'clean-traffic', { IP: VM2_IP })] }, popts);
      ms.push(`add (existing shape) ${a1.commit.path}/${a1.commit.via} nft ${a1.commit.ms.nft.toFixed(2)} ms, total ${a1.commit.ms.total.toFixed(1)} ms`);
      seen.existing = await probe('vm2', VM2_MAC, VM2_IP);
      moved.push(...untouched(before, await handles(tb.hostNs)));
      const r1 = await applyPortChanges({ remove: [`vnet${N}`] }, popts);
      ms.push(`remove ${r1.commit.path}/${r1.commit.via} nft ${r1.commit.ms.nft.toFixed(2)} ms, total ${r1.commit.ms.total.toFixed(1)} ms`);
      seen.after = await probe('vm2', VM2_MAC, VM2_IP);
      // a shape the host does not have yet: no-ip-spoofing alone
      const a2 = await applyPortChanges({ add: [binding(`vnet${N}`, VM2_MAC, 'no-ip-spoofing', { IP: VM2_IP })] }, popts);
      ms.push(`add (new shape) ${a2.commit.path}/${a2.commit.via} nft ${a2.commit.ms.nft.toFixed(2)} ms, total ${a2.commit.ms.total.toFixed(1)} ms`);
      seen.fresh = await probe('vm2', VM2_MAC, VM2_IP);
      moved.push(...untouched(before, await handles(tb.hostNs)));
      const r2 = await applyPortChanges({ remove: [`vnet${N}`] }, popts);
      ms.push(`remove (last of its shape) ${r2.commit.path}/${r2.commit.via} nft ${r2.commit.ms.nft.toFixed(2)} ms, cleanup ${r2.commit.ms.cleanup.toFixed(2)} ms`);
    });
    console.log(`[ports nft] ${ms.join('; ')}; spoofed from vnet0 sent ${sent.spoofed}, delivered ${delivered.spoofed}; legitimate sent ${sent.legit}, delivered ${delivered.legit}`);
    expect(sent.spoofed).toBeGreaterThan(100);
    expect(delivered.spoofed).toBe(0);
    expect(delivered.legit).toBeGreaterThanOrEqual(Math.floor(sent.legit * 0.99));
    expect(seen.existing).toEqual({ legit: true, spoofed: false });
    expect(seen.after).toEqual({ legit: false, spoofed: false }); // removed: unprotected again, dropped
    expect(seen.fresh).toEqual({ legit: true, spoofed: false }); // no-ip-spoofing drops the spoofed source IP
    expect(moved).toEqual([]);
    // the shape that came with the port went with it; nothing is left of the port
    expect(untouched(await handles(tb.hostNs), before)).toEqual([]);
    const st = await status(opts);
    expect(st.drift).toBe(false);
    expect(st.interfaces).toHaveLength(N);
    await unload(opts);
  }, 300_000);

  it(`eBPF: one port added and removed on a ${N}-port generation under a spoofed flood (programs attached, then detached)`, async () => {
    const g = await bigGeneration(join(work, 'g-bpf'), 'bpf');
    const opts: HostOptions = { stateDir: join(work, 'state-bpf'), netns: tb.hostNs, inProcess: true, pinDir };
    await loadGeneration(g, opts);
    const popts = { ...opts, filters: bundledFilters(), cacheDir: join(work, 'cache') };
    const onTap = () => withNetns(tb.hostNs, () => queryPort({ iface: `vnet${N}`, ifindex: ifIndex(`vnet${N}`) }, pinDir));
    const ms: string[] = [];
    let attached: ReturnType<typeof onTap> | undefined;
    let probed: { legit: boolean; spoofed: boolean } | undefined;
    const { sent, delivered } = await floodDuring(tb, async () => {
      const a = await applyPortChanges({ add: [binding(`vnet${N}`, VM2_MAC, 'clean-traffic', { IP: VM2_IP })] }, popts);
      ms.push(`add ${a.commit.path} nft ${a.commit.ms.nft.toFixed(2)} ms, eBPF ${a.commit.ms.bpf.toFixed(2)} ms, total ${a.commit.ms.total.toFixed(1)} ms`);
      attached = onTap();
      probed = await probe('vm2', VM2_MAC, VM2_IP);
      const r = await applyPortChanges({ remove: [`vnet${N}`] }, popts);
      ms.push(`remove ${r.commit.path} nft ${r.commit.ms.nft.toFixed(2)} ms, eBPF ${r.commit.ms.bpf.toFixed(2)} ms`);
    });
    console.log(`[ports bpf] ${ms.join('; ')}; spoofed from vnet0 sent ${sent.spoofed}, delivered ${delivered.spoofed}`);
    expect(delivered.spoofed).toBe(0);
    expect(sent.spoofed).toBeGreaterThan(100);
    expect(attached?.out?.progId).toBeGreaterThan(0);
    expect(attached?.in?.progId).toBeGreaterThan(0);
    expect(probed).toEqual({ legit: true, spoofed: false });
    expect(onTap()).toEqual({ out: undefined, in: undefined });
    expect((await status(opts)).drift).toBe(false);
    await unload(opts);
  }, 300_000);

  it('a port on the bridge named like a tap with no entry is dropped both ways and counted as unprotected', async () => {
    const g = join(work, 'g-small');
    const b = mkdtempSync(join(tmpdir(), 'nwf-pf-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: '10.77.0.2' }));
    await writeGeneration(g, compileGeneration(loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false }), 'nft'));
    rmSync(b, { recursive: true });
    const opts: HostOptions = { stateDir: join(work, 'state-fc'), netns: tb.hostNs, inProcess: true, tapPatterns: ['vnet*'] };
    await loadGeneration(g, opts);
    expect((await probe('vm3', VM3_MAC, '10.77.7.7')).legit).toBe(false);
    expect(await toVm('vm3', VM3_MAC)).toBe(false);
    expect(await probe('vm', VM_MAC, '10.77.0.2')).toEqual({ legit: true, spoofed: false });
    const st = await status(opts);
    expect(st.unprotected.fromVm).toBeGreaterThan(0);
    expect(st.unprotected.toVm).toBeGreaterThan(0);
    // a tap pattern that does not match it: the port is not nwf-fast's to drop
    await loadGeneration(g, { ...opts, tapPatterns: ['tap*'] });
    expect((await probe('vm3', VM3_MAC, '10.77.7.7')).legit).toBe(true);
    await unload(opts);
  });

  it('a partial load: 10 bindings protected, 1 broken one dropped with its error, exit code 5', async () => {
    const b = join(work, 'partial-bindings');
    mkdirSync(b);
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: '10.77.0.2' }));
    for (let i = 1; i < 10; i++) writeFileSync(join(b, `vnet${i}.xml`), bindingXml(`vnet${i}`, macOf(i), 'clean-traffic', { IP: ipOf(i) }));
    // clean-traffic without its IP and with learning off: NWF1206
    writeFileSync(join(b, `vnet${N}.xml`), bindingXml(`vnet${N}`, VM2_MAC, 'clean-traffic', { CTRL_IP_LEARNING: 'none' }));
    const g = join(work, 'g-partial');
    const compile = await execa(process.execPath, [CLI, 'compile', '--binding', b, '--out', g], { reject: false });
    expect(compile.exitCode).toBe(2); // without --partial a compile refuses
    const partial = await execa(process.execPath, [CLI, 'compile', '--binding', b, '--out', g, '--partial'], { reject: false });
    expect(partial.exitCode).toBe(5);
    expect(partial.stderr).toContain('NWF1206');
    const state = join(work, 'state-partial');
    const load = await execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, 'load', g, '--state-dir', state], { reject: false });
    expect(load.exitCode).toBe(5);
    expect(load.stderr).toMatch(/partial: 1 interface\(s\) fail closed: vnet1000/);
    expect(await probe('vm', VM_MAC, '10.77.0.2')).toEqual({ legit: true, spoofed: false });
    expect((await probe('vm2', VM2_MAC, VM2_IP)).legit).toBe(false);
    expect(await toVm('vm2', VM2_MAC)).toBe(false);
    const st = JSON.parse((await execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, 'status', '--json', '--state-dir', state], { reject: false })).stdout);
    const broken = st.interfaces.find((i: { iface: string }) => i.iface === `vnet${N}`);
    expect(broken).toMatchObject({ status: 'failed', error: { code: 'NWF1206' } });
    expect(broken.drops.unprotected).toBeGreaterThan(0);
    expect(st.interfaces.filter((i: { status: string }) => i.status === 'protected')).toHaveLength(10);
    const text = (await execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, 'status', '--state-dir', state], { reject: false })).stdout;
    expect(text).toMatch(/vnet1000 .*UNPROTECTED \(dropped\): error NWF1206/);
    await unload({ stateDir: state, netns: tb.hostNs });
  });
});

if (!isRoot) console.warn(`SKIP per-port changes: ${ROOT_REASON}`);
