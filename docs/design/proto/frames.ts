// The valid frames the prototypes walk and measure, between the benchmark's
// vm0 (tap vnet0) and its peer (port vpeer0): IPv4 and ARP, from the VM and
// to the VM. All unicast (the benchmark's static FDB entries: no flooding to
// the 999 other ports), 60 bytes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as F from '../../../src/lab/frames/build.js';
import { PEER_IP, PEER_MAC, portIp, portMac } from '../../../bench/lib/policy.js';

export type Kind = 'ip4-out' | 'arp-out' | 'ip4-in' | 'arp-in';
export const KINDS: readonly Kind[] = ['ip4-out', 'arp-out', 'ip4-in', 'arp-in'];

export const KIND_LABELS: Record<Kind, string> = {
  'ip4-out': 'IPv4 from the VM',
  'arp-out': 'ARP from the VM',
  'ip4-in': 'IPv4 to the VM',
  'arp-in': 'ARP to the VM',
};

/** 'out' frames leave vm0 (tap vnet0 is the bridge's input port), 'in' frames leave the peer for vm0. */
export const fromVm = (k: Kind): boolean => k.endsWith('-out');

export function frameOf(k: Kind): Uint8Array {
  const vmMac = portMac(0);
  const vmIp = portIp(0);
  switch (k) {
    case 'ip4-out':
      // the benchmark's valid frame: UDP 1024 -> 9 (discard) with 18 bytes of payload
      return F.udpFrame({ srcMac: vmMac, dstMac: PEER_MAC, srcIp: vmIp, dstIp: PEER_IP, sport: 1024, dport: 9, payload: new Uint8Array(18) });
    case 'ip4-in':
      return F.udpFrame({ srcMac: PEER_MAC, dstMac: vmMac, srcIp: PEER_IP, dstIp: vmIp, sport: 1024, dport: 9, payload: new Uint8Array(18) });
    case 'arp-out':
      return F.arpFrame({ srcMac: vmMac, dstMac: PEER_MAC, op: 'Reply', sha: vmMac, spa: vmIp, tha: PEER_MAC, tpa: PEER_IP });
    case 'arp-in':
      return F.arpFrame({ srcMac: PEER_MAC, dstMac: vmMac, op: 'Reply', sha: PEER_MAC, spa: PEER_IP, tha: vmMac, tpa: vmIp });
  }
}

/** A trafgen configuration that sends exactly these bytes. */
export function trafgenConfigOf(bytes: Uint8Array): string {
  const hex = [...bytes].map((b) => `0x${b.toString(16).padStart(2, '0')}`);
  const lines: string[] = [];
  for (let i = 0; i < hex.length; i += 12) lines.push(`  ${hex.slice(i, i + 12).join(', ')}${i + 12 < hex.length ? ',' : ''}`);
  return `{\n${lines.join('\n')}\n}\n`;
}

export function writeTrafgenConfigs(dir: string): Record<Kind, string> {
  const out = {} as Record<Kind, string>;
  for (const k of KINDS) {
    const f = join(dir, `trafgen-${k}.cfg`);
    writeFileSync(f, trafgenConfigOf(frameOf(k)));
    out[k] = f;
  }
  return out;
}
