// The namespace testbed: a host namespace with br0 and one namespace per VM
// and peer, and raw frames moved between them in-process (packet-io).
// Everything runs in namespaces created here; the root namespace is not touched.
import { readFileSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentNetns, ifIndexIn, netnsAdd, netnsExists, netnsList, withNetns } from '../../src/host/netns.js';
import { deliver, deliverMany, PacketSocket, settlePacketSockets } from '../../src/lab/packet-io.js';
import { createTestbed, destroyStale, type Testbed } from '../../src/lab/testbed.js';
import { etherFrame, tags } from './packet-frames.js';

const isRoot = process.getuid?.() === 0;
const PREFIX = 'nwft';
const BROADCAST = 'ff:ff:ff:ff:ff:ff';

describe.skipIf(!isRoot)('testbed (kernel; skipped unless run as root: it creates network namespaces)', () => {
  let tb: Testbed;

  beforeAll(async () => {
    await destroyStale(PREFIX);
    const t0 = performance.now();
    tb = await createTestbed({
      prefix: PREFIX,
      vms: [
        { name: 'vm1', tap: 'vnet0', mac: '52:54:00:00:00:01', ipv4: ['10.0.0.1/24'] },
        { name: 'vm2', tap: 'vnet1', mac: '52:54:00:00:00:02', ipv4: ['10.0.0.2/24'], ipv6: ['fd00::2/64'] },
      ],
      peers: [{ name: 'peer', mac: '52:54:00:00:00:fe', ipv4: ['10.0.0.254/24'] }],
    });
    console.info(`testbed ${tb.id} created in ${(performance.now() - t0).toFixed(1)} ms`);
  });

  afterAll(async () => {
    await settlePacketSockets();
    await tb?.destroy();
  });

  it('creates the host namespace, bridge, ports and guests', async () => {
    const names = await netnsList();
    for (const ns of tb.namespaces) expect(names).toContain(ns);
    expect(tb.namespaces).toEqual([tb.hostNs, ...tb.vms.map((v) => v.ns), ...tb.peers.map((p) => p.ns)]);
    expect(tb.hostNs).toMatch(new RegExp(`^${PREFIX}-${process.pid}-[0-9a-f]+-host$`));
    expect(tb.brNfCallIptables).toBe(true);

    const br = JSON.parse((await tb.exec(tb.hostNs, ['ip', '-d', '-j', 'link', 'show', 'br0'])).stdout)[0];
    expect(br.operstate).not.toBe('DOWN');
    expect(br.linkinfo.info_data).toMatchObject({ stp_state: 0, vlan_filtering: 0, mcast_snooping: 0 });
    expect(br.ifindex).toBe(tb.bridgeIfindex);

    const ports = JSON.parse((await tb.exec(tb.hostNs, ['ip', '-j', 'link', 'show', 'master', 'br0'])).stdout) as {
      ifname: string;
      ifindex: number;
      address: string;
    }[];
    expect(ports.map((p) => p.ifname).sort()).toEqual(['vnet0', 'vnet1', 'vpeer0']);
    const vm1 = tb.guest('vm1');
    expect(ports.find((p) => p.ifname === 'vnet0')).toMatchObject({ ifindex: vm1.portIfindex, address: 'fe:54:00:00:00:01' });

    const addrs = JSON.parse((await tb.exec(vm1.ns, ['ip', '-j', 'addr', 'show', 'dev', 'eth0'])).stdout)[0];
    expect(addrs.address).toBe('52:54:00:00:00:01');
    expect(addrs.ifindex).toBe(vm1.ifindex);
    expect(addrs.addr_info.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`)).toEqual(['10.0.0.1/24']);
    const vm2 = JSON.parse((await tb.exec(tb.guest('vm2').ns, ['ip', '-j', 'addr', 'show', 'dev', 'eth0'])).stdout)[0];
    const v6 = vm2.addr_info.filter((a: { family: string }) => a.family === 'inet6').map((a: { local: string }) => a.local);
    expect(v6).toContain('fd00::2');
    expect(ifIndexIn(tb.hostNs, 'vnet1')).toBe(tb.guest('vm2').portIfindex);
  });

  it('refuses to exec outside its own namespaces', async () => {
    await expect(tb.exec('nwft-not-mine', ['true'])).rejects.toThrow(/not one of its namespaces/);
  });

  it('sets the quiet-IPv6 sysctls inside its namespaces only, and keeps br_netfilter on', async () => {
    const rootBefore = readFileSync('/proc/sys/net/ipv6/conf/default/addr_gen_mode', 'utf8');
    const sysctl = async (ns: string, key: string) => (await tb.exec(ns, ['sysctl', '-n', key])).stdout.trim();
    expect(await sysctl(tb.hostNs, 'net.ipv6.conf.default.addr_gen_mode')).toBe('1');
    expect(await sysctl(tb.hostNs, 'net.ipv6.conf.br0.addr_gen_mode')).toBe('1');
    expect(await sysctl(tb.hostNs, 'net.bridge.bridge-nf-call-iptables')).toBe('1');
    expect(await sysctl(tb.guest('vm1').ns, 'net.ipv6.conf.eth0.accept_dad')).toBe('0');
    expect(await sysctl(tb.guest('vm2').ns, 'net.ipv6.conf.eth0.addr_gen_mode')).toBe('0'); // vm2 has IPv6
    expect(readFileSync('/proc/sys/net/ipv6/conf/default/addr_gen_mode', 'utf8')).toBe(rootBefore);
  });

  it('withNetns switches the calling thread and always switches back', async () => {
    const self = () => readlinkSync('/proc/thread-self/ns/net');
    const root = self();
    const inHost = withNetns(tb.hostNs, self);
    expect(inHost).not.toBe(root);
    expect(self()).toBe(root);
    // nested: back to the outer namespace, then to the original one
    withNetns(tb.hostNs, () => {
      const inVm = withNetns(tb.guest('vm1').ns, self);
      expect(inVm).not.toBe(inHost);
      expect(self()).toBe(inHost);
      expect(currentNetns()).toBe(tb.hostNs);
    });
    expect(currentNetns()).toBeNull();
    // throwing and rejecting fns
    expect(() =>
      withNetns(tb.hostNs, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(self()).toBe(root);
    await expect(withNetns(tb.hostNs, async () => Promise.reject(new Error('async boom')))).rejects.toThrow('async boom');
    expect(self()).toBe(root);
    expect(await withNetns(tb.hostNs, async () => self())).toBe(inHost);
    expect(self()).toBe(root);
    // an unknown namespace is an error, not a silent no-op
    expect(() => withNetns('nwft-does-not-exist', self)).toThrow(/does not exist/);
    expect(() => withNetns('../etc', self)).toThrow(/invalid network namespace name/);
    expect(() => ifIndexIn(tb.hostNs, 'eth0')).toThrow(/no interface eth0/);
  });

  it('delivers a frame from a VM to the peer', async () => {
    const vm1 = tb.guest('vm1');
    const peer = tb.guest('peer');
    const tg = tags(1);
    const r = await deliver(vm1.endpoint, peer.endpoint, [etherFrame(peer.mac, vm1.mac, 0x88b5, tg[0]!)]);
    expect(r.arrived).toEqual([true]);
  });

  it('floods a broadcast to every other port and never back to the sender', async () => {
    const vm1 = tb.guest('vm1');
    const tg = tags(20);
    const frames = tg.map((t) => etherFrame(BROADCAST, vm1.mac, 0x88b5, t));
    const [atVm2, atPeer, atOwnPort, atSender] = await deliverMany(
      vm1.endpoint,
      [tb.guest('vm2').endpoint, tb.guest('peer').endpoint, vm1.portEndpoint, vm1.endpoint],
      frames,
      { tags: tg },
    );
    expect(atVm2!.arrived.every(Boolean)).toBe(true);
    expect(atPeer!.arrived.every(Boolean)).toBe(true);
    expect(atOwnPort!.arrived.every(Boolean)).toBe(true); // the tap side sees what the VM sends
    expect(atSender!.arrived.some(Boolean)).toBe(false); // outgoing frames are not echoed to the sending VM
  });

  it('forwards learned unicast only to the port behind it', async () => {
    const vm1 = tb.guest('vm1');
    const peer = tb.guest('peer');
    // Let br0 learn the peer's MAC on vpeer0.
    await deliver(peer.endpoint, vm1.endpoint, [etherFrame(BROADCAST, peer.mac, 0x88b5, tags(1)[0]!)]);
    const tg = tags(50);
    const frames = tg.map((t) => etherFrame(peer.mac, vm1.mac, 0x88b5, t));
    const [atPeer, atVm2] = await deliverMany(vm1.endpoint, [peer.endpoint, tb.guest('vm2').endpoint], frames, { tags: tg });
    expect(atPeer!.arrived.every(Boolean)).toBe(true);
    expect(atVm2!.arrived.some(Boolean)).toBe(false);
  });

  it('moves thousands of frames per test quickly', async () => {
    const vm1 = tb.guest('vm1');
    const peer = tb.guest('peer');
    const n = 5000;
    const tg = tags(n);
    const frames = tg.map((t) => etherFrame(peer.mac, vm1.mac, 0x88b5, t));
    const t0 = performance.now();
    const r = await deliver(vm1.endpoint, peer.endpoint, frames, { tags: tg, tagOffset: 14 });
    const ms = performance.now() - t0;
    console.info(`deliver: ${n} frames in ${ms.toFixed(1)} ms (${Math.round((n / ms) * 1000)} frames/s)`);
    expect(r.arrived.filter(Boolean)).toHaveLength(n);
    expect(ms).toBeLessThan(5000);
  });

  it('matches by full bytes and counts duplicates', async () => {
    const vm1 = tb.guest('vm1');
    const peer = tb.guest('peer');
    const f = etherFrame(peer.mac, vm1.mac, 0x88b5, tags(1)[0]!);
    const r = await deliver(vm1.endpoint, peer.endpoint, [f, f, f]);
    expect(r.arrived).toEqual([true, true, true]);
    expect(r.counts).toEqual([1, 1, 1]);
  });

  it('receives with a frame limit and a bounded wait', async () => {
    const vm1 = tb.guest('vm1');
    const peer = tb.guest('peer');
    const rx = PacketSocket.open(peer.ns, 'eth0');
    const tx = PacketSocket.open(vm1.ns, 'eth0', { receive: false });
    try {
      rx.drain(); // whatever arrived before the test frames
      for (const t of tags(5)) tx.send(etherFrame(peer.mac, vm1.mac, 0x88b5, t));
      // the peer may also see IPv6 noise (MLD reports): count only the test frames
      const ours = (fs: Uint8Array[]) => fs.filter((f) => f[12] === 0x88 && f[13] === 0xb5);
      const first = await rx.receive({ max: 3, timeoutMs: 1000 });
      expect(first).toHaveLength(3);
      const rest = await rx.receive({ timeoutMs: 300, quietMs: 50 });
      expect(ours([...first, ...rest])).toHaveLength(5);
      const t0 = performance.now();
      expect(ours(await rx.receive({ timeoutMs: 100 }))).toHaveLength(0);
      expect(performance.now() - t0).toBeLessThan(1000);
    } finally {
      rx.close();
      tx.close();
    }
  });

  it('destroy removes every namespace; destroyStale removes leftovers of dead processes', async () => {
    const extra = await createTestbed({ prefix: PREFIX, vms: [{ name: 'vm1', tap: 'vnet0', mac: '52:54:00:00:01:01' }] });
    expect(await netnsExists(extra.hostNs)).toBe(true);
    await extra.destroy();
    await extra.destroy(); // idempotent
    const left = (await netnsList()).filter((n) => n.startsWith(extra.id));
    expect(left).toEqual([]);

    // A leftover of a crashed run: a pid that is not running.
    let deadPid = 0;
    for (let pid = 32000; pid > 300 && !deadPid; pid--) {
      try {
        process.kill(pid, 0);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ESRCH') deadPid = pid;
      }
    }
    const stale = `${PREFIX}-${deadPid}-dead-host`;
    await netnsAdd(stale);
    const removed = await destroyStale(PREFIX);
    expect(removed).toContain(stale);
    expect(removed.some((n) => n.startsWith(tb.id))).toBe(false); // live testbeds stay
    expect(await netnsExists(stale)).toBe(false);
    expect(await netnsExists(tb.hostNs)).toBe(true);
  });
});
