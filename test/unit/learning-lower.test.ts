// IP learning in the backends, without a kernel: what a learning port's nft
// part and eBPF plan hold, seeds, and reading learned sets back.
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { ageLearnedSeeds, DEFAULT_DHCP_KERNEL_LEASE, nftDhcpNote, portSeedOf, portSnoops, seedOf } from '../../src/backends/nft/learn.js';
import { DEFAULT_SKELETON_CONFIG, lowerSkeleton, withSnoop } from '../../src/backends/nft/skeleton.js';
import { diffParts, setIndexOf, type Part } from '../../src/host/load-plan.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { encodeConfig, LRN_SERVERS, planInterface } from '../../src/backends/bpf/plan.js';
import { emitPolicyHeader } from '../../src/backends/bpf/emit.js';
import { dhcpSeedOf, lowerBpfInterface } from '../../src/backends/bpf/lower.js';
import { decodeLeases, deadlineOf, encodeLeases, expiryOf, INFINITE_EXPIRES, INFINITE_NS } from '../../src/host/learn/seed.js';
import { concatElements, leaseElements } from '../../src/host/learn/kernel.js';
import { defaultConfigText, parseConfig } from '../../src/host/config.js';
import { expectFile, runCli } from '../support/fixture-cases.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { learnKey, type LearnedEntry } from '../../src/ir/learning.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { bindingXml, policyFor } from '../support/policy.js';

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

  it('an L3 rule testing the learned $IP is lowered (a mark bit: test/unit/learning-l3.test.ts)', () => {
    const f = `<filter name='l3ip' chain='root'><rule action='accept' direction='out'><tcp srcipaddr='$IP'/></rule><filterref filter='clean-traffic'/></filter>`;
    const p = policyFor('l3ip', {}, [f]);
    const r = lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: false });
    expect(r.failed).toEqual([]);
  });

});

