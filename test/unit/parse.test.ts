import { describe, expect, it } from 'vitest';
import { parseDomainXml, parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { ELEMENT_ATTRIBUTES } from '../../src/xml/schema.js';
import { normalizeIPv6, parseIPv4Mask, parseIPv6, parseMac, parseUint } from '../../src/ir/values.js';
import { policyFor } from '../support/policy.js';

/** A valid literal for each datatype. */
const SAMPLE: Record<string, string> = {
  mac: '52:54:00:AB:cd:0f', macmask: 'ff:ff:ff:00:00:00', ipv4: '10.1.2.3', ipv4mask: '255.255.0.0', ipv6: 'fd00::1', ipv6mask: '64',
  uint8: '0x1f', uint16: '4096', uint32: '0xffff0000', ethertype: 'ipv4', vlanid: '100', arpopcode: 'Reply', ipproto: 'tcp', dscp: '46',
  boolean: 'true', states: 'NEW,ESTABLISHED', tcpflags: 'SYN,ACK/SYN', ipsetname: 'myset', ipsetflags: 'src,dst', comment: 'a comment',
};

describe('parsing filters', () => {
  it.each(Object.entries(ELEMENT_ATTRIBUTES))('<%s> with every attribute, and with match=no', (element, attrs) => {
    const list = Object.entries(attrs)
      .filter(([name]) => !(element === 'ip' || element === 'ipv6') || !name.includes('port') || true)
      .map(([name, type]) => `${name}='${name === 'protocol' ? 'tcp' : SAMPLE[type]}'`)
      .join(' ');
    for (const match of ['yes', 'no']) {
      const d = parseFilterXml(`<filter name='t' chain='root'><rule action='drop' direction='out'><${element} match='${match}' ${list}/></rule></filter>`, 't.xml');
      const rule = d.entries[0];
      expect(rule?.kind).toBe('rule');
      if (rule?.kind !== 'rule') return;
      expect(rule.protocol?.element).toBe(element);
      expect(rule.protocol?.match).toBe(match === 'yes');
      expect([...(rule.protocol?.attrs.keys() ?? [])].sort()).toEqual(Object.keys(attrs).sort());
    }
  });

  it('reads chains with suffixes, default and explicit priorities, hex numbers, statematch and variables', () => {
    const d = parseFilterXml(
      `<!-- header comment like libvirt's files -->
      <filter name='x' chain='ipv4-my.chain'>
        <uuid>d217f2d7-5a04-0e01-8b98-ec2743436b74</uuid>
        <rule action='return' direction='inout' priority='-100' statematch='false'><ip protocol='0x11' srcipaddr='$IP[@2]' dstipaddr='$DST[1]'/></rule>
        <filterref filter='y'><parameter name='A' value='1'/><parameter name='A' value='2'/></filterref>
      </filter>`,
      'x.xml',
    );
    expect(d).toMatchObject({ name: 'x', chain: 'ipv4-my.chain', chainPriority: -700, uuid: 'd217f2d7-5a04-0e01-8b98-ec2743436b74' });
    const [r, ref] = d.entries;
    expect(r).toMatchObject({ kind: 'rule', action: 'return', direction: 'inout', priority: -100, statematch: false, loc: { file: 'x.xml', line: 4 } });
    if (r?.kind !== 'rule') return;
    expect(r.protocol?.attrs.get('protocol')?.value).toMatchObject({ kind: 'literal', value: { value: 17 } });
    expect(r.protocol?.attrs.get('srcipaddr')?.value).toMatchObject({ kind: 'variable', ref: { name: 'IP', access: { kind: 'iterator', iterator: 2 } } });
    expect(r.protocol?.attrs.get('dstipaddr')?.value).toMatchObject({ kind: 'variable', ref: { name: 'DST', access: { kind: 'index', index: 1 } } });
    expect(ref).toMatchObject({ kind: 'filterref', filter: 'y' });
    if (ref?.kind === 'filterref') expect(ref.params.get('A')).toEqual(['1', '2']);
  });

  it('default chain priorities by prefix', () => {
    const prio = (chain: string) => parseFilterXml(`<filter name='x' chain='${chain}'/>`, 'x.xml').chainPriority;
    expect([prio('stp'), prio('mac'), prio('vlan'), prio('ipv4'), prio('ipv6'), prio('arp'), prio('rarp'), prio('root')]).toEqual([-810, -800, -750, -700, -600, -500, -400, 0]);
    expect(prio('arp-my_chain')).toBe(-500);
  });

  it('resolves masks, negation, MAC masks and ICMPv6 ranges into the IR', () => {
    const f = `<filter name='t' chain='root'>
      <rule action='drop' direction='out'><mac match='no' srcmacaddr='52:54:00:00:00:00' srcmacmask='ff:ff:ff:00:00:00' protocolid='arp'/></rule>
      <rule action='drop' direction='out'><ipv6 srcipaddr='fe80::' srcipmask='10' protocol='icmpv6' type='133' typeend='136'/></rule>
      <rule action='drop' direction='out'><arp opcode='Reply' arpsrcipaddr='10.0.0.0' arpsrcipmask='24' gratuitous='true'/></rule></filter>`;
    const p = policyFor('t', {}, [f]);
    const m = p.l2.out.root.map((e) => (e.kind === 'rule' ? e.rule.match : undefined));
    expect(m[0]).toEqual({ proto: 'mac', src: { addr: '52:54:00:00:00:00', mask: 'ff:ff:ff:00:00:00', neg: true }, etherType: { value: 0x0806, neg: true } });
    expect(m[1]).toMatchObject({ proto: 'ipv6', srcIp: { addr: 'fe80::', prefix: 10 }, protocol: { value: 58 }, icmpType: { lo: 133, hi: 136 }, icmpCode: { lo: 0, hi: 255 } });
    expect(m[2]).toMatchObject({ proto: 'arp', opcode: { value: 2 }, spa: { addr: '10.0.0.0', prefix: 24 }, gratuitous: { neg: false } });
  });
});

describe('values', () => {
  it('parse and normalise', () => {
    expect(parseMac('52:54:0:AB:cd:f')).toBe('52:54:00:ab:cd:0f');
    expect(parseMac('52:54:00:ab:cd')).toBeUndefined();
    expect(parseIPv4Mask('255.255.255.0')).toBe(24);
    expect(parseIPv4Mask('24')).toBe(24);
    expect(parseIPv4Mask('33')).toBeUndefined();
    expect(normalizeIPv6('FE80:0:0:0:0:0:0:1')).toBe('fe80::1');
    expect(normalizeIPv6('::ffff:1.2.3.4')).toBe('::ffff:102:304');
    expect(parseIPv6('1::2::3')).toBeUndefined();
    expect(parseUint('0x10', 255)).toBe(16);
    expect(parseUint('256', 255)).toBeUndefined();
  });
});

describe('parsing domains and bindings', () => {
  const iface = (target: string) =>
    `<interface type='bridge'><mac address='52:54:00:00:00:0a'/>${target}<filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.5'/></filterref></interface>`;
  it('reads running interfaces, also wrapped in <domstatus>, and skips those without a target dev with a note', () => {
    const xml = `<domstatus state='running'><domain type='kvm'><name>vm1</name><devices>${iface("<target dev='vnet7'/>")}${iface('')}<interface type='network'><mac address='52:54:00:00:00:0b'/><target dev='vnet8'/></interface></devices></domain></domstatus>`;
    const r = parseDomainXml(xml, 'vm1.xml');
    expect(r.bindings).toHaveLength(1);
    expect(r.bindings[0]).toMatchObject({ source: 'domain', owner: 'vm1', iface: 'vnet7', mac: '52:54:00:00:00:0a', filterref: { filter: 'clean-traffic' } });
    expect(r.notes.join()).toContain('no <target dev>');
  });
  it('reads <filterbinding>, also wrapped in <filterbindingstatus>', () => {
    const inner = "<filterbinding><owner><name>vm2</name><uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid></owner><portdev name='vnet1'/><linkdev name='eth0'/><mac address='52:54:00:00:00:01'/><filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.1'/></filterref></filterbinding>";
    for (const xml of [inner, `<filterbindingstatus>${inner}</filterbindingstatus>`]) {
      expect(parseFilterBindingXml(xml, 'b.xml')).toMatchObject({ source: 'binding', owner: 'vm2', iface: 'vnet1', linkdev: 'eth0', mac: '52:54:00:00:00:01' });
    }
  });
});
