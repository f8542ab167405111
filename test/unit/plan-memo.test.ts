// Lowering at fleet scale (issue 11, item 4): the nft lowering computes a
// frozen rule's part of a shape key once for every interface that shares it
// (backends/nft/shared.ts), the eBPF plan a frozen rule's template and values,
// and a shape's object and id once per structure (backends/bpf/plan.ts).
// None of it may change the output: over every policy of the resolve corpus,
// shared (memoized resolution, frozen rules) and unshared (every interface on
// its own), the nft generations and the plans are the same, and each plan's
// shape is the one its own groups describe.
import { describe, expect, it } from 'vitest';
import { BPF_PLAN_VERSION, planInterface, shapeIdOf, type BpfPlan, type BpfShape, type PlanGroup, type ShapeEntry } from '../../src/backends/bpf/plan.js';
import { DIRECTIONS } from '../../src/ir/types.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { resolveCorpus } from '../support/resolve-corpus.js';
import { NwfError } from '../../src/util/errors.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';

const CASES = resolveCorpus();

/** The shape a plan's own groups describe (what planInterface built before shapes were shared). */
function shapeFromGroups(p: BpfPlan, learn: boolean): BpfShape {
  const g = (x: PlanGroup) => ({ template: x.template, cap: x.cap });
  return {
    version: BPF_PLAN_VERSION,
    ...(learn ? { learn: 'any' as const } : {}),
    dirs: Object.fromEntries(
      DIRECTIONS.map((d) => [
        d,
        {
          hooked: p.dirs[d].hooked,
          entries: p.dirs[d].entries.map((e): ShapeEntry => (e.kind === 'group' ? { kind: 'group', group: g(e.group) } : { kind: 'jump', guard: e.guard, groups: e.groups.map(g) })),
        },
      ]),
    ) as BpfShape['dirs'],
  };
}

const planOrError = (p: Parameters<typeof planInterface>[0]): BpfPlan | string => {
  try {
    return planInterface(p);
  } catch (e) {
    if (e instanceof NwfError) return e.code;
    throw e;
  }
};

describe('eBPF plans: memoized equals direct', () => {
  it.each(CASES)('$name', ({ filters, bindings }) => {
    const shared = resolvePolicy(filters, bindings);
    const direct = resolvePolicy(filters, bindings, [], { share: false, memo: false });
    let planned = 0;
    shared.interfaces.forEach((p, i) => {
      const a = planOrError(p);
      const b = planOrError(direct.interfaces[i] as typeof p);
      expect(JSON.stringify(a)).toBe(JSON.stringify(b));
      if (typeof a === 'string') return;
      planned++;
      const own = shapeFromGroups(a, p.learning !== undefined);
      expect(JSON.stringify(a.shape)).toBe(JSON.stringify(own));
      expect(a.shapeId).toBe(shapeIdOf(own));
    });
    expect(planned).toBeGreaterThan(0);
  });
});

describe('nft lowering: memoized equals direct', () => {
  it.each(CASES)('$name', ({ filters, bindings }) => {
    const shared = resolvePolicy(filters, bindings);
    const direct = resolvePolicy(filters, bindings, [], { share: false, memo: false });
    for (const mode of ['rules', 'second-line'] as const) {
      const text = (ir: typeof shared): string => JSON.stringify(toNftJson(lowerToNft(ir, { mode, strict: false }).batch));
      expect(text(shared)).toBe(text(direct));
    }
  });
});

describe('nft lowering: a port lowered with the others equals the port lowered alone (walks kept per class signature, opt/walk.ts)', () => {
  it.each(CASES)('$name', ({ filters, bindings }) => {
    const ir = resolvePolicy(filters, bindings);
    const together = lowerToNft(ir, { strict: false });
    for (const p of ir.interfaces) {
      const alone = lowerToNft({ ...ir, interfaces: [p] }, { strict: false });
      expect(JSON.stringify(together.parts.ports.find((x) => x.iface === p.iface))).toBe(JSON.stringify(alone.parts.ports[0]));
      expect(JSON.stringify(together.opt.ports.filter((x) => x.iface === p.iface))).toBe(JSON.stringify(alone.opt.ports));
    }
  });
});