describe('IP learning with dhcp, nft lowering', () => {
  const dhcp = (params: Record<string, string> = { DHCPSERVER: '10.0.0.1' }, o: Parameters<typeof lowerToNft>[1] = {}) =>
    lowerToNft({ version: 1, interfaces: [policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', ...params })], notes: [] }, { strict: true, ...o });
  const portText = (l: ReturnType<typeof lowerToNft>) => printNftText(l.parts.ports[0]?.commands ?? []);

  it("golden: the port's part (lease set, DHCPSERVER set, DHCP-only learning chains, snoop chain, own chains reading the leases)", () => {
    const l = dhcp();
    expect(l.parts.shapes).toEqual([]); // a dhcp port shares no shape: its $IP tests read its own lease set
    expect(l.parts.ports[0]?.learn).toEqual({ mode: 'dhcp', owner: 'vm', uuid: UUID, mac: MAC });
    expectFile(join(import.meta.dirname, '..', 'fixtures', 'nft', 'learning-dhcp-port.nft'), portText(l));
    const text = printNftText(l.batch);
    // the skeleton's snoop base chain runs after the postrouting dispatch (300): only accepted ACKs teach
    expect(text).toContain('add chain bridge nwf_fast lrn_snoop { type filter hook postrouting priority 301; policy accept; }');
    expect(text).toContain('add rule bridge nwf_fast lrn_snoop ether type 0x800 udp sport 67 udp dport 68 @th,64,8 2 @th,1952,32 0x63825363 @th,1984,24 0x350105 meta oifname vmap @snoop_map');
    expect(text).toContain('ip saddr @lrn-lease-vnet0 return');
    expect(text).toContain('arp saddr ip @lrn-lease-vnet0 return');
    expect(text).not.toContain('@lrn-addr return');
    // JSON: the raw yiaddr into the typed single-key set, with the kernel lease time
    expect(JSON.stringify(toNftJson(l.batch))).toContain('{"set":{"op":"update","elem":{"elem":{"val":{"payload":{"base":"th","offset":192,"len":32}},"timeout":3600}},"set":"@lrn-lease-vnet0"}}');
  });

  it('without DHCPSERVER any server teaches; dhcp_kernel_lease sets the lease time', () => {
    const text = portText(dhcp({}, { dhcpKernelLease: 120 }));
    expect(text).not.toContain('lsrv-');
    expect(text).not.toContain('ip saddr @lsrv');
    expect(text).toContain('update @lrn-lease-vnet0 { @th,192,32 timeout 120s } update @lrn-locked { meta oifname timeout 120s }');
    expect(() => dhcp({}, { dhcpKernelLease: 0 })).toThrow(/dhcp_kernel_lease/);
  });

  it('under --backend both the nft line neither snoops nor releases: it waits for the copy', () => {
    const text = portText(dhcp(undefined, { learner: 'copy' }));
    expect(text).toContain('add set bridge nwf_fast lrn-lease-vnet0');
    expect(text).not.toContain('snoop_map');
    expect(text).not.toContain('lrns-');
    expect(text).not.toContain('delete @');
    expect(text).toContain('add rule bridge nwf_fast lrnc-out-vnet0 meta iifname @lrn-locked goto own-out-vnet0');
  });

  it('seeds: unexpired leases with the seconds they have left, the 4 latest-expiring; the lock until the last ends', () => {
    const now = Date.parse('2026-06-01T00:00:00Z');
    const at = (s: number) => new Date(now + s * 1000).toISOString();
    const addresses = [
      { ip: '10.0.0.1', expires: at(-5) },
      { ip: '10.0.0.2', expires: at(0.5) },
      { ip: '10.0.0.3', expires: at(100) },
      { ip: '10.0.0.4', expires: at(50.9) },
      { ip: '10.0.0.5', expires: at(300) },
      { ip: '10.0.0.6', expires: at(20) },
      { ip: '10.0.0.7', expires: at(10) },
      { ip: '10.0.0.8' },
    ].map((a) => ({ ...a, source: 'state' as const }));
    const seeds = new Map([[learnKey(UUID, MAC), entry('', { mode: 'dhcp', addresses })]]);
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' });
    expect(portSeedOf(p, seeds, now)).toEqual([
      { ip: '10.0.0.5', timeout: 300 },
      { ip: '10.0.0.3', timeout: 100 },
      { ip: '10.0.0.4', timeout: 50 },
      { ip: '10.0.0.6', timeout: 20 },
    ]);
    // an `any` entry is no seed of a dhcp port; an `any` port keeps its plain address seed
    expect(portSeedOf(p, new Map([[learnKey(UUID, MAC), entry('10.0.0.9')]]), now)).toEqual([]);
    expect(portSeedOf(policyFor('clean-traffic', {}), new Map([[learnKey(UUID, MAC), entry('10.0.0.9')]]), now)).toEqual(['10.0.0.9']);
    const l = lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: true, seeds: new Map([[learnKey(UUID, MAC), entry('', { mode: 'dhcp', addresses: addresses.slice(2, 4).map((a) => ({ ...a, expires: new Date(Date.now() + Date.parse(a.expires as string) - now).toISOString() })) })]]) });
    const text = portText(l);
    expect(text).toMatch(/add element bridge nwf_fast lrn-lease-vnet0 \{ 10\.0\.0\.3 timeout (99|100)s, 10\.0\.0\.4 timeout (49|50)s \}/);
    expect(text).toMatch(/add element bridge nwf_fast lrn-locked \{ "vnet0" timeout (99|100)s \}/);
    expect(JSON.stringify(toNftJson(l.batch))).toMatch(/\{"elem":\{"val":"10\.0\.0\.3","timeout":(99|100)\}\}/);
  });

  it('a stored part\'s seeds age: less time left, ended ones left out (a generation loaded later than compiled)', () => {
    const addresses = [{ ip: '10.0.0.3', expires: new Date(Date.now() + 100_500).toISOString(), source: 'state' as const }, { ip: '10.0.0.4', expires: new Date(Date.now() + 20_500).toISOString(), source: 'state' as const }];
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' });
    const part = lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: true, seeds: new Map([[learnKey(UUID, MAC), entry('', { mode: 'dhcp', addresses })]]) }).parts.ports[0];
    const aged = printNftText(ageLearnedSeeds(part?.commands ?? [], 30));
    expect(aged).toContain('add element bridge nwf_fast lrn-lease-vnet0 { 10.0.0.3 timeout 70s }');
    expect(aged).toContain('add element bridge nwf_fast lrn-locked { "vnet0" timeout 70s }');
    expect(aged).not.toContain('10.0.0.4');
    expect(printNftText(ageLearnedSeeds(part?.commands ?? [], 200))).not.toMatch(/add element bridge nwf_fast (lrn-lease-vnet0|lrn-locked) /);
    // everything else as it was
    expect(ageLearnedSeeds(part?.commands ?? [], 200).length).toBe((part?.commands.length ?? 0) - 2);
  });

  it('reading leases back: address and wall-clock expiry from the listed element', () => {
    const now = Date.parse('2026-06-01T00:00:00Z');
    expect(leaseElements([{ elem: { val: '10.0.0.2', timeout: 3600, expires: 3000 } }, '10.0.0.3', { elem: { val: '10.0.0.4' } }], now)).toEqual([{ ip: '10.0.0.2', expires: '2026-06-01T00:50:00.000Z' }]);
  });

  it('compile says what the nft path cannot do (a note on stderr), and only for dhcp ports under nft', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-dhcp-cli-'));
    try {
      writeFileSync(join(dir, 'vnet0.xml'), bindingXml('vnet0', MAC, 'clean-traffic', { CTRL_IP_LEARNING: 'dhcp' }));
      writeFileSync(join(dir, 'vnet1.xml'), bindingXml('vnet1', '52:54:00:00:00:02', 'clean-traffic', {}));
      const r = await runCli(['compile', '--binding', join(dir, 'vnet0.xml'), '--binding', join(dir, 'vnet1.xml')], dir);
      expect(r.code).toBe(0);
      expect(r.err).toBe(`note: ${nftDhcpNote(['vnet0'])}\n`);
      expect(r.err).toMatch(/first option is 53 .* stays DHCP-only \(fails closed\)\. The lease time is not read: every lease lasts dhcp_kernel_lease \(3600 s\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('config: dhcp_kernel_lease', () => {
    expect(parseConfig('dhcp_kernel_lease = 600\n', 'f.conf').dhcpKernelLeaseS).toBe(600);
    expect(parseConfig('', 'f.conf').dhcpKernelLeaseS).toBe(DEFAULT_DHCP_KERNEL_LEASE);
    expect(() => parseConfig('dhcp_kernel_lease = 0\n', 'f.conf')).toThrow(/dhcp_kernel_lease/);
    expect(defaultConfigText()).toContain('dhcp_kernel_lease = 3600');
  });
});

describe('the snoop base chain: only while a port learns from DHCPACKs in nft', () => {
  const SNOOP_CHAIN = 'add chain bridge nwf_fast lrn_snoop';
  const pol = (...ps: ReturnType<typeof policyFor>[]): PolicyIR => ({ version: 1, interfaces: ps, notes: [] });
  const anyPort = () => policyFor('clean-traffic', {}, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' });
  const staticPort = () => policyFor('clean-traffic', { IP: '10.0.0.9' }, [], { iface: 'vnet2', mac: '52:54:00:00:00:03' });
  const dhcpPort = () => policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: '10.0.0.1' });

  it('a generation without a dhcp port has neither the chain nor its map; one with a dhcp port has both', () => {
    const none = printNftText(lowerToNft(pol(anyPort(), staticPort()), { strict: true }).batch);
    expect(none).not.toContain('lrn_snoop');
    expect(none).not.toContain('snoop_map');
    expect(none).toContain('add set bridge nwf_fast lrn-locked'); // the learned state stays
    const l = lowerToNft(pol(dhcpPort(), anyPort(), staticPort()), { strict: true });
    const text = printNftText(l.batch);
    expect(text).toContain(`${SNOOP_CHAIN} { type filter hook postrouting priority 301; policy accept; }`);
    expect(text).toContain('add map bridge nwf_fast snoop_map { type ifname : verdict; }');
    expect(l.parts.ports.map((p) => [p.iface, portSnoops(p)])).toEqual([
      ['vnet0', true],
      ['vnet1', false],
      ['vnet2', false],
    ]);
  });

  it('under --backend both the eBPF program learns: no chain, unless a dhcp port has no program (nft learns for it)', () => {
    expect(printNftText(lowerToNft(pol(dhcpPort()), { strict: true, learner: 'copy' }).batch)).not.toContain('lrn_snoop');
    const noProgram = lowerToNft(pol(dhcpPort()), { strict: true, learner: 'copy', noProgram: new Set(['vnet0']) });
    expect(printNftText(noProgram.batch)).toContain(SNOOP_CHAIN);
    expect(printNftText(lowerToNft(pol(dhcpPort()), { strict: true, mode: 'dispatch' }).batch)).not.toContain('lrn_snoop');
  });

  it('withSnoop follows the ports, whatever the configuration said', () => {
    const parts = (...ps: ReturnType<typeof policyFor>[]) => lowerToNft(pol(...ps), { strict: true }).parts.ports;
    expect(withSnoop({ ...DEFAULT_SKELETON_CONFIG, snoop: true }, parts(anyPort())).snoop).toBeUndefined();
    expect(withSnoop(DEFAULT_SKELETON_CONFIG, parts(anyPort(), dhcpPort())).snoop).toBe(true);
  });

  it('a per-port change that adds the first dhcp port adds the chain, its map and rule in the same transaction; removing the last removes them', () => {
    const before = lowerToNft(pol(anyPort()), { strict: true }).parts;
    const after = lowerToNft(pol(anyPort(), dhcpPort()), { strict: true }).parts;
    const asParts = (p: typeof before): Part[] => [
      { id: 'skeleton', commands: lowerSkeleton(withSnoop(DEFAULT_SKELETON_CONFIG, p.ports), []) },
      ...p.shapes.map((x) => ({ id: `shape ${x.name}`, commands: x.commands })),
      ...p.ports.map((x) => ({ id: `port ${x.iface}`, commands: x.commands })),
    ];
    const diff = (a: typeof before, b: typeof before) => {
      const pa = asParts(a);
      const pb = asParts(b);
      return diffParts(pa, pb, setIndexOf([...pa, ...pb].map((x) => x.commands)));
    };
    const added = diff(before, after);
    if (!added) throw new Error('not incremental');
    const apply = printNftText(added.apply);
    expect(apply).toContain(SNOOP_CHAIN);
    expect(apply).toContain('add map bridge nwf_fast snoop_map');
    expect(apply).toContain('add rule bridge nwf_fast lrn_snoop ');
    expect(apply).toContain('add element bridge nwf_fast snoop_map { "vnet0" : goto lrns-vnet0 }');
    expect(printNftText(added.cleanup)).not.toContain('snoop');
    const removed = diff(after, before);
    if (!removed) throw new Error('not incremental');
    expect(printNftText(removed.apply)).not.toContain(SNOOP_CHAIN);
    const cleanup = printNftText(removed.cleanup);
    expect(cleanup).toContain('delete chain bridge nwf_fast lrn_snoop');
    expect(cleanup).toContain('delete map bridge nwf_fast snoop_map');
    // a change between generations that both have dhcp ports leaves the skeleton alone
    const two = lowerToNft(pol(anyPort(), dhcpPort(), staticPort()), { strict: true }).parts;
    expect(diff(after, two)?.changedParts).not.toContain('skeleton');
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

  it('dhcp: its own shape (NWF_LEARN_DHCP, UDP ports parsed); the config ends with the MAC, the DHCPSERVER count and addresses', () => {
    const plan = planInterface(policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: ['10.0.0.1', '10.0.0.2'] }));
    const anyServer = planInterface(policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' }));
    expect(plan.shape.learn).toBe('dhcp');
    expect(plan.shapeId).toBe(anyServer.shapeId); // servers are values
    expect(plan.shapeId).not.toBe(planInterface(policyFor('clean-traffic', {})).shapeId);
    const h = emitPolicyHeader(plan.shape, plan.shapeId);
    expect(h).toContain('#define NWF_LEARN_DHCP 1');
    expect(h).toContain('#define NWF_USE_IP4_L4 1');
    expect(h).toContain(`__u64 lrn_srv[NWF_LRN_SERVERS];`);
    expect(h).not.toContain('NWF_LEARN_ANY');
    const cfg = Buffer.from(encodeConfig(plan));
    const at = cfg.length - 8 * (2 + LRN_SERVERS);
    expect(cfg.subarray(at, at + 6).toString('hex')).toBe('525400000001');
    expect(cfg.readBigUInt64LE(at + 8)).toBe(2n);
    expect([...cfg.subarray(at + 16, at + 20)]).toEqual([10, 0, 0, 1]);
    expect([...cfg.subarray(at + 24, at + 28)]).toEqual([10, 0, 0, 2]);
    expect(Buffer.from(encodeConfig(anyServer)).readBigUInt64LE(at + 8)).toBe(0n);
  });

  it('dhcp: more DHCPSERVER values than the program checks, or one that is not IPv4, fail the port closed', () => {
    const many = Array.from({ length: LRN_SERVERS + 1 }, (_, i) => `10.0.1.${i + 1}`);
    expect(() => planInterface(policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: many }))).toThrow(/at most 16/);
  });

  it('dhcp seeds: unexpired leases with their expiry, at most 4; none for another mode', () => {
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp' });
    const at = (ip: string, expires: string) => ({ ip, expires, source: 'state' as const });
    const leases = entry('', { mode: 'dhcp', addresses: [at('10.0.0.6', '2026-01-01T00:00:00Z'), ...[7, 8, 9, 10, 11].map((n) => at(`10.0.0.${n}`, '2026-12-31T00:00:00Z'))] });
    const now = Date.parse('2026-06-01T00:00:00Z');
    expect(dhcpSeedOf(p, new Map([[learnKey(UUID, MAC), leases]]), now)).toEqual([7, 8, 9, 10].map((n) => ({ ip: `10.0.0.${n}`, expires: '2026-12-31T00:00:00Z' })));
    expect(dhcpSeedOf(p, new Map([[learnKey(UUID, MAC), entry('10.0.0.5')]]), now)).toEqual([]);
    expect(lowerBpfInterface(p).learnDhcp).toEqual([]);
    expect(lowerBpfInterface(policyFor('clean-traffic', {})).learnDhcp).toBeUndefined();
  });
});

describe('eBPF lease values', () => {
  it('encode and decode the slots; expired and free slots are not live; wall clock and boot time convert both ways', () => {
    const v = encodeLeases([
      { ip: '10.0.0.2', deadline: 5_000_000_000n },
      { ip: '10.0.0.3', deadline: 1_000_000_000n },
      { ip: '10.0.0.4', deadline: INFINITE_NS, server: '10.0.0.1' },
    ]);
    expect(v.length).toBe(96);
    expect([...v.subarray(0, 5)]).toEqual([10, 0, 0, 2, 1]); // memory image, then the valid bit
    expect(decodeLeases(v, 2_000_000_000n)).toEqual([
      { ip: '10.0.0.2', deadline: 5_000_000_000n },
      { ip: '10.0.0.4', deadline: INFINITE_NS, server: '10.0.0.1' },
    ]);
    const clocks = { wallMs: Date.parse('2026-06-01T00:00:00Z'), bootNs: 100_000_000_000n };
    expect(deadlineOf('2026-06-01T00:01:00Z', clocks)).toBe(160_000_000_000n);
    expect(expiryOf(160_000_000_000n, clocks)).toBe('2026-06-01T00:01:00.000Z');
    expect(expiryOf(INFINITE_NS, clocks)).toBe(INFINITE_EXPIRES);
    expect(deadlineOf(INFINITE_EXPIRES, clocks)).toBe(INFINITE_NS);
    expect(deadlineOf(undefined, clocks)).toBe(INFINITE_NS);
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
