// Resolution at fleet scale (issue 11, item 4): the filterref walk is done
// once per (top filter, parameter names) and memoized per sub-tree, rules
// whose variables come only from filters are expanded once for all
// interfaces. None of it may change the result: the PolicyIR must be exactly
// the one of resolving every interface on its own, walking every path.
import { describe, expect, it } from 'vitest';
import { resolveInterface, resolvePolicy } from '../../src/resolve/resolve.js';
import type { InterfacePolicy, L2Entry } from '../../src/ir/types.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { resolveCorpus } from '../support/resolve-corpus.js';

const CASES = resolveCorpus();

describe('memoized and shared resolution equals direct resolution', () => {
  it('has the corpora: the 24 standard filters, the conformance fixtures, the golden cases, a fleet, shared sub-trees', () => {
    expect(CASES.map((c) => c.name)).toEqual(expect.arrayContaining(['standard filters', 'conformance fixtures', 'fleet', 'shared sub-trees']));
    expect(CASES.find((c) => c.name === 'standard filters')?.bindings.length).toBe(24);
  });

  it.each(CASES)('$name', ({ filters, bindings }) => {
    const shared = resolvePolicy(filters, bindings);
    const direct = resolvePolicy(filters, bindings, [], { share: false, memo: false });
    expect(JSON.stringify(shared)).toBe(JSON.stringify(direct));
    // and each interface resolved alone, walking every path
    for (const b of bindings) {
      const alone = resolveInterface(filters, b, { memo: false });
      expect(JSON.stringify(shared.interfaces.find((p) => p.iface === b.iface))).toBe(JSON.stringify(alone));
    }
  });
});

describe('what is shared', () => {
  const filters = bundledFilters();
  const bind = (i: number, ip: string): ReturnType<typeof parseFilterBindingXml> =>
    parseFilterBindingXml(bindingXml(`vnet${i}`, `52:54:00:00:00:0${i + 1}`, 'clean-traffic', { IP: ip }), `b${i}.xml`);
  const ir = resolvePolicy(filters, [bind(0, '10.0.0.1'), bind(1, '10.0.0.2'), bind(2, '10.0.0.3')]);
  const [a, b] = ir.interfaces as [InterfacePolicy, InterfacePolicy];
  const ruleById = (p: InterfacePolicy, id: string): L2Entry | undefined => p.l2.out.root.find((e) => e.kind === 'rule' && e.rule.id === id);

  it('a rule without variables is one frozen object for every interface of the same shape', () => {
    const x = ruleById(a, 'no-other-l2-traffic/1');
    expect(x).toBeDefined();
    expect(ruleById(b, 'no-other-l2-traffic/1')).toBe(x);
    expect(Object.isFrozen(x)).toBe(true);
    expect(() => {
      (x as { kind: string }).kind = 'jump';
    }).toThrow(TypeError);
  });

  it('so are the jumps to sub-chains', () => {
    const ja = a.l2.out.root.filter((e) => e.kind === 'jump');
    expect(ja.length).toBeGreaterThan(0);
    expect(b.l2.out.root.filter((e) => e.kind === 'jump')).toEqual(ja);
    b.l2.out.root.filter((e) => e.kind === 'jump').forEach((j, i) => expect(j).toBe(ja[i]));
  });

  it("a rule with the interface's own values is the interface's own", () => {
    const ma = a.l2.out.chains.find((c) => c.name === 'mac')?.rules[0];
    const mb = b.l2.out.chains.find((c) => c.name === 'mac')?.rules[0];
    expect(ma?.match).toMatchObject({ src: { addr: '52:54:00:00:00:01' } });
    expect(mb?.match).toMatchObject({ src: { addr: '52:54:00:00:00:02' } });
    expect(Object.isFrozen(ma)).toBe(false);
  });

  it('the chains and root lists are per interface', () => {
    expect(a.l2.out.root).not.toBe(b.l2.out.root);
    expect(a.l2.out.chains[0]).not.toBe(b.l2.out.chains[0]);
  });
});
