// What libvirt's learning rules do with a frame of a port that has not
// learned its address yet (docs/design/ip-learning.md 1.2 and 1.3): the
// port's policy, L3 rules included, is not in force then. `any`: from the VM
// the right source MAC with IPv4 or ARP passes, the rest drops; to the VM
// everything passes. `dhcp`: only the DHCP exchange (from the VM UDP 68->67
// from its MAC; to it UDP 67->68 to its MAC or broadcast, from a DHCPSERVER
// when some are given).
import type { DropReason } from '../reasons.js';
import type { Direction, InterfacePolicy } from '../types.js';
import { ETHERTYPES, formatIPv4, macToBytes } from '../values.js';
import { decodeFrame, type Frame } from './frame.js';
import type { TraceStep } from './trace.js';

export interface LearningVerdict {
  verdict: 'accept' | 'drop';
  reason?: DropReason | 'host';
  trace: TraceStep[];
}

const sameMac = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** UDP ports of an unfragmented IPv4 frame, or undefined. */
function udpPorts(f: Frame): { sport: number; dport: number; saddr: string } | undefined {
  if (f.proto !== ETHERTYPES.IPV4) return undefined;
  const vihl = f.net.u8(0);
  if (vihl === undefined || vihl >> 4 !== 4 || f.net.u8(9) !== 17) return undefined;
  const ihl = (vihl & 0x0f) * 4;
  const sport = f.net.u16(ihl);
  const dport = f.net.u16(ihl + 2);
  const saddr = f.net.u32(12);
  if (sport === undefined || dport === undefined || saddr === undefined) return undefined;
  return { sport, dport, saddr: formatIPv4(saddr) };
}

/** The learning table's verdict for a port still learning (policy.learning set). */
export function evaluateLearning(policy: InterfacePolicy, direction: Direction, frame: Uint8Array): LearningVerdict {
  const mode = policy.learning?.mode ?? 'any';
  const chain = `learning-${mode}-${policy.iface}`;
  const trace: TraceStep[] = [];
  const end = (verdict: 'accept' | 'drop', note: string, reason?: DropReason | 'host'): LearningVerdict => {
    trace.push({ stage: 'l2', chain, event: verdict === 'accept' ? 'match' : 'drop', verdict, note });
    return { verdict, ...(reason ? { reason } : {}), trace };
  };
  const f = decodeFrame(frame);
  if (!f) {
    trace.push({ stage: 'host', chain: '-', event: 'drop', note: 'runt frame: shorter than an Ethernet header; the kernel never delivers it' });
    return { verdict: 'drop', reason: 'host', trace };
  }
  const mac = macToBytes(policy.mac);
  if (mode === 'any') {
    if (direction === 'in') return end('accept', 'learning (any): everything to the VM passes');
    if (!sameMac(f.src, mac)) return end('drop', 'learning (any): another source MAC', 'mac-spoof');
    if (f.proto === ETHERTYPES.IPV4) return end('accept', 'learning (any): IPv4 from the VM passes (any source)');
    if (f.proto === ETHERTYPES.ARP) return end('accept', 'learning (any): ARP from the VM passes');
    return end('drop', 'learning (any): nothing but IPv4 and ARP passes', 'other-l2');
  }
  const udp = udpPorts(f);
  if (direction === 'out') {
    if (sameMac(f.src, mac) && udp?.sport === 68 && udp.dport === 67) return end('accept', 'learning (dhcp): a DHCP request from the VM');
    return end('drop', 'learning (dhcp): only DHCP requests from the VM pass', 'other-l2');
  }
  const toVm = sameMac(f.dst, mac) || f.dst.every((b) => b === 0xff);
  const servers = policy.learning?.dhcpServers ?? [];
  if (toVm && udp?.sport === 67 && udp.dport === 68 && (servers.length === 0 || servers.includes(udp.saddr))) return end('accept', 'learning (dhcp): a DHCP reply to the VM from a trusted server');
  return end('drop', 'learning (dhcp): only DHCP replies from a trusted server pass', 'other-l2');
}
