// jsonChunks (src/util/json-chunks.ts) writes exactly what JSON.stringify
// writes, in pieces of bounded size.
import { describe, expect, it } from 'vitest';
import { jsonChunks } from '../../src/util/json-chunks.js';
import { POLICY_DEPTH } from '../../src/ir/print.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { resolveCorpus } from '../support/resolve-corpus.js';

const joined = (v: unknown, indent?: number, opts?: { depth?: number; chunk?: number }): string => [...jsonChunks(v, indent, opts)].join('');

describe('jsonChunks', () => {
  const odd = { a: [], b: {}, c: [1, undefined, () => 1, null, 'x"\n'], d: undefined, e: { f: { g: { h: [{ i: new Uint8Array([1, 2]) }] } } }, j: new Date(0), k: new Map([[1, 2]]), l: -0, m: 1e21 };
  it.each([0, 1, 2])('equals JSON.stringify on odd values, indent %i, every depth', (indent) => {
    for (const depth of [0, 1, 2, 3, 6]) {
      expect(joined(odd, indent, { depth, chunk: 7 })).toBe(JSON.stringify(odd, null, indent));
      expect(joined([odd, [], [[]], 'x'], indent, { depth, chunk: 7 })).toBe(JSON.stringify([odd, [], [[]], 'x'], null, indent));
    }
  });

  it('equals JSON.stringify on the resolved corpora and their nft batches, in pieces near the chunk size', () => {
    for (const c of resolveCorpus()) {
      const ir = resolvePolicy(c.filters, c.bindings);
      // Down to the rules (interfaces, l2, a direction, its root list or chains, a chain, its rules): pieces hold a few rules.
      const pieces = [...jsonChunks(ir, 2, { chunk: 4096, depth: POLICY_DEPTH })];
      expect(pieces.join('')).toBe(JSON.stringify(ir, null, 2));
      for (const p of pieces) expect(p.length).toBeLessThan(4096 + 8192);
      let nft: unknown;
      try {
        nft = toNftJson(lowerToNft(ir).batch);
      } catch {
        continue; // a policy the nft backend refuses
      }
      expect(joined(nft, 0, { depth: 4 })).toBe(JSON.stringify(nft));
    }
  });
});
