// The generated differential-test corpus (src/lab/frames/corpus.ts): deterministic,
// well-formed, covering both verdicts in both directions and every rule of
// the policy, and keeping its own promises about which frames match a rule.
import { afterAll, describe, expect, it } from 'vitest';
import { generateCorpus, type CorpusFrame } from '../../src/lab/frames/corpus.js';
import { evaluate } from '../../src/ir/eval.js';
import type { Direction, InterfacePolicy, L2Rule, L3Rule } from '../../src/ir/types.js';
import { DIRECTIONS } from '../../src/ir/types.js';
import { policyFor } from '../support/policy.js';

const VM = '52:54:00:00:00:01';
const GW = '52:54:00:00:00:fe';
const IP1 = '10.0.0.2';
const IP2 = '10.0.0.3';

const V6_FILTER = `<filter name='ipv6-guard' chain='root'>
  <filterref filter='no-ipv6-spoofing'/>
  <filterref filter='allow-ipv6'/>
</filter>`;

const L3_FILTER = `<filter name='web-only' chain='root'>
  <rule action='accept' direction='in'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout'><all/></rule>
  <filterref filter='clean-traffic'/>
</filter>`;

/** One rule of (nearly) every kind of test: masks, ranges, negation, VLAN, STP, ARP, ICMP, TCP flags, states. */
const SINK_FILTER = `<filter name='sink' chain='root'>
  <rule action='drop' direction='out'><mac srcmacaddr='52:54:00:00:00:00' srcmacmask='ff:ff:ff:00:00:00' protocolid='0x88b5'/></rule>
  <rule action='accept' direction='in'><mac dstmacaddr='01:00:5e:00:00:00' dstmacmask='ff:ff:ff:80:00:00'/></rule>
  <rule action='drop' direction='inout'><vlan vlanid='42' encap-protocol='arp'/></rule>
  <rule action='drop' direction='out'><stp type='0' flags='1' root-priority='100' root-priority-hi='200' port='5' port-hi='9'
      root-address='52:54:00:00:00:00' root-address-mask='ff:ff:00:00:00:00'/></rule>
  <rule action='accept' direction='out'><arp opcode='Reply' arpsrcipaddr='10.0.0.0' arpsrcipmask='24' gratuitous='true'/></rule>
  <rule action='drop' direction='in'><arp match='no' arpsrcmacaddr='52:54:00:00:00:99' hwtype='1'/></rule>
  <rule action='accept' direction='out'><ip srcipaddr='10.0.0.0' srcipmask='255.255.255.0' protocol='tcp' dstportstart='1000' dstportend='2000' dscp='10'/></rule>
  <rule action='drop' direction='in'><ip match='no' srcipaddr='10.0.0.0' srcipmask='8' srcportstart='1' srcportend='1023' protocol='udp'/></rule>
  <rule action='accept' direction='out'><ipv6 srcipaddr='2001:db8::' srcipmask='32' protocol='icmpv6' type='128' typeend='129' code='0'/></rule>
  <rule action='drop' direction='in'><ipv6 dstipaddr='ff02::' dstipmask='16' protocol='udp' dstportstart='5353'/></rule>
  <rule action='accept' direction='out'><tcp dstipaddr='192.0.2.0' dstipmask='24' flags='SYN,ACK/SYN' dstportstart='22'/></rule>
  <rule action='drop' direction='in' statematch='false'><icmp type='8' code='0'/></rule>
  <rule action='accept' direction='in'><udp srcipfrom='10.0.0.10' srcipto='10.0.0.20' dscp='46'/></rule>
  <rule action='accept' direction='in'><tcp-ipv6 state='ESTABLISHED' srcportstart='443'/></rule>
  <rule action='drop' direction='out'><icmpv6 type='135'/></rule>
  <rule action='drop' direction='in'><udp match='no' dstportstart='53'/></rule>
</filter>`;

/** A root filter whose second rule can never decide: the first drops every frame from the VM. */
const SHADOW_FILTER = `<filter name='shadow' chain='root'>
  <rule action='drop' direction='out'><mac/></rule>
  <rule action='accept' direction='out'><ip srcipaddr='10.0.0.2'/></rule>
  <rule action='accept' direction='in'><arp opcode='Request'/></rule>
  <rule action='drop' direction='in'/>
</filter>`;

