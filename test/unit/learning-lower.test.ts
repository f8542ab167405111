// IP learning in the backends, without a kernel: what a learning port's nft
// part and eBPF plan hold, seeds, and reading learned sets back.
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { seedOf } from '../../src/backends/nft/learn.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { encodeConfig, planInterface } from '../../src/backends/bpf/plan.js';
import { concatElements } from '../../src/host/learn/kernel.js';
import { learnKey, type LearnedEntry } from '../../src/ir/learning.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { policyFor } from '../support/policy.js';

const UUID = '00000000-0000-0000-0000-000000000001';
const MAC = '52:54:00:00:00:01';
const ir = (learner?: 'copy', seeds?: Map<string, LearnedEntry>) => {
  const p = policyFor('clean-traffic', {});
  const pol: PolicyIR = { version: 1, interfaces: [p], notes: [] };
  return lowerToNft(pol, { strict: true, ...(learner ? { learner } : {}), ...(seeds ? { seeds } : {}) });
};
const entry = (ip: string, o: Partial<LearnedEntry> = {}): LearnedEntry => ({ owner: { name: 'vm', uuid: UUID }, mac: MAC, mode: 'any', addresses: [{ ip, source: 'state' }], ...o });

describe('IP learning, nft lowering', () => {
  it('a learning port dispatches to its learning chains, which learn into a size-1 set, lrn-addr and lrn-locked', () => {
    const text = printNftText(ir().batch);
    expect(text).toContain('add element bridge nwf_fast from_vm { "vnet0" : jump lrnc-out-vnet0 }');
    expect(text).toContain('add set bridge nwf_fast lrn-w-vnet0 { type ipv4_addr; flags timeout; size 1; }');
    expect(text).toMatch(/lrnc-out-vnet0 ether type 0x800 ip saddr != 0\.0\.0\.0 ip saddr & 224\.0\.0\.0 != 224\.0\.0\.0 add @lrn-w-vnet0 \{ ip saddr \} add @lrn-addr \{ meta iifname \. ip saddr \} add @lrn-locked \{ meta iifname \} goto sh-/);
    // the policy's $IP tests look the learned address up
    expect(text).toContain('meta iifname . ip saddr @lrn-addr return');
    expect(text).toContain('meta iifname . arp saddr ip @lrn-addr return');
    // the JSON form is a set statement
    expect(JSON.stringify(toNftJson(ir().batch))).toContain('{"set":{"op":"add","elem":{"concat":[{"meta":{"key":"iifname"}},{"payload":{"protocol":"ip","field":"saddr"}}]},"set":"@lrn-addr"}}');
    expect(ir().parts.ports[0]?.learn).toEqual({ mode: 'any', owner: 'vm', uuid: UUID, mac: MAC });
  });

  it('under --backend both the nft line never learns on its own', () => {
    const text = printNftText(ir('copy').batch);
    expect(text).toContain('jump lrnc-out-vnet0');
    expect(text).not.toMatch(/lrnc-out-vnet0 .*add @/);
    expect(text).not.toContain('lrn-w-vnet0');
  });

  it('a seed locks the port in its own part; dhcp leases expire; another mode or MAC is no seed', () => {
    const seeds = new Map([[learnKey(UUID, MAC), entry('10.0.0.5')]]);
    const text = printNftText(ir(undefined, seeds).batch);
    expect(text).toContain('add element bridge nwf_fast lrn-w-vnet0 { 10.0.0.5 }');
    expect(text).toContain('add element bridge nwf_fast lrn-addr { "vnet0" . 10.0.0.5 }');
    expect(text).toContain('add element bridge nwf_fast lrn-locked { "vnet0" }');
    const p = policyFor('clean-traffic', {});
    expect(seedOf(p, new Map([[learnKey(UUID, MAC), entry('10.0.0.5', { mode: 'dhcp' })]]))).toEqual([]);
    expect(seedOf(p, new Map([[learnKey(UUID, '52:54:00:00:00:02'), entry('10.0.0.5')]]))).toEqual([]);
    const d = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' });
    const leases = new Map([[learnKey(UUID, MAC), { ...entry(''), mode: 'dhcp' as const, addresses: [{ ip: '10.0.0.6', expires: '2026-01-01T00:00:00Z', source: 'state' as const }, { ip: '10.0.0.7', expires: '2026-12-31T00:00:00Z', source: 'state' as const }] }]]);
    expect(seedOf(d, leases, Date.parse('2026-06-01T00:00:00Z'))).toEqual(['10.0.0.7']);
  });

  it('an L3 rule testing the learned $IP fails the port closed', () => {
    const f = `<filter name='l3ip' chain='root'><rule action='accept' direction='out'><tcp srcipaddr='$IP'/></rule><filterref filter='clean-traffic'/></filter>`;
    const p = policyFor('l3ip', {}, [f]);
    const r = lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: false });
    expect(r.failed.map((x) => x.code)).toEqual(['NWF1206']);
  });

  it('dhcp is resolved but not lowered yet: the port fails closed in both backends', () => {
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: '10.0.0.1' });
    expect(lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: false }).failed.map((x) => x.code)).toEqual(['NWF1206']);
    expect(() => planInterface(p)).toThrow(/not implement/);
  });
});

describe('IP learning, eBPF plan', () => {
  it('learned tests take no config slots; the shape learns; the config ends with the MAC', () => {
    const learning = planInterface(policyFor('clean-traffic', {}));
    const fixed = planInterface(policyFor('clean-traffic', { IP: '10.0.0.5' }));
    expect(learning.shape.learn).toBe('any');
    expect(learning.shapeId).not.toBe(fixed.shapeId);
    const learnedTests = learning.groups.flatMap((g) => g.template.tests.filter((t) => t.learned).map((t) => t.field));
    expect(learnedTests.sort()).toEqual(['arp.spa', 'ip4.src']);
    const cfg = encodeConfig(learning);
    expect(Buffer.from(cfg.subarray(cfg.length - 8, cfg.length - 2)).toString('hex')).toBe('525400000001');
  });
});

describe('reading learned sets back', () => {
  it('takes concatenated elements by interface, with or without element metadata', () => {
    const m = concatElements([{ concat: ['vnet0', '10.0.0.2'] }, { elem: { val: { concat: ['vnet1', '10.0.0.3'] }, timeout: 60 } }, 'junk']);
    expect([...m]).toEqual([
      ['vnet0', ['10.0.0.2']],
      ['vnet1', ['10.0.0.3']],
    ]);
  });
});
