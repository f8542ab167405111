// The typed load plan (host/load-plan.ts) over typed inventories
// (host/inventory.ts): the typed diff between two states made of parts, a
// full replacement next to what the kernel holds, the drift snapshot, unload.
import { describe, expect, it } from 'vitest';
import { add, accept, jump, nftTable, str } from '../../src/backends/nft/build.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import type { NftCommand } from '../../src/backends/nft/model.js';
import { DEFAULT_SKELETON_CONFIG, lowerSkeleton } from '../../src/backends/nft/skeleton.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import type { NftParts } from '../../src/backends/nft/parts.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import { expectedSnapshot, kernelInventory, listingSnapshot, reachable, snapshotDiff, tagsIn, type Listing } from '../../src/host/inventory.js';
import { diffParts, planFullLoad, sameJson, setIndexOf, tagCommands, unloadBatch, type Part } from '../../src/host/load-plan.js';
import { policyFor } from '../support/policy.js';
import { learnKey } from '../../src/ir/learning.js';

const T = { family: 'bridge', table: 'nwf_fast' };

/** A kernel listing: `live` objects reachable from the base chain, a `stale` leftover of an interrupted load, a persistent counting map. */
const listing = (live: string, stale: string): Listing => ({
  bridge: {
    nftables: [
      { metainfo: { json_schema_version: 1 } },
      { table: { family: 'bridge', name: 'nwf_fast', handle: 1 } },
      { chain: { ...T, name: 'pre', handle: 2, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } },
      { chain: { ...T, name: `${live}-sh-1`, handle: 3 } },
      { chain: { ...T, name: `${live}-sh-1-mac`, handle: 12 } },
      { map: { ...T, name: `${live}-from_vm`, type: 'ifname', map: 'verdict', handle: 4, elem: [['vnet0', { jump: { target: `${live}-sh-1` } }]] } },
      { chain: { ...T, name: `${stale}-sh-1`, handle: 5 } },
      { set: { ...T, name: `${stale}-ss-1-0`, type: ['ifname', 'ether_addr'], handle: 6 } },
      { set: { ...T, name: 'cnt-out-mac_spoof', type: 'ifname', handle: 13, stmt: [{ counter: null }], elem: [{ elem: { val: 'vnet0', counter: { packets: 2, bytes: 9 } } }, { elem: { val: 'vnet9', counter: { packets: 0, bytes: 0 } } }] } },
      { counter: { ...T, name: 'dropc-out-mac_spoof', handle: 7, packets: 3, bytes: 9 } },
      { counter: { ...T, name: 'old_counter', handle: 8, packets: 0, bytes: 0 } },
      { chain: { ...T, name: 'leftover', handle: 10 } },
      { rule: { ...T, chain: 'pre', handle: 9, expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: `@${live}-from_vm` } }], comment: '@gffffff-not_a_ref' } },
      { rule: { ...T, chain: `${live}-sh-1`, handle: 11, expr: [{ jump: { target: `${live}-sh-1-mac` } }] } },
    ],
  },
  ip: { nftables: [{ table: { family: 'ip', name: 'nwf_fast', handle: 1 } }] },
});

const vnet0 = (ips: string[]) => policyFor('clean-traffic', { IP: ips });
const vnetN = (n: number, ip: string): InterfacePolicy => policyFor('clean-traffic', { IP: ip }, [], { iface: `vnet${n}`, mac: `52:54:00:00:00:${(n + 16).toString(16)}` });
const partsOf = (...ps: InterfacePolicy[]): NftParts => lowerToNft({ version: 1, interfaces: ps, notes: [] }).parts;
/** The parts of a state as commit() builds them: skeleton, shapes, ports. */
const asParts = (p: NftParts): Part[] => [
  { id: 'skeleton', commands: lowerSkeleton(DEFAULT_SKELETON_CONFIG, []) },
  ...p.shapes.map((s) => ({ id: `shape ${s.name}`, commands: s.commands })),
  ...p.ports.map((x) => ({ id: `port ${x.iface}`, commands: x.commands })),
];
const diff = (a: NftParts, b: NftParts) => {
  const pa = asParts(a);
  const pb = asParts(b);
  return diffParts(pa, pb, setIndexOf([...pa, ...pb].map((x) => x.commands)));
};
const ops = (b: readonly NftCommand[]): string[] => b.map((c) => `${c.op} ${c.object.kind} ${'name' in c.object ? c.object.name : 'chain' in c.object ? c.object.chain : ''}`);

