// What real libvirt (9.0, Debian 12) does while it learns a VM's IPv4
// address, observed frame by frame: a private libvirtd in a namespace host
// (src/lab/libvirt.ts) protects tap vnet0 with `clean-traffic` bound WITHOUT
// an IP; frames go VM -> peer ("out") and peer -> VM ("in") through the real
// bridge, and the script records which pass, what libvirt's ebtables rules
// are at each step, and how long the old rules stay in force after the
// address is learned.
//
// Run (root): npx tsx docs/design/proto/libvirt-learning.ts [--only any|dhcp|none|...] [--json FILE]
// Every namespace and the daemon are removed at the end (also on failure).
// Each check is a fact of docs/design/ip-learning.md section 1; a check
// that no longer holds is printed as MISMATCH and the exit code is 1.
import { readFileSync, writeFileSync } from 'node:fs';
import { Libvirtd, libvirtAvailable } from '../../../src/lab/libvirt.js';
import { canonicalFrame, deliver, settlePacketSockets } from '../../../src/lab/packet-io.js';
import * as F from '../../../src/lab/frames/build.js';
import { createTestbed, type Testbed } from '../../../src/lab/testbed.js';
import { DHCP, dhcpClientFrame } from './dhcp.js';
import { anyBeforeProbes, Checks, dhcpBeforeProbes, floodAfter, inFrames, lockedProbes, makeHub, OTHER_MAC, outFrames, passes, ROGUE, runProbes, runScenario, scriptArgs, SERVER, sleep } from './common.js';

const VM_MAC = '52:54:00:00:00:01';
const PEER_MAC = '52:54:00:00:00:99';

const C = new Checks();
const check = C.check.bind(C);
const notes = C.notes;

class Rig {
  constructor(
    readonly tb: Testbed,
    readonly lv: Libvirtd,
  ) {}

  /** Sends one frame VM -> peer ('out') or peer -> VM ('in'); whether it arrived. */
  pass(dir: 'out' | 'in', frame: Uint8Array): Promise<boolean> {
    const vm = this.tb.guest('vm').endpoint;
    const peer = this.tb.guest('peer').endpoint;
    return dir === 'out' ? passes(vm, peer, frame) : passes(peer, vm, frame);
  }

  async ebtables(): Promise<string> {
    return (await this.lv.ebtablesSave())
      .split('\n')
      .filter((l) => /vnet0/.test(l) && !l.startsWith('#'))
      .join('\n');
  }

  /** 'learning-any' (basic rules), 'learning-dhcp' (DHCP only), 'full:<ips>' or 'none'. */
  async mode(): Promise<string> {
    const e = await this.ebtables();
    if (!e) return 'none';
    const ips = [...new Set([...e.matchAll(/--ip-src (\d+\.\d+\.\d+\.\d+)/g), ...e.matchAll(/--arp-ip-src (\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]))].filter((ip) => ip !== '0.0.0.0' && ip !== SERVER && ip !== ROGUE);
    if (/I-vnet0-mac/.test(e)) return `full:${ips.sort().join(',')}`;
    if (/--ip-sport 68 --ip-dport 67/.test(e) || /--ip-dport 67 --ip-sport 68/.test(e)) return 'learning-dhcp';
    if (/-A libvirt-[IJ]-vnet0 -p IPv4 -j ACCEPT/.test(e) && /-A PREROUTING -i vnet0 -j libvirt-[IJ]-vnet0/.test(e)) return 'learning-any';
    if (!/-A (PRE|POST)ROUTING/.test(e)) return 'no-dispatch';
    return `other`;
  }

  async waitMode(pred: (m: string) => boolean, ms: number): Promise<string> {
    const end = Date.now() + ms;
    let m = await this.mode();
    while (!pred(m) && Date.now() < end) {
      await sleep(100);
      m = await this.mode();
    }
    return m;
  }

  async bind(params: Record<string, string | string[]>): Promise<{ ok: boolean; error?: string }> {
    const r = await this.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params });
    return r.ok ? { ok: true } : { ok: false, error: r.error };
  }

  async unbind(): Promise<void> {
    if ((await this.lv.listBindings()).includes('vnet0')) await this.lv.deleteBinding('vnet0');
  }
}

// ---- frames ---------------------------------------------------------------------------

const out = outFrames(VM_MAC, PEER_MAC);
const inn = inFrames(VM_MAC, PEER_MAC);

// ---- scenarios ------------------------------------------------------------------------

