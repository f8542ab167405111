// nft on a namespace testbed: load bridge-family batches built with the typed
// model into the testbed's host namespace (nft binary and in-process
// libnftables), then check with raw frames that they filter what they should.
// Nothing is loaded into the root namespace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { add, counter, drop, eq, flush, hex, jump, meta, nftTable, payload, ruleset, str, vmap } from '../../src/backends/nft/build.js';
import type { NftBatch, NftJsonDocument, Json } from '../../src/backends/nft/model.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import {
  libnftablesAvailable,
  listed,
  nftApply,
  nftApplyText,
  nftCheck,
  nftCheckText,
  nftListRuleset,
  nftListTable,
  ruleCounters,
} from '../../src/host/nft.js';
import { deliver, settlePacketSockets } from '../../src/lab/packet-io.js';
import { netnsList } from '../../src/host/netns.js';
import { createTestbed, destroyStale, type Testbed } from '../../src/lab/testbed.js';
import { CommandError } from '../../src/host/runner.js';
import { CODES } from '../../src/util/errors.js';
import { kitchenSink } from '../fixtures/nft/kitchen-sink.js';
import { etherFrame, ipv4UdpFrame, tags, UDP_TAG_OFFSET } from './packet-frames.js';

const isRoot = process.getuid?.() === 0;
const PREFIX = 'nwfn';

const t = nftTable('bridge', 'nwft');
/** `iifname vmap { "vnet0" : jump c0 }`; c0 counts and drops EtherType 0x88b5. */
const dispatch: NftBatch = [
  add(t.table),
  flush(t.ref),
  add(t.baseChain('fwd-in', { type: 'filter', hook: 'forward', prio: -300, policy: 'accept' })),
  add(t.chain('c0')),
  add(t.rule('fwd-in', [vmap(meta('iifname'), [[str('vnet0'), jump('c0')]])])),
  add(t.rule('c0', [eq(payload('ether', 'type'), hex(0x88b5)), counter(), drop()], 'drop 0x88b5')),
];

/** List output without handles and metainfo, for comparing two loads. */
function normalize(doc: NftJsonDocument): Json {
  const strip = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: { [k: string]: Json } = {};
      for (const [k, x] of Object.entries(v)) if (k !== 'handle') o[k] = strip(x);
      return o;
    }
    return v;
  };
  return doc.nftables.filter((o) => !('metainfo' in o)).map(strip);
}

