// Load tags and every generated nft name in one place (backends/nft/names.ts),
// and lowering under a tag: each object but base chains and named counters
// carries the tag, and so does every reference to it.
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import type { NftBatch, Statement } from '../../src/backends/nft/model.js';
import { newTag, nftNames, tagOf } from '../../src/backends/nft/names.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { policyFor } from '../support/policy.js';

const ir = (...interfaces: PolicyIR['interfaces']): PolicyIR => ({ version: 1, interfaces, notes: [] });
const vnet0 = (ips: string[]) => policyFor('clean-traffic', { IP: ips });
const vnet1 = policyFor('clean-traffic', { IP: '10.0.0.9' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' });
const lower = (p: PolicyIR, tag?: string): NftBatch => lowerToNft(p, tag === undefined ? {} : { tag }).batch;

describe('load tags', () => {
  it('a fresh tag is g and six hex digits, and avoids the tags given', () => {
    const t = newTag();
    expect(t).toMatch(/^g[0-9a-f]{6}$/);
    expect(tagOf(`${t}_is0`)).toBe(t);
    expect(tagOf('drop_vnet0_mac-spoof')).toBeUndefined();
    expect(tagOf('i_g123456')).toBeUndefined();
    // with every tag but one taken, that one is the answer
    const all = new Set(Array.from({ length: 16 }, (_, i) => `g00000${i.toString(16)}`));
    all.delete('g00000a');
    const avoid = new Set([...all]);
    let found = false;
    for (let i = 0; i < 50 && !found; i++) found = !avoid.has(newTag(avoid));
    expect(found).toBe(true);
  });

  it('lowering under a tag names every object but base chains and counters with it, references included', () => {
    const tag = 'gabcdef';
    const b = lower(ir(vnet0(['10.0.0.2']), vnet1), tag);
    const base = new Set(['pre', 'post']);
    const refs: string[] = [];
    const walk = (s: readonly Statement[]): void => {
      for (const x of s) {
        if (x.kind === 'jump' || x.kind === 'goto') refs.push(x.target);
        if (x.kind === 'vmap' && x.data.kind === 'setref') refs.push(x.data.name);
        if (x.kind === 'counter-map') refs.push(x.map);
        if (x.kind === 'match' && x.right.kind === 'setref') refs.push(x.right.name);
      }
    };
    let objects = 0;
    for (const c of b) {
      if (c.op !== 'add') throw new Error('a build holds add commands only');
      const o = c.object;
      if (o.kind === 'chain') expect(base.has(o.name) ? o.name : tagOf(o.name)).toBe(base.has(o.name) ? o.name : tag);
      if (o.kind === 'set' || o.kind === 'map') expect(tagOf(o.name)).toBe(tag);
      if (o.kind === 'counter') expect(tagOf(o.name)).toBeUndefined();
      if (o.kind === 'map' && o.map === 'verdict') for (const [, v] of o.elements ?? []) if (v.kind === 'jump') refs.push(v.target);
      if (o.kind === 'rule') {
        if (!base.has(o.chain)) expect(tagOf(o.chain)).toBe(tag);
        walk(o.statements);
        if (o.comment !== undefined) expect(tagOf(o.comment)).toBeUndefined();
      }
      objects++;
    }
    expect(objects).toBeGreaterThan(20);
    expect(refs.length).toBeGreaterThan(5);
    for (const r of refs) expect(tagOf(r)).toBe(tag);
    // untagged and tagged lowerings differ in names only
    const plain = JSON.stringify(toNftJson(lower(ir(vnet0(['10.0.0.2']), vnet1))));
    expect(JSON.stringify(toNftJson(b)).replaceAll(`${tag}_`, '')).toBe(plain);
  });

  it('lowers the policy read back from its JSON (policy.json) exactly like the original', () => {
    const p = ir(vnet0(['10.0.0.2', '10.0.0.3']), vnet1);
    const back = JSON.parse(JSON.stringify(p, null, 1)) as PolicyIR;
    expect(JSON.stringify(toNftJson(lower(back, 'g000001')))).toBe(JSON.stringify(toNftJson(lower(p, 'g000001'))));
  });

  it('names come from one place: a tag that is not one is refused', () => {
    expect(() => nftNames('g12345')).toThrow(/invalid load tag/);
    expect(nftNames('g123456').l2Chain('out', 'vnet0', 'mac')).toBe('g123456_i_vnet0_mac');
    expect(nftNames().sharedSet('in', 2, 3)).toBe('os2_a3');
  });
});
