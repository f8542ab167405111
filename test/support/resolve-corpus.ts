// Policies to resolve in bulk: the 24 standard filters with the parameters
// the conformance suite binds them with, every filter of
// test/fixtures/conformance with the parameters of its leading
// `conformance-case` comment, and every golden case's bindings. Each case is
// one set of filters and the bindings resolved against them.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadSources } from '../../src/resolve/sources.js';
import type { FilterDef, InterfaceBinding } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { bindingXml, bundledFilters } from './policy.js';
import { sourceArgs } from './fixture-cases.js';

type Params = Record<string, string | string[]>;

export interface ResolveCase {
  name: string;
  filters: Map<string, FilterDef>;
  bindings: InterfaceBinding[];
}

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const IP = '10.77.0.2';
const IPS = ['10.77.0.2', '10.77.0.3', '10.77.1.9', '10.77.0.2'];

/** The standard filters with parameters for every variable they use. */
export const STANDARD_PARAMS: Readonly<Record<string, Params>> = {
  'clean-traffic': { IP: IPS },
  'clean-traffic-gateway': { IP, GATEWAY_MAC: '52:54:00:00:00:fe' },
  'no-mac-spoofing': {},
  'no-ip-spoofing': { IP: IPS },
  'no-arp-spoofing': { IP },
  'no-arp-mac-spoofing': {},
  'no-arp-ip-spoofing': { IP: IPS },
  'allow-arp': {},
  'allow-dhcp': {},
  'allow-dhcp-server': { DHCPSERVER: ['10.77.0.1', '10.77.0.254'] },
  'allow-dhcpv6': {},
  'allow-dhcpv6-server': { DHCPSERVER: 'fd77::1' },
  'allow-incoming-ipv4': {},
  'allow-incoming-ipv6': {},
  'allow-ipv4': {},
  'allow-ipv6': {},
  'no-ip-multicast': {},
  'no-ipv6-multicast': {},
  'no-ipv6-spoofing': { IPV6: ['fd77::2', 'fd77::3'] },
  'no-mac-broadcast': {},
  'no-other-l2-traffic': {},
  'no-other-rarp-traffic': {},
  'qemu-announce-self': {},
  'qemu-announce-self-rarp': {},
};

const mac = (i: number): string => `52:54:00:00:01:${(i & 255).toString(16).padStart(2, '0')}`;

function bind(i: number, filter: string, params: Params): InterfaceBinding {
  return parseFilterBindingXml(bindingXml(`vnet${i}`, mac(i), filter, params), `binding-${i}.xml`);
}

export function resolveCorpus(): ResolveCase[] {
  const cases: ResolveCase[] = [];
  const std = bundledFilters();
  // Every standard filter on its own interface, all in one policy (shared templates across interfaces).
  cases.push({ name: 'standard filters', filters: std, bindings: Object.entries(STANDARD_PARAMS).map(([f, p], i) => bind(i, f, p)) });
  // The conformance fixtures over the bundled filters.
  const confDir = join(FIXTURES, 'conformance');
  if (existsSync(confDir)) {
    const conf = loadSources({ filterDirs: [confDir], bundled: true, bindingPaths: [], domainPaths: [], libvirt: false }).filters;
    const bindings: InterfaceBinding[] = [];
    for (const f of readdirSync(confDir).filter((x) => x.endsWith('.xml')).sort()) {
      const text = readFileSync(join(confDir, f), 'utf8');
      const m = /<!--\s*conformance-case:\s*(\{[\s\S]*?\})\s*-->/.exec(text);
      if (!m) continue; // a filter referenced by the cases
      const spec = JSON.parse(m[1] as string) as { params?: Params };
      const filter = /<filter\b[^>]*\bname='([^']+)'/.exec(text)?.[1] as string;
      bindings.push(bind(bindings.length, filter, spec.params ?? {}));
    }
    cases.push({ name: 'conformance fixtures', filters: conf, bindings });
  }
  // The golden cases.
  const goldenDir = join(FIXTURES, 'golden');
  for (const name of readdirSync(goldenDir).sort()) {
    const args = sourceArgs(join(goldenDir, name));
    const opt = (o: string): string[] => args.flatMap((a, i) => (args[i - 1] === o ? [a] : []));
    const s = loadSources({ filterDirs: opt('--filters'), bundled: true, bindingPaths: opt('--binding'), domainPaths: opt('--domain'), libvirt: false });
    cases.push({ name: `golden ${name}`, filters: s.filters, bindings: s.bindings });
  }
  // A fleet: many interfaces of a few parameter shapes, values differing (IP lists of several lengths, with repeats).
  const fleet: InterfaceBinding[] = [];
  for (let i = 0; i < 60; i++) {
    const ip = (k: number): string => `10.${(i >> 8) + 1}.${i & 255}.${k}`;
    const kind = i % 6;
    if (kind === 0) fleet.push(bind(i, 'clean-traffic', { IP: ip(1) }));
    else if (kind === 1) fleet.push(bind(i, 'clean-traffic', { IP: [ip(1), ip(2), ip(1), ip(3)].slice(0, 1 + (i % 4)) }));
    else if (kind === 2) fleet.push(bind(i, 'clean-traffic-gateway', { IP: ip(1), GATEWAY_MAC: mac(200 + (i % 3)) }));
    else if (kind === 3) fleet.push(bind(i, 'no-ip-spoofing', { IP: [ip(1), ip(1)] }));
    else if (kind === 4) fleet.push(bind(i, 'allow-dhcp-server', { DHCPSERVER: [ip(254), ip(253)].slice(0, 1 + (i % 2)) }));
    else fleet.push(bind(i, 'clean-traffic', { IP: ip(7), CTRL_IP_LEARNING: 'none' }));
  }
  cases.push({ name: 'fleet', filters: std, bindings: fleet });
  cases.push(sharedSubtrees());
  return cases;
}