describe('the kernel inventory', () => {
  it('parses a listing once into typed objects keyed by identity, with rule comments and references, and elements apart', () => {
    const k = kernelInventory(listing('g000001', 'g000002'));
    expect([...k.tables.values()]).toEqual([
      { kind: 'table', family: 'bridge', name: 'nwf_fast' },
      { kind: 'table', family: 'ip', name: 'nwf_fast' },
    ]);
    expect(k.chains.get('chain bridge nwf_fast pre')).toMatchObject({ base: true, baseText: 'base filter prerouting -300 accept', rules: [{ handle: 9, refs: ['g000001-from_vm'], comment: '@gffffff-not_a_ref' }] });
    expect(k.sets.get('map bridge nwf_fast g000001-from_vm')?.elements).toHaveLength(1);
    expect(k.sets.get('set bridge nwf_fast cnt-out-mac_spoof')?.definitionText).toBe('type ifname counter');
    expect(k.counters.get('counter bridge nwf_fast dropc-out-mac_spoof')).toMatchObject({ packets: 3, bytes: 9 });
    expect([...tagsIn(k)].sort()).toEqual(['g000001', 'g000002']);
  });

  it('finds what the base chains reach, through rules and map elements (comments are not references)', () => {
    const r = reachable(kernelInventory(listing('g000001', 'g000002')));
    expect(r.has('map bridge nwf_fast g000001-from_vm')).toBe(true);
    expect(r.has('chain bridge nwf_fast g000001-sh-1')).toBe(true);
    expect(r.has('chain bridge nwf_fast g000001-sh-1-mac')).toBe(true);
    expect(r.has('chain bridge nwf_fast g000002-sh-1')).toBe(false);
    expect(r.has('chain bridge nwf_fast leftover')).toBe(false);
  });
});