type Scenario = (r: Rig) => Promise<void>;

/** CTRL_IP_LEARNING=any (the default): before, the first packet, after, restart. */
const anyBasic: Scenario = async (r) => {
  const S = 'any';
  check(S, 'binding without IP accepted', true, (await r.bind({})).ok);
  // binding-create returns before the learning thread has written its rules.
  notes['any: right after binding-create returned'] = { mode: await r.mode(), ipv6Out: await r.pass('out', out.ipv6()) };
  check(S, 'rules while learning', 'learning-any', await r.waitMode((m) => m === 'learning-any', 5000));
  notes['any: ebtables while learning'] = await r.ebtables();
  notes['any: iptables while learning'] = (await r.lv.iptablesSave()).v4.split('\n').filter((l) => /vnet0/.test(l));
  // Frames that pass or drop but do not teach.
  const send = (dir: 'out' | 'in', f: Uint8Array): Promise<boolean> => r.pass(dir, f);
  await runProbes(C, S, 'before', anyBeforeProbes(VM_MAC, PEER_MAC), send);
  await sleep(1500);
  check(S, 'none of these taught an address (ARP included)', 'learning-any', await r.mode());
  // The first IPv4 packet from the VM teaches; spoofed frames follow at once.
  const w = await floodAfter(r.tb.guest('vm').endpoint, r.tb.guest('peer').endpoint, out.udp('10.77.0.2'), { mac: VM_MAC, peerMac: PEER_MAC, ip: '10.77.0.66' }, 3000, 1);
  notes['any: window after the first packet'] = w;
  check(S, 'teaching frame passes', true, w.teachArrived);
  check(S, 'spoofed frames leaked after the teaching frame (> 0: libvirt has a window)', true, w.leaked > 0);
  check(S, 'learned from the first IPv4 source', 'full:10.77.0.2', await r.waitMode((m) => m.startsWith('full'), 5000));
  notes['any: ebtables after learning'] = await r.ebtables();
  await runProbes(C, S, 'after', lockedProbes(VM_MAC, PEER_MAC, '10.77.0.2'), send);
  await sleep(1500);
  check(S, 'a second address is never learned', 'full:10.77.0.2', await r.mode());
  const dump = (await r.lv.virsh(['nwfilter-binding-dumpxml', 'vnet0'])).stdout;
  notes['any: binding XML after learning'] = dump;
  check(S, 'the learned IP is not in the binding XML', false, /name=.IP./.test(dump));
  // libvirtd restart: the learned address lives in the daemon's memory only.
  const ms = await r.lv.restart();
  notes['any: restart ms'] = Math.round(ms);
  // Samples after the daemon answers again: rules, and whether an IPv6 frame and a wrong-MAC frame get out.
  const samples: unknown[] = [];
  const t0 = Date.now();
  for (let i = 0; i < 6; i++) {
    samples.push({ ms: Date.now() - t0, mode: await r.mode(), ipv6Out: await r.pass('out', out.ipv6()), wrongMacOut: await r.pass('out', out.udp('10.77.0.70', { srcMac: OTHER_MAC })) });
    await sleep(400);
  }
  notes['any: after restart, samples'] = samples;
  notes['any: ebtables after restart'] = await r.ebtables();
  check(S, 'after a libvirtd restart the port is back to learning', 'learning-any', await r.waitMode((m) => m === 'learning-any', 5000));
  check(S, 'restart: some sample saw the port with no dispatch rule or wide open', true, samples.some((x) => (x as { ipv6Out: boolean }).ipv6Out));
  check(S, 'after restart: out from .3 passes again', true, await r.pass('out', out.udp('10.77.0.3')));
  check(S, 'after restart: relearned from the next packet', 'full:10.77.0.3', await r.waitMode((m) => m.startsWith('full'), 5000));
  await r.unbind();
  check(S, 'binding deleted: no rules', 'none', await r.mode());
};

