// A generation's nft.json at fleet scale (backends/nft/parts.ts
// groupElements, serialize.ts nftJsonText): one `add element` command per
// set instead of one per port and set, and the JSON text written command by
// command. Grouping changes the commands, never what they create: the same
// (set, element) pairs and the same other commands in the same order, over
// every corpus and randomized hosts; and the text is toNftJson's, byte for
// byte.
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { groupElements } from '../../src/backends/nft/parts.js';
import { nftJsonText, toNftJson, commandJson } from '../../src/backends/nft/serialize.js';
import type { NftBatch } from '../../src/backends/nft/model.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { resolveCorpus } from '../support/resolve-corpus.js';
import { randomHost } from '../support/random-host.js';

/** The (set, element) pairs of a batch, sorted, and its other commands in order. */
function content(batch: NftBatch): { pairs: string[]; others: string[]; elementCommands: number } {
  const pairs: string[] = [];
  const others: string[] = [];
  let elementCommands = 0;
  for (const c of batch) {
    if (c.op === 'add' && c.object.kind === 'element') {
      elementCommands++;
      const j = commandJson(c) as { add: { element: { family: string; table: string; name: string; elem: unknown[] } } };
      const { family, table, name, elem } = j.add.element;
      for (const e of elem) pairs.push(JSON.stringify([family, table, name, e]));
    } else others.push(JSON.stringify(commandJson(c)));
  }
  return { pairs: pairs.sort(), others, elementCommands };
}

function expectEquivalent(ir: PolicyIR): void {
  for (const mode of ['rules', 'second-line', 'dispatch'] as const) {
    const single = lowerToNft(ir, { mode, strict: false }).batch;
    const grouped = groupElements(single);
    const a = content(grouped);
    const b = content(single);
    expect(a.pairs).toEqual(b.pairs);
    expect(a.others).toEqual(b.others);
    expect(a.elementCommands).toBeLessThanOrEqual(b.elementCommands);
    expect(nftJsonText(single)).toBe(JSON.stringify(toNftJson(grouped)));
  }
}

describe('one element command per set: the same elements and commands', () => {
  it.each(resolveCorpus())('$name', ({ filters, bindings }) => {
    expectEquivalent(resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} }));
  });

  it.each([1, 2, 3])('a randomized host (seed %i)', (seed) => {
    const { filters, bindings } = randomHost(seed, 200);
    expectEquivalent(resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} }));
  });

  it('groups: every set has one element command', () => {
    const { filters, bindings } = randomHost(7, 100);
    const batch = groupElements(lowerToNft(resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} }), { strict: false }).batch);
    const names = batch.filter((c) => c.op === 'add' && c.object.kind === 'element').map((c) => (c.object as { name: string }).name);
    expect(names.length).toBeGreaterThan(5);
    expect(new Set(names).size).toBe(names.length);
  });

  it('keeps the first command where it was and the others out', () => {
    const el = (name: string, v: string) => ({ op: 'add' as const, object: { kind: 'element' as const, family: 'bridge' as const, table: 't', name, elements: [{ kind: 'string' as const, value: v }] } });
    const rule = { op: 'add' as const, object: { kind: 'counter' as const, family: 'bridge' as const, table: 't', name: 'c' } };
    const out = groupElements([el('a', '1'), rule, el('b', '2'), el('a', '3')]);
    expect(out.map((c) => (c.object as { name: string }).name)).toEqual(['a', 'c', 'b']);
    expect((out[0]?.object as unknown as { elements: { value: string }[] }).elements.map((e) => e.value)).toEqual(['1', '3']);
  });
});
