// --backend both: the nftables second line leaves out the L2 tests it cannot
// express (second-line.ts) and the rest is reported (layers.ts). The
// approximation must never make nft drop a frame the full L2 policy accepts:
// checked with the reference evaluator on every frame of the generated corpus
// (a frame is delivered when eBPF, the full L2 policy, and nft both accept).
import { describe, expect, it } from 'vitest';
import { generationOf, lowerNftFor } from '../../src/compile.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { nftL2Gap, secondLinePolicy } from '../../src/backends/nft/second-line.js';
import { oneLayerReport, portOneLayerRules, portRulesOf } from '../../src/backends/layers.js';
import { evalL2 } from '../../src/ir/eval/chains.js';
import { decodeFrame } from '../../src/ir/eval/frame.js';
import type { InterfacePolicy, PolicyIR } from '../../src/ir/types.js';
import { generateCorpus } from '../../src/lab/frames/corpus.js';
import * as F from '../../src/lab/frames/build.js';
import { nwfErrorOf } from '../support/cli.js';
import { policyFor } from '../support/policy.js';

// every verdict with a gratuitous test: drop, accept, return in a sub-chain and in the root chain, continue
const SUB = `<filter name='g' chain='arp' priority='-500'>
  <rule action='return' direction='out' priority='100'><arp gratuitous='true' arpsrcipaddr='$IP'/></rule>
  <rule action='drop' direction='out' priority='200'><arp gratuitous='true'/></rule>
  <rule action='accept' direction='out' priority='300'><arp opcode='Request' arpsrcipaddr='$IP'/></rule>
  <rule action='drop' direction='out' priority='400'><arp/></rule>
  <rule action='accept' direction='in' priority='100'><arp gratuitous='true'/></rule>
  <rule action='drop' direction='in' priority='200'><arp opcode='Request'/></rule>
</filter>`;
const ROOT = `<filter name='f' chain='root'>
  <rule action='continue' direction='out' priority='-900'><arp gratuitous='true' match='no'/></rule>
  <rule action='return' direction='in' priority='-800'><rarp gratuitous='true'/></rule>
  <rule action='drop' direction='in' priority='-700'><rarp/></rule>
  <rule action='accept' direction='out' priority='-600'><tcp dstportstart='22'/></rule>
  <filterref filter='g'/>
  <rule action='drop' direction='out' priority='0'><arp/></rule>
</filter>`;

const VM = '52:54:00:00:00:01';
const policy = (iface = 'vnet0', mac = VM): InterfacePolicy => policyFor('f', { IP: '10.0.0.2' }, [ROOT, SUB], { iface, mac });
const ir = (...ps: InterfacePolicy[]): PolicyIR => ({ version: 1, interfaces: ps, notes: [] });
const ids = (p: InterfacePolicy, dir: 'out' | 'in'): string[] => [
  ...p.l2[dir].root.flatMap((e) => (e.kind === 'rule' ? [`${e.rule.id}:${e.rule.verdict}`] : [`jump ${e.chain}`])),
  ...p.l2[dir].chains.flatMap((c) => c.rules.map((r) => `${c.name}:${r.id}:${r.verdict}`)),
];

