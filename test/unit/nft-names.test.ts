// Every generated nft name comes from one place (backends/nft/names.ts):
// injective by construction (issue 9 fault 3: tap `a` with sub-chain `mac`
// against tap `a_mac`, `a.b` against `a_b_<hash>`), within nft's length
// limit, and under a load tag everything but the persistent names.
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import type { NftCommand, Statement } from '../../src/backends/nft/model.js';
import { decodePart, encodePart, isPersistent, newTag, NFT_NAME_MAX, nftNames, parseCountName, parseL3Counter, shapeHash, tagName, tagOf, untagged } from '../../src/backends/nft/names.js';
import { tagCommands } from '../../src/backends/nft/tag.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { policyFor } from '../support/policy.js';

const ir = (...interfaces: PolicyIR['interfaces']): PolicyIR => ({ version: 1, interfaces, notes: [] });

describe('the name encoding', () => {
  it('keeps letters and digits, escapes everything else, never emits a dash, and decodes back', () => {
    expect(encodePart('vnet0')).toBe('vnet0');
    expect(encodePart('a_mac')).toBe('a_5fmac');
    expect(encodePart('a.b')).toBe('a_2eb');
    expect(encodePart('ipv4-ip')).toBe('ipv4_2dip');
    expect(encodePart('tap-é')).toBe('tap_2d_c3_a9');
    for (const s of ['', 'a', 'a_b', 'a-b', 'a.b:c', '_5f', 'ünï', 'x'.repeat(15), '%41']) {
      expect(encodePart(s)).not.toContain('-');
      expect(decodePart(encodePart(s))).toBe(s);
    }
    expect(decodePart('a_zz')).toBeUndefined();
    expect(decodePart('a-b')).toBeUndefined();
  });

  it('gives different inputs different names (adversarial pairs)', () => {
    const pairs: [string, string | undefined, string, string | undefined][] = [
      ['a', 'mac', 'a_mac', undefined],
      ['a.b', undefined, `a_b_${'0'.repeat(6)}`, undefined],
      ['a_b', undefined, 'a.b', undefined],
      ['a', 'b-c', 'a-b', 'c'],
      ['a_2eb', undefined, 'a.b', undefined],
      ['a', '_5f', 'a_', '5f'],
    ];
    for (const [i1, s1, i2, s2] of pairs) {
      expect(nftNames.ownChain('out', i1, s1), `${i1}/${s1} vs ${i2}/${s2}`).not.toBe(nftNames.ownChain('out', i2, s2));
    }
    // over a corpus of taps and sub-chains: no two different (tap, sub) share a name, across every kind
    const taps = ['a', 'a_mac', 'a.b', 'a_b', 'a-b', 'mac', 'a_5fmac', 'vnet0', 'vnet0_mac', 'x'.repeat(15), 'é'];
    const subs = [undefined, 'mac', 'ipv4-ip', 'arp_mac', 'b-c', '_5f'];
    const seen = new Map<string, string>();
    for (const t of taps) {
      for (const s of subs) {
        for (const [kind, name] of [
          ['own out', nftNames.ownChain('out', t, s)],
          ['own in', nftNames.ownChain('in', t, s)],
          ['shape port', s === undefined ? nftNames.shapePortChain('0123456789abcdef', 4, t) : undefined],
          ['mark', s === undefined ? nftNames.markChain('in', t) : undefined],
          ['l3', s === undefined ? nftNames.l3Chain('fromVm', t) : undefined],
          ['shape', s === undefined || t !== 'a' ? undefined : nftNames.shapeChain('0123456789abcdef', s)],
        ] as const) {
          if (name === undefined) continue;
          const who = `${kind} ${t} ${s ?? ''}`;
          expect(seen.get(name), `${name}: ${who} and ${seen.get(name)}`).toBeUndefined();
          seen.set(name, who);
        }
      }
    }
  });

  it('stays within nft\'s limit: names at the limit are used as they are, longer ones are hashed (and never collide with encoded ones)', () => {
    const long = 'é'.repeat(60); // 120 bytes, 360 characters encoded
    const a = nftNames.ownChain('out', 'vnet0', long);
    const b = nftNames.ownChain('out', 'vnet0', `${long}x`);
    expect(a).toMatch(/^own-_z[0-9a-f]{40}$/);
    expect(b).toMatch(/^own-_z[0-9a-f]{40}$/);
    expect(a).not.toBe(b);
    expect(tagName(a, 'g123456').length).toBeLessThanOrEqual(NFT_NAME_MAX);
    // just below the limit (tag included): not hashed
    const sub = 'x'.repeat(NFT_NAME_MAX - 8 - 'own-out-vnet0-'.length);
    const c = nftNames.ownChain('out', 'vnet0', sub);
    expect(c).toBe(`own-out-vnet0-${sub}`);
    expect(tagName(c, 'g123456')).toHaveLength(NFT_NAME_MAX);
  });

  it('names counting maps and counters so status can read them back', () => {
    expect(parseCountName(nftNames.countMap('out', 'mac-spoof'))).toEqual({ kind: 'cnt', dir: 'out', reason: 'mac-spoof' });
    expect(parseCountName(nftNames.dropCounter('in', 'unprotected'))).toEqual({ kind: 'dropc', dir: 'in', reason: 'unprotected' });
    expect(parseL3Counter(nftNames.l3Counter('a_b.c', 'policy'))).toEqual({ iface: 'a_b.c', reason: 'policy' });
    expect(parseCountName('cnt-out-nonsense')).toBeUndefined();
  });

  it('names a shape by a hash of its key: stable and short', () => {
    expect(shapeHash('key')).toBe(shapeHash('key'));
    expect(shapeHash('key')).toMatch(/^[0-9a-f]{16}$/);
    expect(shapeHash('key')).not.toBe(shapeHash('key2'));
  });
});