/** `any`: which other frames teach. Each case starts from a fresh binding. */
const anyTeachers: Scenario = async (r) => {
  const cases: { name: string; send: () => Promise<boolean>; learned: string }[] = [
    { name: 'DHCP OFFER to the VM (broadcast, chaddr = VM, from any server)', send: () => r.pass('in', inn.reply(DHCP.OFFER, ROGUE, '10.77.0.31')), learned: 'full:10.77.0.31' },
    { name: 'DHCP ACK to the VM (unicast MAC)', send: () => r.pass('in', inn.reply(DHCP.ACK, ROGUE, '10.77.0.32', { dstMac: VM_MAC, lease: 60 })), learned: 'full:10.77.0.32' },
    { name: 'DHCP ACK whose chaddr is another MAC', send: () => r.pass('in', inn.reply(DHCP.ACK, ROGUE, '10.77.0.33', { chaddr: OTHER_MAC })), learned: 'learning-any' },
    { name: 'VLAN-tagged IPv4 from the VM (dropped by ebtables)', send: () => r.pass('out', out.udp('10.77.0.34', { vlan: { id: 5 } })), learned: 'full:10.77.0.34' },
    {
      name: 'IPv4 sent by a neighbour with the VM MAC as source (flooded to the tap)',
      send: () => deliver(r.tb.guest('peer').endpoint, r.tb.guest('vm').endpoint, [out.udp('10.77.0.35', { dstMac: F.BROADCAST_MAC })], { key: canonicalFrame, maxWaitMs: 400 }).then((x) => x.arrived[0] === true),
      learned: 'full:10.77.0.35',
    },
  ];
  for (const c of cases) {
    await r.unbind();
    await r.bind({});
    await r.waitMode((m) => m === 'learning-any', 5000);
    const passed = await c.send();
    const m = await r.waitMode((x) => x.startsWith('full'), 3000);
    check('any-teach', `${c.name}: delivered=${passed}, then`, c.learned, m);
  }
  await r.unbind();
};

/** CTRL_IP_LEARNING=dhcp with DHCPSERVER: before, untrusted and trusted ACKs, more leases. */
const dhcpServer: Scenario = async (r) => {
  const S = 'dhcp';
  const leaseFile = (): string => readFileSync(r.lv.hostPath('/run/libvirt/network/nwfilter.leases'), 'utf8');
  check(S, 'binding with CTRL_IP_LEARNING=dhcp, DHCPSERVER accepted', true, (await r.bind({ CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: SERVER })).ok);
  notes['dhcp: right after binding-create returned'] = { mode: await r.mode(), ipv6Out: await r.pass('out', out.ipv6()) };
  check(S, 'rules while learning', 'learning-dhcp', await r.waitMode((m) => m === 'learning-dhcp', 5000));
  notes['dhcp: ebtables while learning'] = await r.ebtables();
  await runProbes(C, S, 'before', dhcpBeforeProbes(VM_MAC, PEER_MAC), (dir, f) => r.pass(dir, f));
  await sleep(1500);
  check(S, 'an OFFER and an untrusted ACK teach nothing', 'learning-dhcp', await r.mode());
  // Trusted ACK, message type after long options, unicast to the VM MAC.
  check(S, 'in ACK from the trusted server passes', true, await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.2', { lease: 3600, dstMac: VM_MAC, leading: 6 })));
  check(S, 'learned yiaddr of the trusted ACK', 'full:10.77.0.2', await r.waitMode((m) => m.startsWith('full'), 5000));
  check(S, 'after: out from .2 passes', true, await r.pass('out', out.udp('10.77.0.2')));
  check(S, 'after: out from .3 drops', false, await r.pass('out', out.udp('10.77.0.3')));
  // After learning, clean-traffic lets every IPv4 frame in: an untrusted server's ACK reaches the tap and the snooper.
  check(S, 'after: in ACK .41 from an untrusted server passes (allow-incoming-ipv4)', true, await r.pass('in', inn.reply(DHCP.ACK, ROGUE, '10.77.0.41', { lease: 3600 })));
  check(S, 'trusted ACK .42 passes', true, await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.42', { lease: 3600, dstMac: VM_MAC })));
  await sleep(5000);
  const lf = leaseFile();
  check(S, 'both further leases are recorded in the lease file (.41 with server .200)', [true, true], [/ 10\.77\.0\.41 10\.77\.0\.200/.test(lf), / 10\.77\.0\.42 /.test(lf)]);
  check(S, 'but the rules keep the first lease only', 'full:10.77.0.2', await r.mode());
  check(S, 'out from .42 drops', false, await r.pass('out', out.udp('10.77.0.42')));
  // DHCPRELEASE from the VM: ebtables drops it (source .41 is not allowed), the snooper still sees it.
  // RFC 2131: a RELEASE carries the client's address in ciaddr (yiaddr 0); libvirt looks the lease up by yiaddr.
  check(S, 'out DHCPRELEASE for .41 (ciaddr) drops (source not allowed)', false, await r.pass('out', out.release('10.77.0.41')));
  await sleep(1500);
  check(S, 'a RELEASE with the address in ciaddr releases nothing', false, /^0 \S+ 10\.77\.0\.41 /m.test(leaseFile()));
  const rel = dhcpClientFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, srcIp: '10.77.0.2', dstIp: SERVER, message: { op: 1, ciaddr: '10.77.0.41', yiaddr: '10.77.0.41', chaddr: VM_MAC, type: DHCP.RELEASE } });
  check(S, 'out DHCPRELEASE from .2 with yiaddr .41 passes', true, await r.pass('out', rel));
  await sleep(1500);
  check(S, 'a RELEASE naming the address in yiaddr ends that lease (0-timeout line)', true, /^0 \S+ 10\.77\.0\.41 /m.test(leaseFile()));
  check(S, 'in NAK for .2 passes', true, await r.pass('in', inn.reply(DHCP.NAK, SERVER, '10.77.0.2', { dstMac: VM_MAC })));
  await sleep(1500);
  check(S, 'a NAK removes nothing', 'full:10.77.0.2', await r.mode());
  notes['dhcp: lease file'] = leaseFile();
  await r.unbind();
};

