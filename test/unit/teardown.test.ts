import { describe, expect, it } from 'vitest';
import { inventory, planLoad, retag } from '../../src/host/teardown.js';
import type { NftJsonDocument } from '../../src/backends/nft/model.js';

const T = { family: 'bridge', table: 'nwf_fast' };
const build: NftJsonDocument = {
  nftables: [
    { metainfo: { json_schema_version: 1 } },
    { add: { table: { family: 'bridge', name: 'nwf_fast' } } },
    { add: { chain: { ...T, name: 'pre', type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } } },
    { add: { counter: { ...T, name: 'drop_vnet0_mac-spoof' } } },
    { add: { chain: { ...T, name: 'is0' } } },
    { add: { rule: { ...T, chain: 'is0', expr: [{ counter: { map: { key: { meta: { key: 'iifname' } }, data: '@cnt_out_mac_spoof' } } }, { drop: null }] } } },
    { add: { map: { ...T, name: 'from_vm', type: 'ifname', map: 'verdict', elem: [['vnet0', { jump: { target: 'is0' } }]] } } },
    { add: { rule: { ...T, chain: 'pre', expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: '@from_vm' } }], comment: '@not-a-ref' } } },
  ],
};

const listed = (live: string, stale: string): Record<string, NftJsonDocument> => ({
  bridge: {
    nftables: [
      { table: { family: 'bridge', name: 'nwf_fast', handle: 1 } },
      { chain: { ...T, name: 'pre', handle: 2, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } },
      { chain: { ...T, name: `${live}_is0`, handle: 3 } },
      { map: { ...T, name: `${live}_from_vm`, type: 'ifname', map: 'verdict', handle: 4 } },
      { chain: { ...T, name: `${stale}_is0`, handle: 5 } },
      { set: { ...T, name: `${stale}_is0_a0`, type: ['ifname', 'ether_addr'], handle: 6 } },
      { counter: { ...T, name: 'drop_vnet0_mac-spoof', handle: 7, packets: 3, bytes: 9 } },
      { counter: { ...T, name: 'drop_vnet9_mac-spoof', handle: 8, packets: 0, bytes: 0 } },
      { rule: { ...T, chain: 'pre', handle: 9, expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: `@${live}_from_vm` } }] } },
    ],
  },
  ip: { nftables: [{ table: { family: 'ip', name: 'nwf_fast', handle: 1 } }] },
});

describe('generation replacement without a gap', () => {
  it('retag prefixes every object and reference but base chains, counters and comments', () => {
    const r = JSON.stringify(retag(build, 'gabcdef'));
    expect(r).toContain('"name":"gabcdef_is0"');
    expect(r).toContain('"chain":"gabcdef_is0"');
    expect(r).toContain('"target":"gabcdef_is0"');
    expect(r).toContain('"data":"@gabcdef_from_vm"');
    expect(r).toContain('"data":"@gabcdef_cnt_out_mac_spoof"');
    expect(r).toContain('"name":"pre"');
    expect(r).toContain('"name":"drop_vnet0_mac-spoof"');
    expect(r).toContain('"comment":"@not-a-ref"');
  });

  it('finds the live tag from the base chains', () => {
    expect(inventory(listed('g000001', 'g000002'))).toEqual({ tags: new Set(['g000001', 'g000002']), live: 'g000001' });
  });

  it('builds next to the live objects, flushes base chains without deleting them, and deletes the live ones only afterwards', () => {
    const plan = planLoad(listed('g000001', 'g000002'), build);
    const a = plan.apply.nftables.map((c) => JSON.stringify(c));
    const c = plan.cleanup.nftables.map((x) => JSON.stringify(x));
    expect(plan.tag).toMatch(/^g[0-9a-f]{6}$/);
    expect(a).toContain('{"flush":{"chain":{"family":"bridge","table":"nwf_fast","name":"pre"}}}');
    expect(a.join()).not.toContain('"delete":{"chain":{"family":"bridge","table":"nwf_fast","name":"pre"}');
    expect(a.join()).toContain('"delete":{"chain":{"family":"bridge","table":"nwf_fast","name":"g000002_is0"}');
    expect(a.join()).toContain('"delete":{"set":{"family":"bridge","table":"nwf_fast","name":"g000002_is0_a0"}');
    expect(a.join()).not.toContain('"name":"g000001_');
    expect(a.join()).toContain(`"name":"${plan.tag}_is0"`);
    expect(a).toContain('{"delete":{"table":{"family":"ip","name":"nwf_fast"}}}');
    expect(c.join()).toContain('"delete":{"map":{"family":"bridge","table":"nwf_fast","name":"g000001_from_vm"}');
    expect(c.join()).toContain('"delete":{"chain":{"family":"bridge","table":"nwf_fast","name":"g000001_is0"}');
    expect(c.join()).toContain('"delete":{"counter":{"family":"bridge","table":"nwf_fast","name":"drop_vnet9_mac-spoof"}');
    expect(c.join()).not.toContain('drop_vnet0_mac-spoof');
  });
});
