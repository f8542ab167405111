// The nft optimizer (src/backends/nft/opt/) against the unoptimized
// lowering: every corpus frame of every golden and conformance fixture, and
// every cut of each from-the-VM IPv4/ARP frame at every length, goes through
// the interpreter of the typed nft model (test/support/nft-interp.ts) with the
// passes on and off: the same verdict and the same counters, frame by frame.
// Then each pass's preconditions, one fixture per case where it must not fire.
import { join } from 'node:path';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { buildTemplate } from '../../src/backends/nft/shared.js';
import { walkTemplate } from '../../src/backends/nft/opt/walk.js';
import { formatOptReport } from '../../src/backends/nft/opt/passes.js';
import type { NftBatch, RuleObject } from '../../src/backends/nft/model.js';
import type { InterfacePolicy, PolicyIR } from '../../src/ir/types.js';
import { generateCorpus, type CorpusFrame } from '../../src/lab/frames/corpus.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { loadSources } from '../../src/resolve/sources.js';
import * as F from '../../src/lab/frames/build.js';
import { fixtureCases, STANDARD, CONFORMANCE_FIXTURES } from '../support/conformance-cases.js';
import { caseDirs } from '../support/fixture-cases.js';
import { BridgeTable, type Outcome } from '../support/nft-interp.js';
import { policyFor } from '../support/policy.js';

const PEER = 'peer0';
const PEER_MAC = '52:54:00:00:00:99';

/** A frame through both bridge hooks: from the VM (pre on its tap, post on the peer's port) or to it. */
function through(t: BridgeTable, iface: string, f: Pick<CorpusFrame, 'direction' | 'frame'>): Outcome {
  const ports = f.direction === 'out' ? { iif: iface, oif: PEER } : { iif: PEER, oif: iface };
  const pre = t.run('pre', f.frame, ports);
  if (pre.verdict === 'drop') return pre;
  const post = t.run('post', f.frame, ports);
  return { verdict: post.verdict, counted: [...pre.counted, ...post.counted], rules: pre.rules + post.rules };
}

/** Cuts of a frame at every length from 14 bytes (where a length guard or a field load can end a rule). */
function cuts(f: CorpusFrame): CorpusFrame[] {
  const out: CorpusFrame[] = [];
  for (let n = 14; n < Math.min(f.frame.length, 64); n++) out.push({ ...f, name: `${f.name} cut at ${n}`, frame: f.frame.slice(0, n) });
  return out;
}

const isIpOrArp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && (f[13] === 0x00 || f[13] === 0x06)) || (f[12] === 0x81 && f[13] === 0x00));

interface Compared {
  frames: number;
  mismatches: string[];
  /** Frames the optimized program decided in fewer rules. */
  faster: number;
  rulesOn: number;
  rulesOff: number;
}

/** Every interface's corpus (and its cuts) through the program with and without the passes. */
function compare(ir: PolicyIR): Compared {
  const on = new BridgeTable(lowerToNft(ir).batch);
  const off = new BridgeTable(lowerToNft(ir, { optimize: false }).batch);
  const r: Compared = { frames: 0, mismatches: [], faster: 0, rulesOn: 0, rulesOff: 0 };
  for (const p of ir.interfaces) {
    const corpus = generateCorpus(p, { peerMac: PEER_MAC });
    const frames = [...corpus, ...corpus.filter((f) => f.direction === 'out' && isIpOrArp(f.frame) && !f.tags.includes('truncated')).flatMap(cuts)];
    for (const f of frames) {
      if (f.frame.length < 14) continue;
      r.frames++;
      const a = through(on, p.iface, f);
      const b = through(off, p.iface, f);
      r.rulesOn += a.rules;
      r.rulesOff += b.rules;
      if (a.rules < b.rules) r.faster++;
      if (a.verdict !== b.verdict || JSON.stringify(a.counted) !== JSON.stringify(b.counted)) {
        r.mismatches.push(`${p.iface} ${f.direction} ${f.name}: optimized ${a.verdict} ${a.counted.join(',')} / unoptimized ${b.verdict} ${b.counted.join(',')}`);
      }
    }
  }
  return r;
}

/** A port's fast-accept elements: [kind, count] per set. */
function fastElements(l: ReturnType<typeof lowerToNft>, iface = 'vnet0'): [string, number][] {
  const port = l.parts.ports.find((p) => p.iface === iface);
  return (port?.commands ?? []).flatMap((c): [string, number][] =>
    c.op === 'add' && c.object.kind === 'element' && c.object.name.startsWith('sf-') ? [[c.object.name.replace(/^sf-[0-9a-f]+-/, ''), c.object.elements.length]] : [],
  );
}