describe('nft as the second line (--backend both)', () => {
  it('nft alone refuses the gratuitous test (NWF1402, saying why and pointing to --backend both)', () => {
    const e = nwfErrorOf(() => lowerNftFor('nft', ir(policy()), { strict: true }));
    expect(e.code).toBe('NWF1402');
    expect(e.message).toMatch(/gratuitous.*never with another field/);
    expect(e.details.hint).toContain('--backend both');
  });

  it('drop and continue are left out, accept and return keep their place without the test (a sub-chain return accepts)', () => {
    const p = policy();
    const { policy: q, gaps } = secondLinePolicy(p);
    expect(ids(q, 'out')).toEqual(['jump arp', 'f/5:drop', 'arp:g/1:accept', 'arp:g/3:accept', 'arp:g/4:drop']);
    expect(ids(q, 'in')).toEqual(['f/2:return', 'f/3:drop', 'jump arp', 'arp:g/5:accept', 'arp:g/6:drop']);
    expect(ids(p, 'out')).toContain('f/1:continue');
    expect(gaps.map((g) => `${g.direction} ${g.rule.id} ${g.nft}`).sort()).toEqual([
      'in f/2 accepts without the test',
      'in g/5 accepts without the test',
      'out f/1 leaves it out',
      'out g/1 accepts without the test',
      'out g/2 leaves it out',
    ]);
    for (const dir of ['out', 'in'] as const) {
      for (const e of q.l2[dir].root) if (e.kind === 'rule') expect(nftL2Gap(e.rule.match)).toBeUndefined();
      for (const c of q.l2[dir].chains) for (const r of c.rules) expect(nftL2Gap(r.match)).toBeUndefined();
    }
  });

  it('a policy nft expresses whole is lowered as is', () => {
    const p = policyFor('clean-traffic', { IP: '10.0.0.2' });
    expect(secondLinePolicy(p).policy).toBe(p);
    const both = lowerNftFor('both', ir(p));
    const nft = lowerNftFor('nft', ir(p));
    expect(both.parts.shapes).toEqual(nft.parts.shapes);
    // the same dispatch verdicts, behind the eBPF gate of the tap (backends/nft/skeleton.ts)
    const text = (l: typeof both) => printNftText(l.batch).split('\n');
    const entries = (l: typeof both, map: string) => text(l).filter((x) => x.startsWith(`add element bridge nwf_fast ${map} `)).map((x) => x.replace(/^add element bridge nwf_fast \S+ /, ''));
    expect(entries(both, 'gate_from_vm')).toEqual(entries(nft, 'from_vm'));
    expect(entries(both, 'gate_to_vm')).toEqual(entries(nft, 'to_vm'));
    expect(entries(both, 'from_vm')).toEqual(['{ "vnet0" : goto gatec-out }']);
    expect(entries(both, 'to_vm')).toEqual(['{ "vnet0" : goto gatec-in }']);
    expect(text(nft).join('\n')).not.toContain('gate');
    // the fast paths: in the base chain under nft; behind the gate under both, in the shape (opt/fast-base.ts)
    const fastElems = (l: typeof both) => text(l).filter((x) => /^add element bridge nwf_fast (fast_|sf-)/.test(x)).map((x) => x.split(' ')[4]?.replace(/^sf-[0-9a-f]+-/, 'sf-'));
    expect(fastElems(nft)).toEqual(['fast_ip4', 'fast_arp']);
    expect(fastElems(both)).toEqual(['sf-ip4', 'sf-arp']);
    // the rest is the same
    const rest = (l: typeof both) => text(l).filter((x) => !/gate|_vm |cnt-(out|in)-unprotected \{ "vnet0"|^add element bridge nwf_fast (fast_|sf-)/.test(x));
    expect(rest(both)).toEqual(rest(nft));
  });

  it('the nft part under both has no rule the eBPF programs enforce alone, and every other rule', () => {
    const text = JSON.stringify(lowerNftFor('both', ir(policy())).batch);
    for (const id of ['f/2', 'f/3', 'f/4', 'f/5', 'g/1', 'g/3', 'g/4', 'g/5', 'g/6']) expect(text).toContain(`"${id}"`);
    for (const id of ['f/1', 'g/2']) expect(text).not.toContain(`"${id}"`);
  });

  it('never drops a frame the full L2 policy accepts (evaluator, whole corpus), and lets through what only eBPF drops', () => {
    const p = policy();
    const q = secondLinePolicy(p).policy;
    const corpus = generateCorpus(p);
    const extra = [
      { direction: 'out' as const, frame: F.arpFrame({ srcMac: VM, dstMac: 'ff:ff:ff:ff:ff:ff', sha: VM, spa: '10.0.0.9', tpa: '10.0.0.9', tha: '00:00:00:00:00:00', op: 'Request' }) },
      { direction: 'out' as const, frame: F.arpFrame({ srcMac: VM, dstMac: 'ff:ff:ff:ff:ff:ff', sha: VM, spa: '10.0.0.2', tpa: '10.0.0.2', tha: '00:00:00:00:00:00', op: 'Reply' }) },
    ];
    let wider = 0;
    let n = 0;
    for (const c of [...corpus, ...extra]) {
      const f = decodeFrame(c.frame);
      if (!f) continue;
      n++;
      const full = evalL2(p, c.direction, f, []).verdict;
      const nft = evalL2(q, c.direction, f, []).verdict;
      if (full === 'accept') expect(nft, `${'name' in c ? c.name : 'extra'}`).toBe('accept');
      else if (nft === 'accept') wider++;
    }
    expect(n).toBeGreaterThan(100);
    expect(wider).toBeGreaterThan(0);
  });

  it('reports the rules only one layer enforces, per rule with its ports, in the manifest and per port', () => {
    const a = policy('vnet0', VM);
    const b = policy('vnet1', '52:54:00:00:00:02');
    const report = oneLayerReport(ir(a, b));
    const line = (r: { layer: string; rule: string; directions: string[] }): string => `${r.layer} ${r.rule} ${r.directions.join(',')}`;
    expect(report.map(line).sort()).toEqual(['ebpf f/1 fromVm', 'ebpf f/2 toVm', 'ebpf g/1 fromVm', 'ebpf g/2 fromVm', 'ebpf g/5 toVm', 'nft f/4 fromVm,toVm,toHost'].sort());
    for (const r of report) expect(r.interfaces).toEqual(['vnet0', 'vnet1']);
    expect(report.find((r) => r.rule === 'g/2')?.other).toBe('nft leaves it out');
    expect(report.find((r) => r.rule === 'g/1')?.other).toBe('nft accepts without the test');
    expect(report.find((r) => r.rule === 'f/4')?.why).toMatch(/L2 \(ebtables\) layer only/);
    expect(portRulesOf(report, 'vnet1')).toEqual(portOneLayerRules(b));
    const g = generationOf(ir(a, b), 'both');
    expect(g.manifest.oneLayer).toEqual(report);
    expect(generationOf(ir(policyFor('clean-traffic', { IP: '10.0.0.2' })), 'both').manifest.oneLayer).toBeUndefined();
  });

  it('a negated ICMPv6 type and code range is left to eBPF too', () => {
    const m = { proto: 'ipv6' as const, protocol: { value: 58, neg: false }, icmpType: { lo: 128, hi: 129, neg: true }, icmpCode: { lo: 0, hi: 3, neg: true } };
    const gap = nftL2Gap(m);
    expect(gap?.what).toContain('ICMPv6');
    expect(gap?.without).toEqual({ proto: 'ipv6', protocol: { value: 58, neg: false } });
    expect(nftL2Gap({ ...m, icmpCode: { lo: 0, hi: 255, neg: true } })).toBeUndefined();
  });

  it('a port whose policy the eBPF programs cannot hold (over 1024 values in a group) and nft expresses whole is enforced by nft alone', () => {
    const ips = Array.from({ length: 1100 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.1`);
    const big = policyFor('clean-traffic', { IP: ips }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' });
    const small = policyFor('clean-traffic', { IP: '10.0.0.2' });
    const g = generationOf(ir(small, big), 'both');
    expect(g.manifest.interfaces.map((i) => i.iface)).toEqual(['vnet0', 'vnet1']);
    expect(g.manifest.failed).toEqual([]);
    expect(g.bpf?.interfaces.map((i) => i.iface)).toEqual(['vnet0']);
    expect(g.manifest.oneLayer).toHaveLength(1);
    const r = g.manifest.oneLayer?.[0];
    expect([r?.layer, r?.rule, r?.interfaces]).toEqual(['nft', '*', ['vnet1']]);
    expect(r?.why).toMatch(/1100 value combinations/);
    // the nft part of that port is its whole policy, as under nft alone
    expect(g.nft.parts.ports.find((p) => p.iface === 'vnet1')).toEqual(generationOf(ir(small, big), 'nft').nft.parts.ports.find((p) => p.iface === 'vnet1'));
    // bpf alone still refuses it; a port with a gap nft cannot express and over the eBPF limit fails
    expect(nwfErrorOf(() => generationOf(ir(big), 'bpf')).code).toBe('NWF1102');
    const both = policyFor('f', { IP: ips }, [ROOT, SUB], { iface: 'vnet2', mac: '52:54:00:00:00:03' });
    expect(nwfErrorOf(() => generationOf(ir(both), 'both')).code).toBe('NWF1102');
    expect(generationOf(ir(both), 'both', [], { partial: true }).manifest.failed.map((f) => [f.iface, f.code])).toEqual([['vnet2', 'NWF1102']]);
  }, 120_000); // six compiles of an 1100-address port (about 2 s of CPU each; a loaded machine stretches them past the default limit)

  it('a learning port enforced by nft alone learns in nft (no program would ever copy an address for it)', () => {
    const dsts = Array.from({ length: 1100 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.9`);
    const LEARN = `<filter name='lf' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='out' priority='500'><ip dstipaddr='$DST'/></rule>
</filter>`;
    const learning = policyFor('lf', { DST: dsts }, [LEARN], { iface: 'vnet3', mac: '52:54:00:00:00:04' });
    expect(learning.learning?.mode).toBe('any');
    const g = generationOf(ir(learning), 'both');
    expect(g.bpf?.interfaces.map((i) => i.iface) ?? []).toEqual([]);
    // its nft part is the one --backend nft gives: the packet path learns into its size-1 set
    const part = g.nft.parts.ports.find((p) => p.iface === 'vnet3');
    expect(part).toEqual(generationOf(ir(learning), 'nft').nft.parts.ports.find((p) => p.iface === 'vnet3'));
    expect(JSON.stringify(part)).toContain('lrn-w-vnet3');
  }, 120_000);
});
