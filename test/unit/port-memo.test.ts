// Lowering at fleet scale (backends/nft/port-memo.ts): a port of a class
// seen before is lowered from its class (the shape, the grouping, the
// fast-accept walks' ends) and its own values. It must give exactly what the
// full path gives: the parts, the batch and the optimizer's report, over
// every corpus and a randomized host whose values are chosen to meet the
// constants of the filters (broadcast and multicast MACs, 0.0.0.0, the
// gateway's MAC, the DHCP servers, addresses inside and outside constant
// prefixes, repeats, upper case).
import { describe, expect, it } from 'vitest';
import { lowerToNft, type LowerOptions } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { PortClasses } from '../../src/backends/nft/port-memo.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import type { InterfaceBinding } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { resolveCorpus } from '../support/resolve-corpus.js';
import { randomHost } from '../support/random-host.js';
import { bindingXml } from '../support/policy.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { shapeStampOf } from '../../src/ir/shape-stamp.js';

function lowered(ir: PolicyIR, opts: LowerOptions): string {
  const l = lowerToNft(ir, { strict: false, ...opts });
  return JSON.stringify({ parts: l.parts, failed: l.failed, opt: l.opt, batch: toNftJson(l.batch) });
}

function expectSame(ir: PolicyIR): void {
  for (const mode of ['rules', 'second-line'] as const) {
    for (const optimize of [true, false]) expect(lowered(ir, { mode, optimize })).toBe(lowered(ir, { mode, optimize, memo: false }));
  }
}

describe('nft lowering from port classes equals the full path', () => {
  it.each(resolveCorpus())('$name', ({ filters, bindings }) => {
    expectSame(resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} }));
  });

  it.each([1, 2, 3, 4, 5, 6])('a randomized host (seed %i)', (seed) => {
    const { filters, bindings } = randomHost(seed, 300);
    const ir = resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} });
    expect(ir.interfaces.length).toBeGreaterThan(200);
    expectSame(ir);
  });

  it('classes are shared: a fleet of one filter is one class per direction, and values that meet a constant split it', () => {
    const { filters } = randomHost(1, 0);
    const b = (i: number, mac: string, ip: string): InterfaceBinding => parseFilterBindingXml(bindingXml(`vnet${i}`, mac, 'oui', { IP: ip }), `b${i}.xml`);
    const ir = resolvePolicy(filters, [b(0, '52:54:00:00:00:01', '10.1.0.2'), b(1, '52:54:00:00:00:02', '10.1.0.3'), b(2, '52:54:00:66:00:03', '10.1.0.4'), b(3, '52:54:00:00:00:04', '10.66.1.1')]);
    const pc = new PortClasses();
    const keys = ir.interfaces.map((p) => pc.classKey(p, 'out'));
    expect(keys[0]).toBeDefined();
    expect(keys[1]).toBe(keys[0]);
    expect(keys[2]).not.toBe(keys[0]); // its MAC is inside the dropped OUI
    expect(keys[3]).not.toBe(keys[0]); // its IP is inside the dropped prefix
    expect(new Set(keys).size).toBe(3);
  });

  it('a learning port has no class (the full path)', () => {
    const { filters } = randomHost(1, 0);
    const ir = resolvePolicy(filters, [parseFilterBindingXml(bindingXml('vnet0', '52:54:00:00:00:01', 'clean-traffic'), 'b.xml')]);
    expect(ir.interfaces[0]?.learning).toBeDefined();
    expect(new PortClasses().classKey(ir.interfaces[0] as PolicyIR['interfaces'][number], 'out')).toBeUndefined();
  });

  it.each([1, 2, 3, 4])("keys from the resolver's shape stamps group ports as the walk does (seed %i)", (seed) => {
    const { filters, bindings } = randomHost(seed, 400);
    const ir = resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} });
    const groups = (ps: PolicyIR['interfaces'], dir: 'out' | 'in'): string => {
      const pc = new PortClasses();
      const byKey = new Map<string, string[]>();
      const none: string[] = [];
      for (const p of ps) {
        const k = pc.classKey(p, dir);
        if (k === undefined) none.push(p.iface);
        else byKey.set(k, [...(byKey.get(k) ?? []), p.iface]);
      }
      return JSON.stringify({ none, groups: [...byKey.values()].map((g) => g.join(',')).sort() });
    };
    // a shallow copy has no stamp: the walk
    const unstamped = ir.interfaces.map((p) => ({ ...p }));
    expect(shapeStampOf(ir.interfaces[1] as PolicyIR['interfaces'][number])).toBeDefined();
    for (const dir of ['out', 'in'] as const) expect(groups(ir.interfaces, dir)).toBe(groups(unstamped, dir));
  });

  it('a masked MAC of the port is no token: its ports are grouped by the walk', () => {
    const filters = randomHost(1, 0).filters;
    const d = parseFilterXml(
      `<filter name='masked-mac' chain='root'><rule action='accept' direction='out' priority='100'><mac srcmacaddr='$MAC' srcmacmask='ff:ff:ff:00:00:00'/></rule><filterref filter='clean-traffic'/></filter>`,
      'm.xml',
    );
    filters.set(d.name, d);
    const b = (i: number, mac: string): InterfaceBinding => parseFilterBindingXml(bindingXml(`vnet${i}`, mac, 'masked-mac', { IP: `10.0.0.${i + 1}` }), `b${i}.xml`);
    const ir = resolvePolicy(filters, [b(0, '52:54:00:00:00:01'), b(1, '52:54:00:00:00:02'), b(2, '52:54:01:00:00:03')]);
    const pc = new PortClasses();
    const keys = ir.interfaces.map((p) => pc.classKey(p, 'out'));
    expect(keys[0]).toBeDefined();
    expect(keys[2]).not.toBe(keys[0]);
    expect(keys[1]).not.toBe(keys[0]); // the masked MAC is in the rule's text: a class of its own
    expectSame(ir);
  });
});
