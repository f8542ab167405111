// Differential: real frames through a real bridge with the nft backend
// loaded, compared frame by frame with the reference evaluator; shared chains
// with the optimizer on and off (src/backends/nft/opt), and per-interface
// chains. The optimizer must also leave every drop counter as it was: the
// growth of the port's counting-set elements over the same corpus is the
// same with the passes on and off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { applyNft } from '../../src/host/apply.js';
import { nftListTable } from '../../src/host/nft.js';
import type { Testbed } from '../../src/lab/testbed.js';
import { generateCorpus } from '../../src/lab/frames/corpus.js';
import { evaluate } from '../../src/ir/eval.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import * as F from '../../src/lab/frames/build.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import { policyFor } from '../support/policy.js';
import { createDemoHost, flushConntrack, isRoot, PEER_MAC, ROOT_REASON, runDifferential, VM_MAC } from './support/differential.js';

const IPV6_FILTER = `<filter name='v6-guard' chain='root'><filterref filter='no-ipv6-spoofing'/><filterref filter='allow-ipv6'/></filter>`;
const L3_FILTER = `<filter name='web-only' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='100'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout' priority='900'><all/></rule>
</filter>`;

const CASES: { name: string; filter: string; params: Record<string, string | string[]>; extra?: string[]; l3?: boolean }[] = [
  { name: 'clean-traffic, one IP', filter: 'clean-traffic', params: { IP: '10.77.0.2' } },
  { name: 'clean-traffic, an IP list', filter: 'clean-traffic', params: { IP: ['10.77.0.2', '10.77.0.3', '10.77.1.9'] } },
  { name: 'clean-traffic-gateway', filter: 'clean-traffic-gateway', params: { IP: '10.77.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' } },
  { name: 'no-ip-spoofing', filter: 'no-ip-spoofing', params: { IP: ['10.77.0.2', '10.77.0.3'] } },
  { name: 'allow-dhcp', filter: 'allow-dhcp', params: {} },
  { name: 'allow-ipv6 with no-ipv6-spoofing', filter: 'v6-guard', params: { IPV6: 'fd77::2' }, extra: [IPV6_FILTER] },
  { name: 'an L3 policy: TCP 80 in with state, all else dropped', filter: 'web-only', params: { IP: '10.77.0.2' }, extra: [L3_FILTER], l3: true },
];

