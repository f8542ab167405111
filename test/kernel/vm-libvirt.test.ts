// Real VMs under real libvirt, the baseline: libvirt's OWN nwfilter
// (clean-traffic) protects real QEMU guests (TCG, direct kernel boot of the
// cloud kernel with our busybox initramfs) on two namespace hosts, each with
// its private libvirtd, joined by a switch namespace where the peer counts
// what arrives, by frame kind. No nwf-fast rules anywhere: this is what
// nwf-fast's hook and reconciler must match later.
//
// One guest, vm1 (tag 1), lives through the whole file:
//   NIC 0 (boot):     step 1 a burst of 20 frames of every kind, step 2 a paced flood of every kind
//   NIC 1 (hot-plug): step 1 a burst of 20 frames of every kind
// and goes through: boot on A, libvirtd restart on A, hot-plug of NIC 1,
// live migration A -> B, destroy on B. Every qemu hook call on both hosts is
// recorded and printed at the end.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsList } from '../../src/host/netns.js';
import { destroyStale } from '../../src/lab/testbed.js';
import { VmGuest } from '../../src/lab/vm/guest.js';
import { describeHookXml, type HookCall } from '../../src/lab/vm/hooks.js';
import { createVmLab, type VmHost, type VmLab } from '../../src/lab/vm/host.js';
import { guestImage, vmAvailable, type GuestImage } from '../../src/lab/vm/image.js';
import { FrameCounter } from '../../src/lab/vm/peer.js';
import { FRAME_KINDS, LEGIT_KINDS, SPOOFED_KINDS, tagOf, type FrameKind } from '../../src/lab/vm/scenario.js';

const avail = vmAvailable();
const skipReason = avail.ok ? undefined : avail.reason;
if (skipReason) console.warn(`SKIP real VMs under libvirt: ${skipReason}`);

const PEER = { mac: '52:54:00:71:00:01', ipv4: '10.71.0.1' };
const NIC0 = { mac: '52:54:00:71:00:11', ip: '10.71.0.11' };
const NIC1 = { mac: '52:54:00:71:00:12', ip: '10.71.0.12' };
const TAG = 1;
const BURST = 20;
const FLOOD_PPS = 90; // 10 frames/s of each of the 9 kinds
const T0 = tagOf(TAG, 0);
const T1 = tagOf(TAG, 1);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const expectedBurst = (): Record<FrameKind, number> => Object.fromEntries(FRAME_KINDS.map((k) => [k, LEGIT_KINDS.includes(k) ? BURST : 0])) as Record<FrameKind, number>;

/** The largest gap between consecutive arrivals (epoch ms), and where it started. */
function largestGap(times: readonly number[]): { gapMs: number; at: number } {
  let best = { gapMs: 0, at: times[0] ?? 0 };
  for (let i = 1; i < times.length; i++) {
    const g = (times[i] as number) - (times[i - 1] as number);
    if (g > best.gapMs) best = { gapMs: g, at: times[i - 1] as number };
  }
  return best;
}

