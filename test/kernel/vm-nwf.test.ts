// Real VMs under real libvirt, protected by nwf-fast: a namespace host with a
// private libvirtd runs real QEMU guests (vmlab's rig) with nwf-fast's
// libvirt hook installed and `nwf-fast reconcile --follow` running next to
// the daemon. The guests send legitimate and spoofed frames; the peer counts
// what arrives, by kind.
//
// Takeover mode, one guest (vm1) through: start (libvirt's jumps gone,
// nwf-fast's counters count the drops, legitimate frames from the first
// one), a libvirtd restart (reconnect; libvirt re-instantiates, reconcile
// takes over again), an IP change (the binding re-created by update-device),
// a hot-plugged NIC (no hook: the device-added event), and a stop followed by
// another guest (vm2) on the same tap name. A live migration of vm4 from host
// A to host B, where vm5 claims vm4's MAC and IP. Then native mode: a defined
// domain (vm3) moved into nwf-fast's metadata by `adopt --apply` and started
// never has libvirt rules. A spoofed frame must never arrive.
import type { ResultPromise } from 'execa';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyStale } from '../../src/lab/testbed.js';
import { within } from './support/live.js';
import { consolePathOf, VmGuest } from '../../src/lab/vm/guest.js';
import { commandHook } from '../../src/lab/vm/hooks.js';
import { createVmLab, readText, type VmHost, type VmLab } from '../../src/lab/vm/host.js';
import { guestImage, vmAvailable, type GuestImage } from '../../src/lab/vm/image.js';
import { FrameCounter } from '../../src/lab/vm/peer.js';
import { domainXml, interfaceXml } from '../../src/lab/vm/domain.js';
import { FRAME_KINDS, LEGIT_KINDS, SPOOFED_KINDS, tagOf, type FrameKind } from '../../src/lab/vm/scenario.js';
import { readPorts } from '../../src/host/live/ports.js';
import { tapsInForce } from '../../src/host/live/apply.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'bin', 'nwf-fast.js');
const avail = vmAvailable();
const skip = !avail.ok ? avail.reason : !existsSync(join(ROOT, 'dist', 'cli', 'main.js')) ? 'needs the built CLI (npm run build)' : undefined;
if (skip) console.warn(`SKIP real VMs protected by nwf-fast: ${skip}`);

const PEER = { mac: '52:54:00:7a:00:01', ipv4: '10.72.0.1' };
const VM1 = { mac: '52:54:00:7a:00:11', ip: '10.72.0.11', ip2: '10.72.0.21', hotMac: '52:54:00:7a:00:12', hotIp: '10.72.0.12', tap: 'nwftap0' };
const VM2 = { mac: '52:54:00:7a:00:31', ip: '10.72.0.31' };
const VM3 = { mac: '52:54:00:7a:00:41', ip: '10.72.0.41' };
const VM4 = { mac: '52:54:00:7a:00:51', ip: '10.72.0.51' };
const VM5 = { mac: '52:54:00:7a:00:61', ip: '10.72.0.61' };
const BURST = 20;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const burst = (): Record<FrameKind, number> => Object.fromEntries(FRAME_KINDS.map((k) => [k, LEGIT_KINDS.includes(k) ? BURST : 0])) as Record<FrameKind, number>;

