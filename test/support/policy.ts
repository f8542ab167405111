// Test helpers: build policies from inline XML or the bundled library.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveInterface } from '../../src/resolve/resolve.js';
import { loadSources } from '../../src/resolve/sources.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import type { FilterDef } from '../../src/xml/ast.js';

export function bundledFilters(): Map<string, FilterDef> {
  return loadSources({ filterDirs: [], bundled: true, bindingPaths: [], domainPaths: [], libvirt: false }).filters;
}

export function bindingXml(iface: string, mac: string, filter: string, params: Record<string, string | string[]> = {}): string {
  const ps = Object.entries(params)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `<parameter name='${k}' value='${x}'/>`))
    .join('');
  return `<filterbinding><owner><name>vm</name><uuid>00000000-0000-0000-0000-000000000001</uuid></owner><portdev name='${iface}'/><mac address='${mac}'/><filterref filter='${filter}'>${ps}</filterref></filterbinding>`;
}

/** The policy of one interface bound to `filter`, with extra inline filters layered over the bundled ones. */
export function policyFor(filter: string, params: Record<string, string | string[]> = {}, extra: string[] = [], opts: { iface?: string; mac?: string } = {}): InterfacePolicy {
  const filters = bundledFilters();
  extra.forEach((x, i) => {
    const d = parseFilterXml(x, `inline-${i}.xml`);
    filters.set(d.name, d);
  });
  const b = parseFilterBindingXml(bindingXml(opts.iface ?? 'vnet0', opts.mac ?? '52:54:00:00:00:01', filter, params), 'binding.xml');
  return resolveInterface(filters, b);
}

export function tempDir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'nwf-test-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}