interface Case {
  name: string;
  policy: InterfacePolicy;
  /** `${direction} ${ruleId}` of rules that decide no frame, with the reason. */
  unreachable?: Record<string, string>;
  /** Verdicts the evaluator gives over the corpus, per direction (default both). */
  verdicts?: Partial<Record<Direction, string[]>>;
}

const cases: Case[] = [
  { name: 'clean-traffic (IP list)', policy: policyFor('clean-traffic', { IP: [IP1, IP2] }, [], { mac: VM }) },
  { name: 'clean-traffic-gateway', policy: policyFor('clean-traffic-gateway', { IP: IP1, GATEWAY_MAC: GW }, [], { mac: VM }) },
  { name: 'no-ip-spoofing', policy: policyFor('no-ip-spoofing', { IP: IP1 }, [], { mac: VM }) },
  { name: 'allow-dhcp', policy: policyFor('allow-dhcp', {}, [], { mac: VM }) },
  { name: 'allow-ipv6 + no-ipv6-spoofing', policy: policyFor('ipv6-guard', { IPV6: '2001:db8::2' }, [V6_FILTER], { mac: VM }) },
  { name: 'L3 rules + clean-traffic', policy: policyFor('web-only', { IP: IP1 }, [L3_FILTER], { mac: VM }) },
  {
    name: 'kitchen sink',
    policy: policyFor('sink', { IP: IP1, IPV6: '2001:db8::2' }, [SINK_FILTER], { mac: VM }),
    unreachable: {
      'in sink/6': 'hwtype != 1 together with an arpsrcmacaddr test: ebt_arp compares sender MACs only when the hardware type is 1, so no frame matches',
    },
  },
  {
    name: 'shadowed rule',
    policy: policyFor('shadow', {}, [SHADOW_FILTER], { mac: VM }),
    unreachable: { 'out shadow/2': 'shadowed: shadow/1 before it drops every frame from the VM' },
    verdicts: { out: ['drop'] },
  },
];

const sizes: string[] = [];
afterAll(() => {
  console.log(`corpus sizes:\n${sizes.join('\n')}`);
});

// ---- helpers ------------------------------------------------------------------------------

const evalFrame = (p: InterfacePolicy, f: CorpusFrame) => evaluate(p, f.direction, f.frame, f.conn ? { conn: f.conn } : {});

function l2Rules(p: InterfacePolicy, d: Direction): L2Rule[] {
  return [...p.l2[d].root.flatMap((e) => (e.kind === 'rule' ? [e.rule] : [])), ...p.l2[d].chains.flatMap((c) => c.rules)];
}

const l3Rules = (p: InterfacePolicy, d: Direction): L3Rule[] => (d === 'out' ? p.l3.fromVm : p.l3.toVm);

/**
 * `${direction} ${ruleId}` of the L2 rules that decide no frame of the corpus.
 * accept/drop rules decide when evaluate() names them in decidedBy; a `return`
 * (or `continue`) rule never ends the walk, so it counts when it is the rule
 * that matched and left its sub-chain (a match step in the trace).
 */
function undecidedL2(p: InterfacePolicy, corpus: CorpusFrame[]): string[] {
  const decided = new Set<string>();
  const matched = new Set<string>();
  for (const f of corpus) {
    const r = evalFrame(p, f);
    if (r.decidedBy?.stage === 'l2') decided.add(`${f.direction} ${r.decidedBy.ruleId}`);
    for (const t of r.trace) if (t.stage === 'l2' && t.event === 'match' && t.ruleId) matched.add(`${f.direction} ${t.ruleId}`);
  }
  return DIRECTIONS.flatMap((d) =>
    l2Rules(p, d)
      .filter((r) => !(r.verdict === 'accept' || r.verdict === 'drop' ? decided : matched).has(`${d} ${r.id}`))
      .map((r) => `${d} ${r.id}`),
  );
}

/** The L3 rules (fromVm, toVm) no frame of the corpus reaches and matches. */
function unmatchedL3(p: InterfacePolicy, corpus: CorpusFrame[]): string[] {
  const matched = new Set<string>();
  for (const f of corpus) for (const t of evalFrame(p, f).trace) if (t.stage === 'l3' && t.event === 'match' && t.ruleId) matched.add(`${f.direction} ${t.ruleId}`);
  return DIRECTIONS.flatMap((d) => l3Rules(p, d).filter((r) => !matched.has(`${d} ${r.id}`)).map((r) => `${d} ${r.id}`));
}

