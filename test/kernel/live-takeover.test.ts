// Takeover of real libvirt: a private libvirtd in a namespace host protects
// two ports with real filter bindings (clean-traffic on vnet0, a filter with
// L3 rules on vnet1); nwf-fast's libvirt hook protects the same domains and
// removes exactly libvirt's dispatch for their taps; frames are then decided
// by nwf-fast alone; handback restores libvirt's rules exactly; a binding
// re-created by libvirt for an IP change brings libvirt's jumps back and
// reconcile takes over again. A spoofed flood runs through every step and
// must deliver nothing. No QEMU: the hook gets the domain XML libvirt would
// pass it.
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libvirtAvailable, Libvirtd } from '../../src/lab/libvirt.js';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import { DEFAULT_CONFIG } from '../../src/host/config.js';
import { LiveHost } from '../../src/host/live/host.js';
import { runHook } from '../../src/host/live/hook.js';
import { reconcileOnce } from '../../src/host/live/reconcile.js';
import { readTakeover } from '../../src/host/live/takeover.js';
import { readAudit } from '../../src/host/audit.js';
import { readPorts } from '../../src/host/live/ports.js';
import { tapsInForce } from '../../src/host/live/apply.js';
import { status } from '../../src/host/status.js';
import { liveStatus } from '../../src/host/live/status.js';
import { chainPackets, hookDomainXml, lineDiff, privateVirsh, startFlood, xtSaves, type Flood } from './support/live.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import * as F from '../../src/lab/frames/build.js';

const avail = libvirtAvailable();
const skip = avail.ok ? undefined : avail.reason;
if (skip) console.warn(`SKIP takeover of real libvirt: ${skip}`);

const VM1 = { name: 'vm1', uuid: '6d1b2a1e-0000-4000-8000-000000000001', tap: 'vnet0', mac: '52:54:00:78:00:01', ip: '10.78.0.1' };
const VM2 = { name: 'vm2', uuid: '6d1b2a1e-0000-4000-8000-000000000002', tap: 'vnet1', mac: '52:54:00:78:00:02', ip: '10.78.0.2' };
const PEER = { mac: '52:54:00:78:00:99', ip: '10.78.0.99' };
const L3_FILTER = `<filter name='nwf-live-l3' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='out' priority='500'><udp/></rule>
  <rule action='accept' direction='in' priority='500'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout' priority='600'><all/></rule>
</filter>`;

/** libvirt's dispatch for the two taps, as ebtables-save / iptables-save print it. */
const DISPATCH = {
  eb: ['-A PREROUTING -i vnet0 -j libvirt-I-vnet0', '-A POSTROUTING -o vnet0 -j libvirt-O-vnet0', '-A PREROUTING -i vnet1 -j libvirt-I-vnet1', '-A POSTROUTING -o vnet1 -j libvirt-O-vnet1'],
  ip: ['-A libvirt-host-in -m physdev --physdev-in vnet1 -g HI-vnet1', '-A libvirt-in -m physdev --physdev-in vnet1 -g FI-vnet1', '-A libvirt-out -m physdev --physdev-out vnet1 --physdev-is-bridged -g FO-vnet1'],
};