const irOf = (...interfaces: InterfacePolicy[]): PolicyIR => ({ version: 1, interfaces, notes: [] });

/** A golden folder's policy, resolved as `compile` does (bundled filters first). */
function goldenIr(dir: string): PolicyIR {
  const xml = readdirSync(dir).filter((n) => n.endsWith('.xml'));
  const kind = (n: string): string => /<([A-Za-z][\w.-]*)/.exec(readFileSync(join(dir, n), 'utf8').replace(/<!--[\s\S]*?-->/g, '').replace(/<\?[\s\S]*?\?>/g, ''))?.[1] ?? '';
  const pick = (...roots: string[]) => xml.filter((n) => roots.includes(kind(n))).map((n) => join(dir, n));
  const src = loadSources({
    filterDirs: xml.filter((n) => !['filterbinding', 'filterbindingstatus', 'domain', 'domstatus'].includes(kind(n))).map((n) => join(dir, n)),
    bundled: true,
    bindingPaths: pick('filterbinding', 'filterbindingstatus'),
    domainPaths: pick('domain', 'domstatus'),
    libvirt: false,
  });
  return resolvePolicy(src.filters, src.bindings, src.notes);
}

const GOLDEN = caseDirs(join(import.meta.dirname, '..', 'fixtures', 'golden'));

describe('nft optimizer: the same verdicts and counters with the passes on and off (interpreter)', () => {
  it.each(GOLDEN)('golden $name', ({ dir }) => {
    const ir = goldenIr(dir);
    const r = compare(ir);
    expect(r.mismatches).toEqual([]);
    expect(r.frames).toBeGreaterThan(100);
  });

  const conformance = [...STANDARD, ...fixtureCases()].filter((c) => !c.nftRefuses);
  const fixtureXml = readdirSync(CONFORMANCE_FIXTURES)
    .filter((f) => f.endsWith('.xml'))
    .sort()
    .map((f) => readFileSync(join(CONFORMANCE_FIXTURES, f), 'utf8'));
  it.each(conformance)('conformance $name', (c) => {
    const p = policyFor(c.filter, c.params, fixtureXml, { iface: 'vnet0', mac: '52:54:00:00:00:01' });
    // other addresses, as many as the case's (iterators pair lists)
    const ips = c.params.IP === undefined ? undefined : [c.params.IP].flat().map((_, i) => `10.77.9.${9 + i}`);
    const params = { ...c.params, ...(ips ? { IP: ips.length === 1 ? (ips[0] as string) : ips } : {}) };
    const decoy = policyFor(c.filter, params, fixtureXml, { iface: 'vnet9', mac: '52:54:00:00:00:09' });
    const r = compare(irOf(p, decoy));
    expect(r.mismatches).toEqual([]);
    expect(r.frames).toBeGreaterThan(0);
  });

  it('clean-traffic: the fast path decides IPv4 and ARP from the VM in fewer rules', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: ['10.77.0.2', '10.77.0.3'] }), policyFor('clean-traffic', { IP: '10.77.9.9' }, [], { iface: 'vnet9', mac: '52:54:00:00:00:09' }));
    const r = compare(ir);
    expect(r.mismatches).toEqual([]);
    expect(r.faster).toBeGreaterThan(10);
    const on = new BridgeTable(lowerToNft(ir).batch);
    const off = new BridgeTable(lowerToNft(ir, { optimize: false }).batch);
    const udp = F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: PEER_MAC, srcIp: '10.77.0.3', dstIp: '10.77.0.9', sport: 5000, dport: 53 });
    const arp = F.arpFrame({ srcMac: '52:54:00:00:00:01', dstMac: 'ff:ff:ff:ff:ff:ff', sha: '52:54:00:00:00:01', spa: '10.77.0.2', tha: '00:00:00:00:00:00', tpa: '10.77.0.9', op: 'Request' });
    for (const frame of [udp, arp]) {
      const a = through(on, 'vnet0', { direction: 'out', frame });
      const b = through(off, 'vnet0', { direction: 'out', frame });
      expect(a.verdict).toBe('accept');
      expect(b.verdict).toBe('accept');
      // pre: the base chain's fast rule (ARP: after the IPv4 one); post: the dispatch miss and the unprotected check
      expect(a.rules).toBe(frame === udp ? 3 : 4);
      expect(b.rules).toBeGreaterThan(a.rules + 3);
    }
  });
});

