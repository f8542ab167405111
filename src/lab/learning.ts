// IP learning on a namespace host (docs/design/ip-learning.md section 5):
// libvirt's learning table as probes (frame, direction, whether it passes),
// the static path once locked, and the spoofed flood right after the
// teaching frame. Shared by the kernel tests of every backend.
import * as F from './frames/build.js';
import { canonicalFrame, deliver, frameTag, PacketSocket, type Endpoint } from './packet-io.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The server address the probes talk to, and a MAC that is not the VM's. */
export const LEARN_SERVER = '10.77.0.1';
export const OTHER_MAC = '52:54:00:00:00:66';

let seq = 1000;
/** A fresh 8-byte payload, so that no two probes are alike. */
const uniqueTag = (): Uint8Array => frameTag(seq++, 7);

/** One frame and whether it must pass: 'out' VM -> peer, 'in' peer -> VM. */
export interface Probe {
  what: string;
  dir: 'out' | 'in';
  frame: Uint8Array;
  pass: boolean;
}

/** Frames from a VM (MAC `vm`) towards the peer (MAC `peer`). */
export function outFrames(vm: string, peer: string) {
  return {
    udp: (src: string, o: { srcMac?: string; tcp?: boolean; vlan?: F.VlanTag } = {}) =>
      o.tcp
        ? F.tcpFrame({ srcMac: o.srcMac ?? vm, dstMac: peer, srcIp: src, dstIp: '10.77.0.9', sport: 5000, dport: 6000, flags: ['SYN'], payload: uniqueTag() })
        : F.udpFrame({ srcMac: o.srcMac ?? vm, dstMac: peer, srcIp: src, dstIp: '10.77.0.9', sport: 5000, dport: 6000, payload: uniqueTag(), ...(o.vlan ? { vlan: o.vlan } : {}) }),
    arp: (op: 'Request' | 'Reply', spa: string, tpa: string) =>
      F.arpFrame({ srcMac: vm, dstMac: op === 'Request' ? F.BROADCAST_MAC : peer, op, spa, tpa, tha: op === 'Request' ? '00:00:00:00:00:00' : peer }),
    ipv6: () => F.ipv6UdpFrame({ srcMac: vm, dstMac: peer, srcIp: 'fe80::5054:ff:fe00:1', dstIp: 'fe80::1', sport: 5000, dport: 6000, payload: uniqueTag() }),
    rarpAnnounce: () => F.rarpAnnounceFrame(vm),
    announce0835: () => F.ether({ dst: F.BROADCAST_MAC, src: vm, type: 0x0835, payload: uniqueTag() }),
    discover: () => F.udpFrame({ srcMac: vm, dstMac: F.BROADCAST_MAC, srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67, payload: uniqueTag() }),
  };
}

/** Frames from the peer (MAC `peer`) to a VM (MAC `vm`). */
export function inFrames(vm: string, peer: string) {
  return {
    udp: (src: string, dst = '10.77.0.2') => F.udpFrame({ srcMac: peer, dstMac: vm, srcIp: src, dstIp: dst, sport: 6000, dport: 5000, payload: uniqueTag() }),
    arp: () => F.arpFrame({ srcMac: peer, dstMac: F.BROADCAST_MAC, op: 'Request', spa: LEARN_SERVER, tpa: '10.77.0.2' }),
    ipv6: () => F.ipv6UdpFrame({ srcMac: peer, dstMac: vm, srcIp: 'fe80::1', dstIp: 'fe80::5054:ff:fe00:1', sport: 6000, dport: 5000, payload: uniqueTag() }),
    other: () => F.ether({ dst: vm, src: peer, type: 0x88b5, payload: uniqueTag() }),
  };
}

/**
 * CTRL_IP_LEARNING=any before the lock (design 1.2): from the VM the right
 * MAC with IPv4 or ARP passes, the rest drops; to the VM everything passes.
 * None of these teaches (sources 0.0.0.0 and 224.0.0.0/3, ARP).
 */
export function anyBeforeProbes(vm: string, peer: string): Probe[] {
  const o = outFrames(vm, peer);
  const i = inFrames(vm, peer);
  return [
    { what: 'out DHCP discover from 0.0.0.0', dir: 'out', frame: o.discover(), pass: true },
    { what: 'out TCP from 0.0.0.0', dir: 'out', frame: o.udp('0.0.0.0', { tcp: true }), pass: true },
    { what: 'out IPv4 from 224.0.0.5', dir: 'out', frame: o.udp('224.0.0.5'), pass: true },
    { what: 'out IPv4 from 255.255.255.255', dir: 'out', frame: o.udp('255.255.255.255'), pass: true },
    { what: 'out ARP request spa .5', dir: 'out', frame: o.arp('Request', '10.77.0.5', LEARN_SERVER), pass: true },
    { what: 'out ARP reply spa .6', dir: 'out', frame: o.arp('Reply', '10.77.0.6', LEARN_SERVER), pass: true },
    { what: 'out IPv6', dir: 'out', frame: o.ipv6(), pass: false },
    { what: 'out RARP announce', dir: 'out', frame: o.rarpAnnounce(), pass: false },
    { what: 'out 0x0835 announce', dir: 'out', frame: o.announce0835(), pass: false },
    { what: 'out IPv4 from another source MAC', dir: 'out', frame: o.udp('10.77.0.70', { srcMac: OTHER_MAC }), pass: false },
    { what: 'out VLAN-tagged IPv4', dir: 'out', frame: o.udp('10.77.0.34', { vlan: { id: 5 } }), pass: false },
    { what: 'in IPv4', dir: 'in', frame: i.udp('10.77.0.9'), pass: true },
    { what: 'in ARP', dir: 'in', frame: i.arp(), pass: true },
    { what: 'in IPv6', dir: 'in', frame: i.ipv6(), pass: true },
    { what: 'in EtherType 0x88b5', dir: 'in', frame: i.other(), pass: true },
  ];
}

