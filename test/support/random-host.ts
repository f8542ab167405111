// A randomized host for equivalence tests at fleet scale: a mix of filters
// (clean-traffic with one address or a list, the gateway filter, filters with
// constant prefixes and masked MACs around the ports' addresses, DHCP server
// lists, IPv6, learning ports), with values chosen to meet the filters'
// constants (broadcast and multicast MACs, 0.0.0.0, the gateway's MAC, the
// DHCP servers, repeats, upper case).
import type { InterfaceBinding } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { bindingXml, bundledFilters } from './policy.js';
import { rng } from './rng.js';

/** Filters whose walks depend on the values: constant prefixes and masked MACs around the ports' addresses. */
const EXTRA = [
  `<filter name='pfx-ip' chain='ipv4-pfx' priority='-650'>
     <rule action='drop' direction='out' priority='100'><ip srcipaddr='10.66.0.0' srcipmask='16'/></rule>
     <rule action='accept' direction='out' priority='200'><ip srcipaddr='$IP'/></rule>
   </filter>`,
  `<filter name='oui' chain='root'>
     <rule action='drop' direction='out' priority='-900'><mac srcmacaddr='52:54:00:66:00:00' srcmacmask='ff:ff:ff:ff:00:00'/></rule>
     <filterref filter='pfx-ip'/>
     <filterref filter='clean-traffic'/>
   </filter>`,
  `<filter name='two-macs' chain='root'>
     <rule action='accept' direction='out' priority='-500'><mac srcmacaddr='$MAC'/></rule>
     <rule action='drop' direction='out' priority='-400'><mac srcmacaddr='$OTHER'/></rule>
     <filterref filter='no-ip-spoofing'/>
     <filterref filter='no-arp-spoofing'/>
   </filter>`,
];

export function randomHost(seed: number, n: number): { filters: ReturnType<typeof bundledFilters>; bindings: InterfaceBinding[] } {
  const r = rng(seed);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const filters = bundledFilters();
  EXTRA.forEach((x, i) => {
    const d = parseFilterXml(x, `extra-${i}.xml`);
    filters.set(d.name, d);
  });
  const macs = ['52:54:00:00:00:01', '52:54:00:66:00:02', '52:54:00:66:12:03', '52:54:00:AB:00:04', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '01:80:c2:00:00:00', '52:54:00:00:00:fe'];
  const ips = ['10.1.0.2', '10.66.0.3', '10.66.200.4', '10.67.0.5', '0.0.0.0', '255.255.255.255', '224.0.0.5', '10.1.0.254', '10.1.0.2'];
  const ip6 = ['fd00::2', 'fe80::1', 'ff02::1', '::', 'fd00::2'];
  const list = (xs: readonly string[]): string[] => Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(xs));
  const bindings: InterfaceBinding[] = [];
  for (let i = 0; i < n; i++) {
    const mac = r() < 0.5 ? `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` : pick(macs);
    const kind = Math.floor(r() * 9);
    let filter: string;
    let params: Record<string, string | string[]>;
    if (kind === 0) [filter, params] = ['clean-traffic', { IP: pick(ips) }];
    else if (kind === 1) [filter, params] = ['clean-traffic', { IP: list(ips) }];
    else if (kind === 2) [filter, params] = ['clean-traffic-gateway', { IP: pick(ips), GATEWAY_MAC: pick(macs) }];
    else if (kind === 3) [filter, params] = ['oui', { IP: list(ips) }];
    else if (kind === 4) [filter, params] = ['two-macs', { IP: pick(ips), OTHER: pick([...macs, mac]) }];
    else if (kind === 5) [filter, params] = ['allow-dhcp-server', { DHCPSERVER: list(ips) }];
    else if (kind === 6) [filter, params] = ['no-ipv6-spoofing', { IPV6: list(ip6) }];
    else if (kind === 7) [filter, params] = ['clean-traffic', {}]; // learns its address: the full path
    else [filter, params] = ['clean-traffic', { IP: pick(ips), CTRL_IP_LEARNING: 'none' }];
    bindings.push(parseFilterBindingXml(bindingXml(`vnet${i}`, mac, filter, params), `binding-${i}.xml`));
  }
  return { filters, bindings };
}