/**
 * Filters referenced many times: a diamond (each level references the next
 * twice, with its own parameters, which the caller's variables override),
 * a sub-filter reached with different bindings, iterators in parallel and
 * cartesian, indexes, and a filter referenced from root and from a sub-chain.
 */
function sharedSubtrees(): ResolveCase {
  const filters = bundledFilters();
  const add = (xml: string): void => {
    const d = parseFilterXml(xml, `inline-${filters.size}.xml`);
    filters.set(d.name, d);
  };
  const depth = 6;
  for (let l = 0; l < depth; l++) {
    add(
      `<filter name='dia${l}' chain='root'>` +
        `<rule action='accept' direction='out' priority='${100 + l}'><ip srcipaddr='$IP' dscp='$DSCP[0]'/></rule>` +
        `<filterref filter='dia${l + 1}'><parameter name='PEER' value='10.9.${l}.1'/><parameter name='L${l}' value='a'/></filterref>` +
        `<filterref filter='dia${l + 1}'><parameter name='PEER' value='10.9.${l}.2'/><parameter name='L${l}' value='b'/><parameter name='PORT' value='${l}'/></filterref>` +
        `</filter>`,
    );
  }
  add(
    `<filter name='dia${depth}' chain='ipv4-leaf' priority='-300'>` +
      `<rule action='drop' direction='inout'><ip srcipaddr='$PEER[@1]' dstipaddr='$IP[@2]' protocol='tcp' dstportstart='$PORT[0]'/></rule>` +
      `<rule action='return' direction='out'><ip dscp='$DSCP[@3]' srcipaddr='$IP[@2]'/></rule>` +
      `<filterref filter='allow-dhcp-server'/>` +
      `</filter>`,
  );
  add(
    `<filter name='iters' chain='root'>` +
      `<rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstportstart='$P[@2]' dscp='$D[@3]'/></rule>` +
      `<rule action='drop' direction='out'><udp srcipaddr='$A' dstipaddr='$B' srcportstart='$P[1]'/></rule>` +
      `<filterref filter='dia${depth}'/>` +
      `<filterref filter='no-ip-spoofing'/>` +
      `</filter>`,
  );
  const bindings = [
    bind(0, 'dia0', { IP: ['10.8.0.1', '10.8.0.2'], PORT: ['22', '80'], DSCP: ['1', '2', '1'], DHCPSERVER: '10.8.0.254' }),
    bind(1, 'dia0', { IP: '10.8.0.3', PORT: '443', DSCP: '5', DHCPSERVER: ['10.8.0.253', '10.8.0.254'], PEER: '10.9.9.9' }),
    bind(2, 'iters', { A: ['10.7.0.1', '10.7.0.2', '10.7.0.1'], B: ['10.6.0.1', '10.6.0.2', '10.6.0.3'], P: ['1', '2', '3', '4'], D: ['0', '8'], IP: '10.7.0.9', PORT: '53', DSCP: '3', DHCPSERVER: '10.7.0.254', PEER: ['10.5.0.1', '10.5.0.2'] }),
  ];
  return { name: 'shared sub-trees', filters, bindings };
}
