// The cases of the conformance suite (test/kernel/conformance.test.ts), also
// run through the nft optimizer's unit check (test/unit/nft-opt.test.ts):
// every standard filter bound directly, and our own filters in
// test/fixtures/conformance (one case per file, its binding parameters in a
// leading comment).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONFORMANCE_FIXTURES = fileURLToPath(new URL('../fixtures/conformance/', import.meta.url));
const FIXTURES = CONFORMANCE_FIXTURES;

export type Params = Record<string, string | string[]>;
export interface Case {
  name: string;
  filter: string;
  params: Params;
  /** The nft backend refuses the policy with this code (README "nft backend limits"): under nft, libvirt is compared with the evaluator only (--backend both accepts it and is compared with libvirt). */
  nftRefuses?: string;
  /** libvirt cannot instantiate the binding (README: `continue` in an L3 rule). */
  libvirtRefuses?: boolean;
}

const IP = '10.77.0.2';
const IPS = ['10.77.0.2', '10.77.0.3', '10.77.1.9'];
const IPV6 = 'fd77::2';
const GW = '52:54:00:00:00:fe';

/** Every standard filter that applies to a VM, bound directly. */
export const STANDARD: Case[] = [
  { name: 'clean-traffic, one IP', filter: 'clean-traffic', params: { IP } },
  { name: 'clean-traffic, an IP list', filter: 'clean-traffic', params: { IP: IPS } },
  { name: 'clean-traffic-gateway', filter: 'clean-traffic-gateway', params: { IP, GATEWAY_MAC: GW } },
  { name: 'no-mac-spoofing', filter: 'no-mac-spoofing', params: {} },
  { name: 'no-ip-spoofing', filter: 'no-ip-spoofing', params: { IP: IPS } },
  { name: 'no-arp-spoofing', filter: 'no-arp-spoofing', params: { IP } },
  { name: 'no-arp-mac-spoofing', filter: 'no-arp-mac-spoofing', params: {} },
  { name: 'no-arp-ip-spoofing', filter: 'no-arp-ip-spoofing', params: { IP: IPS } },
  { name: 'allow-arp', filter: 'allow-arp', params: {} },
  { name: 'allow-dhcp', filter: 'allow-dhcp', params: {} },
  { name: 'allow-dhcp-server', filter: 'allow-dhcp-server', params: { DHCPSERVER: '10.77.0.1' } },
  { name: 'allow-dhcpv6', filter: 'allow-dhcpv6', params: {} },
  { name: 'allow-dhcpv6-server', filter: 'allow-dhcpv6-server', params: { DHCPSERVER: 'fd77::1' } },
  { name: 'allow-incoming-ipv4', filter: 'allow-incoming-ipv4', params: {} },
  { name: 'allow-incoming-ipv6', filter: 'allow-incoming-ipv6', params: {} },
  { name: 'allow-ipv4', filter: 'allow-ipv4', params: {} },
  { name: 'allow-ipv6', filter: 'allow-ipv6', params: {} },
  { name: 'no-ip-multicast', filter: 'no-ip-multicast', params: {} },
  { name: 'no-ipv6-multicast', filter: 'no-ipv6-multicast', params: {} },
  { name: 'no-ipv6-spoofing', filter: 'no-ipv6-spoofing', params: { IPV6: [IPV6, 'fd77::3'] } },
  { name: 'no-mac-broadcast', filter: 'no-mac-broadcast', params: {} },
  { name: 'no-other-l2-traffic', filter: 'no-other-l2-traffic', params: {} },
  { name: 'no-other-rarp-traffic', filter: 'no-other-rarp-traffic', params: {} },
  { name: 'qemu-announce-self', filter: 'qemu-announce-self', params: {} },
  { name: 'qemu-announce-self-rarp', filter: 'qemu-announce-self-rarp', params: {} },
];

/** Our own filters (test/fixtures/conformance): one case per file, its binding parameters in a leading comment. */
export function fixtureCases(): Case[] {
  if (!existsSync(FIXTURES)) return [];
  return readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.xml'))
    .sort()
    .flatMap((f) => {
      const text = readFileSync(join(FIXTURES, f), 'utf8');
      const m = /<!--\s*conformance-case:\s*(\{[\s\S]*?\})\s*-->/.exec(text);
      if (!m) return [];
      const spec = JSON.parse(m[1] as string) as { name?: string; params?: Params; nftRefuses?: string; libvirtRefuses?: boolean };
      const filter = /<filter\b[^>]*\bname='([^']+)'/.exec(text)?.[1] as string;
      return [{ name: spec.name ?? filter, filter, params: spec.params ?? {}, ...(spec.nftRefuses ? { nftRefuses: spec.nftRefuses } : {}), ...(spec.libvirtRefuses ? { libvirtRefuses: true } : {}) }];
    });
}

