import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUNDLED_FILTERS_DIR, loadSources } from '../../src/resolve/sources.js';
import { resolveInterface } from '../../src/resolve/resolve.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { bindingXml, bundledFilters, policyFor } from '../support/policy.js';

const STANDARD = [
  'allow-arp', 'allow-dhcp', 'allow-dhcp-server', 'allow-dhcpv6', 'allow-dhcpv6-server', 'allow-incoming-ipv4',
  'allow-incoming-ipv6', 'allow-ipv4', 'allow-ipv6', 'clean-traffic', 'clean-traffic-gateway', 'no-arp-ip-spoofing',
  'no-arp-mac-spoofing', 'no-arp-spoofing', 'no-ip-multicast', 'no-ip-spoofing', 'no-ipv6-multicast', 'no-ipv6-spoofing',
  'no-mac-broadcast', 'no-mac-spoofing', 'no-other-l2-traffic', 'no-other-rarp-traffic', 'qemu-announce-self', 'qemu-announce-self-rarp',
];

/** Values for every variable any standard filter uses. */
const PARAMS = {
  IP: ['10.0.0.2', '10.0.0.3'],
  IPV6: 'fd00::2',
  DHCPSERVER: '10.0.0.1',
  DHCPSERVERV6: 'fd00::1',
  GATEWAY_MAC: '52:54:00:ff:ff:fe',
};

describe('the bundled library of standard filters', () => {
  it('holds exactly the 24 standard filters, one per file named after it', () => {
    const files = readdirSync(BUNDLED_FILTERS_DIR).filter((f) => f.endsWith('.xml'));
    expect(files.map((f) => f.replace(/\.xml$/, '')).sort()).toEqual([...STANDARD].sort());
    expect([...bundledFilters().keys()].sort()).toEqual([...STANDARD].sort());
  });

  it.each(STANDARD)('%s parses and resolves for an interface', (name) => {
    // allow-dhcpv6-server takes its (IPv6) servers from $DHCPSERVER, as libvirt's file does
    const p = policyFor(name, name === 'allow-dhcpv6-server' ? { ...PARAMS, DHCPSERVER: 'fd00::1' } : PARAMS);
    const rules = p.l2.out.root.length + p.l2.in.root.length + p.l3.fromVm.length + p.l3.toVm.length;
    expect(rules).toBeGreaterThan(0);
  });
});

const LIBVIRT_DIR = '/etc/libvirt/nwfilter';
const haveLibvirt = existsSync(`${LIBVIRT_DIR}/clean-traffic.xml`);

describe.skipIf(!haveLibvirt)(`libvirt's own filter files (${LIBVIRT_DIR})`, () => {
  it('all parse (with their comment headers and <uuid>) and every one resolves', () => {
    const src = loadSources({ filterDirs: [LIBVIRT_DIR], bundled: false, bindingPaths: [], domainPaths: [], libvirt: false });
    for (const n of STANDARD) expect(src.filters.has(n), n).toBe(true);
    for (const n of src.filters.keys()) {
      const params = n === 'allow-dhcpv6-server' ? { ...PARAMS, DHCPSERVER: 'fd00::1' } : PARAMS;
      const b = parseFilterBindingXml(bindingXml('vnet0', '52:54:00:00:00:01', n, params), 'binding.xml');
      const p = resolveInterface(src.filters, b);
      expect(p.filter).toBe(n);
    }
  });
});
if (!haveLibvirt) console.warn(`SKIP libvirt filter files: ${LIBVIRT_DIR} is absent (install libvirt-daemon-config-nwfilter)`);
