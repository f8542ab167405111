// The typed nft model: JSON serializer and text printer golden outputs, and
// the shapes the types refuse.
import { describe, expect, it } from 'vitest';
import {
  add,
  anyOf,
  batch,
  bitAnd,
  counter,
  ct,
  del,
  drop,
  eq,
  flags,
  flush,
  hex,
  jump,
  mangle,
  match,
  meta,
  ne,
  nftTable,
  payload,
  prefix,
  range,
  ruleset,
  str,
  sym,
  verdict,
  vmap,
} from '../../src/backends/nft/build.js';
import type { NftBatch, Selector, Statement } from '../../src/backends/nft/model.js';
import { commandText, printNftText } from '../../src/backends/nft/printer.js';
import { statementJson, toNftJson } from '../../src/backends/nft/serialize.js';
import { InternalError } from '../../src/util/errors.js';
import { kitchenSink } from '../fixtures/nft/kitchen-sink.js';

const t = nftTable('bridge', 'nwf');

/** A bridge table, a verdict map keyed by iifname, a regular chain with payload matches and counters. */
const small: NftBatch = batch(
  add(t.table),
  flush(t.ref),
  add(t.baseChain('fwd-in', { type: 'filter', hook: 'forward', prio: -300, policy: 'accept' })),
  add(t.chain('c0')),
  add(t.verdictMap('vmap-iif', 'ifname', [[str('vnet0'), jump('c0')]])),
  add(t.rule('fwd-in', [vmap(meta('iifname'), 'vmap-iif')])),
  add(t.rule('c0', [eq(payload('ether', 'type'), hex(0x88b5)), counter(), drop()], 'drop 0x88b5')),
  add(
    t.rule('c0', [
      eq(payload('ether', 'saddr'), sym('52:54:00:00:00:01')),
      ne(payload('ip', 'saddr'), prefix('10.0.0.0', 8)),
      eq(payload('tcp', 'dport'), range(1000, 2000)),
      counter(),
      verdict.return(),
    ]),
  ),
);

const etherType = { payload: { protocol: 'ether', field: 'type' } };