/** A policy holding only `rule` (made a drop), to ask the evaluator whether the rule's match holds. */
function isolate(p: InterfacePolicy, f: CorpusFrame): InterfacePolicy | undefined {
  const ref = f.rule;
  if (!ref) return undefined;
  const empty = { root: [], chains: [] };
  const iso: InterfacePolicy = { ...p, l2: { in: empty, out: empty }, l3: { fromVm: [], toVm: [], toHost: [] } };
  if (ref.stage === 'l2') {
    const r = l2Rules(p, f.direction).find((x) => x.id === ref.id);
    if (!r) return undefined;
    iso.l2 = { ...iso.l2, [f.direction]: { root: [{ kind: 'rule', rule: { ...r, verdict: 'drop' } }], chains: [] } };
  } else {
    const r = l3Rules(p, f.direction).find((x) => x.id === ref.id);
    if (!r) return undefined;
    iso.l3 = { ...iso.l3, [f.direction === 'out' ? 'fromVm' : 'toVm']: [{ ...r, verdict: 'drop' }] };
  }
  return iso;
}

/** Offset of the IPv4 header if the frame carries IPv4 (at most one VLAN tag). */
function ipv4Offset(b: Uint8Array): number | undefined {
  const type = ((b[12] ?? 0) << 8) | (b[13] ?? 0);
  if (type === 0x0800) return 14;
  if (type === 0x8100 && (((b[16] ?? 0) << 8) | (b[17] ?? 0)) === 0x0800) return 18;
  return undefined;
}