describe.skipIf(!isRoot)('nft on the testbed (kernel; skipped unless run as root: it creates network namespaces)', () => {
  let tb: Testbed;

  beforeAll(async () => {
    await destroyStale(PREFIX);
    tb = await createTestbed({
      prefix: PREFIX,
      vms: [
        { name: 'vm1', tap: 'vnet0', mac: '52:54:00:00:00:01', ipv4: ['10.0.0.1/24'] },
        { name: 'vm2', tap: 'vnet1', mac: '52:54:00:00:00:02', ipv4: ['10.0.0.2/24'] },
      ],
      peers: [{ name: 'peer', mac: '52:54:00:00:00:fe', ipv4: ['10.0.0.254/24'] }],
    });
  });

  afterAll(async () => {
    await settlePacketSockets();
    if (tb) {
      await tb.destroy();
      expect((await netnsList()).filter((n) => n.startsWith(tb.id))).toEqual([]);
    }
  });

  /** Sends n 0x88b5 frames and n IPv4/UDP frames from `from` to the peer; returns how many of each arrived. */
  async function probe(from: 'vm1' | 'vm2', n: number): Promise<{ ethertype88b5: number; ipv4: number }> {
    const vm = tb.guest(from);
    const peer = tb.guest('peer');
    const tg1 = tags(n);
    const r1 = await deliver(vm.endpoint, peer.endpoint, tg1.map((x) => etherFrame(peer.mac, vm.mac, 0x88b5, x)), { tags: tg1, tagOffset: 14 });
    const tg2 = tags(n);
    const r2 = await deliver(
      vm.endpoint,
      peer.endpoint,
      tg2.map((x) => ipv4UdpFrame(peer.mac, vm.mac, vm.ipv4[0]!.split('/')[0]!, '10.0.0.254', x)),
      { tags: tg2, tagOffset: UDP_TAG_OFFSET },
    );
    return { ethertype88b5: r1.arrived.filter(Boolean).length, ipv4: r2.arrived.filter(Boolean).length };
  }

  it('passes everything before any ruleset is loaded', async () => {
    expect(await probe('vm1', 20)).toEqual({ ethertype88b5: 20, ipv4: 20 });
  });

  it('nftCheck rejects a broken batch with nft stderr, and changes nothing', async () => {
    const broken: NftBatch = [add(t.table), add(t.chain('c0')), add(t.rule('c0', [jump('nowhere')]))];
    const err = await nftCheck(toNftJson(broken), { netns: tb.hostNs }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const e = err as CommandError;
    expect(e.code).toBe(CODES.LOAD_FAILED);
    expect(e.exitCode).toBe(1);
    expect(e.stderr).toMatch(/Error/);
    expect(e.argv.slice(0, 5)).toEqual(['ip', 'netns', 'exec', tb.hostNs, 'nft']);
    expect(listed(await nftListRuleset({ netns: tb.hostNs }), 'table')).toEqual([]);

    // Malformed JSON is refused by the parser, with its message.
    const bad = await nftCheck('{"nftables":[{"add":{"rule":{"family":"bridge"}}}]}', { netns: tb.hostNs }).catch((x: unknown) => x);
    expect((bad as CommandError).stderr).toMatch(/Error/);
  });

  it('a vmap dispatch drops EtherType 0x88b5 from vnet0, counts it, and lets IPv4 pass', async () => {
    const doc = toNftJson(dispatch);
    await nftCheck(doc, { netns: tb.hostNs });
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await nftApply(doc, { netns: tb.hostNs });
      times.push(performance.now() - t0);
    }
    console.info(`nftApply (spawn, ip netns exec): ${times.map((x) => x.toFixed(1)).join(', ')} ms`);

    const listing = await nftListTable('bridge', 'nwft', { netns: tb.hostNs });
    expect(listed(listing, 'chain').map((c) => c.name).sort()).toEqual(['c0', 'fwd-in']);

    expect(await probe('vm1', 100)).toEqual({ ethertype88b5: 0, ipv4: 100 });
    expect(await probe('vm2', 30)).toEqual({ ethertype88b5: 30, ipv4: 30 }); // vnet1 is not dispatched
    const counters = ruleCounters(await nftListTable('bridge', 'nwft', { netns: tb.hostNs }), 'c0');
    expect(counters).toHaveLength(1);
    // Bridge-family counters count bytes after the Ethernet header: 60 - 14 per frame.
    expect(counters[0]).toMatchObject({ comment: 'drop 0x88b5', packets: 100, bytes: 100 * 46 });
  });

  it.skipIf(!libnftablesAvailable())('applies the same batch in-process through libnftables', async () => {
    const doc = toNftJson(dispatch);
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await nftApply(doc, { netns: tb.hostNs, inProcess: true });
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    console.info(`nftApply (in-process libnftables, add+flush+re-add): median ${times[5]!.toFixed(2)} ms, min ${times[0]!.toFixed(2)} ms`);

    // A transaction that only adds is much cheaper than one that deletes rules.
    const addOnly = toNftJson([add(t.chain('c1'))]);
    const t0 = performance.now();
    await nftApply(addOnly, { netns: tb.hostNs, inProcess: true });
    console.info(`nftApply (in-process libnftables, add-only): ${(performance.now() - t0).toFixed(2)} ms`);

    // The flush reset the counter; the policy still holds.
    const viaLib = await nftListTable('bridge', 'nwft', { netns: tb.hostNs, inProcess: true });
    const viaBin = await nftListTable('bridge', 'nwft', { netns: tb.hostNs });
    expect(normalize(viaLib)).toEqual(normalize(viaBin));
    expect(ruleCounters(viaLib, 'c0')[0]!.packets).toBe(0);
    expect(await probe('vm1', 50)).toEqual({ ethertype88b5: 0, ipv4: 50 });

    const err = await nftCheck('{"nftables":[{"add":{"chain":{"family":"bridge","table":"missing","name":"x"}}}]}', {
      netns: tb.hostNs,
      inProcess: true,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toMatch(/Error/);
  });

  it('nft -c accepts the text printer output, and text and JSON load the same ruleset', async () => {
    // In vm2's namespace (created by the testbed), so the dispatch ruleset above stays put.
    const ns = tb.guest('vm2').ns;
    const batch = kitchenSink('eth0');
    const text = printNftText(batch);
    await nftCheck(toNftJson(batch), { netns: ns });
    await nftCheckText(text, { netns: ns });

    await nftApply(toNftJson(batch), { netns: ns });
    const fromJson = normalize(await nftListRuleset({ netns: ns }));
    await nftApply(toNftJson([flush(ruleset())]), { netns: ns });
    await nftApplyText(text, { netns: ns });
    const fromText = normalize(await nftListRuleset({ netns: ns }));
    expect(fromText).toEqual(fromJson);
    expect((fromJson as Json[]).length).toBeGreaterThan(40);
    await nftApply(toNftJson([flush(ruleset())]), { netns: ns });
    // The printer's output of the small dispatch batch loads too.
    await nftCheckText(printNftText(dispatch), { netns: ns });
  });

  it('leaves the other namespaces of the testbed without rules', async () => {
    for (const g of [...tb.vms, ...tb.peers]) {
      expect(listed(await nftListRuleset({ netns: g.ns }), 'table')).toEqual([]);
    }
    expect(listed(await nftListRuleset({ netns: tb.hostNs }), 'table').map((x) => x.name)).toEqual(['nwft']);
  });

  it('destroy leaves no namespace behind', async () => {
    const other = await createTestbed({ prefix: PREFIX, vms: [{ name: 'vm1', tap: 'vnet0', mac: '52:54:00:00:02:01' }] });
    await nftApply(toNftJson(dispatch), { netns: other.hostNs });
    await other.destroy();
    expect((await netnsList()).filter((n) => n.startsWith(other.id))).toEqual([]);
  });
});
