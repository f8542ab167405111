// Front-end honesty (issue 9, fault 11 and part of 4): what the sources say
// about the files they read. Invalid UTF-8 is refused as libvirt refuses it;
// a bundled standard filter replaced by a different definition is noted;
// `--libvirt` on a machine without libvirt's directories says so and fails
// unless an empty result was asked for.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { filterSignature, invalidUtf8Offset, LIBVIRT_PATHS, loadSources, readText } from '../../src/resolve/sources.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { bindingXml, tempDir } from '../support/policy.js';
import { nwfErrorOf, run } from '../support/cli.js';

const NO_SOURCES = { filterDirs: [], bundled: true, bindingPaths: [], domainPaths: [], libvirt: false };

describe('UTF-8', () => {
  it.each([
    ['a Latin-1 byte', [0x3c, 0x61, 0x3e, 0xe9, 0x3c, 0x2f, 0x61, 0x3e], 3],
    ['an overlong encoding', [0x0a, 0xc0, 0xaf], 1],
    ['a surrogate', [0x0a, 0x0a, 0xed, 0xa0, 0x80], 2],
    ['a truncated sequence at the end', [0x41, 0xe2, 0x82], 1],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80], 0],
  ])('%s is refused, NWF1009, with the byte offset and line', (_what, bytes, at) => {
    const dir = tempDir({});
    const f = join(dir, 'f.xml');
    writeFileSync(f, Buffer.from(bytes));
    expect(invalidUtf8Offset(Buffer.from(bytes))).toBe(at);
    const e = nwfErrorOf(() => readText(f));
    expect(e.code).toBe('NWF1009');
    expect(e.message).toContain(`invalid UTF-8 at byte ${at}`);
    expect(e.details.location?.line).toBe(Buffer.from(bytes).subarray(0, at).filter((b) => b === 10).length + 1);
  });

  it('valid UTF-8 (multi-byte, 4-byte, a BOM) is read', () => {
    const dir = tempDir({});
    const f = join(dir, 'f.xml');
    writeFileSync(f, '\uFEFF<filter name="f"><!-- é ü 漢 😀 --></filter>');
    expect(invalidUtf8Offset(Buffer.from('é ü 漢 😀'))).toBeUndefined();
    expect(readText(f)).toContain('😀');
  });

  it('compile refuses the file with exit 2, naming it', async () => {
    const fdir = tempDir({});
    writeFileSync(join(fdir, 'f.xml'), Buffer.concat([Buffer.from("<filter name='f' chain='root'>\n<!-- caf"), Buffer.from([0xe9]), Buffer.from(' -->\n</filter>')]));
    const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'f') });
    const r = await run(['compile', '--filters', fdir, '--binding', bdir]);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain(`${join(fdir, 'f.xml')}:2: error NWF1009: invalid UTF-8 at byte 39 (0xe9)`);
  });

  it('a file that is not a regular file (a device that never ends, a directory) is refused without reading it', () => {
    const dir = tempDir({});
    mkdirSync(join(dir, 'd.xml'));
    for (const f of ['/dev/zero', join(dir, 'd.xml')]) {
      const e = nwfErrorOf(() => readText(f));
      expect(e.code).toBe('NWF1007');
      expect(e.message).toBe(`cannot read ${f}: not a regular file`);
    }
  });
});