describe('a full replacement', () => {
  const next = (tag: string): NftCommand[] => {
    const t = nftTable('bridge', 'nwf_fast');
    return tagCommands(
      [
        add(t.table),
        add(t.baseChain('pre', { type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' })),
        add(t.counter('dropc-out-mac_spoof')),
        add(t.set('cnt-out-mac_spoof', 'ifname', [str('vnet0')], { counter: true })),
        add(t.chain('sh-2')),
        add(t.verdictMap('from_vm', 'ifname', [[str('vnet0'), jump('sh-2')]])),
        add(t.rule('sh-2', [accept()])),
      ],
      tag,
    );
  };

  it('builds next to the live objects: base chains flushed, never deleted; leftovers nothing reaches and unused tables deleted at once', () => {
    const p = planFullLoad(kernelInventory(listing('g000001', 'g000002')), next('g000003'), 'g000003');
    const applied = ops(p.apply);
    expect(applied.slice(0, 2)).toEqual(['delete table nwf_fast', 'flush chain pre']);
    expect(applied).not.toContain('delete chain pre');
    expect(applied).toContain('delete chain g000002-sh-1');
    expect(applied).toContain('delete set g000002-ss-1-0');
    expect(applied).toContain('delete chain leftover');
    expect(applied).toContain('delete counter old_counter');
    // the live generation is deleted only by the cleanup, after the commit
    expect(applied).not.toContain('delete map g000001-from_vm');
    expect(ops(p.cleanup)).toEqual(['flush chain g000001-sh-1', 'flush chain g000001-sh-1-mac', 'delete map g000001-from_vm', 'delete chain g000001-sh-1', 'delete chain g000001-sh-1-mac', 'delete element cnt-out-mac_spoof']);
    // a persistent counting set keeps its name (and counts): only the element of a port that is gone goes
    expect(JSON.stringify(p.cleanup[p.cleanup.length - 1])).toContain('vnet9');
    expect(applied).not.toContain('delete set cnt-out-mac_spoof');
    expect(JSON.stringify(toNftJson(p.apply))).toContain('"g000003-from_vm"');
  });

  it('keeps learned-state sets the kernel holds as they are (declared again they would fail: the packet path made them dynamic)', () => {
    const l = listing('g000001', 'g000002');
    l.bridge?.nftables.push({ set: { ...T, name: 'lrn-locked', type: 'ifname', handle: 20, size: 65536, flags: ['timeout'], elem: [{ elem: { val: 'vnet0', timeout: 60, expires: 50 } }] } });
    const t = nftTable('bridge', 'nwf_fast');
    const withLearned = [...next('g000003'), add(t.set('lrn-locked', 'ifname', undefined, { flags: ['timeout'], size: 65536 })), add(t.set('lrn-addr', ['ifname', 'ipv4_addr'], undefined, { flags: ['timeout'], size: 65536 }))];
    const p = planFullLoad(kernelInventory(l), withLearned, 'g000003');
    expect(ops(p.apply)).not.toContain('add set lrn-locked');
    expect(ops(p.apply)).toContain('add set lrn-addr'); // not in the kernel yet
    // and its elements are the kernel's: no cleanup of a learned port's element
    expect(JSON.stringify(p.cleanup)).not.toContain('lrn-locked');
  });

  it('on an empty kernel: only the build', () => {
    const p = planFullLoad(kernelInventory({}), next('g000003'), 'g000003');
    expect(p.apply).toEqual(next('g000003'));
    expect(p.cleanup).toEqual([]);
  });
});

describe('the typed diff between two states', () => {
  const a = partsOf(vnet0(['10.0.0.2']), vnetN(1, '10.0.0.9'));

  it("a VM's IP change is a few element deletions and additions, as set deltas for the netlink encoder", () => {
    const p = diff(a, partsOf(vnet0(['10.0.0.3', '10.0.0.4']), vnetN(1, '10.0.0.9')));
    expect(p?.changedParts).toEqual(['port vnet0']);
    expect(p?.cleanup).toEqual([]);
    // the IPv4 source set and the ARP sender IP set of the shape, and the base chain's fast sets (MAC . IP; opt/fast-base.ts)
    expect(p?.deltas?.map((d) => [d.set.name, d.remove.length, d.add.length])).toEqual([
      [expect.stringMatching(/^ss-[0-9a-f]+-1$/), 1, 2],
      [expect.stringMatching(/^ss-[0-9a-f]+-3$/), 1, 2],
      ['fast_ip4', 1, 2],
      ['fast_arp', 1, 2],
    ]);
    expect(ops(p?.apply ?? []).map((x) => x.split(' ').slice(0, 2).join(' '))).toEqual([...Array(4).fill('delete element'), ...Array(4).fill('add element')]);
  });

  it('no change is an empty plan', () => {
    expect(diff(a, partsOf(vnet0(['10.0.0.2']), vnetN(1, '10.0.0.9')))).toEqual({ apply: [], cleanup: [], deltas: [], changedParts: [] });
  });

  it('a port of an existing shape: its elements and its own small chains, nothing else; its removal deletes them after the commit', () => {
    const b = partsOf(vnet0(['10.0.0.2']), vnetN(1, '10.0.0.9'), vnetN(2, '10.0.0.10'));
    const add2 = diff(a, b);
    expect(add2?.changedParts).toEqual(['port vnet2']);
    const applied = ops(add2?.apply ?? []);
    expect(applied.filter((x) => x.startsWith('add chain'))).toEqual([expect.stringMatching(/^add chain sp-.*-vnet2$/), expect.stringMatching(/^add chain sp-.*-vnet2$/)]);
    expect(applied.some((x) => x.startsWith('flush') || x.startsWith('delete'))).toBe(false);
    expect(add2?.deltas).toBeUndefined(); // chains and rules: not elements only
    const rm2 = diff(b, a);
    expect(ops(rm2?.apply ?? []).every((x) => x.startsWith('delete element'))).toBe(true);
    expect(rm2?.deltas).toBeDefined();
    expect(ops(rm2?.cleanup ?? [])).toEqual([expect.stringMatching(/^flush chain sp-/), expect.stringMatching(/^flush chain sp-/), expect.stringMatching(/^delete chain sp-/), expect.stringMatching(/^delete chain sp-/)]);
  });

  it('a port of a new shape adds the shape; the shape goes with its last port', () => {
    const f = `<filter name='t' chain='root'><filterref filter='no-mac-spoofing'/></filter>`;
    const other = policyFor('t', {}, [f], { iface: 'vnet5', mac: '52:54:00:00:00:55' });
    const b = partsOf(vnet0(['10.0.0.2']), vnetN(1, '10.0.0.9'), other);
    const p = diff(a, b);
    expect(p?.changedParts.filter((x) => x.startsWith('shape'))).toHaveLength(1);
    expect(ops(p?.apply ?? []).filter((x) => x.startsWith('add chain sh-'))).toHaveLength(2);
    const back = diff(b, a);
    expect(ops(back?.cleanup ?? []).filter((x) => x.startsWith('delete chain sh-'))).toHaveLength(2);
  });

  it('learned state is never deleted by a diff: a seed that went (a lease expired or released) is the kernel\'s, not the load\'s', () => {
    const UUID = '00000000-0000-0000-0000-000000000001';
    const dhcp = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' });
    const seeded = (ips: string[]) =>
      lowerToNft(
        { version: 1, interfaces: [dhcp], notes: [] },
        { seeds: new Map([[learnKey(UUID, dhcp.mac), { owner: { name: 'vm', uuid: UUID }, mac: dhcp.mac, mode: 'dhcp' as const, addresses: ips.map((ip) => ({ ip, expires: new Date(Date.now() + 600_000).toISOString(), source: 'state' as const })) }]]) },
      ).parts;
    const p = diff(seeded(['10.0.0.2', '10.0.0.3']), seeded(['10.0.0.3', '10.0.0.4']));
    expect(ops(p?.apply ?? [])).toEqual(['add element lrn-lease-vnet0']);
    expect(JSON.stringify(p?.apply)).toContain('10.0.0.4');
    expect(JSON.stringify(p?.apply)).not.toContain('10.0.0.2');
  });

  it('an object that keeps its name but changes its definition cannot be a diff', () => {
    const t = nftTable('bridge', 'nwf_fast');
    const x: Part[] = [{ id: 's', commands: [add(t.table), add(t.set('s', 'ifname'))] }];
    const y: Part[] = [{ id: 's', commands: [add(t.table), add(t.set('s', 'ether_addr'))] }];
    expect(diffParts(x, y, setIndexOf([]))).toBeUndefined();
  });
});

describe('the drift snapshot', () => {
  const t = nftTable('bridge', 'nwf_fast');
  const model: NftCommand[] = [
    add(t.table),
    add(t.chain('c')),
    add(t.verdictMap('m', 'ifname', [[str('vnet0'), jump('c')]])),
    add(t.rule('c', [accept()], 'hello')),
  ];
  const listed = (extra: Record<string, unknown>[] = [], elems: unknown[] = [['vnet0', { jump: { target: 'c' } }]]): Listing => ({
    bridge: {
      nftables: [
        { table: { family: 'bridge', name: 'nwf_fast', handle: 1 } },
        { chain: { ...T, name: 'c', handle: 2 } },
        { map: { ...T, name: 'm', type: 'ifname', map: 'verdict', handle: 3, elem: elems } },
        { rule: { ...T, chain: 'c', handle: 4, expr: [{ accept: null }], comment: 'hello' } },
        ...extra,
      ],
    } as never,
  });
  it('matches a listing of the same objects (expressions written differently do not matter)', () => {
    expect(snapshotDiff(expectedSnapshot(model), listingSnapshot(kernelInventory(listed())))).toEqual([]);
  });
  it('finds a foreign rule, a missing element, a foreign object', () => {
    const foreign = snapshotDiff(expectedSnapshot(model), listingSnapshot(kernelInventory(listed([{ rule: { ...T, chain: 'c', handle: 5, expr: [{ accept: null }] } }]))));
    expect(foreign.join('\n')).toMatch(/chain bridge nwf_fast c differs: unexpected rule ""/);
    expect(snapshotDiff(expectedSnapshot(model), listingSnapshot(kernelInventory(listed([], [])))).join('\n')).toMatch(/map bridge nwf_fast m differs: missing vnet0 : jump c/);
    expect(snapshotDiff(expectedSnapshot(model), listingSnapshot(kernelInventory(listed([{ chain: { ...T, name: 'x', handle: 9 } }])))).join('\n')).toMatch(/chain bridge nwf_fast x is not nwf-fast's/);
  });
});

describe('unload', () => {
  it("removes nwf-fast's tables and nothing else; each is added first so that deleting it cannot fail", () => {
    expect(printNftText(unloadBatch())).toBe(
      [
        'add table bridge nwf_fast',
        'delete table bridge nwf_fast',
        'add table ip nwf_fast',
        'delete table ip nwf_fast',
        'add table ip6 nwf_fast',
        'delete table ip6 nwf_fast',
        'add table inet nwf_fast',
        'delete table inet nwf_fast',
        '',
      ].join('\n'),
    );
  });
});

describe('sameJson: equal JSON texts, without writing them', () => {
  const cases: [unknown, unknown][] = [
    [{ a: 1, b: [1, 'x'] }, { a: 1, b: [1, 'x'] }],
    [{ a: 1, b: 2 }, { b: 2, a: 1 }],
    [{ a: 1, b: undefined }, { a: 1 }],
    [[1, undefined], [1, null]],
    [[1, 2], [1, 2, 3]],
    [{ a: { b: 'c' } }, { a: { b: 'd' } }],
    [{ a: [] }, { a: {} }],
    [{ a: null }, { a: undefined }],
    ['1', 1],
  ];
  it.each(cases)('%j vs %j', (a, b) => {
    expect(sameJson(a, b)).toBe(JSON.stringify(a) === JSON.stringify(b));
  });

  it('agrees on every part of a lowered generation, and finds a changed address', () => {
    const a = lowerToNft({ version: 1, interfaces: [policyFor('clean-traffic', { IP: ['10.0.0.1'] })], notes: [] }).parts;
    const b = lowerToNft({ version: 1, interfaces: [policyFor('clean-traffic', { IP: ['10.0.0.2'] })], notes: [] }).parts;
    const pa = a.ports[0]?.commands;
    expect(sameJson(pa, structuredClone(pa))).toBe(true);
    expect(sameJson(pa, b.ports[0]?.commands)).toBe(false);
    expect(sameJson(a.shapes, b.shapes)).toBe(true);
  });
});
