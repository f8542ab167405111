// L3 (iptables-layer) rules over a learned $IP, nft lowering without a
// kernel: the bridge table decides "ip saddr / daddr is the port's learned
// address" and carries it in the mark (learned bits next to the port ids);
// the ip table's rules test those bits; a learning port marks only once
// locked. The kernel test is test/kernel/learning-l3.test.ts.
import { describe, expect, it } from 'vitest';
import { lowerToNft, sequentialMarks } from '../../src/backends/nft/lower.js';
import { MARK_IN_ID_MASK, MARK_IN_MASK, MARK_LEARNED, MARK_OUT_ID_MASK, MARK_OUT_MASK, markCommands, markOf, MAX_L3_PORTS } from '../../src/backends/nft/l3.js';
import type { PortPart } from '../../src/backends/nft/parts.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import { NwfError } from '../../src/util/errors.js';
import { bindingXml, policyFor, tempDir } from '../support/policy.js';
import { main } from '../../src/cli/main.js';
import { toHex } from '../../src/frames/bytes.js';
import * as F from '../../src/lab/frames/build.js';
import { writeLearned } from '../../src/host/learn/store.js';
import { evaluateLearning } from '../../src/ir/eval/learning.js';
import { kernelInventory } from '../../src/host/inventory.js';
import { planFullLoad } from '../../src/host/load-plan.js';

const FILTER = `<filter name='ssh-learned' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='100'><tcp dstipaddr='$IP' dstportstart='22'/></rule>
  <rule action='accept' direction='out' priority='100'><tcp srcipaddr='$IP' dstportstart='80'/></rule>
  <rule action='drop' direction='out' priority='200'><udp match='no' srcipaddr='$IP'/></rule>
  <rule action='drop' direction='inout' priority='900'><tcp/></rule>
</filter>`;

const lower = (p: InterfacePolicy, learner?: 'copy') => lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: false, ...(learner ? { learner } : {}) });
const lines = (text: string, re: RegExp): string[] => text.split('\n').filter((l) => re.test(l));