describe('a bundled standard filter replaced by another definition', () => {
  const weaker = "<filter name='no-ip-spoofing' chain='ipv4-ip' priority='-710'><rule action='return' direction='out'/></filter>";

  it('is noted on stderr, naming the filter and both files (not an error)', async () => {
    const fdir = tempDir({ 'mine.xml': weaker });
    const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.2' }) });
    const r = await run(['compile', '--filters', fdir, '--binding', bdir, '--policy']);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^note: filter 'no-ip-spoofing' from \S+\/mine\.xml replaces the bundled standard filter \(\S+\/filters\/standard\/no-ip-spoofing\.xml\) with a different definition/m);
    expect(r.err.match(/^note: /gm)?.length).toBe(1);
  });

  it('the same definition written differently is not noted (libvirt 9.0 style: no protocol element in its own chain, hex, upper case, comments, attribute order)', () => {
    const fdir = tempDir({
      'no-ip-spoofing.xml': [
        "<filter name='no-ip-spoofing' chain='ipv4-ip' priority='-710'>",
        '  <!-- a comment -->',
        "  <rule priority='100' direction='out' action='return'><ip protocol='0x11' srcipaddr='0.0.0.0' comment='dhcp'/></rule>",
        "  <rule action='return' direction='out'><ip srcipaddr='$IP'/></rule>",
        "  <rule action='drop' direction='out' priority='1000'/>",
        '</filter>',
      ].join('\n'),
      'no-ipv6-spoofing.xml': [
        "<filter name='no-ipv6-spoofing' chain='ipv6-ip' priority='-610'>",
        "  <rule action='return' direction='out' priority='100'><ipv6 srcipaddr='FE80::' srcipmask='10' protocol='udp'/></rule>",
        "  <rule direction='out' action='return' priority='500'><ipv6 srcipaddr='$IPV6[@0]'/></rule>",
        "  <rule direction='out' action='drop' priority='1000'/>",
        '</filter>',
      ].join('\n'),
    });
    const s = loadSources({ ...NO_SOURCES, filterDirs: [fdir] });
    expect(s.notes).toEqual([]);
  });

  it('the signature tells apart what differs: an action, a priority, a value, the chain, a protocol element outside its own chain', () => {
    const sig = (x: string): string => filterSignature(parseFilterXml(x, 'x.xml'));
    const base = "<filter name='f' chain='arp'><rule action='drop' direction='out' priority='10'><arp opcode='1'/></rule></filter>";
    expect(sig(base)).toBe(sig(base.replace("opcode='1'", "opcode='Request'")));
    for (const changed of [
      base.replace("action='drop'", "action='accept'"),
      base.replace("priority='10'", "priority='11'"),
      base.replace("opcode='1'", "opcode='2'"),
      base.replace("chain='arp'", "chain='arp-x'"),
      base.replace("<arp opcode='1'/>", '<arp/>').replace("chain='arp'", "chain='root'"),
    ]) {
      expect(sig(changed)).not.toBe(sig(base));
    }
    expect(sig(base.replace("<arp opcode='1'/>", '<arp/>'))).toBe(sig(base.replace("<arp opcode='1'/>", '')));
  });

  it("libvirt's own files in /etc/libvirt/nwfilter, where present, mean what the bundled ones mean", () => {
    const s = loadSources({ ...NO_SOURCES, libvirt: true, allowEmpty: true, libvirtRoot: '' });
    expect(s.notes.filter((n) => n.includes('replaces the bundled'))).toEqual([]);
  });
});

describe('--libvirt on a host without libvirt', () => {
  const fakeHost = (dirs: string[]): string => {
    const root = tempDir({});
    for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
    return root;
  };

  it('fails with NWF1210, naming the missing directories and saying it looks like no libvirt host', () => {
    const root = fakeHost([]);
    const e = nwfErrorOf(() => loadSources({ ...NO_SOURCES, libvirt: true, libvirtRoot: root }));
    expect(e.code).toBe('NWF1210');
    expect(e.message).toBe(`--libvirt: this does not look like a libvirt host: ${root}${LIBVIRT_PATHS.bindings}, ${root}${LIBVIRT_PATHS.domains}, ${root}${LIBVIRT_PATHS.filters} are missing`);
    expect(e.details.hint).toContain('--allow-empty');
  });

  it('with --allow-empty, an empty result and a note', () => {
    const s = loadSources({ ...NO_SOURCES, libvirt: true, libvirtRoot: fakeHost([]), allowEmpty: true });
    expect(s.bindings).toEqual([]);
    expect(s.notes[0]).toMatch(/^--libvirt --allow-empty: .* are missing: no libvirt host here/);
  });

  it('a running libvirt without domains is an empty host, not an error', () => {
    const s = loadSources({ ...NO_SOURCES, libvirt: true, libvirtRoot: fakeHost([LIBVIRT_PATHS.domains, LIBVIRT_PATHS.bindings, LIBVIRT_PATHS.filters]) });
    expect(s.bindings).toEqual([]);
    expect(s.notes).toEqual([]);
  });

  it('one runtime directory missing is a note saying where interfaces come from', () => {
    const root = fakeHost([LIBVIRT_PATHS.domains]);
    const s = loadSources({ ...NO_SOURCES, libvirt: true, libvirtRoot: root });
    expect(s.notes).toEqual([
      `--libvirt: ${root}${LIBVIRT_PATHS.bindings} is missing (libvirt's nwfilter driver is not running, or libvirt is older than 4.5): interfaces are taken from the domain status in ${root}${LIBVIRT_PATHS.domains}`,
      `--libvirt: ${root}${LIBVIRT_PATHS.filters} is missing: no filters from libvirt, only the bundled library and --filters directories`,
    ]);
  });

  it('compile --libvirt exits 2 on such a host, and 0 with --allow-empty', async () => {
    // The real paths: this test machine runs no libvirtd outside the tests' own namespaces.
    const real = loadSources({ ...NO_SOURCES, libvirt: true, allowEmpty: true });
    if (!real.notes.some((n) => n.startsWith('--libvirt --allow-empty'))) return; // a libvirt host: nothing to assert here
    const r = await run(['compile', '--libvirt']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('error NWF1210');
    expect((await run(['compile', '--libvirt', '--allow-empty'])).code).toBe(0);
  });
});
