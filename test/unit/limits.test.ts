// Compile has bounds (issue 9, fault 5): each input that once exhausted the
// machine or crashed (exit 70) is refused with its own code, exit 2, naming
// the file, filter and rule, in bounded time and memory, or compiled when it
// is within the limits (ir/limits.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LIMITS } from '../../src/ir/limits.js';
import { resolveInterface } from '../../src/resolve/resolve.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import type { FilterDef } from '../../src/xml/ast.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { bindingXml, tempDir } from '../support/policy.js';
import { nwfErrorOf, run } from '../support/cli.js';

const ip = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const mac = (i: number): string => `52:54:00:01:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const range = (n: number, f: (i: number) => string): string[] => Array.from({ length: n }, (_, i) => f(i));

/** Compiles filter files (name -> XML) with vnet0 bound to `filter` with `params`. */
async function compile(files: Record<string, string>, filter: string, params: Record<string, string | string[]>, extra: string[] = []) {
  const fdir = tempDir(files);
  const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', filter, params) });
  return { ...(await run(['compile', '--filters', fdir, '--binding', bdir, ...extra])), fdir };
}

const iterRule = (attrs: string): string => `<filter name='f' chain='ipv4'>\n<rule action='accept' direction='out'><ip ${attrs}/></rule>\n</filter>`;

describe('expansions per rule', () => {
  it('three iterators of 100 values each (a million combinations) are refused, NWF1211, before anything is built', async () => {
    const r = await compile({ 'f.xml': iterRule("srcipaddr='$A[@1]' dstipaddr='$B[@2]' srcmacaddr='$C[@3]'") }, 'f', { A: range(100, ip), B: range(100, (i) => ip(i + 1000)), C: range(100, mac) });
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain('f.xml:2: filter[name=f]/rule[1]/ip: error NWF1211: this rule expands to 1000000 combinations of variable values (A 100 x B 100 x C 100)');
    expect(r.err).toContain('filter: f');
    expect(r.err).toContain(`at most ${LIMITS.ruleExpansions.max}`);
  });

  it('50 x 50 x 40 (once a stack overflow, exit 70) is refused the same way', async () => {
    const r = await compile({ 'f.xml': iterRule("srcipaddr='$A[@1]' dstipaddr='$B[@2]' srcmacaddr='$C[@3]'") }, 'f', { A: range(50, ip), B: range(50, (i) => ip(i + 1000)), C: range(40, mac) });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/error NWF1211: this rule expands to 100000 combinations/);
  });

  it('a repeated combination counts once, as libvirt skips it', async () => {
    const r = await compile({ 'f.xml': iterRule("srcipaddr='$A[@1]' dstipaddr='$B[@2]'") }, 'f', { A: range(300, () => '10.0.0.1'), B: range(300, ip) }, ['--policy', '--json']);
    expect(r.code).toBe(0);
    const ir = JSON.parse(r.out) as { interfaces: { l2: { fromVm: PolicyIR['interfaces'][number]['l2']['out'] } }[] };
    expect(ir.interfaces[0]?.l2.fromVm.chains[0]?.rules.length).toBe(300);
  });

  it('an iterator id above 1000 is refused, as libvirt does', async () => {
    const r = await compile({ 'f.xml': iterRule("srcipaddr='$A[@1001]'") }, 'f', { A: '10.0.0.1' });
    expect(r.code).toBe(2);
    expect(r.err).toContain("invalid variable reference '$A[@1001]'");
  });
});

describe('rule instances per interface', () => {
  it('a list of 35 000 values in one L3 rule (once exit 70) compiles: 105 000 rules, three placements each', async () => {
    const r = await compile({ 'f.xml': "<filter name='f' chain='root'><rule action='accept' direction='out'><tcp srcipaddr='$IP' dstportstart='22'/></rule></filter>" }, 'f', { IP: range(35_000, ip) });
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.match(/@th,(0|16),16 22 /g)?.length).toBe(105_000);
  }, 120_000);

  it('a list longer than the limit is refused, NWF1212, naming the rule', async () => {
    const r = await compile({ 'f.xml': "<filter name='f' chain='root'>\n<rule action='accept' direction='out'><ip srcipaddr='$IP'/></rule>\n<rule action='drop' direction='out'><ip dstipaddr='$IP'/></rule>\n</filter>" }, 'f', {
      IP: range(LIMITS.interfaceRules.max / 2 + 1, ip),
    });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/f\.xml:3: filter\[name=f\]\/rule\[2\]\/ip: error NWF1212: interface 'vnet0' has more than 65536 rule instances/);
  });

  it('a filterref diamond 20 levels deep (once 38 s and 3.4 GB) is refused from its counts, NWF1212, before anything is built', async () => {
    const files: Record<string, string> = {};
    for (let l = 0; l < 20; l++) files[`d${l}.xml`] = `<filter name='d${l}' chain='root'><filterref filter='d${l + 1}'/><filterref filter='d${l + 1}'/></filter>`;
    files['d20.xml'] = "<filter name='d20' chain='ipv4'><rule action='accept' direction='out'><ip srcipaddr='$IP'/></rule></filter>";
    const r = await compile(files, 'd0', { IP: '10.0.0.1' });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/d\d+\.xml:1: filter\[name=d\d+\]\/filterref\[[12]\]: error NWF1212: filter 'd\d+' expands to more than 65536 rule instances/);
  });

  it('a diamond within the limits resolves to every path, as libvirt instantiates a filter once per reference', () => {
    const filters = new Map<string, FilterDef>();
    for (let l = 0; l < 12; l++) filters.set(`d${l}`, parseFilterXml(`<filter name='d${l}' chain='root'><filterref filter='d${l + 1}'/><filterref filter='d${l + 1}'/></filter>`, `d${l}.xml`));
    filters.set('d12', parseFilterXml("<filter name='d12' chain='ipv4'><rule action='accept' direction='out'><ip srcipaddr='$IP'/></rule></filter>", 'd12.xml'));
    const p = resolveInterface(filters, parseFilterBindingXml(bindingXml('vnet0', '52:54:00:00:00:01', 'd0', { IP: '10.0.0.1' }), 'b.xml'));
    expect(p.l2.out.chains[0]?.rules.length).toBe(4096);
  });
});

describe('filterref depth', () => {
  it(`a chain of filterrefs deeper than ${LIMITS.filterrefDepth.max} levels is refused, NWF1213, naming the filterref`, async () => {
    const n = LIMITS.filterrefDepth.max + 5;
    const files: Record<string, string> = {};
    for (let l = 0; l < n; l++) files[`c${l}.xml`] = `<filter name='c${l}' chain='root'><filterref filter='c${l + 1}'/></filter>`;
    files[`c${n}.xml`] = `<filter name='c${n}' chain='root'><rule action='drop' direction='out'/></filter>`;
    const r = await compile(files, 'c0', {});
    expect(r.code).toBe(2);
    const d = LIMITS.filterrefDepth.max;
    expect(r.err).toContain(`c${d}.xml:1: filter[name=c${d}]/filterref[1]: error NWF1213: filterrefs nested more than ${d} levels deep: c0 -> c1 -> c2 -> ... -> c${d - 1} -> c${d} -> c${d + 1}`);
  });

  it('at the limit it compiles', async () => {
    const n = LIMITS.filterrefDepth.max;
    const files: Record<string, string> = {};
    for (let l = 0; l < n; l++) files[`c${l}.xml`] = `<filter name='c${l}' chain='root'><filterref filter='c${l + 1}'/></filter>`;
    files[`c${n}.xml`] = `<filter name='c${n}' chain='root'><rule action='drop' direction='out'/></filter>`;
    expect((await compile(files, 'c0', {}, ['--policy'])).code).toBe(0);
  });

  it('a diamond of empty filters 60 levels deep (2^60 paths) resolves at once: sub-trees are walked once', () => {
    const filters = new Map<string, FilterDef>();
    for (let l = 0; l < 60; l++) filters.set(`e${l}`, parseFilterXml(`<filter name='e${l}' chain='root'><filterref filter='e${l + 1}'/><filterref filter='e${l + 1}'><parameter name='X${l}' value='${l}'/></filterref></filter>`, `e${l}.xml`));
    filters.set('e60', parseFilterXml("<filter name='e60' chain='root'/>", 'e60.xml'));
    const p = resolveInterface(filters, parseFilterBindingXml(bindingXml('vnet0', '52:54:00:00:00:01', 'e0'), 'b.xml'));
    expect(p.l2.out.root).toEqual([]);
  });
});

describe('file size', () => {
  it('a filter file above the limit (a 50 MB filter once exited 70 after 29 s) is refused before it is read, NWF1008', async () => {
    const dir = tempDir({});
    const f = join(dir, 'f.xml');
    writeFileSync(f, `<filter name='f' chain='root'><!--${' '.repeat(LIMITS.fileBytes.max)}--></filter>`);
    const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'f') });
    const r = await run(['compile', '--filters', dir, '--binding', bdir]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`${f}: error NWF1008: the file has ${LIMITS.fileBytes.max + 46} bytes`);
  });
});

describe('all interfaces together', () => {
  it(`more than ${LIMITS.policyRules.max} resolved rules in one compile are refused, NWF1214, naming the interface`, async () => {
    // Each interface: 60 000 values in an L3 rule, 180 000 L3 rules, costing 540 000: the second is refused.
    const fdir = tempDir({ 'f.xml': "<filter name='f' chain='root'><rule action='accept' direction='out'><udp srcipaddr='$IP'/></rule></filter>" });
    const bdir = tempDir({
      'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'f', { IP: range(60_000, ip) }),
      'vnet1.xml': bindingXml('vnet1', '52:54:00:00:00:02', 'f', { IP: range(60_000, ip) }),
    });
    const r = await run(['compile', '--filters', fdir, '--binding', bdir, '--policy']);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`vnet1.xml:1: filterbinding[portdev=vnet1]: error NWF1214: the interfaces have more than ${LIMITS.policyRules.max} resolved rules together (reached at interface 'vnet1', 2 of 2)`);
  }, 60_000);
});

describe('errors name the file, filter and rule', () => {
  it('the resolver errors carry a location and the filter', () => {
    const filters = new Map<string, FilterDef>([['f', parseFilterXml(iterRule("srcipaddr='$A[@1]' dstipaddr='$B[@2]'"), 'f.xml')]]);
    const err = nwfErrorOf(() => resolveInterface(filters, parseFilterBindingXml(bindingXml('vnet0', '52:54:00:00:00:01', 'f', { A: range(300, ip), B: range(300, ip) }), 'b.xml')));
    expect(err.code).toBe('NWF1211');
    expect(err.details).toMatchObject({ location: { file: 'f.xml', line: 2, path: 'filter[name=f]/rule[1]/ip' }, filter: 'f', iface: 'vnet0' });
  });
});