describe('L3 rules over a learned $IP (nft lowering)', () => {
  const learning = policyFor('ssh-learned', {}, [FILTER]);
  const text = printNftText(lower(learning).batch);

  it('a learning port with L3 rules testing $IP is lowered, not refused', () => {
    expect(lower(learning).failed).toEqual([]);
    expect(learning.learning?.mode).toBe('any');
  });

  it("the learned test is a mark bit: the source port's for FI/HI, the destination port's for FO; negated: the bit clear", () => {
    // FO (to the VM): dstipaddr=$IP is "ip daddr is the destination port's learned address"
    expect(lines(text, /^add rule ip nwf_fast fo-vnet0 .*@th,16,16 22 /)).toEqual([expect.stringContaining('meta mark & 0x4000 == 0x4000')]);
    // FI (from the VM): srcipaddr=$IP, the source port's bit
    expect(lines(text, /^add rule ip nwf_fast fi-vnet0 .*@th,16,16 80 /)).toEqual([expect.stringContaining('meta mark & 0x20000000 == 0x20000000')]);
    expect(lines(text, /^add rule ip nwf_fast hi-vnet0 .*@th,16,16 80 /)).toEqual([expect.stringContaining('meta mark & 0x20000000 == 0x20000000')]);
    // match='no': the bit is clear
    expect(lines(text, /^add rule ip nwf_fast fi-vnet0 meta l4proto 17 /)).toEqual([expect.stringContaining('meta mark & 0x20000000 == 0x0 counter name')]);
    // no place-holder address reaches the ip table
    expect(text).not.toMatch(/ip nwf_fast .*0\.0\.0\.0/);
  });

  it('a learning port marks only once locked, then sets its learned-address bits from lrn-addr', () => {
    expect(lines(text, /^add rule bridge nwf_fast mk-in-vnet0 /).map((l) => l.replace(/ comment .*/, ''))).toEqual([
      'add rule bridge nwf_fast mk-in-vnet0 meta iifname != @lrn-locked meta mark set 0x0 return',
      'add rule bridge nwf_fast mk-in-vnet0 meta mark set 0x80010000',
      'add rule bridge nwf_fast mk-in-vnet0 ether type 0x800 meta iifname . ip saddr @lrn-addr meta mark set meta mark | 0x20000000',
      'add rule bridge nwf_fast mk-in-vnet0 ether type 0x800 meta iifname . ip daddr @lrn-addr meta mark set meta mark | 0x40000000',
    ]);
    expect(lines(text, /^add rule bridge nwf_fast mk-out-vnet0 /).map((l) => l.replace(/ comment .*/, ''))).toEqual([
      'add rule bridge nwf_fast mk-out-vnet0 meta oifname != @lrn-locked meta mark set meta mark & 0xffff0000 return',
      'add rule bridge nwf_fast mk-out-vnet0 meta mark set meta mark & 0xffff0000 | 0x8001',
      'add rule bridge nwf_fast mk-out-vnet0 ether type 0x800 meta oifname . ip saddr @lrn-addr meta mark set meta mark | 0x2000',
      'add rule bridge nwf_fast mk-out-vnet0 ether type 0x800 meta oifname . ip daddr @lrn-addr meta mark set meta mark | 0x4000',
    ]);
    // the ip tables dispatch on the port ids without the learned bits
    expect(text).toContain('add rule ip nwf_fast l3_forward meta mark & 0x9fff0000 vmap @fi_map');
    expect(text).toContain('add rule ip nwf_fast l3_forward meta mark & 0x9fff vmap @fo_map');
    expect(text).toContain('add rule ip nwf_fast l3_input meta mark & 0x9fff0000 vmap @hi_map');
  });

  it('under --backend both (the copy learns) the mark chains are the same: they follow what the copy writes to lrn-addr and lrn-locked', () => {
    const both = printNftText(lower(learning, 'copy').batch);
    expect(lines(both, /^add rule bridge nwf_fast mk-(in|out)-vnet0 /)).toEqual(lines(text, /^add rule bridge nwf_fast mk-(in|out)-vnet0 /));
    expect(both).not.toMatch(/lrnc-out-vnet0 .*add @/);
  });

  it('a port with the address given marks unconditionally and tests addresses', () => {
    const fixed = printNftText(lower(policyFor('ssh-learned', { IP: '10.0.0.5' }, [FILTER])).batch);
    expect(lines(fixed, /^add rule bridge nwf_fast mk-(in|out)-vnet0 /)).toEqual([
      'add rule bridge nwf_fast mk-in-vnet0 meta mark set 0x80010000',
      'add rule bridge nwf_fast mk-out-vnet0 meta mark set meta mark & 0xffff0000 | 0x8001',
    ]);
    expect(lines(fixed, /^add rule ip nwf_fast fo-vnet0 .*@th,16,16 22 /)).toEqual([expect.stringContaining('ip daddr 10.0.0.5')]);
    expect(fixed).not.toMatch(/mk-(in|out)-vnet0 .*lrn-/);
  });

  it('a learned address with a mask, or in a range, cannot be tested: the port fails closed (NWF1206)', () => {
    const masked = `<filter name='m' chain='root'><rule action='accept' direction='in'><tcp dstipaddr='$IP' dstipmask='24'/></rule><filterref filter='clean-traffic'/></filter>`;
    const ranged = `<filter name='r' chain='root'><rule action='accept' direction='in'><tcp dstipfrom='$IP' dstipto='10.0.0.9'/></rule><filterref filter='clean-traffic'/></filter>`;
    for (const [name, xml] of [['m', masked], ['r', ranged]] as const) {
      const r = lower(policyFor(name, {}, [xml]));
      expect(r.failed.map((f) => [f.iface, f.code]), name).toEqual([['vnet0', 'NWF1206']]);
      // failed closed: dropped both ways, counted as unprotected
      expect(printNftText(r.batch)).toContain('add element bridge nwf_fast from_vm { "vnet0" : goto drop-out-unprotected }');
    }
  });
});