function ipv4HeaderSum(b: Uint8Array, off: number): number | undefined {
  const ihl = ((b[off] ?? 0) & 0x0f) * 4;
  if (b.length < off + ihl || ihl < 20) return undefined;
  let sum = 0;
  for (let i = 0; i < ihl; i += 2) sum += ((b[off + i] ?? 0) << 8) | (b[off + i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// ---- per policy -----------------------------------------------------------------------------

describe.each(cases)('corpus: $name', ({ name, policy: p, unreachable = {}, verdicts = {} }) => {
  const t0 = performance.now();
  const corpus = generateCorpus(p);
  const ms = performance.now() - t0;
  const count = (d: Direction) => corpus.filter((f) => f.direction === d).length;
  sizes.push(`  ${name.padEnd(32)} ${String(corpus.length).padStart(5)} frames (out ${count('out')}, in ${count('in')}), ${ms.toFixed(1)} ms`);

  it('is deterministic', () => {
    expect(generateCorpus(p)).toEqual(corpus);
  });

  it('has unique names and no duplicate frames', () => {
    expect(new Set(corpus.map((f) => f.name)).size).toBe(corpus.length);
    const keys = corpus.map((f) => `${f.direction} ${f.conn ? `${f.conn.state}/${f.conn.direction}` : 'new/original'} ${hex(f.frame)}`);
    expect(new Set(keys).size).toBe(corpus.length);
  });

  it('has both directions', () => {
    expect(count('out')).toBeGreaterThan(0);
    expect(count('in')).toBeGreaterThan(0);
  });

  it('has well-formed frames: lengths, tags and IPv4 checksums', () => {
    for (const f of corpus) {
      const short = ['runt', 'truncated', 'unpadded'].some((t) => f.tags.includes(t));
      if (f.tags.includes('runt')) expect(f.frame.length, f.name).toBeLessThan(14);
      else expect(f.frame.length, f.name).toBeGreaterThanOrEqual(14);
      if (short) expect(f.frame.length, f.name).toBeLessThan(60);
      else expect(f.frame.length, f.name).toBeGreaterThanOrEqual(60);
      const off = f.frame.length >= 14 ? ipv4Offset(f.frame) : undefined;
      const sum = off === undefined ? undefined : ipv4HeaderSum(f.frame, off);
      if (sum === undefined) continue;
      if (f.tags.includes('bad-csum')) expect(sum, f.name).not.toBe(0xffff);
      else expect(sum, `${f.name}: IPv4 header checksum`).toBe(0xffff);
    }
  });

  it('gets both verdicts from the evaluator in each direction', () => {
    for (const d of DIRECTIONS) {
      const got = new Set(corpus.filter((f) => f.direction === d).map((f) => evalFrame(p, f).verdict));
      expect([...got].sort(), d).toEqual(verdicts[d] ?? ['accept', 'drop']);
    }
  });

  it('has every L2 rule decide at least one frame (apart from the listed exceptions)', () => {
    expect(undecidedL2(p, corpus).sort()).toEqual(Object.keys(unreachable).sort());
  });

  it('has every L3 rule match at least one frame', () => {
    expect(unmatchedL3(p, corpus)).toEqual([]);
  });

  it('keeps its promises: match frames match their rule, violations do not', () => {
    for (const f of corpus) {
      if (!f.rule?.expect) continue;
      const iso = isolate(p, f);
      expect(iso, f.name).toBeDefined();
      const r = evalFrame(iso as InterfacePolicy, f);
      expect(r.decidedBy?.ruleId === f.rule.id, f.name).toBe(f.rule.expect === 'match');
    }
  });
});

describe('corpus: frames derived from the rules', () => {
  const sink = cases.find((c) => c.name === 'kitchen sink') as Case;
  const corpus = generateCorpus(sink.policy);
  const derived = corpus.filter((f) => f.rule?.expect);

  it('derives matching, boundary and violating frames for every kind of test', () => {
    expect(derived.length).toBeGreaterThan(100);
    const tests = new Set(derived.map((f) => f.rule?.test).filter((t) => t !== undefined));
    for (const t of ['src', 'dst', 'vlan-id', 'encap', 'stp-flags', 'stp-root-prio', 'stp-port', 'stp-root-addr', 'spa', 'gratuitous', 'proto', 'src-ip', 'dst-ip', 'sport', 'dport', 'tos', 'icmp-type', 'icmp-code', 'tcp-flags', 'icmp', 'dscp', 'state']) {
      expect(tests.has(t), t).toBe(true);
    }
  });

  it('names the values it chose', () => {
    const names = derived.map((f) => f.name);
    expect(names).toContain('out ipv4-tcp dport=999 (violates l2 sink/7 dport)');
    expect(names).toContain('out ipv4-tcp dport=2000 (boundary of l2 sink/7 dport)');
    expect(names).toContain('out ipv4-tcp src-ip=10.0.1.2 (violates l2 sink/7 src-ip)');
    expect(names).toContain('out vlan43-arp vlan-id=43 (violates l2 sink/3 vlan-id)');
    expect(names).toContain('in ipv6-tcp ct=established/reply (boundary of l3 sink/14 state)');
  });

  it('gives conntrack variants to rules with a state', () => {
    const states = derived.filter((f) => f.rule?.id === 'sink/14' && f.direction === 'in').map((f) => `${f.conn?.state}/${f.conn?.direction} ${f.rule?.expect}`);
    expect(states).toEqual(
      expect.arrayContaining(['established/original match', 'established/reply match', 'new/original no-match', 'related/original no-match']),
    );
  });
});

// ---- the base set and options ----------------------------------------------------------------

describe('corpus: base set and options', () => {
  const p = policyFor('clean-traffic', { IP: [IP1, IP2] }, [], { mac: VM });
  const corpus = generateCorpus(p);
  const byName = new Map(corpus.map((f) => [f.name, f]));
  const verdict = (name: string) => {
    const f = byName.get(name);
    expect(f, name).toBeDefined();
    return evalFrame(p, f as CorpusFrame).verdict;
  };

  it('covers the frame families in both directions', () => {
    for (const d of DIRECTIONS) {
      const tags = new Set(corpus.filter((f) => f.direction === d).flatMap((f) => f.tags));
      for (const t of ['base', 'derived', 'ipv4', 'ipv6', 'arp', 'rarp', 'vlan', 'stp', 'llc', 'other-ethertype', 'broadcast', 'multicast', 'truncated', 'runt', 'bad-csum', 'fragment']) {
        expect(tags.has(t), `${d} ${t}`).toBe(true);
      }
    }
  });

  it('names the base frames by what they are, with the verdicts libvirt gives', () => {
    expect(verdict(`out ipv4-udp ${IP1}>10.0.0.254`)).toBe('accept');
    expect(verdict(`out ipv4-udp ${IP2}>10.0.0.254`)).toBe('accept');
    expect(verdict('out ipv4-udp src-ip=10.0.0.66 (wrong source IP)')).toBe('drop');
    expect(verdict('out ipv4-udp src-mac=52:54:00:00:00:66 (wrong source MAC)')).toBe('drop');
    expect(verdict('out dhcp-discover 0.0.0.0:68>255.255.255.255:67')).toBe('accept');
    expect(verdict(`out arp-gratuitous ${IP1} (own IP)`)).toBe('accept');
    expect(verdict('out arp-gratuitous 10.0.0.66 (foreign IP)')).toBe('drop');
    expect(verdict(`out rarp-announce ${VM} (QEMU, the VM's MAC)`)).toBe('accept');
    expect(verdict('in rarp-announce 52:54:00:00:00:99 (QEMU, a peer\'s MAC)')).toBe('drop');
    expect(verdict(`out ether-0x0835 from ${VM} to broadcast`)).toBe('accept');
    expect(verdict(`in dhcp-offer 10.0.0.254:67>255.255.255.255:68`)).toBe('accept');
    expect(verdict('in runt 13 bytes')).toBe('drop');
  });

  it('sends frames to the VM from the peer', () => {
    const peer = '52:54:00:00:00:99';
    const base = corpus.filter((f) => f.direction === 'in' && f.tags.includes('base') && f.frame.length >= 14 && !f.name.includes('rarp-announce'));
    const srcs = new Set(base.map((f) => hex(f.frame.subarray(6, 12))));
    expect(srcs.has(peer.replaceAll(':', ''))).toBe(true);
    expect(srcs.has(VM.replaceAll(':', ''))).toBe(false);
  });

  it('uses the peer addresses it is given', () => {
    const c = generateCorpus(p, { peerMac: '02:00:00:00:00:07', peerIp: '10.0.0.77', peerIp6: 'fe80::7' });
    expect(c.some((f) => f.name === `in ipv4-udp 10.0.0.77>${IP1}`)).toBe(true);
    expect(c.some((f) => f.name === 'in ipv6-udp fe80::7>fe80::5054:ff:fe00:1')).toBe(true);
    expect(c.some((f) => f.direction === 'in' && hex(f.frame.subarray(6, 12)) === '020000000007')).toBe(true);
  });

  it('caps the total at max but keeps the whole base set', () => {
    const base = corpus.filter((f) => f.tags.includes('base'));
    const matches = corpus.filter((f) => f.tags.includes('match'));
    expect(base.length).toBeLessThan(corpus.length);
    const capped = generateCorpus(p, { max: base.length + 5 });
    expect(capped).toHaveLength(base.length + 5);
    expect(capped.filter((f) => f.tags.includes('base'))).toEqual(base);
    // a sub-list of the full corpus, in the same order
    const names = corpus.map((f) => f.name);
    const idx = capped.map((f) => names.indexOf(f.name));
    expect(idx.every((x, i) => x >= 0 && (i === 0 || x > (idx[i - 1] as number)))).toBe(true);
    // frames that match a rule are kept before violations, boundary values and edge copies
    expect(matches.length).toBeGreaterThan(0);
    expect(matches.length).toBeLessThanOrEqual(5);
    expect(capped.filter((f) => f.tags.includes('match'))).toEqual(matches);
    expect(capped.some((f) => f.tags.includes('truncated') && !f.tags.includes('base'))).toBe(false);
    expect(generateCorpus(p, { max: 1 })).toEqual(base);
  });

  it('leaves out the edge families it is told to', () => {
    const l3 = policyFor('web-only', { IP: IP1 }, [L3_FILTER], { mac: VM });
    const full = generateCorpus(l3);
    expect(full.some((f) => f.conn && f.conn.state !== 'new')).toBe(true);
    const c = generateCorpus(l3, { include: { truncated: false, runts: false, vlan: false, l3State: false } });
    for (const t of ['truncated', 'unpadded', 'runt', 'vlan', 'state']) expect(c.some((f) => f.tags.includes(t)), t).toBe(false);
    expect(c.some((f) => f.conn)).toBe(false);
    expect(c.every((f) => f.frame.length >= 60)).toBe(true);
  });

  // Speed is the benchmark's business, not a unit test's: the warm time is printed, not asserted.
  it('prints the warm generation time of the clean-traffic corpus', () => {
    const first = generateCorpus(p);
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) expect(generateCorpus(p)).toHaveLength(first.length);
    const ms = (performance.now() - t0) / 10;
    sizes.push(`  clean-traffic warm: ${ms.toFixed(2)} ms per corpus`);
  });
});