/** clean-traffic locked to `ip` (the static path): what differs from the learning table. */
export function lockedProbes(vm: string, peer: string, ip: string): Probe[] {
  const o = outFrames(vm, peer);
  const i = inFrames(vm, peer);
  return [
    { what: `out from ${ip}`, dir: 'out', frame: o.udp(ip), pass: true },
    { what: 'out from .3', dir: 'out', frame: o.udp('10.77.0.3'), pass: false },
    { what: 'out TCP from 0.0.0.0', dir: 'out', frame: o.udp('0.0.0.0', { tcp: true }), pass: false },
    { what: `out ARP spa ${ip}`, dir: 'out', frame: o.arp('Request', ip, LEARN_SERVER), pass: true },
    { what: 'out ARP spa .5', dir: 'out', frame: o.arp('Request', '10.77.0.5', LEARN_SERVER), pass: false },
    { what: 'out IPv6', dir: 'out', frame: o.ipv6(), pass: false },
    { what: 'in IPv6', dir: 'in', frame: i.ipv6(), pass: false },
    { what: 'out RARP announce', dir: 'out', frame: o.rarpAnnounce(), pass: true },
  ];
}

/** Sends one frame from `from` and reports whether it arrived at `to`. */
export async function passes(from: Endpoint, to: Endpoint, frame: Uint8Array): Promise<boolean> {
  const r = await deliver(from, to, [frame], { key: canonicalFrame, maxWaitMs: 400 });
  return r.arrived[0] === true;
}

/** Every probe's verdict on the host, as `what -> passed`. */
export async function probeVerdicts(vm: Endpoint, peer: Endpoint, probes: readonly Probe[]): Promise<Record<string, boolean>> {
  const out: Record<string, boolean> = {};
  for (const p of probes) out[p.what] = await (p.dir === 'out' ? passes(vm, peer, p.frame) : passes(peer, vm, p.frame));
  return out;
}

/** What each probe must do, in the shape probeVerdicts returns. */
export function expectedVerdicts(probes: readonly Probe[]): Record<string, boolean> {
  return Object.fromEntries(probes.map((p) => [p.what, p.pass]));
}

export interface FloodAfterResult {
  /** Spoofed frames sent after the teaching frame. */
  sent: number;
  leaked: number;
  teachArrived: boolean;
}

/**
 * Sends `teach` (a UDP frame whose 8-byte payload at offset 42 identifies
 * it), then `perMs` spoofed UDP frames (the VM's MAC, source `spoofIp`)
 * every millisecond for `ms`, and counts what reaches the peer. Bounded:
 * 200 000 frames and `ms` plus 300 ms.
 */
export async function floodAfter(vm: Endpoint, peer: Endpoint, teach: Uint8Array, spoof: { mac: string; peerMac: string; ip: string }, ms: number, perMs = 20): Promise<FloodAfterResult> {
  const tx = PacketSocket.open(vm.ns, vm.ifname, { receive: false });
  const rx = PacketSocket.open(peer.ns, peer.ifname);
  rx.drain();
  let sent = 0;
  const got = new Set<number>();
  let teachArrived = false;
  const teachTag = Buffer.from(teach.subarray(42, 50)).toString('latin1');
  const read = (): void => {
    for (const f of rx.receiveNow()) {
      const s = Buffer.from(f).toString('latin1');
      const k = s.indexOf('NW\u0000\u0009');
      if (k >= 0) got.add(Buffer.from(f).readUInt32BE(k + 4));
      else if (s.includes(teachTag)) teachArrived = true;
    }
  };
  try {
    const t0 = performance.now();
    tx.send(teach);
    while (performance.now() - t0 < ms && sent < 200_000) {
      for (let k = 0; k < perMs; k++) tx.send(F.udpFrame({ srcMac: spoof.mac, dstMac: spoof.peerMac, srcIp: spoof.ip, dstIp: '10.77.0.9', sport: 5000, dport: 6000, payload: frameTag(sent++, 9) }));
      read();
      await sleep(1);
    }
    await sleep(300);
    read();
  } finally {
    tx.close();
    rx.close();
  }
  return { sent, leaked: got.size, teachArrived };
}