/** fast-accept alone: its elements stay in the shape's sets (fast-base moves them into the base chain's). */
const P4 = { passes: ['fast-accept'] as const };

describe('fast-accept: preconditions', () => {
  const report = (ir: PolicyIR, opts: Parameters<typeof lowerToNft>[1] = {}) => formatOptReport(lowerToNft(ir, opts).opt);

  it('clean-traffic from the VM: fires for IPv4 and ARP, one element per MAC and IP', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: ['10.77.0.2', '10.77.0.3', '10.77.1.9'] }));
    const l = lowerToNft(ir, P4);
    const text = report(ir);
    expect(text).toMatch(/ip4: fired, key iifname \. src \. srcIp/);
    expect(text).toMatch(/arp: fired, key iifname \. src \. sha \. spa/);
    expect(fastElements(l)).toEqual([
      ['ip4', 3],
      ['arp', 3],
    ]);
  });

  it('an interface whose IP is 0.0.0.0: the DHCP rule depends on the protocol but returns like the address check, so the element stays', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: ['0.0.0.0', '10.77.0.2'] }));
    const l = lowerToNft(ir, P4);
    expect(formatOptReport(l.opt)).not.toMatch(/left out/);
    expect(fastElements(l)).toContainEqual(['ip4', 2]);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('a drop between the checks that tests something else (clean-traffic-gateway: isolation by destination): no IPv4 fast rule', () => {
    const ir = irOf(policyFor('clean-traffic-gateway', { IP: '10.77.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' }));
    const l = lowerToNft(ir, P4);
    expect(formatOptReport(l.opt)).toMatch(/ip4: not fired \(a frame from the interface's own src, srcIp may still be refused \(rule no-other-l2-traffic\/1 drops\)\)/);
    expect(fastElements(l).map(([k]) => k)).toEqual(['arp']);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('the walk decides each element: an address of the interface is accepted, another one meets the ip-spoof drop', () => {
    const t = buildTemplate(policyFor('clean-traffic', { IP: ['10.77.0.2', '10.77.0.3'] }), 'out');
    const ip4 = { etherType: 0x800, minLength: 20 };
    expect(walkTemplate(t, { ...ip4, bound: { src: '52:54:00:00:00:01', srcIp: '10.77.0.3' } }).end).toEqual({ kind: 'accept' });
    expect(walkTemplate(t, { ...ip4, bound: { src: '52:54:00:00:00:01', srcIp: '10.77.0.9' } }).end).toEqual({ kind: 'not-accepted', why: 'rule no-ip-spoofing/3 drops' });
    expect(walkTemplate(t, { ...ip4, bound: { src: '52:54:00:00:00:02', srcIp: '10.77.0.3' } }).end).toEqual({ kind: 'not-accepted', why: 'rule no-mac-spoofing/2 drops' });
    // shorter than an IPv4 header: the length guards are unknown, some way drops
    expect(walkTemplate(t, { etherType: 0x800, minLength: 0, bound: { src: '52:54:00:00:00:01', srcIp: '10.77.0.3' } }).end.kind).toBe('not-accepted');
    // a VLAN-tagged frame's EtherType is 0x8100: dropped as other L2 traffic
    expect(walkTemplate(t, { etherType: 0x8100, minLength: 20, bound: { src: '52:54:00:00:00:01' } }).end).toEqual({ kind: 'not-accepted', why: 'rule no-other-l2-traffic/1 drops' });
  });

  it("a negated MAC (match='no' on the interface's own) is a key too: the walk finds its drop never meets the interface's MAC", () => {
    const f = `<filter name='neg-mac' chain='root'>
      <rule action='drop' direction='out' priority='100'><mac match='no' srcmacaddr='$MAC'/></rule>
      <rule action='return' direction='out' priority='200'><ip srcipaddr='$IP'/></rule>
      <rule action='drop' direction='out' priority='300'><ip/></rule>
    </filter>`;
    const ir = irOf(policyFor('neg-mac', { IP: '10.77.0.2' }, [f]));
    const text = report(ir);
    expect(text).toMatch(/ip4: fired, key iifname \. src \. srcIp/);
    expect(text).not.toMatch(/left out/);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('a protocol test that drops before the accept: not fired, verdicts unchanged', () => {
    const f = `<filter name='port-first' chain='root'>
      <filterref filter='no-mac-spoofing'/>
      <rule action='drop' direction='out' priority='400'><ip protocol='tcp' dstportstart='25'/></rule>
      <rule action='accept' direction='out' priority='500'><ip srcipaddr='$IP'/></rule>
      <rule action='drop' direction='out' priority='900'><all/></rule>
    </filter>`;
    const ir = irOf(policyFor('port-first', { IP: '10.77.0.2' }, [f]));
    expect(report(ir)).toMatch(/ip4: not fired \(.*rule port-first\/\d drops\)/);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('a MAC list times an IP list: one element per combination', () => {
    const f = `<filter name='two-macs' chain='root'>
      <rule action='return' direction='out' priority='100'><mac srcmacaddr='$MACS'/></rule>
      <rule action='drop' direction='out' priority='110'><all/></rule>
    </filter>`;
    const g = `<filter name='two-macs-ip' chain='root'><filterref filter='two-macs'/><filterref filter='no-ip-spoofing'/></filter>`;
    const ir = irOf(policyFor('two-macs-ip', { MACS: ['52:54:00:00:00:01', '52:54:00:00:00:02'], IP: ['10.77.0.2', '10.77.0.3', '10.77.0.4'] }, [f, g]));
    const l = lowerToNft(ir, P4);
    expect(baseElements(lowerToNft(ir)).map(([s, e]) => [s, e.length])).toContainEqual(['fast_ip4', 6]);
    expect(fastElements(l)).toContainEqual(['ip4', 6]);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('to the VM under clean-traffic: no address of its own on the path, not fired, and the shape is unchanged', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: '10.77.0.2' }));
    expect(report(ir)).toMatch(/to the VM[^\n]*\n {2}fast-accept ip4: not fired/);
  });

  it('--no-opt (optimize: false) gives the lowering without passes; passes: [] likewise', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: '10.77.0.2' }));
    const none = JSON.stringify(lowerToNft(ir, { optimize: false }).batch);
    expect(none).not.toMatch(/sf-/);
    expect(JSON.stringify(lowerToNft(ir, { passes: [] }).batch)).toBe(none);
    expect(JSON.stringify(lowerToNft(ir).batch)).toMatch(/sf-/);
    expect(report(ir, { optimize: false })).toMatch(/^optimizer passes: none/);
  });

  it('an unknown pass name is refused', () => {
    expect(() => lowerToNft(irOf(policyFor('clean-traffic', { IP: '10.77.0.2' })), { passes: ['nope' as 'fast-accept'] })).toThrow(/unknown optimizer pass 'nope'/);
  });
});

