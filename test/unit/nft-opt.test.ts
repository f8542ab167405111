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
      // pre: dispatch + the fast rule; post: the dispatch miss
      expect(a.rules).toBe(frame === udp ? 4 : 5);
      expect(b.rules).toBeGreaterThan(a.rules + 3);
    }
  });
});

describe('fast-accept: preconditions', () => {
  const report = (ir: PolicyIR, opts: Parameters<typeof lowerToNft>[1] = {}) => formatOptReport(lowerToNft(ir, opts).opt);

  it('clean-traffic from the VM: fires for IPv4 and ARP, one element per MAC and IP', () => {
    const ir = irOf(policyFor('clean-traffic', { IP: ['10.77.0.2', '10.77.0.3', '10.77.1.9'] }));
    const l = lowerToNft(ir);
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
    const l = lowerToNft(ir);
    expect(formatOptReport(l.opt)).not.toMatch(/left out/);
    expect(fastElements(l)).toContainEqual(['ip4', 2]);
    expect(compare(ir).mismatches).toEqual([]);
  });

  it('a drop between the checks that tests something else (clean-traffic-gateway: isolation by destination): no IPv4 fast rule', () => {
    const ir = irOf(policyFor('clean-traffic-gateway', { IP: '10.77.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' }));
    const l = lowerToNft(ir);
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
    const l = lowerToNft(ir);
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