/** Whether pid runs (a zombie counts as ended). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function libvirtJump(ebtables: string, tap: string): boolean {
  return ebtables.split('\n').some((l) => l.trim() === `-A PREROUTING -i ${tap} -j libvirt-I-${tap}`);
}

describe.skipIf(skipReason !== undefined)("real VMs under real libvirt: libvirt's own clean-traffic (baseline)", () => {
  let lab: VmLab;
  let A: VmHost;
  let B: VmHost;
  let image: GuestImage;
  let peer: FrameCounter;
  let vm: VmGuest;
  const qemuPids: number[] = [];
  const daemonPids: number[] = [];
  const events: { what: string; t: number }[] = [];
  const spoofedAtPeer = (): number => peer.count({ kind: SPOOFED_KINDS });

  beforeAll(async () => {
    await destroyStale('nwfvm');
    image = await guestImage();
    console.log(`[vm] guest: kernel ${image.kernel.version}, initramfs ${image.key} (${image.built ? 'built' : 'cached'} in ${s(image.ms)}), modules ${image.modules.join(' ')}`);
    const t = performance.now();
    lab = await createVmLab({ prefix: 'nwfvm', hosts: [{ name: 'a' }, { name: 'b' }], peer: { mac: PEER.mac, ipv4: `${PEER.ipv4}/24` } });
    [A, B] = lab.hosts as [VmHost, VmHost];
    for (const h of lab.hosts) {
      daemonPids.push(h.libvirtd.pid);
      console.log(`[vm] host ${h.name}: hostname ${h.hostname}, host UUID ${h.hostUuid}, libvirtd pid ${h.libvirtd.pid} answering after ${s(h.libvirtd.startMs)}, QEMU capabilities ${s(h.warmupMs)}`);
    }
    console.log(`[vm] lab (switch, 2 hosts, 2 libvirtds) ready in ${s(performance.now() - t)}`);
    peer = FrameCounter.start(lab.peer.endpoint, { maxMs: 10 * 60_000 });
  }, 180_000);

  afterAll(async () => {
    await vm?.destroy().catch(() => undefined);
    await peer?.stop();
    const namespaces = lab?.namespaces ?? [];
    await lab?.destroy();
    // Nothing left: no QEMU, no libvirtd, no namespace.
    for (const pid of [...qemuPids, ...daemonPids]) expect(running(pid), `process ${pid} ended`).toBe(false);
    const left = new Set(await netnsList());
    expect(namespaces.filter((n) => left.has(n))).toEqual([]);
  }, 120_000);

  it('boots a guest under clean-traffic: legitimate frames arrive, every spoofed kind is dropped', async () => {
    vm = await VmGuest.start(
      A,
      {
        name: 'vm1',
        tag: TAG,
        nics: [
          { mac: NIC0.mac, ipv4: `${NIC0.ip}/24`, filterref: { filter: 'clean-traffic', params: { IP: NIC0.ip } } },
          { mac: NIC1.mac, ipv4: `${NIC1.ip}/24`, hotplug: true, filterref: { filter: 'clean-traffic', params: { IP: NIC1.ip } } },
        ],
        peer: PEER,
        steps: [
          { nic: 0, send: { kinds: 'all', count: BURST } },
          { nic: 0, send: { kinds: 'all', pps: FLOOD_PPS, seconds: 240 } },
          { nic: 1, send: { kinds: 'all', count: BURST } },
        ],
        lifetimeS: 300,
      },
      image,
    );
    events.push({ what: 'create', t: vm.createdAt });
    const pid = vm.qemuPid();
    expect(pid, 'QEMU pid file').toBeDefined();
    qemuPids.push(pid as number);
    const ready = await vm.waitConsole(/NWF ready nic=0 if=(\S+) .* uptime=([\d.]+)/, 90_000);
    const readyAt = Date.now();
    await vm.waitConsole(/NWF step nic=0 n=1 end rc=0/, 60_000);
    await peer.waitFor({ tag: T0, step: 1, kind: 'udp' }, BURST, 10_000);
    await sleep(500);
    const first = peer.frames({ tag: T0 })[0];
    console.log(
      `[vm] boot: virsh create ${s(vm.createMs)} (libvirt's filters instantiated, QEMU started), guest ready after ${s(readyAt - vm.createdAt)} (guest uptime ${ready[2]} s), first frame at the peer ${first ? s(first.t - vm.createdAt) : 'never'} after create`,
    );
    expect(peer.counts({ tag: T0, step: 1 })).toEqual(expectedBurst());
    expect(spoofedAtPeer()).toBe(0);
    const taps = await vm.taps();
    expect(taps.get(NIC0.mac)).toMatch(/^vnet\d+$/);
    expect(libvirtJump(await A.ebtablesSave(), taps.get(NIC0.mac) as string), "libvirt's jump for the tap").toBe(true);
  }, 150_000);

  it('keeps the guest running and filtered across a libvirtd restart (reconnect)', async () => {
    const pid = vm.qemuPid();
    const before = A.libvirtd.pid;
    const t = Date.now();
    const ms = await A.restartLibvirtd();
    events.push({ what: 'libvirtd restart', t });
    daemonPids.push(A.libvirtd.pid);
    expect(A.libvirtd.pid).not.toBe(before);
    expect(vm.qemuPid()).toBe(pid);
    expect(running(pid as number)).toBe(true);
    expect(await vm.state()).toBe('running');
    const during = peer.count({ tag: T0, step: 2, kind: 'udp', since: t, until: t + ms });
    const after = await peer.waitFor({ tag: T0, step: 2, kind: 'udp', since: t + ms }, 10, 15_000);
    console.log(`[vm] libvirtd restart: ${s(ms)} until it answered again; the guest's legitimate frames at the peer during the restart ${during}, in the next seconds ${after}`);
    expect(during, 'the guest kept sending through the bridge while libvirtd was down').toBeGreaterThan(0);
    expect(after).toBeGreaterThanOrEqual(10);
    expect(libvirtJump(await A.ebtablesSave(), (await vm.taps()).get(NIC0.mac) as string)).toBe(true);
    expect(spoofedAtPeer()).toBe(0);
  }, 120_000);

  it("gives a hot-plugged NIC libvirt's rules", async () => {
    const hooksBefore = A.hookCalls().length;
    const t = Date.now();
    const ms = await vm.attachInterface(NIC1.mac);
    events.push({ what: 'hot-plug', t });
    const taps = await vm.taps();
    const tap = taps.get(NIC1.mac);
    expect(tap).toMatch(/^vnet\d+$/);
    expect(libvirtJump(await A.ebtablesSave(), tap as string), "libvirt's jump for the hot-plugged tap").toBe(true);
    const ready = Date.now();
    await vm.waitConsole(/NWF step nic=1 n=1 end rc=0/, 60_000);
    await peer.waitFor({ tag: T1, step: 1, kind: 'udp' }, BURST, 10_000);
    await sleep(500);
    console.log(`[vm] hot-plug: virsh attach-device ${s(ms)}, ${tap} on the bridge; the guest's burst from it done ${s(Date.now() - ready)} later`);
    expect(peer.counts({ tag: T1, step: 1 })).toEqual(expectedBurst());
    expect(spoofedAtPeer()).toBe(0);
    expect(A.hookCalls().slice(hooksBefore).map((c) => c.argv.join(' ')), 'no qemu hook fires for a hot-plug').toEqual([]);
  }, 120_000);

  it("migrates live from A to B: the guest's traffic resumes through B", async () => {
    // Frames arriving at the switch from B's uplink: traffic through B.
    const viaB = FrameCounter.start({ ns: lab.switchNs, ifname: `up${lab.hosts.indexOf(B)}` }, { maxMs: 5 * 60_000 });
    try {
      const t = Date.now();
      const ms = await vm.migrate(B);
      events.push({ what: 'migration', t });
      expect(await A.domains()).toEqual([]);
      expect(await B.domains()).toEqual(['vm1']);
      expect(await vm.state()).toBe('running');
      const pid = vm.qemuPid();
      if (pid !== undefined) qemuPids.push(pid);
      const resumed = await viaB.waitFor({ tag: T0, step: 2, kind: 'udp', since: t }, 10, 20_000);
      await peer.waitFor({ tag: T0, step: 2, kind: 'udp', since: t + ms }, 10, 10_000);
      const udp = peer.frames({ tag: T0, step: 2, kind: 'udp', since: t - 2_000 }).map((f) => f.t);
      const gap = largestGap(udp);
      console.log(
        `[vm] migration A -> B: virsh migrate --live ${s(ms)}; legitimate frames through B's uplink ${resumed}; largest gap in the guest's UDP at the peer ${s(gap.gapMs)} (from ${s(gap.at - t)} after the start)`,
      );
      expect(resumed).toBeGreaterThanOrEqual(10);
      expect(peer.count({ tag: T0, step: 2, kind: 'udp', since: t + ms })).toBeGreaterThanOrEqual(10);
      const ebt = await B.ebtablesSave();
      for (const tap of (await vm.taps()).values()) expect(libvirtJump(ebt, tap), `libvirt's jump for ${tap} on B`).toBe(true);
      expect(viaB.count({ kind: SPOOFED_KINDS })).toBe(0);
      expect(spoofedAtPeer()).toBe(0);
    } finally {
      await viaB.stop();
    }
  }, 180_000);

  it('records what libvirt 9.0 passes to qemu hooks at each lifecycle step', async () => {
    const t = Date.now();
    await vm.destroy();
    events.push({ what: 'destroy', t });
    expect(await B.domains()).toEqual([]);
    expect(spoofedAtPeer()).toBe(0);
    for (let i = 0; i < 100 && !B.hookCalls().some((c) => c.op === 'release'); i++) await sleep(100);
    const table = (h: VmHost): HookCall[] => h.hookCalls().filter((c) => c.domain === 'vm1');
    const ops = (h: VmHost): string[] => table(h).map((c) => `${c.op} ${c.subop} ${c.argv[3] ?? ''}`.trim());
    const start = events[0]?.t ?? 0;
    const near = (c: HookCall): string => {
      const e = [...events].reverse().find((x) => x.t <= c.t);
      return e ? `${e.what} +${s(c.t - e.t)}` : '';
    };
    console.log('[vm] qemu hook calls (time since create, nearest event before, argv, stdin):');
    for (const h of [A, B]) {
      for (const c of table(h)) {
        const x = describeHookXml(c.stdin);
        console.log(`  ${h.name} ${s(c.t - start).padStart(8)}  ${near(c).padEnd(26)} ${c.argv.join(' ').padEnd(26)} <${x.root}> ${x.bytes} B, target dev: ${x.targetDevs.join(',') || 'none'}, filterrefs ${x.filterrefs}`);
      }
    }
    expect(ops(A)).toEqual(['prepare begin -', 'start begin -', 'started begin -', 'reconnect begin -', 'stopped end -', 'release end -']);
    expect(ops(B)).toEqual(['migrate begin -', 'prepare begin -', 'start begin -', 'started begin -', 'stopped end -', 'release end -']);
    // start begin: the taps exist (XML with <target dev>); prepare begin: not yet.
    const aStart = table(A).find((c) => c.op === 'start');
    expect(describeHookXml(aStart?.stdin ?? '').targetDevs).toEqual(['vnet0']);
    expect(describeHookXml(table(A).find((c) => c.op === 'prepare')?.stdin ?? '').targetDevs).toEqual([]);
    // migrate begin on B: the incoming domain XML, both NICs with their filterrefs.
    const mig = describeHookXml(table(B).find((c) => c.op === 'migrate')?.stdin ?? '');
    expect(mig.filterrefs).toBe(2);
  }, 60_000);
});