/** A port's elements of the base chain's fast sets: [set, elements as text]. */
function baseElements(l: ReturnType<typeof lowerToNft>, iface = 'vnet0'): [string, string[]][] {
  const port = l.parts.ports.find((p) => p.iface === iface);
  return (port?.commands ?? []).flatMap((c): [string, string[]][] =>
    c.op === 'add' && c.object.kind === 'element' && c.object.name.startsWith('fast_')
      ? [[c.object.name, c.object.elements.map((e) => (e as unknown as { items: { value: string }[] }).items.map((i) => i.value).join(' . '))]]
      : [],
  );
}

/** The comments of the rules of chain `pre`, in order. */
const preRules = (b: NftBatch): string[] =>
  b.flatMap((c) => (c.op === 'add' && c.object.kind === 'rule' && c.object.chain === 'pre' ? [(c.object as RuleObject).comment ?? ''] : []));

describe('fast-base: the fast paths from the VM in the base chain', () => {
  const report = (ir: PolicyIR, opts: Parameters<typeof lowerToNft>[1] = {}) => formatOptReport(lowerToNft(ir, opts).opt);

  it('clean-traffic: IPv4 and ARP hoisted before the dispatch, one element per address; IPv6 not (no such path)', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: ['10.77.0.2', '10.77.0.3'] }));
    const l = lowerToNft(ir);
    expect(report(ir)).toMatch(/fast-base ip4: hoisted into the base chain pre, key iifname \. src \. srcIp in fast_ip4/);
    expect(report(ir)).toMatch(/fast-base arp: hoisted/);
    expect(baseElements(l)).toEqual([
      ['fast_ip4', ['vnet0 . 52:54:00:00:00:01 . 10.77.0.2', 'vnet0 . 52:54:00:00:00:01 . 10.77.0.3']],
      ['fast_arp', ['vnet0 . 52:54:00:00:00:01 . 52:54:00:00:00:01 . 10.77.0.2', 'vnet0 . 52:54:00:00:00:01 . 52:54:00:00:00:01 . 10.77.0.3']],
    ]);
    // moved, not copied: the shape's fast sets keep no element of the port (same key)
    expect(fastElements(l)).toEqual([]);
    expect(preRules(l.batch)).toEqual([
      'fast-base ip4: a valid frame from a VM, accepted before the dispatch',
      'fast-base arp: a valid frame from a VM, accepted before the dispatch',
      'fast-base ip6: a valid frame from a VM, accepted before the dispatch',
      'traffic from the VMs',
      'a VM port without an entry: unprotected, dropped',
    ]);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it("a shape whose key has no MAC (no-ip-spoofing alone): the port's own MAC fills it; frames from another MAC still take the dispatch", () => {
    const ir = irOf(policyFor('no-ip-spoofing', { IP: '10.77.0.2' }), policyFor('no-ip-spoofing', { IP: '10.77.9.9' }, [], { iface: 'vnet9', mac: '52:54:00:00:00:09' }));
    const l = lowerToNft(ir);
    expect(baseElements(l)).toEqual([['fast_ip4', ['vnet0 . 52:54:00:00:00:01 . 10.77.0.2']]]);
    // the shape's key (iifname . srcIp) is not the base key: its element stays for frames from other MACs
    expect(fastElements(l)).toEqual([['ip4', 1]]);
    const on = new BridgeTable(l.batch);
    const off = new BridgeTable(lowerToNft(ir, { optimize: false }).batch);
    for (const srcMac of ['52:54:00:00:00:01', '52:54:00:00:00:77']) {
      const frame = F.udpFrame({ srcMac, dstMac: PEER_MAC, srcIp: '10.77.0.2', dstIp: '10.77.0.9', sport: 5000, dport: 53 });
      const a = through(on, 'vnet0', { direction: 'out', frame });
      expect(a).toMatchObject({ verdict: through(off, 'vnet0', { direction: 'out', frame }).verdict, counted: [] });
      // own MAC: the base rule; another MAC: the base rule misses, the dispatch and the shape's fast rule accept
      expect(a.rules).toBe(srcMac === '52:54:00:00:00:01' ? 3 : 7);
    }
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('a shape whose key has no IP (no-mac-spoofing alone): not hoisted, no base set', () => {
    const ir = irOf(policyFor('no-mac-spoofing', {}));
    const l = lowerToNft(ir);
    expect(report(ir)).toMatch(/fast-base ip4: not hoisted \(the fast key has no srcIp\)/);
    expect(baseElements(l)).toEqual([]);
    // the skeleton's sets stay (a host holds them whichever ports fill them), empty
    expect(JSON.stringify(l.batch)).toMatch(/fast_ip4/);
    expect(JSON.stringify(lowerToNft(ir, { skeleton: { tapPatterns: ['vnet*'], bridges: [], bridgeMeta: true } }).batch)).not.toMatch(/fast_/);
  });

  it('a learning port whose out shape has a fast path (a static address out, a learned one in): no base element, its learning chain still runs first', () => {
    const f = `<filter name='learn-mixed' chain='root'>
      <rule action='return' direction='out' priority='100'><ip srcmacaddr='$MAC' srcipaddr='$ADDR'/></rule>
      <rule action='drop' direction='out' priority='200'><all/></rule>
      <rule action='accept' direction='in' priority='300'><ip dstipaddr='$IP'/></rule>
      <rule action='drop' direction='in' priority='400'><all/></rule>
    </filter>`;
    const learning = policyFor('learn-mixed', { ADDR: '10.77.0.5', CTRL_IP_LEARNING: 'any' }, [f]);
    expect(learning.learning).toBeDefined();
    const fixed = policyFor('learn-mixed', { ADDR: '10.77.0.6', IP: '10.77.0.6' }, [f], { iface: 'vnet9', mac: '52:54:00:00:00:09' });
    const ir = irOf(learning, fixed);
    const l = lowerToNft(ir);
    expect(report(ir)).toMatch(/interface vnet0 \(out\): fast-base: not in the base chain \(a learning port goes through its learning chain first\)/);
    expect(baseElements(l, 'vnet0')).toEqual([]);
    expect(baseElements(l, 'vnet9')).toEqual([['fast_ip4', ['vnet9 . 52:54:00:00:00:09 . 10.77.0.6']]]);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('--backend both: a port behind the eBPF gate gets no base element (the gate runs first); a port without programs does', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: '10.77.0.2' }), policyFor('clean-traffic', { IP: '10.77.9.9' }, [], { iface: 'vnet9', mac: '52:54:00:00:00:09' }));
    const l = lowerToNft(ir, { mode: 'second-line', noProgram: new Set(['vnet9']) });
    expect(baseElements(l, 'vnet0')).toEqual([]);
    expect(formatOptReport(l.opt)).toMatch(/interface vnet0 \(out\): fast-base: not in the base chain \(its dispatch goes through the eBPF gate of its tap first\)/);
    expect(baseElements(l, 'vnet9')).toEqual([
      ['fast_ip4', ['vnet9 . 52:54:00:00:00:09 . 10.77.9.9']],
      ['fast_arp', ['vnet9 . 52:54:00:00:00:09 . 52:54:00:00:00:09 . 10.77.9.9']],
    ]);
  });

  it('a port with L3 rules: the fast rules come after the L3 mark, and its frames are marked as without the pass', () => {
    const f = `<filter name='l3-port' chain='root'>
      <filterref filter='clean-traffic'/>
      <rule action='drop' direction='out' priority='500'><tcp dstportstart='25'/></rule>
    </filter>`;
    const ir = irOf(policyFor('l3-port', { IP: '10.77.0.2' }, [f]));
    const l = lowerToNft(ir);
    expect(l.l3).toBe(true);
    const pre = preRules(l.batch);
    expect(pre[0]).toBe('mark frames of ports with L3 rules');
    expect(pre[1]).toMatch(/^fast-base ip4/);
    const on = new BridgeTable(l.batch);
    const frame = F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: PEER_MAC, srcIp: '10.77.0.2', dstIp: '10.77.0.9', sport: 5000, dport: 53 });
    const a = through(on, 'vnet0', { direction: 'out', frame });
    expect(a.verdict).toBe('accept');
    expect(a.counted.some((c) => c.startsWith('set meta mark'))).toBe(true);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it("passes: ['fast-accept'] keeps the fast rules in the shapes; ['fast-base'] alone has nothing to hoist; --no-opt neither", () => {
    const ir = irOf(policyFor('clean-traffic', { IP: '10.77.0.2' }));
    const p4 = JSON.stringify(lowerToNft(ir, { passes: ['fast-accept'] }).batch);
    expect(p4).toMatch(/sf-/);
    expect(p4).not.toMatch(/fast_/);
    expect(JSON.stringify(lowerToNft(ir).batch)).toMatch(/fast_ip4/);
    expect(report(ir, { passes: ['fast-base'] })).toMatch(/fast-base: nothing to hoist \(fast-accept is off\)/);
    expect(JSON.stringify(lowerToNft(ir, { passes: ['fast-base'] }).batch)).toBe(JSON.stringify(lowerToNft(ir, { optimize: false }).batch));
    expect(JSON.stringify(lowerToNft(ir, { optimize: false }).batch)).not.toMatch(/fast_/);
  });

  it('a skeleton configured with no kind: the sets the ports fill are still there; with every kind (the default, as a host loads it), all of them', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: '10.77.0.2' }));
    const kinds = (b: NftBatch) => preRules(b).filter((c) => c.startsWith('fast-base')).map((c) => c.split(':')[0]);
    expect(kinds(lowerToNft(ir, { skeleton: { tapPatterns: ['vnet*'], bridges: [], bridgeMeta: true } }).batch)).toEqual(['fast-base ip4', 'fast-base arp']);
    const l = lowerToNft(ir);
    expect(kinds(l.batch)).toEqual(['fast-base ip4', 'fast-base arp', 'fast-base ip6']);
    const on = new BridgeTable(l.batch);
    const off = new BridgeTable(lowerToNft(ir, { optimize: false }).batch);
    for (const f of generateCorpus(ir.interfaces[0] as InterfacePolicy, { peerMac: PEER_MAC })) {
      if (f.frame.length < 14) continue;
      const a = through(on, 'vnet0', f);
      const b = through(off, 'vnet0', f);
      expect([a.verdict, a.counted], f.name).toEqual([b.verdict, b.counted]);
    }
  });
});