describe('mark layout', () => {
  it('port ids, learned bits and the halves never overlap, up to MAX_L3_PORTS', () => {
    const learned = MARK_LEARNED.in.saddr | MARK_LEARNED.in.daddr | MARK_LEARNED.out.saddr | MARK_LEARNED.out.daddr;
    for (const id of [1, 2, 0x1000, MAX_L3_PORTS]) {
      const from = markOf.from(id);
      const to = markOf.to(id);
      expect((from & learned) >>> 0, `id ${id}`).toBe(0);
      expect((to & learned) >>> 0, `id ${id}`).toBe(0);
      expect((from & MARK_IN_ID_MASK) >>> 0).toBe(from);
      expect((to & MARK_OUT_ID_MASK) >>> 0).toBe(to);
      expect((from & MARK_OUT_MASK) >>> 0).toBe(0);
      expect((to & MARK_IN_MASK) >>> 0).toBe(0);
    }
    expect((MARK_LEARNED.in.saddr & MARK_IN_MASK) >>> 0).toBe(MARK_LEARNED.in.saddr);
    expect((MARK_LEARNED.out.daddr & MARK_OUT_MASK) >>> 0).toBe(MARK_LEARNED.out.daddr);
    expect(MAX_L3_PORTS).toBe(8191);
  });

  it('more ports with L3 rules than ids: NWF1402, at compile and for an id out of range', () => {
    const ports = (n: number): PortPart[] => Array.from({ length: n }, (_, i) => ({ iface: `vnet${i}`, status: 'protected', commands: [], shapes: [], l3: ['ipv4'] }));
    expect(sequentialMarks(ports(MAX_L3_PORTS)).size).toBe(MAX_L3_PORTS);
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (e) {
        return e instanceof NwfError ? e.code : 'not an NwfError';
      }
      return undefined;
    };
    expect(code(() => sequentialMarks(ports(MAX_L3_PORTS + 1)))).toBe('NWF1402');
    expect(code(() => markCommands('vnet0', MAX_L3_PORTS + 1, ['ipv4']))).toBe('NWF1402');
    expect(code(() => markCommands('vnet0', 0, ['ipv4']))).toBe('NWF1402');
    expect(code(() => markCommands('vnet0', MAX_L3_PORTS, ['ipv4'], true))).toBeUndefined();
  });

  it("a dhcp port's learned bits come from its own lease set, an any port's from lrn-addr", () => {
    const dhcp = printNftText(markCommands('vnet0', 1, ['ipv4'], 'dhcp'));
    expect(dhcp).toContain('ip saddr @lrn-lease-vnet0');
    expect(dhcp).toContain('ip daddr @lrn-lease-vnet0');
    expect(dhcp).not.toContain('@lrn-addr');
    const any = printNftText(markCommands('vnet0', 1, ['ipv4'], true));
    expect(any).toContain('meta iifname . ip saddr @lrn-addr');
    expect(any).not.toContain('lrn-lease');
  });
});

describe('explain on a learning port', () => {
  const MAC = '52:54:00:00:00:01';
  const PEER = '52:54:00:00:00:99';
  const fdir = tempDir({ 'ssh-learned.xml': FILTER });
  const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', MAC, 'ssh-learned', {}) });
  const emptyState = tempDir({});
  const run = async (argv: string[]) => {
    let out = '';
    let err = '';
    const code = await main(['explain', '--filters', fdir, '--binding', bdir, '--iface', 'vnet0', ...argv], { out: (x) => void (out += x), err: (x) => void (err += x) });
    return { code, out, err };
  };
  const synIn = (dport: number) => toHex(F.tcpFrame({ srcMac: PEER, dstMac: MAC, srcIp: '10.0.0.9', dstIp: '10.0.0.2', sport: 40000, dport, flags: ['SYN'] }));
  const udpOut = (src: string) => toHex(F.udpFrame({ srcMac: MAC, dstMac: PEER, srcIp: src, dstIp: '10.0.0.9', sport: 1, dport: 2 }));
  const verdict = async (argv: string[]) => {
    const r = await run([...argv, '--json']);
    expect(r.err).toBe('');
    return JSON.parse(r.out) as { verdict: string; reason?: string; learning?: { state: string; ips: string[]; source?: string } };
  };

  it('with --learned-ip the policy applies with $IP = the address: TCP 22 in passes, 80 drops, another source drops', async () => {
    expect(await verdict(['--direction', 'in', '--frame', synIn(22), '--learned-ip', '10.0.0.2'])).toMatchObject({ verdict: 'accept', learning: { state: 'locked', ips: ['10.0.0.2'], source: 'option' } });
    expect((await verdict(['--direction', 'in', '--frame', synIn(80), '--learned-ip', '10.0.0.2'])).verdict).toBe('drop');
    expect(await verdict(['--direction', 'out', '--frame', udpOut('10.0.0.66'), '--learned-ip', '10.0.0.2'])).toMatchObject({ verdict: 'drop', reason: 'ip-spoof' });
    expect((await verdict(['--direction', 'out', '--frame', udpOut('10.0.0.2'), '--learned-ip', '10.0.0.2'])).verdict).toBe('accept');
    const text = await run(['--direction', 'in', '--frame', synIn(22), '--learned-ip', '10.0.0.2']);
    expect(text.out).toContain('learning port (any), locked: $IP = 10.0.0.2 (--learned-ip)');
  });

  it('without an address: the learning table (any source, TCP 80 in passes), said so', async () => {
    const state = ['--state-dir', emptyState];
    expect(await verdict([...state, '--direction', 'out', '--frame', udpOut('10.0.0.66')])).toMatchObject({ verdict: 'accept', learning: { state: 'learning', ips: [] } });
    expect((await verdict([...state, '--direction', 'in', '--frame', synIn(80)])).verdict).toBe('accept');
    const v6 = toHex(F.ipv6UdpFrame({ srcMac: MAC, dstMac: PEER, srcIp: 'fe80::1', dstIp: 'fe80::2', sport: 1, dport: 2 }));
    expect(await verdict([...state, '--direction', 'out', '--frame', v6])).toMatchObject({ verdict: 'drop', reason: 'other-l2' });
    expect((await run([...state, '--direction', 'out', '--frame', udpOut('10.0.0.66')])).out).toContain('not locked yet');
  });

  it("takes the port's entry in learned.json of --state-dir", async () => {
    const state = tempDir({});
    writeLearned(state, [{ owner: { name: 'vm', uuid: '00000000-0000-0000-0000-000000000001' }, mac: MAC, mode: 'any', addresses: [{ ip: '10.0.0.2', source: 'kernel' }] }]);
    expect(await verdict(['--state-dir', state, '--direction', 'in', '--frame', synIn(22)])).toMatchObject({ verdict: 'accept', learning: { state: 'locked', ips: ['10.0.0.2'], source: 'learned.json' } });
    expect((await verdict(['--state-dir', state, '--direction', 'in', '--frame', synIn(80)])).verdict).toBe('drop');
  });

  it('refuses --learned-ip that is not an address, too many, or on a port that does not learn', async () => {
    expect((await run(['--direction', 'in', '--frame', synIn(22), '--learned-ip', 'x'])).code).toBe(2);
    expect((await run(['--direction', 'in', '--frame', synIn(22), '--learned-ip', '10.0.0.2', '--learned-ip', '10.0.0.3'])).code).toBe(2);
    const fixed = tempDir({ 'vnet0.xml': bindingXml('vnet0', MAC, 'clean-traffic', { IP: '10.0.0.2' }) });
    let err = '';
    const code = await main(['explain', '--binding', fixed, '--iface', 'vnet0', '--direction', 'in', '--frame', synIn(22), '--learned-ip', '10.0.0.2'], { out: () => undefined, err: (x) => void (err += x) });
    expect(code).toBe(2);
    expect(err).toContain('does not learn');
  });

  it('the dhcp learning table: DHCP from the VM, replies from a trusted server only', () => {
    const p = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'dhcp', DHCPSERVER: '10.0.0.1' });
    const req = F.udpFrame({ srcMac: MAC, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67 });
    const reply = (server: string) => F.udpFrame({ srcMac: PEER, dstMac: MAC, srcIp: server, dstIp: '10.0.0.2', sport: 67, dport: 68 });
    expect(evaluateLearning(p, 'out', req).verdict).toBe('accept');
    expect(evaluateLearning(p, 'out', F.udpFrame({ srcMac: MAC, dstMac: PEER, srcIp: '10.0.0.2', dstIp: '10.0.0.9', sport: 1, dport: 2 })).verdict).toBe('drop');
    expect(evaluateLearning(p, 'in', reply('10.0.0.1')).verdict).toBe('accept');
    expect(evaluateLearning(p, 'in', reply('10.0.0.200')).verdict).toBe('drop');
  });
});