describe('load tags', () => {
  it('a fresh tag is g and six hex digits, and avoids the tags given', () => {
    const t = newTag();
    expect(t).toMatch(/^g[0-9a-f]{6}$/);
    expect(tagOf(`${t}-sh-0123`)).toBe(t);
    expect(untagged(`${t}-sh-0123`)).toBe('sh-0123');
    expect(tagOf('dropc-out-mac_spoof')).toBeUndefined();
    expect(tagOf('own-out-g123456')).toBeUndefined();
    const all = new Set(Array.from({ length: 16 }, (_, i) => `g00000${i.toString(16)}`));
    all.delete('g00000a');
    let found = false;
    for (let i = 0; i < 50 && !found; i++) found = !all.has(newTag(all));
    expect(found).toBe(true);
  });

  it('persistent names (base chains, counters, counting maps) carry no tag; a bad tag is refused', () => {
    expect(tagName('pre', 'gabcdef')).toBe('pre');
    expect(tagName(nftNames.countMap('out', 'rarp'), 'gabcdef')).toBe('cnt-out-rarp');
    expect(tagName(nftNames.l3Counter('vnet0', 'policy'), 'gabcdef')).toBe('l3drop-vnet0-policy');
    expect(tagName('from_vm', 'gabcdef')).toBe('gabcdef-from_vm');
    expect(isPersistent('from_vm')).toBe(false);
    expect(() => tagName('from_vm', 'g12345')).toThrow(/invalid load tag/);
  });

  it('tagging a lowering names every non-persistent object and every reference to one', () => {
    const tag = 'gabcdef';
    const b = tagCommands(lowerToNft(ir(policyFor('clean-traffic', { IP: '10.0.0.2' }), policyFor('clean-traffic', { IP: '10.0.0.9' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' }))).batch, tag);
    const refs: string[] = [];
    const walk = (s: readonly Statement[]): void => {
      for (const x of s) {
        if (x.kind === 'jump' || x.kind === 'goto') refs.push(x.target);
        if (x.kind === 'vmap' && x.data.kind === 'setref') refs.push(x.data.name);
        if (x.kind === 'match' && x.right.kind === 'setref') refs.push(x.right.name);
        if (x.kind === 'counter-ref') refs.push(x.name);
      }
    };
    const want = (name: string): void => expect(isPersistent(name) ? tagOf(name) : tagOf(name), name).toBe(isPersistent(name) ? undefined : tag);
    let objects = 0;
    for (const c of b as NftCommand[]) {
      const o = c.object;
      if (o.kind === 'chain' || o.kind === 'set' || o.kind === 'map' || o.kind === 'counter') want(o.name);
      if (o.kind === 'element') {
        want(o.name);
        for (const e of o.elements) if (Array.isArray(e) && (e[1].kind === 'jump' || e[1].kind === 'goto')) refs.push(e[1].target);
      }
      if (o.kind === 'rule') {
        want(o.chain);
        if ('statements' in o) walk(o.statements);
      }
      objects++;
    }
    expect(objects).toBeGreaterThan(50);
    expect(refs.length).toBeGreaterThan(10);
    for (const r of refs) want(r);
  });
});
