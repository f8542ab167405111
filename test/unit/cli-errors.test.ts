// Bad input: a clear error with a stable code and the file, a non-zero
// exit, and nothing on stdout.
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { bindingXml, tempDir } from '../support/policy.js';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const GOOD_BINDING = bindingXml('vnet0', '52:54:00:00:00:01', 'f', { IP: '10.0.0.2' });

/** Compiles one custom filter `f` (plus extra files) bound to vnet0. */
async function compileFilter(filterXml: string, extra: Record<string, string> = {}, binding = GOOD_BINDING) {
  const fdir = tempDir({ 'f.xml': filterXml, ...extra });
  const bdir = tempDir({ 'vnet0.xml': binding });
  const r = await run(['compile', '--filters', fdir, '--binding', bdir]);
  return { ...r, fdir, bdir };
}

const F = (body: string, attrs = "chain='root'") => `<filter name='f' ${attrs}>${body}</filter>`;

const cases: { name: string; xml: string; code: string; mention: RegExp }[] = [
  { name: 'malformed XML', xml: "<filter name='f'><rule action='drop' direction='out'></filter>", code: 'NWF1001', mention: /malformed XML/ },
  { name: 'an unknown element', xml: F("<rule action='drop' direction='out'><ethernet/></rule>"), code: 'NWF1002', mention: /unknown protocol element <ethernet>/ },
  { name: 'an unknown child of filter', xml: F('<rules/>'), code: 'NWF1002', mention: /<rules>/ },
  { name: 'an unknown attribute', xml: F("<rule action='drop' direction='out'><ip srcaddr='1.2.3.4'/></rule>"), code: 'NWF1003', mention: /unknown attribute 'srcaddr'/ },
  { name: 'an invalid MAC', xml: F("<rule action='drop' direction='out'><mac srcmacaddr='52:54:00:zz:00:01'/></rule>"), code: 'NWF1101', mention: /MAC address/ },
  { name: 'an invalid IPv4 address', xml: F("<rule action='drop' direction='out'><ip srcipaddr='10.0.0.256'/></rule>"), code: 'NWF1101', mention: /IPv4 address/ },
  { name: 'an invalid IPv6 address', xml: F("<rule action='drop' direction='out'><ipv6 srcipaddr='fe80:::1'/></rule>"), code: 'NWF1101', mention: /IPv6 address/ },
  { name: 'an invalid mask', xml: F("<rule action='drop' direction='out'><ip srcipaddr='10.0.0.0' srcipmask='255.0.255.0'/></rule>"), code: 'NWF1101', mention: /prefix length|netmask/ },
  { name: 'an invalid port', xml: F("<rule action='drop' direction='out'><tcp dstportstart='65536'/></rule>"), code: 'NWF1101', mention: /0-65535/ },
  { name: 'a port without a port protocol', xml: F("<rule action='drop' direction='out'><ip dstportstart='22'/></rule>"), code: 'NWF1105', mention: /protocol tcp, udp/ },
  { name: 'an invalid rule priority', xml: F("<rule action='drop' direction='out' priority='1001'/>"), code: 'NWF1103', mention: /-1000 to 1000/ },
  { name: 'an invalid filter priority', xml: F('', "chain='root' priority='abc'"), code: 'NWF1103', mention: /priority/ },
  { name: 'an invalid chain', xml: F('', "chain='ipv5'"), code: 'NWF1104', mention: /invalid chain/ },
  { name: 'an invalid action', xml: F("<rule action='permit' direction='out'/>"), code: 'NWF1101', mention: /action/ },
  { name: 'an unknown filterref', xml: F("<filterref filter='does-not-exist'/>"), code: 'NWF1201', mention: /unknown filter 'does-not-exist'/ },
];

describe('compile: bad filter input', () => {
  it.each(cases)('$name -> $code, file named, exit 2, nothing written', async (c) => {
    const r = await compileFilter(c.xml);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain(`error ${c.code}`);
    expect(r.err).toMatch(c.mention);
    expect(r.err).toContain(`${r.fdir}/f.xml`);
  });

  it('gives the line of the offending element', async () => {
    const r = await compileFilter("<filter name='f' chain='root'>\n  <rule action='drop' direction='out'>\n    <ip srcipaddr='1.2.3'/>\n  </rule>\n</filter>\n");
    expect(r.err).toContain(`${r.fdir}/f.xml:3: filter[name=f]/rule[1]/ip@srcipaddr: error NWF1101`);
  });

  it('a filterref cycle shows the path', async () => {
    const r = await compileFilter(F("<filterref filter='g'/>"), { 'g.xml': "<filter name='g' chain='root'><filterref filter='h'/></filter>", 'h.xml': "<filter name='h' chain='root'><filterref filter='g'/></filter>" });
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain('error NWF1202');
    expect(r.err).toContain('g -> h -> g');
    expect(r.err).toContain('h.xml');
  });
});

describe('compile: bad bindings', () => {
  it('a binding without a MAC', async () => {
    const r = await compileFilter(F(''), {}, "<filterbinding><owner><name>vm</name></owner><portdev name='vnet0'/><filterref filter='f'/></filterbinding>");
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain('error NWF1207');
    expect(r.err).toContain('no MAC address');
    expect(r.err).toContain(`${r.bdir}/vnet0.xml`);
  });

  it.each(['vnet0;drop', 'a"b', 'vnet 0', 'averyveryverylongname', '../x', "v'0"])('a tap name that is not a valid interface name: %s', async (name) => {
    const b = `<filterbinding><owner><name>vm</name></owner><portdev name=${JSON.stringify(name).replace(/^"|"$/g, "'").replace(/\\"/g, '&quot;')}/><mac address='52:54:00:00:00:01'/><filterref filter='f'/></filterbinding>`;
    const r = await compileFilter(F(''), {}, b.includes("name='v'0'") ? b.replace("name='v'0'", 'name="v\'0"') : b);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/error NWF1106|error NWF1001/);
  });

  it('an invalid tap name in a domain XML', async () => {
    const fdir = tempDir({ 'f.xml': F('') });
    const ddir = tempDir({ 'vm.xml': "<domain type='kvm'><name>vm</name><devices><interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='tap;1'/><filterref filter='f'/></interface></devices></domain>" });
    const r = await run(['compile', '--filters', fdir, '--domain', ddir]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('error NWF1106');
    expect(r.err).toContain('vm.xml');
  });
});

describe('CLI usage', () => {
  it('every command has --help', async () => {
    for (const c of ['compile', 'explain', 'load', 'rollback', 'status', 'unload', 'demo']) {
      const r = await run([c, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toContain(`usage: nwf-fast ${c}`);
    }
  });
  it('an unknown option is a usage error', async () => {
    const r = await run(['compile', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('NWF1301');
  });
  it('an unknown command is an error', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
  });
});