describe('toNftJson', () => {
  it('serializes a small bridge batch exactly (golden)', () => {
    expect(toNftJson(small)).toEqual({
      nftables: [
        { metainfo: { json_schema_version: 1 } },
        { add: { table: { family: 'bridge', name: 'nwf' } } },
        { flush: { table: { family: 'bridge', name: 'nwf' } } },
        {
          add: {
            chain: { family: 'bridge', table: 'nwf', name: 'fwd-in', type: 'filter', hook: 'forward', prio: -300, policy: 'accept' },
          },
        },
        { add: { chain: { family: 'bridge', table: 'nwf', name: 'c0' } } },
        {
          add: {
            map: {
              family: 'bridge',
              table: 'nwf',
              name: 'vmap-iif',
              type: 'ifname',
              map: 'verdict',
              elem: [['vnet0', { jump: { target: 'c0' } }]],
            },
          },
        },
        {
          add: {
            rule: {
              family: 'bridge',
              table: 'nwf',
              chain: 'fwd-in',
              expr: [{ vmap: { key: { meta: { key: 'iifname' } }, data: '@vmap-iif' } }],
            },
          },
        },
        {
          add: {
            rule: {
              family: 'bridge',
              table: 'nwf',
              chain: 'c0',
              expr: [{ match: { op: '==', left: etherType, right: 34997 } }, { counter: null }, { drop: null }],
              comment: 'drop 0x88b5',
            },
          },
        },
        {
          add: {
            rule: {
              family: 'bridge',
              table: 'nwf',
              chain: 'c0',
              expr: [
                { match: { op: '==', left: { payload: { protocol: 'ether', field: 'saddr' } }, right: '52:54:00:00:00:01' } },
                { match: { op: '!=', left: { payload: { protocol: 'ip', field: 'saddr' } }, right: { prefix: { addr: '10.0.0.0', len: 8 } } } },
                { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: { range: [1000, 2000] } } },
                { counter: null },
                { return: null },
              ],
            },
          },
        },
      ],
    });
  });

  it('writes JSON key order stably (byte-exact text)', () => {
    expect(JSON.stringify(toNftJson(small.slice(0, 2)))).toBe(
      '{"nftables":[{"metainfo":{"json_schema_version":1}},{"add":{"table":{"family":"bridge","name":"nwf"}}},' +
        '{"flush":{"table":{"family":"bridge","name":"nwf"}}}]}',
    );
  });

  it('serializes statements the way nft 1.0.6 reads them', () => {
    // ct with a direction and family: the family goes into the key.
    expect(statementJson(eq(ct('saddr', 'original', 'ip'), sym('10.0.0.1')))).toEqual({
      match: { op: '==', left: { ct: { key: 'ip saddr', dir: 'original' } }, right: '10.0.0.1' },
    });
    expect(statementJson(anyOf(ct('state'), flags('established', 'related')))).toEqual({
      match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] },
    });
    expect(statementJson(eq(bitAnd(payload('tcp', 'flags'), flags('syn', 'ack')), sym('syn')))).toEqual({
      match: { op: '==', left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, ['syn', 'ack']] }, right: 'syn' },
    });
    expect(statementJson({ kind: 'counter', packets: 3, bytes: 180 })).toEqual({ counter: { packets: 3, bytes: 180 } });
    expect(statementJson({ kind: 'counter-ref', name: 'cnt0' })).toEqual({ counter: 'cnt0' });
    expect(statementJson(mangle({ kind: 'meta', key: 'mark' }, hex(2)))).toEqual({ mangle: { key: { meta: { key: 'mark' } }, value: 2 } });
    expect(statementJson(vmap(meta('oifname'), [[str('vnet1'), verdict.goto('c0')]]))).toEqual({
      vmap: { key: { meta: { key: 'oifname' } }, data: { set: [['vnet1', { goto: { target: 'c0' } }]] } },
    });
    expect(statementJson(match({ kind: 'raw-payload', base: 'll', offset: 96, len: 16 }, '==', hex(0x88b5)))).toEqual({
      match: { op: '==', left: { payload: { base: 'll', offset: 96, len: 16 } }, right: 34997 },
    });
    expect(statementJson({ kind: 'log', prefix: 'x ', group: 2 })).toEqual({ log: { prefix: 'x ', group: 2 } });
    expect(statementJson({ kind: 'ct-count', val: 10, inv: true })).toEqual({ 'ct count': { val: 10, inv: true } });
  });

  it('serializes deletes and flushes by name only', () => {
    const doc = toNftJson([del(t.ref), del(t.ruleRef('c0', 7)), del(t.element('vmap-iif', [str('vnet0')])), flush(ruleset())]);
    expect(doc.nftables.slice(1)).toEqual([
      { delete: { table: { family: 'bridge', name: 'nwf' } } },
      { delete: { rule: { family: 'bridge', table: 'nwf', chain: 'c0', handle: 7 } } },
      { delete: { element: { family: 'bridge', table: 'nwf', name: 'vmap-iif', elem: ['vnet0'] } } },
      { flush: { ruleset: null } },
    ]);
  });

  it('refuses what nft would refuse', () => {
    expect(() => toNftJson([add(t.rule('c0', []))])).toThrow(InternalError);
    expect(() => toNftJson([add(t.chain('bad name'))])).toThrow(/invalid nft chain name/);
    expect(() => toNftJson([add(t.rule('c0', [drop()], 'say "hi"'))])).toThrow(/rule comment/);
    expect(() => toNftJson([add(t.rule('c0', [drop()], 'x'.repeat(129)))])).toThrow(/at most 128 bytes/);
    expect(() => toNftJson([add(t.rule('c0', [eq(meta('mark'), -1), drop()]))])).toThrow(/non-negative/);
    expect(() => toNftJson([add(t.element('s', []))])).toThrow(/no elements/);
  });
});