describe.skipIf(skip !== undefined)("takeover of real libvirt's filter bindings", () => {
  let tb: Testbed;
  let lv: Libvirtd;
  let work: string;
  let host: LiveHost;
  let before: { eb: string; ip: string; ip6: string };
  const floods: Flood[] = [];
  /** Runs work under a spoofed flood from both VMs (and legitimate traffic from vm2); no spoofed frame may arrive. */
  const underFlood = async (what: string, work: () => Promise<void>): Promise<void> => {
    const f = await startFlood(tb, 'peer', [
      { guest: 'vm1', srcMac: '52:54:00:78:00:66', srcIp: VM1.ip, spoofed: true },
      { guest: 'vm2', srcMac: VM2.mac, srcIp: '10.78.0.66', spoofed: true },
      { guest: 'vm2', srcMac: VM2.mac, srcIp: VM2.ip, spoofed: false },
    ]);
    floods.push(f);
    try {
      await work();
      await f.atLeast(200);
    } finally {
      await f.stop();
    }
    console.log(`[takeover] ${what}: spoofed sent ${f.sent.spoofed}, delivered ${f.delivered.spoofed}; legitimate sent ${f.sent.legit}, delivered ${f.delivered.legit}`);
    expect(f.sent.spoofed).toBeGreaterThan(20);
    expect(f.delivered.spoofed).toBe(0);
  };

  beforeAll(async () => {
    tb = await createTestbed({
      prefix: 'nwflt',
      vms: [
        { name: 'vm1', tap: VM1.tap, mac: VM1.mac, ipv4: [`${VM1.ip}/24`] },
        { name: 'vm2', tap: VM2.tap, mac: VM2.mac, ipv4: [`${VM2.ip}/24`] },
      ],
      peers: [{ name: 'peer', mac: PEER.mac, ipv4: [`${PEER.ip}/24`] }],
    });
    lv = await Libvirtd.start({ netns: tb.hostNs, lockWaitMs: 240_000 });
    await lv.defineFilter(L3_FILTER);
    await lv.createBinding({ portdev: VM1.tap, mac: VM1.mac, filter: 'clean-traffic', params: { IP: VM1.ip }, ownerName: VM1.name, ownerUuid: VM1.uuid });
    await lv.createBinding({ portdev: VM2.tap, mac: VM2.mac, filter: 'nwf-live-l3', params: { IP: VM2.ip }, ownerName: VM2.name, ownerUuid: VM2.uuid });
    before = await xtSaves(tb.hostNs);
    work = mkdtempSync(join(tmpdir(), 'nwf-takeover-'));
    host = new LiveHost({
      config: { ...DEFAULT_CONFIG, bridges: [], tapPatterns: ['vnet*'], stateDir: join(work, 'state'), pinDir: join(work, 'pins') },
      netns: tb.hostNs,
      inProcess: true,
      filterDirs: [lv.hostPath('/etc/libvirt/nwfilter')],
    });
  }, 300_000);

  afterAll(async () => {
    await lv?.stop();
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("libvirt's rules for clean-traffic and for a filter with L3 rules: the dispatch we expect", () => {
    for (const l of DISPATCH.eb) expect(before.eb.split('\n')).toContain(l);
    for (const l of DISPATCH.ip) expect(before.ip.split('\n')).toContain(l);
    // the ACCEPT that stays, and no IPv6 rules for these filters
    expect(before.ip.split('\n')).toContain('-A libvirt-in-post -m physdev --physdev-in vnet1 -j ACCEPT');
    expect(before.ip6).not.toContain('vnet');
  });

  it("the start hooks protect both domains, then remove exactly libvirt's dispatch for their taps", async () => {
    await underFlood('start hooks', async () => {
      for (const vm of [
        { ...VM1, filter: 'clean-traffic' },
        { ...VM2, filter: 'nwf-live-l3' },
      ]) {
        const r = await runHook(host, [vm.name, 'start', 'begin', '-'], hookDomainXml(vm.name, vm.uuid, [{ tap: vm.tap, mac: vm.mac, filter: vm.filter, params: { IP: vm.ip } }]));
        console.log(`[takeover] hook ${vm.name} start begin: ${r.logLine}`);
        expect(r.messages).toEqual([]);
        expect(r.exitCode).toBe(0);
        expect(r.stdout).toBe('');
      }
    });
    expect([...(await tapsInForce(['vnet0', 'vnet1'], host.applyOptions))].sort()).toEqual(['vnet0', 'vnet1']);
    const after = await xtSaves(tb.hostNs);
    const eb = lineDiff(before.eb, after.eb);
    expect(eb.added).toEqual([]);
    expect(eb.removed.sort()).toEqual([...DISPATCH.eb].sort());
    const ip = lineDiff(before.ip, after.ip);
    expect(ip.added).toEqual([]);
    expect(ip.removed.sort()).toEqual([...DISPATCH.ip].sort());
    expect(after.ip6).toBe(before.ip6);
    expect(readTakeover(host.config.stateDir).map((r) => [r.tap, r.removed.length])).toEqual([
      ['vnet0', 2],
      ['vnet1', 5],
    ]);
    // one audit line per takeover, naming the taps taken
    const takeovers = readAudit(host.config.stateDir).records.filter((a) => a.op === 'takeover');
    expect(takeovers.map((a) => [a.outcome, a.interfaces?.added])).toEqual([
      ['ok', ['vnet0']],
      ['ok', ['vnet1']],
    ]);
    expect(readPorts(host.config.stateDir).map((p) => [p.tap, p.owner.name, p.source])).toEqual([
      ['vnet0', 'vm1', 'hook'],
      ['vnet1', 'vm2', 'hook'],
    ]);
    const live = await liveStatus(host);
    expect(live.ports.map((p) => [p.port, p.protection])).toEqual([
      ['vnet0', 'nwf-fast'],
      ['vnet1', 'nwf-fast'],
    ]);
  }, 120_000);

  it("frames are decided by nwf-fast alone: libvirt's counters stop, nwf-fast's count the drops", async () => {
    const libvirtCount = async (): Promise<number> =>
      (await chainPackets(tb.hostNs, 'bridge', 'nat', 'libvirt-I-vnet0')) + (await chainPackets(tb.hostNs, 'bridge', 'nat', 'libvirt-I-vnet1')) + (await chainPackets(tb.hostNs, 'ip', 'filter', 'FO-vnet1')) + (await chainPackets(tb.hostNs, 'ip', 'filter', 'FI-vnet1'));
    const drops = async (iface: string): Promise<number> => Object.values((await status(host.applyOptions)).interfaces.find((i) => i.iface === iface)?.drops ?? {}).reduce((a, b) => a + b, 0);
    const l0 = await libvirtCount();
    const d0 = { vnet0: await drops('vnet0'), vnet1: await drops('vnet1') };
    const peer = tb.guest('peer').endpoint;
    const n = 10;
    const spoofMac = Array.from({ length: n }, (_, i) => F.udpFrame({ srcMac: '52:54:00:78:00:77', dstMac: PEER.mac, srcIp: VM1.ip, dstIp: PEER.ip, sport: 100 + i, dport: 2 }));
    const tcp22 = Array.from({ length: n }, (_, i) => F.tcpFrame({ srcMac: PEER.mac, dstMac: VM2.mac, srcIp: PEER.ip, dstIp: VM2.ip, sport: 40000 + i, dport: 22, flags: ['SYN'], seq: 1 }));
    const udpOk = Array.from({ length: n }, (_, i) => F.udpFrame({ srcMac: VM2.mac, dstMac: PEER.mac, srcIp: VM2.ip, dstIp: PEER.ip, sport: 300 + i, dport: 4 }));
    const o = { key: canonicalFrame, maxWaitMs: 500 };
    expect((await deliver(tb.guest('vm1').endpoint, peer, spoofMac, o)).arrived).toEqual(Array(n).fill(false));
    expect((await deliver(peer, tb.guest('vm2').endpoint, tcp22, o)).arrived).toEqual(Array(n).fill(false));
    expect((await deliver(tb.guest('vm2').endpoint, peer, udpOk, o)).arrived).toEqual(Array(n).fill(true));
    const l1 = await libvirtCount();
    const d1 = { vnet0: await drops('vnet0'), vnet1: await drops('vnet1') };
    console.log(`[takeover] libvirt's counters ${l0} -> ${l1}; nwf-fast's drops vnet0 ${d0.vnet0} -> ${d1.vnet0}, vnet1 ${d0.vnet1} -> ${d1.vnet1}`);
    expect(l1).toBe(l0);
    expect(d1.vnet0 - d0.vnet0).toBeGreaterThanOrEqual(10);
    expect(d1.vnet1 - d0.vnet1).toBeGreaterThanOrEqual(10);
  }, 120_000);

  it("handback restores libvirt's rules exactly (ebtables-save / iptables-save identical)", async () => {
    await underFlood('handback', async () => {
      const r = await host.locked('handback', () => host.handbackAll());
      expect([...r.restored.keys()].sort()).toEqual(['vnet0', 'vnet1']);
    });
    expect(await xtSaves(tb.hostNs)).toEqual(before);
    expect(readTakeover(host.config.stateDir)).toEqual([]);
    expect((await liveStatus(host)).ports.map((p) => p.protection)).toEqual(['both', 'both']);
  }, 120_000);

  it('a binding re-created by libvirt for an IP change brings its jumps back; reconcile takes over again', async () => {
    const virsh = privateVirsh(lv);
    await underFlood('takeover, IP change, reconcile', async () => {
      const t = await host.locked('takeover', () => host.takeoverAll());
      expect(t.takeover?.taken.sort()).toEqual(['vnet0', 'vnet1']);
      // libvirt re-creates vnet0's binding with another IP (as for an IP change)
      await lv.deleteBinding(VM1.tap);
      await lv.createBinding({ portdev: VM1.tap, mac: VM1.mac, filter: 'clean-traffic', params: { IP: '10.78.0.11' }, ownerName: VM1.name, ownerUuid: VM1.uuid });
      const mid = await xtSaves(tb.hostNs);
      expect(mid.eb.split('\n')).toContain('-A PREROUTING -i vnet0 -j libvirt-I-vnet0');
      expect((await liveStatus(host)).ports.find((p) => p.port === 'vnet0')?.protection).toBe('both');
      const r = await reconcileOnce(host, virsh);
      console.log(`[takeover] reconcile: added ${r.added.join(',') || '-'}, took over ${r.takeover?.taken.join(',') || '-'}; warnings ${r.warnings.join('; ') || 'none'}`);
      expect(r.takeover?.taken).toEqual(['vnet0']);
    });
    const ports = readPorts(host.config.stateDir);
    expect(ports.find((p) => p.tap === 'vnet0')?.filterref.params.IP).toEqual(['10.78.0.11']);
    expect(ports.find((p) => p.tap === 'vnet1')?.source).toBe('hook');
    const after = await xtSaves(tb.hostNs);
    for (const l of [...DISPATCH.eb, ...DISPATCH.ip]) expect(after.eb.split('\n').concat(after.ip.split('\n'))).not.toContain(l);
    // and the whole of it goes back
    await host.locked('handback', () => host.handbackAll());
    const back = await xtSaves(tb.hostNs);
    for (const l of DISPATCH.eb) expect(back.eb.split('\n')).toContain(l);
    for (const l of DISPATCH.ip) expect(back.ip.split('\n')).toContain(l);
  }, 180_000);

  it("reconcile repairs nwf-fast's rules when they are gone from the kernel (drift), then takes over", async () => {
    // libvirt's rules are back (the previous test handed back): deleting nwf-fast's tables leaves libvirt's
    await execa('ip', ['netns', 'exec', tb.hostNs, 'nft', 'delete', 'table', 'bridge', 'nwf_fast']);
    expect((await tapsInForce(['vnet0', 'vnet1'], host.applyOptions)).size).toBe(0);
    const r = await reconcileOnce(host, privateVirsh(lv));
    expect(r.warnings.join('\n')).toMatch(/not in force for vnet0, vnet1: reloaded/);
    expect([...(await tapsInForce(['vnet0', 'vnet1'], host.applyOptions))].sort()).toEqual(['vnet0', 'vnet1']);
    expect(r.takeover?.taken.sort()).toEqual(['vnet0', 'vnet1']);
  }, 120_000);

  it('the stop hooks remove the ports; libvirt tearing its rules down meanwhile is fine', async () => {
    await host.locked('takeover', () => host.takeoverAll());
    await lv.deleteBinding(VM2.tap);
    const r = await runHook(host, [VM2.name, 'stopped', 'end', '-'], hookDomainXml(VM2.name, VM2.uuid, [{ tap: VM2.tap, mac: VM2.mac, filter: 'nwf-live-l3', params: { IP: VM2.ip } }]));
    expect(r.exitCode).toBe(0);
    const again = await runHook(host, [VM2.name, 'release', 'end', '-'], hookDomainXml(VM2.name, VM2.uuid, [{ tap: VM2.tap, mac: VM2.mac }]));
    expect(again.exitCode).toBe(0);
    expect(readPorts(host.config.stateDir).map((p) => p.tap)).toEqual(['vnet0']);
    expect(readTakeover(host.config.stateDir).map((x) => x.tap)).toEqual(['vnet0']);
    // nothing of libvirt's for vnet1 was put back (its chains are gone)
    expect((await xtSaves(tb.hostNs)).ip).not.toContain('vnet1');
    expect(JSON.parse(readFileSync(join(host.config.stateDir, 'ports.json'), 'utf8')).ports).toHaveLength(1);
    expect(floods.every((f) => f.delivered.spoofed === 0)).toBe(true);
  }, 120_000);
});