describe.skipIf(!isRoot)('nft backend: differential against the reference evaluator (real bridge in namespaces)', () => {
  let tb: Testbed;
  beforeAll(async () => {
    tb = await createDemoHost('nwfd');
  });
  afterAll(async () => {
    await tb?.destroy();
  });

  const load = async (policy: InterfacePolicy, decoy?: InterfacePolicy, share = true, optimize = true): Promise<void> => {
    const interfaces = decoy ? [policy, decoy] : [policy];
    await applyNft((tag) => lowerToNft({ version: 1, interfaces, notes: [] }, { share, tag, optimize }).batch, { netns: tb.hostNs });
  };
  /** The packets each counting set (cnt-<dir>-<reason>, persistent across loads) has counted for vnet0. */
  const dropCounts = async (): Promise<Record<string, number>> => {
    const doc = await nftListTable('bridge', 'nwf_fast', { netns: tb.hostNs });
    const out: Record<string, number> = {};
    for (const o of doc.nftables) {
      const set = o.set as { name?: string; elem?: { elem?: { val?: unknown; counter?: { packets?: number } } }[] } | undefined;
      if (!set?.name?.startsWith('cnt-')) continue;
      for (const e of set.elem ?? []) if (e.elem?.val === 'vnet0') out[set.name] = e.elem.counter?.packets ?? 0;
    }
    return out;
  };
  const growth = (a: Record<string, number>, b: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.keys(b).flatMap((k) => ((b[k] ?? 0) - (a[k] ?? 0) > 0 ? [[k, (b[k] ?? 0) - (a[k] ?? 0)]] : [])));
  const counted = new Map<string, Record<string, number>>();
  /** A second interface with the same filter and other addresses, so shared chains look addresses up in sets. */
  const decoyOf = (c: (typeof CASES)[number]): InterfacePolicy => {
    const params: Record<string, string | string[]> = { ...c.params };
    if (params.IP) params.IP = ['10.77.9.9', '10.77.9.10'];
    if (params.IPV6) params.IPV6 = 'fd77::9';
    return policyFor(c.filter, params, c.extra ?? [], { iface: 'vnet9', mac: '52:54:00:00:00:09' });
  };
  const MODES = CASES.flatMap((c) => [
    { ...c, mode: 'shared chains, optimized' as const },
    { ...c, mode: 'shared chains, no optimizer' as const },
    { ...c, mode: 'per-interface chains' as const },
  ]);

  it.each(MODES)('$name ($mode): every corpus frame is delivered exactly when the evaluator accepts', async (c) => {
    const policy = policyFor(c.filter, c.params, c.extra ?? [], { iface: 'vnet0', mac: VM_MAC });
    await load(policy, decoyOf(c), c.mode !== 'per-interface chains', c.mode === 'shared chains, optimized');
    await flushConntrack(tb);
    const corpus = generateCorpus(policy, { peerMac: PEER_MAC });
    const isIp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && f[13] === 0x00) || (f[12] === 0x86 && f[13] === 0xdd));
    const before = await dropCounts();
    const r = await runDifferential(tb, policy, corpus, c.l3 ? { oneByOne: (f) => isIp(f.frame) } : {});
    const grew = growth(before, await dropCounts());
    console.log(`[nft differential] ${c.name} (${c.mode}): drops counted ${JSON.stringify(grew)}`);
    if (c.mode === 'shared chains, optimized') counted.set(c.name, grew);
    if (c.mode === 'shared chains, no optimizer') expect(grew, 'drop counters with the optimizer on and off').toEqual(counted.get(c.name));
    console.log(`[nft differential] ${c.name} (${c.mode}): corpus ${corpus.length} frames, sent ${r.sent} (${r.accepted} accept, ${r.dropped} drop), skipped ${r.skipped}, mismatches ${r.mismatches.length}`);
    for (const m of r.mismatches) console.log(`  MISMATCH ${m.direction} ${m.name}: evaluator ${m.expected}, kernel ${m.delivered ? "delivered" : "dropped"} ${m.hex.slice(0, 120)}`);
    expect(r.mismatches).toEqual([]);
    expect(r.accepted).toBeGreaterThan(0);
    expect(r.dropped).toBeGreaterThan(0);
  });

  it('the L3 policy follows connection state on a real TCP flow', async () => {
    const policy = policyFor('web-only', { IP: '10.77.0.2' }, [L3_FILTER], { iface: 'vnet0', mac: VM_MAC });
    await load(policy);
    await flushConntrack(tb);
    const vm = tb.guest('vm').endpoint;
    const peer = tb.guest('peer').endpoint;
    const tcp = (from: 'vm' | 'peer', sport: number, dport: number, flags: ('SYN' | 'ACK')[], seq = 1000, ack = 0) =>
      F.tcpFrame({
        srcMac: from === 'vm' ? VM_MAC : PEER_MAC,
        dstMac: from === 'vm' ? PEER_MAC : VM_MAC,
        srcIp: from === 'vm' ? '10.77.0.2' : '10.77.0.9',
        dstIp: from === 'vm' ? '10.77.0.9' : '10.77.0.2',
        sport,
        dport,
        flags,
        seq,
        ack,
      });
    const send = async (from: 'vm' | 'peer', f: Uint8Array) => (await deliver(from === 'vm' ? vm : peer, from === 'vm' ? peer : vm, [f], { key: canonicalFrame, quietMs: 40 })).arrived[0];
    const steps: [string, 'vm' | 'peer', Uint8Array, 'accept' | 'drop', Parameters<typeof evaluate>[3]][] = [
      ['peer opens TCP 80 on the VM (SYN)', 'peer', tcp('peer', 40000, 80, ['SYN']), 'accept', { conn: { state: 'new', direction: 'original' } }],
      ['the VM answers (SYN-ACK, reply of an established flow)', 'vm', tcp('vm', 80, 40000, ['SYN', 'ACK'], 5000, 1001), 'accept', { conn: { state: 'established', direction: 'reply' } }],
      ['peer continues (ACK)', 'peer', tcp('peer', 40000, 80, ['ACK'], 1001, 5001), 'accept', { conn: { state: 'established', direction: 'original' } }],
      ['the VM opens TCP 80 on the peer', 'vm', tcp('vm', 41000, 80, ['SYN']), 'drop', { conn: { state: 'new', direction: 'original' } }],
      ['peer opens TCP 22 on the VM', 'peer', tcp('peer', 40001, 22, ['SYN']), 'drop', { conn: { state: 'new', direction: 'original' } }],
    ];
    for (const [what, from, frame, want, opts] of steps) {
      expect(evaluate(policy, from === 'vm' ? 'out' : 'in', frame, opts).verdict, `evaluator: ${what}`).toBe(want);
      expect(await send(from, frame), `kernel: ${what}`).toBe(want === 'accept');
    }
  });
});

if (!isRoot) console.warn(`SKIP nft differential: ${ROOT_REASON}`);
