import { describe, expect, it } from 'vitest';
import type { L2Policy } from '../../src/ir/types.js';
import { policyFor } from '../support/policy.js';

/** One line per root entry: a jump (with its chain's rules) or a rule. */
function outline(p: L2Policy): string[] {
  return p.root.map((e) => {
    if (e.kind === 'rule') return `${e.rule.verdict} ${e.rule.id} p${e.rule.priority}`;
    const ch = p.chains.find((c) => c.name === e.chain);
    return `jump ${e.chain} p${e.priority} [${ch?.rules.map((r) => `${r.verdict} ${r.id}`).join(', ')}]`;
  });
}

describe('clean-traffic for a VM with MAC and IP', () => {
  const p = policyFor('clean-traffic', { IP: '10.0.0.2' });

  it('frames from the VM: the walk-through of semantics section 7, in exactly that order', () => {
    expect(outline(p.l2.out)).toEqual([
      'jump mac p-800 [return no-mac-spoofing/1, drop no-mac-spoofing/2]',
      'jump ipv4-ip p-710 [return no-ip-spoofing/1, return no-ip-spoofing/2, drop no-ip-spoofing/3]',
      'accept clean-traffic/1 p-650',
      'jump arp-mac p-520 [return no-arp-mac-spoofing/1, drop no-arp-mac-spoofing/2]',
      'jump arp-ip p-510 [return no-arp-ip-spoofing/1, drop no-arp-ip-spoofing/2]',
      'accept clean-traffic/2 p-500',
      'jump rarp p-400 [accept qemu-announce-self-rarp/1, drop no-other-rarp-traffic/1]',
      'accept qemu-announce-self/1 p500',
      'drop no-other-l2-traffic/1 p1000',
    ]);
    const guards = p.l2.out.root.filter((e) => e.kind === 'jump').map((e) => (e.kind === 'jump' ? e.guard : undefined));
    expect(guards).toEqual([
      { kind: 'none' },
      { kind: 'ethertype', etherType: 0x0800 },
      { kind: 'ethertype', etherType: 0x0806 },
      { kind: 'ethertype', etherType: 0x0806 },
      { kind: 'ethertype', etherType: 0x8035 },
    ]);
  });

  it('frames to the VM: IPv4 via allow-incoming-ipv4, ARP, the RARP announce, the rest dropped', () => {
    expect(outline(p.l2.in)).toEqual([
      'jump ipv4 p-700 [accept allow-incoming-ipv4/1]',
      'accept clean-traffic/2 p-500',
      'jump rarp p-400 [accept qemu-announce-self-rarp/2, drop no-other-rarp-traffic/1]',
      'drop no-other-l2-traffic/1 p1000',
    ]);
  });

  it('orients inout rules: the from-VM copy swaps source and destination', () => {
    const f = `<filter name='t' chain='root'><rule action='accept' direction='inout'><mac srcmacaddr='52:54:00:aa:aa:aa' dstmacaddr='52:54:00:bb:bb:bb'/></rule></filter>`;
    const q = policyFor('t', {}, [f]);
    const out = q.l2.out.root[0];
    const inn = q.l2.in.root[0];
    expect(out?.kind === 'rule' && out.rule.match).toMatchObject({ src: { addr: '52:54:00:bb:bb:bb' }, dst: { addr: '52:54:00:aa:aa:aa' } });
    expect(inn?.kind === 'rule' && inn.rule.match).toMatchObject({ src: { addr: '52:54:00:aa:aa:aa' }, dst: { addr: '52:54:00:bb:bb:bb' } });
  });
});

