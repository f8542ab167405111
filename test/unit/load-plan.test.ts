// The typed load plan (host/load-plan.ts) over typed inventories
// (host/inventory.ts): a full load next to the live generation, cleanup,
// element deltas and unload, all as typed commands.
import { describe, expect, it } from 'vitest';
import { add, del, flush, nftTable } from '../../src/backends/nft/build.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import type { NftBatch, NftCommand, NftJsonDocument } from '../../src/backends/nft/model.js';
import { tagOf } from '../../src/backends/nft/names.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { inventoryOf, kernelInventory, liveTag, normalizeListing, tagsIn, type Listing } from '../../src/host/inventory.js';
import { elementBatch, elementDelta, planFullLoad, unloadBatch } from '../../src/host/load-plan.js';
import { policyFor } from '../support/policy.js';

const T = { family: 'bridge', table: 'nwf_fast' };
const br = nftTable('bridge', 'nwf_fast');

/** A kernel listing: `live` is what the base chains point at, `stale` a leftover of an interrupted load. */
const listing = (live: string, stale: string): Listing => ({
  bridge: {
    nftables: [
      { metainfo: { json_schema_version: 1 } },
      { table: { family: 'bridge', name: 'nwf_fast', handle: 1 } },
      { chain: { ...T, name: 'pre', handle: 2, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } },
      { chain: { ...T, name: `${live}_is0`, handle: 3 } },
      { map: { ...T, name: `${live}_from_vm`, type: 'ifname', map: 'verdict', handle: 4, elem: [['vnet0', { jump: { target: `${live}_is0` } }]] } },
      { chain: { ...T, name: `${stale}_is0`, handle: 5 } },
      { set: { ...T, name: `${stale}_is0_a0`, type: ['ifname', 'ether_addr'], handle: 6 } },
      { counter: { ...T, name: 'drop_vnet0_mac-spoof', handle: 7, packets: 3, bytes: 9 } },
      { counter: { ...T, name: 'drop_vnet9_mac-spoof', handle: 8, packets: 0, bytes: 0 } },
      { chain: { ...T, name: 'leftover', handle: 10 } },
      { rule: { ...T, chain: 'pre', handle: 9, expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: `@${live}_from_vm` } }], comment: '@gffffff_not_a_ref' } },
      { rule: { ...T, chain: `${live}_is0`, handle: 11, expr: [{ jump: { target: `${live}_is0_sub` } }] } },
    ],
  },
  ip: { nftables: [{ table: { family: 'ip', name: 'nwf_fast', handle: 1 } }] },
});