describe.skipIf(skip !== undefined)('real VMs under real libvirt, protected by nwf-fast', () => {
  let lab: VmLab;
  let A: VmHost;
  let B: VmHost;
  let image: GuestImage;
  let peer: FrameCounter;
  let work: string;
  let conf: string;
  let confB: string;
  let reconcile: ResultPromise | undefined;
  const guests: VmGuest[] = [];
  const state = (host = 'a'): string => join(work, `state-${host}`);
  const writeConf = (mode: 'takeover' | 'native', host = 'a'): void =>
    writeFileSync(host === 'a' ? conf : confB, [`mode = ${mode}`, `state_dir = ${state(host)}`, 'tap_patterns = vnet* nwftap*', 'lock_timeout = 60', 'keep_generations = 5', ''].join('\n'));
  const spoofedAtPeer = (): number => peer.count({ kind: SPOOFED_KINDS });
  const libvirtJumps = async (tap: string, h = A): Promise<string[]> => (await h.ebtablesSave()).split('\n').filter((l) => new RegExp(`^-A (PREROUTING|POSTROUTING) -[io] ${tap} -j libvirt-`).test(l));
  const inForce = async (tap: string, h = A): Promise<boolean> => (await tapsInForce([tap], { backend: 'nft', netns: h.netns, stateDir: state(h.name), inProcess: true })).has(tap);
  const status = async (): Promise<{ interfaces: { iface: string; drops: Record<string, number> }[]; live: { ports: { port: string; protection: string }[] } }> => {
    const r = await A.exec([process.execPath, CLI, 'status', '--json'], { env: { NWF_FAST_CONFIG: conf }, check: false });
    return JSON.parse(r.stdout);
  };
  const drops = async (tap: string): Promise<number> => Object.values((await status()).interfaces.find((i) => i.iface === tap)?.drops ?? {}).reduce((a, b) => a + b, 0);
  const tapOf = async (g: VmGuest, mac: string): Promise<string> => (await g.taps()).get(mac) as string;

  beforeAll(async () => {
    await destroyStale('nwfvn');
    image = await guestImage();
    work = mkdtempSync(join(tmpdir(), 'nwf-vm-'));
    conf = join(work, 'nwf-fast-a.conf');
    confB = join(work, 'nwf-fast-b.conf');
    writeConf('takeover', 'a');
    writeConf('takeover', 'b');
    const hook = (c: string): string => commandHook([process.execPath, CLI, 'libvirt-hook', '--verbose'], { NWF_FAST_CONFIG: c });
    lab = await createVmLab({
      prefix: 'nwfvn',
      hosts: [
        { name: 'a', hooks: { '50-nwf-fast': hook(conf) } },
        { name: 'b', hooks: { '50-nwf-fast': hook(confB) } },
      ],
      peer: { mac: PEER.mac, ipv4: `${PEER.ipv4}/24` },
    });
    A = lab.host('a');
    B = lab.host('b');
    reconcile = A.spawn([process.execPath, CLI, 'reconcile', '--follow', '--period', '5'], { env: { NWF_FAST_CONFIG: conf } });
    peer = FrameCounter.start(lab.peer.endpoint, { maxMs: 10 * 60_000 });
  }, 240_000);

  afterAll(async () => {
    for (const g of guests) await g.destroy().catch(() => undefined);
    reconcile?.kill('SIGTERM');
    const r = reconcile ? await Promise.race([reconcile, sleep(10_000).then(() => undefined)]) : undefined;
    if (r) console.log(`[vm-nwf] reconcile --follow log:\n${String(r.stderr ?? '').split('\n').slice(-40).join('\n')}`);
    reconcile?.kill('SIGKILL');
    await peer?.stop();
    await lab?.destroy();
    for (const h of ['a', 'b']) if (existsSync(join(work ?? '', `state-${h}`, 'hook.log'))) console.log(`[vm-nwf] host ${h} hook.log:\n${readFileSync(join(work, `state-${h}`, 'hook.log'), 'utf8')}`);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("takeover: the start hook protects the guest and removes libvirt's jumps; legitimate frames pass from the first one, spoofed ones never", async () => {
    const vm1 = await VmGuest.start(
      A,
      {
        name: 'vm1',
        tag: 1,
        nics: [
          { mac: VM1.mac, ipv4: `${VM1.ip}/24`, targetDev: VM1.tap, filterref: { filter: 'clean-traffic', params: { IP: VM1.ip } } },
          { mac: VM1.hotMac, ipv4: `${VM1.hotIp}/24`, hotplug: true, filterref: { filter: 'clean-traffic', params: { IP: VM1.hotIp } } },
        ],
        peer: PEER,
        steps: [
          { nic: 0, send: { kinds: 'all', count: BURST } },
          { nic: 0, send: { kinds: 'all', pps: 90, seconds: 240 } },
          { nic: 1, send: { kinds: 'all', count: BURST } },
        ],
        lifetimeS: 300,
      },
      image,
    );
    guests.push(vm1);
    expect(await tapOf(vm1, VM1.mac)).toBe(VM1.tap);
    // the start hook ran before QEMU: nwf-fast's rules in force, libvirt's dispatch gone
    expect(await inForce(VM1.tap)).toBe(true);
    expect(await libvirtJumps(VM1.tap)).toEqual([]);
    await vm1.waitConsole(/NWF step nic=0 n=1 end rc=0/, 90_000);
    await peer.waitFor({ tag: tagOf(1, 0), step: 1, kind: 'udp' }, BURST, 10_000);
    await sleep(500);
    expect(peer.counts({ tag: tagOf(1, 0), step: 1 })).toEqual(burst());
    expect(spoofedAtPeer()).toBe(0);
    expect(await drops(VM1.tap)).toBeGreaterThanOrEqual(BURST * SPOOFED_KINDS.length);
    const st = await status();
    expect(st.live.ports).toEqual([{ port: VM1.tap, bridge: 'br0', protection: 'nwf-fast', owner: 'vm1' }]);
  }, 180_000);

  it('a libvirtd restart: the reconnect hook and reconcile take over again what libvirt re-instantiates', async () => {
    const t = Date.now();
    const ms = await A.restartLibvirtd();
    // libvirt re-instantiates its filters in the background after it answers; reconcile removes the jumps again
    const back = await within(20_000, async () => (await libvirtJumps(VM1.tap)).length > 0);
    const gone = await within(30_000, async () => (await libvirtJumps(VM1.tap)).length === 0);
    console.log(`[vm-nwf] libvirtd restart ${s(ms)}; libvirt's jumps back ${back === undefined ? 'never seen' : `after ${s(back)}`}, taken over again after ${gone === undefined ? 'NEVER' : s(gone)}`);
    expect(gone).toBeDefined();
    expect(await inForce(VM1.tap)).toBe(true);
    expect(peer.count({ tag: tagOf(1, 0), step: 2, kind: 'udp', since: t })).toBeGreaterThan(0);
    expect(spoofedAtPeer()).toBe(0);
  }, 120_000);

  it('an IP change (update-device, libvirt re-creates the binding): reconcile follows, takes over again', async () => {
    const vm1 = guests[0] as VmGuest;
    const nic = interfaceXml({ mac: VM1.mac, targetDev: VM1.tap, filterref: { filter: 'clean-traffic', params: { IP: [VM1.ip, VM1.ip2] } } });
    const t = Date.now();
    await A.libvirtd.virsh(['update-device', 'vm1', A.libvirtd.writeFile('nic-ip', `${nic}\n`), '--live']);
    const followed = await within(20_000, () => readPorts(state()).find((p) => p.tap === VM1.tap)?.filterref.params.IP?.length === 2);
    const gone = await within(20_000, async () => (await libvirtJumps(VM1.tap)).length === 0 && (await inForce(VM1.tap)));
    console.log(`[vm-nwf] IP change: nwf-fast has the new IP list after ${followed === undefined ? 'NEVER' : s(followed)}; takeover complete after ${gone === undefined ? 'NEVER' : s(gone)}`);
    expect(followed).toBeDefined();
    expect(gone).toBeDefined();
    await sleep(1000);
    expect(peer.count({ tag: tagOf(1, 0), step: 2, kind: 'udp', since: t })).toBeGreaterThan(0);
    expect(spoofedAtPeer()).toBe(0);
    expect((await vm1.state())).toBe('running');
  }, 120_000);

  it('a hot-plugged NIC (no hook fires) is protected within a second of its device-added event and taken over', async () => {
    const vm1 = guests[0] as VmGuest;
    const ms = await vm1.attachInterface(VM1.hotMac);
    const tap = await tapOf(vm1, VM1.hotMac);
    const protectedAfter = await within(10_000, () => inForce(tap));
    const takenAfter = await within(10_000, async () => (await libvirtJumps(tap)).length === 0);
    console.log(`[vm-nwf] hot-plug: attach-device ${s(ms)}; ${tap} protected by nwf-fast ${protectedAfter === undefined ? 'NEVER' : `${s(protectedAfter)} after attach-device returned`}, libvirt's jumps gone after ${takenAfter === undefined ? 'NEVER' : s(takenAfter)}`);
    expect(protectedAfter).toBeDefined();
    expect(protectedAfter as number).toBeLessThan(1500);
    expect(takenAfter).toBeDefined();
    await vm1.waitConsole(/NWF step nic=1 n=1 end rc=0/, 60_000);
    await peer.waitFor({ tag: tagOf(1, 1), step: 1, kind: 'udp' }, BURST, 10_000);
    await sleep(500);
    expect(peer.counts({ tag: tagOf(1, 1), step: 1 })).toEqual(burst());
    expect(spoofedAtPeer()).toBe(0);
  }, 120_000);

  it("a stopped guest's ports go; the next guest on the same tap name gets its own rules, not the old ones", async () => {
    const vm1 = guests.shift() as VmGuest;
    await vm1.destroy();
    expect(await within(20_000, () => readPorts(state()).length === 0)).toBeDefined();
    const vm2 = await VmGuest.start(
      A,
      {
        name: 'vm2',
        tag: 2,
        // vm2 claims vm1's MAC and IP in its spoofed frames
        spoof: { mac: VM1.mac, ipv4: VM1.ip },
        nics: [{ mac: VM2.mac, ipv4: `${VM2.ip}/24`, targetDev: VM1.tap, filterref: { filter: 'clean-traffic', params: { IP: VM2.ip } } }],
        peer: PEER,
        steps: [{ nic: 0, send: { kinds: 'all', count: BURST } }],
        lifetimeS: 300,
      },
      image,
    );
    guests.push(vm2);
    expect(await tapOf(vm2, VM2.mac)).toBe(VM1.tap);
    expect(readPorts(state()).map((p) => [p.tap, p.owner.name, p.mac])).toEqual([[VM1.tap, 'vm2', VM2.mac]]);
    await vm2.waitConsole(/NWF step nic=0 n=1 end rc=0/, 90_000);
    await peer.waitFor({ tag: tagOf(2, 0), step: 1, kind: 'udp' }, BURST, 10_000);
    await sleep(500);
    expect(peer.counts({ tag: tagOf(2, 0), step: 1 })).toEqual(burst());
    expect(spoofedAtPeer()).toBe(0);
    await vm2.destroy();
    guests.pop();
  }, 180_000);

  it("a live migration A -> B: 0 spoofed frames on B (a guest there claims the migrant's MAC and IP), traffic resumes, A's entries go", async () => {
    const vm4 = await VmGuest.start(
      A,
      { name: 'vm4', tag: 4, nics: [{ mac: VM4.mac, ipv4: `${VM4.ip}/24`, filterref: { filter: 'clean-traffic', params: { IP: VM4.ip } } }], peer: PEER, steps: [{ nic: 0, send: { kinds: 'all', pps: 90, seconds: 150 } }], lifetimeS: 300 },
      image,
    );
    guests.push(vm4);
    const vm5 = await VmGuest.start(
      B,
      {
        name: 'vm5',
        tag: 5,
        spoof: { mac: VM4.mac, ipv4: VM4.ip },
        nics: [{ mac: VM5.mac, ipv4: `${VM5.ip}/24`, filterref: { filter: 'clean-traffic', params: { IP: VM5.ip } } }],
        peer: PEER,
        steps: [{ nic: 0, send: { kinds: 'all', pps: 90, seconds: 150 } }],
        lifetimeS: 300,
      },
      image,
    );
    guests.push(vm5);
    await peer.waitFor({ tag: [tagOf(4, 0)], kind: 'udp' }, 10, 90_000);
    await peer.waitFor({ tag: [tagOf(5, 0)], kind: 'udp' }, 10, 90_000);
    const viaB = FrameCounter.start({ ns: lab.switchNs, ifname: `up${lab.hosts.indexOf(B)}` }, { maxMs: 5 * 60_000 });
    try {
      const t = Date.now();
      const ms = await vm4.migrate(B);
      const resumed = await viaB.waitFor({ tag: tagOf(4, 0), kind: 'udp', since: t }, 10, 30_000);
      const aClean = await within(20_000, () => !readPorts(state('a')).some((p) => p.owner.name === 'vm4'));
      await sleep(2000);
      console.log(`[vm-nwf] migration A -> B: virsh migrate ${s(ms)}; vm4's legitimate frames through B ${resumed}; A's entries for vm4 gone ${aClean === undefined ? 'NEVER' : `after ${s(aClean)}`}; spoofed frames through B ${viaB.count({ kind: SPOOFED_KINDS })}`);
      expect(resumed).toBeGreaterThanOrEqual(10);
      expect(aClean).toBeDefined();
      expect(viaB.count({ kind: SPOOFED_KINDS })).toBe(0);
      expect(spoofedAtPeer()).toBe(0);
      const tap4 = await tapOf(vm4, VM4.mac);
      const tap5 = await tapOf(vm5, VM5.mac);
      expect(readPorts(state('b')).map((p) => [p.tap, p.owner.name]).sort()).toEqual([[tap4, 'vm4'], [tap5, 'vm5']].sort());
      for (const tap of [tap4, tap5]) {
        expect(await inForce(tap, B)).toBe(true);
        expect(await libvirtJumps(tap, B)).toEqual([]);
      }
    } finally {
      await viaB.stop();
    }
    for (const g of [vm4, vm5]) await g.destroy();
    guests.splice(guests.indexOf(vm4), 1);
    guests.splice(guests.indexOf(vm5), 1);
  }, 300_000);

  it('native mode: adopt --apply moves a defined domain into nwf-fast metadata; started, it never has libvirt rules and nwf-fast protects it', async () => {
    writeConf('native');
    const cmdline = { tag: 3, nics: [{ mac: VM3.mac, ipv4: `${VM3.ip}/24` }], peer: PEER, steps: [{ nic: 0, send: { kinds: 'all' as const, count: BURST } }], lifetimeS: 300 };
    const xml = domainXml({ name: 'vm3', interfaces: [{ mac: VM3.mac, filterref: { filter: 'clean-traffic', params: { IP: VM3.ip } } }], scenario: cmdline, consolePath: consolePathOf('vm3') }, image);
    await A.libvirtd.virsh(['define', A.libvirtd.writeFile('vm3', xml)]);
    const env = { NWF_FAST_CONFIG: conf };
    try {
      const diff = await A.exec([process.execPath, CLI, 'adopt', 'vm3'], { env });
      expect(diff.stdout).toMatch(/^--- vm3 \(libvirt\)\n\+\+\+ vm3 \(adopted\)\n/);
      expect(diff.stdout).toMatch(/^-\s+<filterref filter='clean-traffic'>$/m);
      expect(diff.stdout).toMatch(/^\+\s+<nwf:interface mac='52:54:00:7a:00:41'>$/m);
      const applied = await A.exec([process.execPath, CLI, 'adopt', 'vm3', '--apply'], { env });
      expect(applied.stderr).toContain('defined vm3');
      const persistent = (await A.libvirtd.virsh(['dumpxml', '--inactive', 'vm3'])).stdout;
      expect(persistent).not.toContain('<filterref');
      expect(persistent).toMatch(/<nwf:filters xmlns:nwf=["']urn:x-nwf-fast:metadata:1["']>/);
      await A.libvirtd.virsh(['start', 'vm3']);
      const taps = (await A.libvirtd.virsh(['domiflist', 'vm3'])).stdout;
      const tap = /^\s*(\S+)\s+bridge\s+br0\s+\S+\s+52:54:00:7a:00:41$/m.exec(taps)?.[1] as string;
      expect(tap).toMatch(/^vnet\d+$/);
      expect(await inForce(tap)).toBe(true);
      const ebt: string[] = [];
      for (let i = 0; i < 5; i++) {
        ebt.push(...(await A.ebtablesSave()).split('\n').filter((l) => l.includes(tap)));
        await sleep(400);
      }
      expect(ebt).toEqual([]);
      expect(await A.libvirtd.listBindings()).toEqual([]);
      const console = (): string => readText(A.libvirtd.hostPath(consolePathOf('vm3')));
      expect(await within(90_000, () => /NWF step nic=0 n=1 end rc=0/.test(console()))).toBeDefined();
      await peer.waitFor({ tag: tagOf(3, 0), step: 1, kind: 'udp' }, BURST, 10_000);
      await sleep(500);
      expect(peer.counts({ tag: tagOf(3, 0), step: 1 })).toEqual(burst());
      expect(await drops(tap)).toBeGreaterThanOrEqual(BURST * SPOOFED_KINDS.length);
      expect(readPorts(state()).map((p) => [p.tap, p.origin])).toEqual([[tap, 'metadata']]);
      expect(spoofedAtPeer()).toBe(0);
      // and back: the persistent definition gets libvirt's filterref again (for its next start)
      await A.exec([process.execPath, CLI, 'adopt', 'vm3', '--revert', '--apply'], { env });
      expect((await A.libvirtd.virsh(['dumpxml', '--inactive', 'vm3'])).stdout).toMatch(/<filterref filter=["']clean-traffic["']>/);
    } finally {
      await A.libvirtd.virsh(['destroy', 'vm3'], { check: false });
      await A.libvirtd.virsh(['undefine', 'vm3'], { check: false });
    }
  }, 180_000);
});