/** dhcp: a lease expires, then a new lease on the same binding. */
const dhcpExpiry: Scenario = async (r) => {
  const S = 'dhcp-expiry';
  const uuid = '0b4c6c1e-7d43-4c43-9b55-2a7a1d000002';
  await r.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: SERVER }, ownerUuid: uuid, ownerName: 'vm2' });
  await r.waitMode((m) => m === 'learning-dhcp', 5000);
  await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.50', { lease: 4, dstMac: VM_MAC }));
  check(S, '4 s lease learned', 'full:10.77.0.50', await r.waitMode((m) => m.startsWith('full'), 4000));
  const t0 = Date.now();
  check(S, 'lease expiry returns the port to DHCP-only rules', 'learning-dhcp', await r.waitMode((m) => m === 'learning-dhcp', 25_000));
  notes['dhcp-expiry: a 4 s lease ended after ms'] = Date.now() - t0;
  await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.52', { lease: 3600, dstMac: VM_MAC }));
  const m = await r.waitMode((x) => x.startsWith('full'), 5000);
  notes['dhcp-expiry: a new lease .52 after the expiry of .50 gives'] = m;
  check(S, 'a new lease after expiry (same binding): rules use', 'full:10.77.0.50', m);
  check(S, 'out from .52 (the live lease)', false, await r.pass('out', out.udp('10.77.0.52')));
  await r.unbind();
  // An ACK without a lease time (option 51) on a fresh identity.
  await r.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: SERVER }, ownerUuid: '0b4c6c1e-7d43-4c43-9b55-2a7a1d000004', ownerName: 'vm4' });
  await r.waitMode((x) => x === 'learning-dhcp', 5000);
  await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.51', { dstMac: VM_MAC }));
  notes['dhcp-expiry: ACK without option 51, rules after 2 s'] = (await sleep(2000), await r.mode());
  const t1 = Date.now();
  const gone = await r.waitMode((x) => x === 'learning-dhcp', 15_000);
  notes['dhcp-expiry: ACK without option 51, back to DHCP-only after ms'] = gone === 'learning-dhcp' ? Date.now() - t1 : `not within 15 s: ${gone}`;
  await r.unbind();
  // The first identity again: its unexpired lease is back at once.
  await r.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: SERVER }, ownerUuid: uuid, ownerName: 'vm2' });
  check(S, 'a re-created binding (same owner UUID and MAC) restores its unexpired lease at once', 'full:10.77.0.52', await r.waitMode((x) => x.startsWith('full'), 5000));
  await r.unbind();
};

/** CTRL_IP_LEARNING=dhcp without DHCPSERVER: any server teaches. */
const dhcpAnyServer: Scenario = async (r) => {
  const S = 'dhcp-noserver';
  const uuid = '0b4c6c1e-7d43-4c43-9b55-2a7a1d000003';
  await r.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'dhcp' }, ownerUuid: uuid, ownerName: 'vm3' });
  check(S, 'rules while learning', 'learning-dhcp', await r.waitMode((m) => m === 'learning-dhcp', 5000));
  notes['dhcp without DHCPSERVER: ebtables while learning'] = await r.ebtables();
  check(S, 'in OFFER from any server passes', true, await r.pass('in', inn.reply(DHCP.OFFER, ROGUE, '10.77.0.60', { lease: 60 })));
  await sleep(1200);
  check(S, 'an OFFER teaches nothing', 'learning-dhcp', await r.mode());
  check(S, 'in ACK from any server passes', true, await r.pass('in', inn.reply(DHCP.ACK, ROGUE, '10.77.0.60', { lease: 60 })));
  check(S, 'any server ACK teaches', 'full:10.77.0.60', await r.waitMode((m) => m.startsWith('full'), 4000));
  await r.unbind();
};