const ir = (...interfaces: PolicyIR['interfaces']): PolicyIR => ({ version: 1, interfaces, notes: [] });
const vnet0 = (ips: string[]) => policyFor('clean-traffic', { IP: ips });
const vnet1 = policyFor('clean-traffic', { IP: '10.0.0.9' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' });
const vnet2 = policyFor('clean-traffic', { IP: '10.0.0.10' }, [], { iface: 'vnet2', mac: '52:54:00:00:00:03' });
const lower = (p: PolicyIR, tag?: string): NftBatch => lowerToNft(p, tag === undefined ? {} : { tag }).batch;

const names = (b: NftBatch, op: NftCommand['op']): string[] =>
  b.filter((c) => c.op === op).map((c) => ('name' in c.object ? `${c.object.kind} ${c.object.name}` : c.object.kind));

describe('the kernel inventory', () => {
  it('parses a listing once into typed objects keyed by identity, elements apart', () => {
    const k = kernelInventory(listing('g000001', 'g000002'));
    expect([...k.tables.values()]).toEqual([
      { kind: 'table', family: 'bridge', name: 'nwf_fast' },
      { kind: 'table', family: 'ip', name: 'nwf_fast' },
    ]);
    expect(k.chains.get('chain bridge nwf_fast pre')).toEqual({ id: { kind: 'chain', family: 'bridge', table: 'nwf_fast', name: 'pre' }, base: true, rules: [{ handle: 9, refs: ['g000001_from_vm'] }] });
    expect(k.chains.get('chain bridge nwf_fast g000001_is0')?.rules).toEqual([{ handle: 11, refs: ['g000001_is0_sub'] }]);
    expect(k.sets.get('map bridge nwf_fast g000001_from_vm')?.elements).toHaveLength(1);
    expect(k.sets.get('set bridge nwf_fast g000002_is0_a0')?.id.kind).toBe('set');
    expect(k.counters.get('counter bridge nwf_fast drop_vnet0_mac-spoof')).toMatchObject({ packets: 3, bytes: 9 });
  });

  it('finds the tags present and the live one (what the base chains point at, not comments)', () => {
    const k = kernelInventory(listing('g000001', 'g000002'));
    expect(tagsIn(k)).toEqual(new Set(['g000001', 'g000002']));
    expect(liveTag(k)).toBe('g000001');
    expect(liveTag(kernelInventory({}))).toBeUndefined();
  });

  it('a listing normalized for drift does not depend on the load tag', () => {
    const a = listing('g000001', 'g000002').bridge as NftJsonDocument;
    const b = listing('g0000aa', 'g000002').bridge as NftJsonDocument;
    expect(normalizeListing(a)).toEqual(normalizeListing(b));
    expect(JSON.stringify(normalizeListing(a))).not.toContain('handle');
    expect(JSON.stringify(normalizeListing(a))).toContain('"comment":"@gffffff_not_a_ref"');
  });
});

describe('a full load', () => {
  const tag = 'g0000ff';
  const next = lower(ir(vnet0(['10.0.0.2'])), tag);
  const plan = planFullLoad(kernelInventory(listing('g000001', 'g000002')), next, tag);

  it('builds next to the live objects: base chains flushed, never deleted; stale tags, untagged leftovers and unused tables deleted', () => {
    expect(plan.tag).toBe(tag);
    const flushed = plan.apply.filter((c) => c.op === 'flush');
    expect(flushed).toContainEqual(flush(br.chainRef('pre')));
    expect(names(plan.apply, 'delete')).toEqual(['table nwf_fast', 'set g000002_is0_a0', 'chain g000002_is0', 'chain leftover']);
    expect(plan.apply[0]).toEqual(del(nftTable('ip', 'nwf_fast').ref));
    expect(JSON.stringify(plan.apply)).not.toContain('g000001_');
    expect(plan.apply.slice(-next.length)).toEqual(next);
    // each stale chain is flushed before anything is deleted that its rules could refer to
    const ops = plan.apply.map((c) => `${c.op} ${'name' in c.object ? c.object.name : c.object.kind}`);
    expect(ops.indexOf('flush g000002_is0')).toBeLessThan(ops.indexOf('delete g000002_is0_a0'));
    expect(ops.indexOf('delete g000002_is0_a0')).toBeLessThan(ops.indexOf('delete g000002_is0'));
    expect(plan.apply).not.toContainEqual(del(br.chainRef('pre')));
  });

  it('leaves the live objects and unused counters to the cleanup, and keeps the counters still declared', () => {
    expect(plan.cleanup).toEqual([
      flush(br.chainRef('g000001_is0')),
      del(br.mapRef('g000001_from_vm')),
      del(br.chainRef('g000001_is0')),
      del(br.counterRef('drop_vnet9_mac-spoof')),
    ]);
  });

  it('serializes to libnftables JSON through the model (names checked)', () => {
    const json = JSON.stringify(toNftJson(plan.apply));
    expect(json).toContain('{"flush":{"chain":{"family":"bridge","table":"nwf_fast","name":"pre"}}}');
    expect(json).toContain(`"name":"${tag}_from_vm"`);
    expect(JSON.stringify(toNftJson(plan.cleanup))).toContain('{"delete":{"counter":{"family":"bridge","table":"nwf_fast","name":"drop_vnet9_mac-spoof"}}}');
  });

  it('on an empty kernel: only the build; with nothing live, the cleanup only drops unused counters', () => {
    const fresh = planFullLoad(kernelInventory({}), next, tag);
    expect(fresh.apply).toEqual(next);
    expect(fresh.cleanup).toEqual([]);
    const noLive = listing('g000001', 'g000002');
    (noLive.bridge as NftJsonDocument).nftables = (noLive.bridge as NftJsonDocument).nftables.filter((o) => !('rule' in o));
    const p = planFullLoad(kernelInventory(noLive), next, tag);
    expect(p.cleanup).toEqual([del(br.counterRef('drop_vnet9_mac-spoof'))]);
    expect(names(p.apply, 'delete')).toContain('chain g000001_is0');
    expect(names(p.apply, 'delete')).toContain('map g000001_from_vm');
  });

  it('a generation without nft rules (backend bpf) removes our tables', () => {
    const p = planFullLoad(kernelInventory(listing('g000001', 'g000002')), [], tag);
    expect(p.apply).toEqual([del(br.ref), del(nftTable('ip', 'nwf_fast').ref)]);
  });
});

describe('element deltas', () => {
  const tag = 'g00abcd';
  const gen = (ips: string[], extra = false) => inventoryOf(lower(ir(vnet0(ips), vnet1, ...(extra ? [vnet2] : [])), tag));

  it("a VM's IP change is a few typed element deletions and additions on the live sets", () => {
    const changes = elementDelta(gen(['10.0.0.2']), gen(['10.0.0.5']));
    expect(changes).toBeDefined();
    expect(changes!.length).toBeGreaterThan(0);
    for (const c of changes!) {
      expect(tagOf(c.set.name)).toBe(tag);
      expect(c.set.kind).toBe('set');
      expect(c.remove.length + c.add.length).toBeGreaterThan(0);
    }
    const b = elementBatch(changes!);
    expect(new Set(b.map((c) => `${c.op} ${c.object.kind}`))).toEqual(new Set(['delete element', 'add element']));
    expect(b.findIndex((c) => c.op === 'add')).toBeGreaterThan(b.findLastIndex((c) => c.op === 'delete'));
    const text = JSON.stringify(toNftJson(b));
    expect(text).toContain('10.0.0.2');
    expect(text).toContain('10.0.0.5');
    expect(text).not.toContain('10.0.0.9');
    expect(text).not.toContain('"rule"');
    expect(text).toContain(`"name":"${tag}_`);
  });

  it('a map entry whose data changes is deleted by its key and added again', () => {
    const m = nftTable('bridge', 'nwf_fast');
    const build = (target: string): NftBatch => [add(m.table), add(m.chain('a')), add(m.chain('b')), add(m.verdictMap('v', 'ifname', [[{ kind: 'string', value: 'vnet0' }, { kind: 'jump', target }]]))];
    const changes = elementDelta(inventoryOf(build('a')), inventoryOf(build('b')));
    expect(changes).toEqual([{ set: expect.objectContaining({ kind: 'map', name: 'v' }), remove: [{ kind: 'string', value: 'vnet0' }], add: [[{ kind: 'string', value: 'vnet0' }, { kind: 'jump', target: 'b' }]] }]);
  });

  it('no change is an empty delta', () => {
    expect(elementDelta(gen(['10.0.0.2']), gen(['10.0.0.2']))).toEqual([]);
    expect(elementBatch([])).toEqual([]);
  });

  it('a new interface (new counters, chains or rules) is not a delta', () => {
    expect(elementDelta(gen(['10.0.0.2']), gen(['10.0.0.2'], true))).toBeUndefined();
    expect(elementDelta(gen(['10.0.0.2'], true), gen(['10.0.0.2']))).toBeUndefined();
  });

  it('two lowerings under different tags are not a delta of each other', () => {
    expect(elementDelta(gen(['10.0.0.2']), inventoryOf(lower(ir(vnet0(['10.0.0.2']), vnet1), 'g00abce')))).toBeUndefined();
  });
});

describe('unload', () => {
  it("adds, then deletes, each of nwf-fast's tables and nothing else", () => {
    const b = unloadBatch();
    expect(b).toHaveLength(8);
    expect(b.slice(0, 2)).toEqual([add(br.table), del(br.ref)]);
    expect(new Set(b.map((c) => (c.object.kind === 'table' ? `${c.object.family} ${c.object.name}` : '')))).toEqual(new Set(['bridge nwf_fast', 'ip nwf_fast', 'ip6 nwf_fast', 'inet nwf_fast']));
  });
});