describe('a full replacement over learned state', () => {
  it('leaves the learned-state sets the kernel holds as they are: no declaration (nft made them dynamic: declaring them again fails with EEXIST), no element deleted', () => {
    const next = lower(policyFor('clean-traffic', {})).batch;
    const T = { family: 'bridge', table: 'nwf_fast' };
    const held = kernelInventory({
      bridge: {
        nftables: [
          { metainfo: { json_schema_version: 1 } },
          { table: { family: 'bridge', name: 'nwf_fast', handle: 1 } },
          { set: { ...T, name: 'lrn-addr', type: ['ifname', 'ipv4_addr'], handle: 2, flags: ['timeout'], elem: [{ concat: ['vnet0', '10.0.0.2'] }] } },
          { set: { ...T, name: 'lrn-w-vnet0', type: 'ipv4_addr', handle: 3, flags: ['timeout'] } },
          { set: { ...T, name: 'lrn-locked', type: 'ifname', handle: 4, flags: ['timeout'], elem: ['vnet0'] } },
        ],
      },
    });
    const added = (cmds: readonly { op: string; object: { kind: string; name?: string } }[]) => cmds.filter((c) => c.op === 'add' && c.object.kind === 'set' && c.object.name?.startsWith('lrn-')).map((c) => c.object.name);
    expect(added(next).sort()).toEqual(['lrn-addr', 'lrn-locked', 'lrn-w-vnet0']);
    const plan = planFullLoad(held, next, 'g000002');
    expect(added(plan.apply)).toEqual([]);
    // nor are their elements stale: the port stays locked
    expect(JSON.stringify([...plan.apply, ...plan.cleanup])).not.toMatch(/"delete"[^\]]*lrn-/);
    expect(added(planFullLoad(kernelInventory({}), next, 'g000002').apply).sort()).toEqual(['lrn-addr', 'lrn-locked', 'lrn-w-vnet0']);
  });
});