/** CTRL_IP_LEARNING=none: a missing IP is an error. */
const none: Scenario = async (r) => {
  const res = await r.bind({ CTRL_IP_LEARNING: 'none' });
  notes['none: libvirt error'] = res.error;
  check('none', 'binding without IP refused', false, res.ok);
  check('none', 'nothing installed', 'none', await r.mode());
  const bogus = await r.bind({ CTRL_IP_LEARNING: 'sometimes' });
  notes['invalid CTRL_IP_LEARNING: libvirt error'] = bogus.error;
  check('none', 'an unknown CTRL_IP_LEARNING value is refused', false, bogus.ok);
  await r.unbind();
};

/** dhcp: a libvirtd restart with a known lease. */
const dhcpRestart: Scenario = async (r) => {
  const S = 'dhcp-restart';
  // Its own VM identity: leases are kept per owner UUID and MAC, also across bindings.
  await r.lv.tryCreateBinding({ portdev: 'vnet0', mac: VM_MAC, filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: SERVER }, ownerUuid: '0b4c6c1e-7d43-4c43-9b55-2a7a1d000005', ownerName: 'vm5' });
  await r.waitMode((m) => m === 'learning-dhcp', 5000);
  await r.pass('in', inn.reply(DHCP.ACK, SERVER, '10.77.0.2', { lease: 3600, dstMac: VM_MAC }));
  check(S, 'learned', 'full:10.77.0.2', await r.waitMode((m) => m.startsWith('full'), 5000));
  let restarted: string;
  try {
    restarted = `ok in ${Math.round(await r.lv.restart())} ms`;
  } catch (e) {
    restarted = String(e).split('\n')[0] as string;
  }
  notes['dhcp-restart: restart'] = restarted;
  notes['dhcp-restart: daemon running after restart'] = r.lv.running();
  notes['dhcp-restart: mode after restart'] = await r.mode();
  check(S, 'after a libvirtd restart the lease is restored from the lease file', 'full:10.77.0.2', await r.waitMode((m) => m.startsWith('full'), 5000));
  await r.unbind();
  notes['dhcp-restart: lease file'] = readFileSync(r.lv.hostPath('/run/libvirt/network/nwfilter.leases'), 'utf8');
  notes['dhcp-restart: log tail'] = r.lv.log().split('\n').filter((l) => /error|warn/i.test(l)).slice(-8).join('\n');
};

const SCENARIOS: Record<string, Scenario> = { any: anyBasic, 'any-teach': anyTeachers, dhcp: dhcpServer, 'dhcp-expiry': dhcpExpiry, 'dhcp-restart': dhcpRestart, 'dhcp-noserver': dhcpAnyServer, none };

async function main(): Promise<void> {
  const avail = libvirtAvailable();
  if (!avail.ok) {
    console.log(`skipped: ${avail.reason}`);
    return;
  }
  const { only, json: jsonOut } = scriptArgs();
  const tb = await createTestbed({ prefix: 'lrnlv', vms: [{ name: 'vm', tap: 'vnet0', mac: VM_MAC }], peers: [{ name: 'peer', mac: PEER_MAC }] });
  let lv: Libvirtd | undefined;
  try {
    // Hub: frames libvirt accepts must not teach the bridge wrong ports.
    await makeHub(tb, ['vnet0', tb.guest('peer').port]);
    lv = await Libvirtd.start({ netns: tb.hostNs });
    const rig = new Rig(tb, lv);
    for (const [name, run] of Object.entries(SCENARIOS)) {
      await runScenario(C, only, name, async () => {
        try {
          await run(rig);
        } finally {
          await rig.unbind().catch(() => undefined);
        }
      });
    }
  } finally {
    await lv?.stop();
    await settlePacketSockets();
    await tb.destroy();
  }
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ checks: C.all, notes }, null, 1));
  C.finish();
}

await main();