describe('ordering rules', () => {
  it('keeps document order among equal priorities (root and sub-chains)', () => {
    const f = `<filter name='t' chain='root'>
      <rule action='accept' direction='out'><mac protocolid='0x0801'/></rule>
      <rule action='drop' direction='out'><mac protocolid='0x0802'/></rule>
      <rule action='return' direction='out'><mac protocolid='0x0803'/></rule>
      <filterref filter='s'/></filter>`;
    const s = `<filter name='s' chain='ipv4-x' priority='-700'>
      <rule action='return' direction='out' priority='5'><ip protocol='udp'/></rule>
      <rule action='drop' direction='out' priority='5'><ip protocol='tcp'/></rule></filter>`;
    const q = policyFor('t', {}, [f, s]);
    expect(outline(q.l2.out)).toEqual(['jump ipv4-x p-700 [return s/1, drop s/2]', 'accept t/1 p500', 'drop t/2 p500', 'return t/3 p500']);
  });

  it('raises sub-chain rules below the chain priority to it, and places a jump before root rules of equal priority', () => {
    const f = `<filter name='t' chain='root'>
      <rule action='accept' direction='out' priority='-300'><mac protocolid='0x0801'/></rule>
      <rule action='drop' direction='out' priority='-400'><mac protocolid='0x0802'/></rule>
      <filterref filter='s'/></filter>`;
    const s = `<filter name='s' chain='arp-x' priority='-400'><rule action='drop' direction='out' priority='-900'><arp/></rule></filter>`;
    const q = policyFor('t', {}, [f, s]);
    expect(outline(q.l2.out)).toEqual(['jump arp-x p-400 [drop s/1]', 'drop t/2 p-400', 'accept t/1 p-300']);
    expect(q.l2.out.chains[0]?.rules[0]?.priority).toBe(-400);
  });

  it('puts root rules before sub-chain rules in the L3 chains whatever their priority (libvirt quirk)', () => {
    const f = `<filter name='t' chain='root'><filterref filter='s'/><rule action='drop' direction='out' priority='900'><tcp/></rule></filter>`;
    const s = `<filter name='s' chain='ipv4'><rule action='accept' direction='out' priority='-900'><tcp dstportstart='22'/></rule></filter>`;
    const q = policyFor('t', {}, [f, s]);
    expect(q.l3.fromVm.map((r) => r.id)).toEqual(['t/1', 's/1']);
  });

  it('only creates a jump in the directions that have rules for the chain', () => {
    const p = policyFor('clean-traffic', { IP: '10.0.0.2' });
    expect(p.l2.out.chains.map((c) => c.name)).not.toContain('ipv4');
    expect(p.l2.in.chains.map((c) => c.name)).toEqual(['ipv4', 'rarp']);
  });
});

describe('L3 placement and connection state', () => {
  it("an out accept: NEW,ESTABLISHED from the VM (original), ESTABLISHED back to it (reply), and to the host", () => {
    const f = `<filter name='t' chain='root'><rule action='accept' direction='out'><tcp dstportstart='80'/></rule></filter>`;
    const q = policyFor('t', {}, [f]);
    expect(q.l3.fromVm).toMatchObject([{ verdict: 'accept', dstPort: { lo: 80 }, state: ['NEW', 'ESTABLISHED'], ctDir: 'original' }]);
    expect(q.l3.toVm).toMatchObject([{ verdict: 'accept', srcPort: { lo: 80 }, state: ['ESTABLISHED'], ctDir: 'reply' }]);
    expect(q.l3.toHost).toMatchObject([{ verdict: 'accept', dstPort: { lo: 80 }, state: ['NEW', 'ESTABLISHED'] }]);
  });

  it('an in accept: NEW,ESTABLISHED to the VM, ESTABLISHED from it', () => {
    const f = `<filter name='t' chain='root'><rule action='accept' direction='in'><tcp dstportstart='22'/></rule></filter>`;
    const q = policyFor('t', {}, [f]);
    expect(q.l3.toVm).toMatchObject([{ dstPort: { lo: 22 }, state: ['NEW', 'ESTABLISHED'], ctDir: 'original' }]);
    expect(q.l3.fromVm).toMatchObject([{ srcPort: { lo: 22 }, state: ['ESTABLISHED'], ctDir: 'reply' }]);
  });

  it('drop, inout and statematch=false carry no state; an explicit state places the rule in its own direction only', () => {
    const f = `<filter name='t' chain='root'>
      <rule action='drop' direction='out'><udp/></rule>
      <rule action='accept' direction='inout'><icmp/></rule>
      <rule action='accept' direction='out' statematch='false'><tcp/></rule>
      <rule action='accept' direction='in'><tcp dstportstart='443' state='NEW'/></rule></filter>`;
    const q = policyFor('t', {}, [f]);
    expect(q.l3.fromVm.map((r) => [r.id, r.state])).toEqual([['t/1', undefined], ['t/2', undefined], ['t/3', undefined]]);
    expect(q.l3.toVm.map((r) => [r.id, r.state])).toEqual([['t/1', undefined], ['t/2', undefined], ['t/3', undefined], ['t/4', ['NEW']]]);
  });
});