describe('printNftText', () => {
  it('prints the small batch as nft -f text (golden)', () => {
    expect(printNftText(small)).toBe(
      [
        'add table bridge nwf',
        'flush table bridge nwf',
        'add chain bridge nwf fwd-in { type filter hook forward priority -300; policy accept; }',
        'add chain bridge nwf c0',
        'add map bridge nwf vmap-iif { type ifname : verdict; elements = { "vnet0" : jump c0 }; }',
        'add rule bridge nwf fwd-in meta iifname vmap @vmap-iif',
        'add rule bridge nwf c0 ether type 0x88b5 counter drop comment "drop 0x88b5"',
        'add rule bridge nwf c0 ether saddr 52:54:00:00:00:01 ip saddr != 10.0.0.0/8 tcp dport 1000-2000 counter return',
        '',
      ].join('\n'),
    );
  });

  it('prints operators so bitmask and masked matches keep their meaning', () => {
    const r = (s: Statement[]) => commandText(add(t.rule('c0', s)));
    expect(r([anyOf(ct('state'), flags('established', 'related')), verdict.accept()])).toBe(
      'add rule bridge nwf c0 ct state established,related accept',
    );
    expect(r([eq(ct('state'), sym('invalid')), drop()])).toBe('add rule bridge nwf c0 ct state == invalid drop');
    expect(r([eq(bitAnd(payload('tcp', 'flags'), flags('syn', 'ack')), sym('syn')), drop()])).toBe(
      'add rule bridge nwf c0 tcp flags & (syn | ack) == syn drop',
    );
    expect(r([eq(bitAnd(meta('mark'), hex(0xff)), hex(1)), drop()])).toBe('add rule bridge nwf c0 meta mark & 0xff == 0x1 drop');
    expect(r([match(payload('ip', 'ttl'), '<=', 1), drop()])).toBe('add rule bridge nwf c0 ip ttl <= 1 drop');
    expect(r([eq(ct('saddr', 'reply', 'ip6'), sym('fd00::1')), drop()])).toBe('add rule bridge nwf c0 ct reply ip6 saddr fd00::1 drop');
  });

  it('prints netdev base chains with their device', () => {
    const n = nftTable('netdev', 'nd');
    expect(commandText(add(n.baseChain('ing', { type: 'filter', hook: 'ingress', dev: 'br0', prio: -500 })))).toBe(
      'add chain netdev nd ing { type filter hook ingress device "br0" priority -500; }',
    );
  });

  it('refuses names the text parser reads as keywords (JSON takes them)', () => {
    const batchWithKeyword = [add(t.chain('fwd'))];
    expect(() => printNftText(batchWithKeyword)).toThrow(/keyword/);
    expect(toNftJson(batchWithKeyword).nftables[1]).toEqual({ add: { chain: { family: 'bridge', table: 'nwf', name: 'fwd' } } });
  });

  it('handles every shape of the kitchen-sink batch in both outputs', () => {
    const ks = kitchenSink('br0');
    const text = printNftText(ks);
    expect(text.trimEnd().split('\n')).toHaveLength(ks.length);
    expect(toNftJson(ks).nftables).toHaveLength(ks.length + 1);
  });
});

describe('model types', () => {
  it('refuse invalid shapes at compile time', () => {
    // These lines only need to fail type checking (tsc -p tsconfig.json).
    // @ts-expect-error ether has no dport field
    payload('ether', 'dport');
    // @ts-expect-error a constant cannot be the left side of a match
    const badLeft: Statement = { kind: 'match', op: '==', left: { kind: 'number', value: 1 }, right: { kind: 'number', value: 1 } };
    // @ts-expect-error a netdev base chain needs its device
    nftTable('netdev', 'nd').baseChain('ing', { type: 'filter', hook: 'ingress', prio: 0 });
    // @ts-expect-error the bridge family has no nat chains
    t.baseChain('pre', { type: 'nat', hook: 'prerouting', prio: 0 });
    // @ts-expect-error ct saddr needs a direction
    const badCt: Selector = { kind: 'ct', key: 'saddr' };
    // @ts-expect-error rules cannot be created with `create`
    const badCreate: NftBatch = [{ op: 'create', object: t.rule('c0', [drop()]) }];
    // @ts-expect-error a syslog level and an nflog group do not mix
    const badLog: Statement = { kind: 'log', level: 'info', group: 1 };
    expect([badLeft, badCt, badCreate, badLog]).toHaveLength(4);
  });
});
