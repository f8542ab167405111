import { describe, expect, it } from 'vitest';
import { nwfErrorOf } from '../support/cli.js';
import { policyFor } from '../support/policy.js';

/** The source/destination addresses of the rules of filter `t` in the from-VM root chain. */
function addrs(filter: string, params: Record<string, string | string[]>): string[] {
  const p = policyFor('t', params, [filter]);
  return p.l2.out.root.flatMap((e) => (e.kind === 'rule' && e.rule.match.proto === 'ipv4' ? [`${e.rule.match.srcIp?.addr ?? '*'}>${e.rule.match.dstIp?.addr ?? '*'}`] : []));
}

const rule = (attrs: string): string => `<filter name='t' chain='root'><rule action='accept' direction='out'><ip ${attrs}/></rule></filter>`;

describe('variables', () => {
  it('a list makes one rule per element ($V = $V[@0])', () => {
    expect(addrs(rule("srcipaddr='$A'"), { A: ['1.1.1.1', '2.2.2.2', '3.3.3.3'] })).toEqual(['1.1.1.1>*', '2.2.2.2>*', '3.3.3.3>*']);
  });

  it('$V[N] picks element N', () => {
    expect(addrs(rule("srcipaddr='$A[1]'"), { A: ['1.1.1.1', '2.2.2.2'] })).toEqual(['2.2.2.2>*']);
  });

  it('variables sharing an iterator are walked in parallel (zip)', () => {
    expect(addrs(rule("srcipaddr='$A' dstipaddr='$B'"), { A: ['1.1.1.1', '2.2.2.2'], B: ['9.9.9.1', '9.9.9.2'] })).toEqual(['1.1.1.1>9.9.9.1', '2.2.2.2>9.9.9.2']);
  });

  it('different iterators form the cartesian product, the first one changing fastest', () => {
    expect(addrs(rule("srcipaddr='$A[@1]' dstipaddr='$B[@2]'"), { A: ['1.1.1.1', '2.2.2.2'], B: ['9.9.9.1', '9.9.9.2'] })).toEqual([
      '1.1.1.1>9.9.9.1',
      '2.2.2.2>9.9.9.1',
      '1.1.1.1>9.9.9.2',
      '2.2.2.2>9.9.9.2',
    ]);
  });

  it('a combination that repeats an earlier one is skipped', () => {
    expect(addrs(rule("srcipaddr='$A'"), { A: ['1.1.1.1', '2.2.2.2', '1.1.1.1'] })).toEqual(['1.1.1.1>*', '2.2.2.2>*']);
    expect(addrs(rule("srcipaddr='$A' dstipaddr='$B'"), { A: ['1.1.1.1', '1.1.1.1', '1.1.1.1'], B: ['9.9.9.1', '9.9.9.2', '9.9.9.1'] })).toEqual([
      '1.1.1.1>9.9.9.1',
      '1.1.1.1>9.9.9.2',
    ]);
  });

  it('lists of unequal length on one iterator are an error naming them', () => {
    const e = nwfErrorOf(() => addrs(rule("srcipaddr='$A' dstipaddr='$B'"), { A: ['1.1.1.1', '2.2.2.2'], B: ['9.9.9.1'] }));
    expect(e.code).toBe('NWF1204');
    expect(e.message).toContain('A (2)');
    expect(e.message).toContain('B (1)');
  });

  it('an index past the end is an error', () => {
    expect(nwfErrorOf(() => addrs(rule("srcipaddr='$A[2]'"), { A: ['1.1.1.1'] })).code).toBe('NWF1205');
  });

  it('a missing variable is an error naming the variable, the filter and the interface', () => {
    const e = nwfErrorOf(() => addrs(rule("srcipaddr='$NOPE'"), {}));
    expect(e.code).toBe('NWF1203');
    expect(e.message).toContain("'NOPE'");
    expect(e.details.filter).toBe('t');
    expect(e.details.iface).toBe('vnet0');
    expect(e.format()).toContain('inline-0.xml');
  });

  it('a missing $IP learns (CTRL_IP_LEARNING any by default): its tests are marked learned', () => {
    const p = policyFor('clean-traffic', {});
    expect(p.learning).toEqual({ mode: 'any', dhcpServers: [] });
    expect(p.vars.IP).toBeUndefined();
    const ipTests = JSON.stringify(p.l2.out).match(/"learned":true/g) ?? [];
    expect(ipTests.length).toBeGreaterThanOrEqual(2); // no-ip-spoofing and no-arp-ip-spoofing
    expect(JSON.stringify(p.l2)).not.toContain('"port":true,"learned"');
    const d = policyFor('clean-traffic', { CTRL_IP_LEARNING: 'DHCP', DHCPSERVER: ['10.0.0.1', '10.0.0.1'] });
    expect(d.learning).toEqual({ mode: 'dhcp', dhcpServers: ['10.0.0.1'] });
  });

  it("a missing $IP with CTRL_IP_LEARNING none says so and how to give it", () => {
    const e = nwfErrorOf(() => policyFor('clean-traffic', { CTRL_IP_LEARNING: 'none' }));
    expect(e.code).toBe('NWF1206');
    expect(e.details.hint).toContain("<parameter name='IP'");
    expect(['no-ip-spoofing', 'no-arp-ip-spoofing']).toContain(e.details.filter);
  });

  it('a learned $IP only as plain $IP: an indexed access is a missing variable, as in libvirt', () => {
    const e = nwfErrorOf(() => addrs(rule("srcipaddr='$IP[@1]'"), {}));
    expect(e.code).toBe('NWF1203');
  });

  it('a variable value that is not valid for the attribute is an error', () => {
    const e = nwfErrorOf(() => policyFor('clean-traffic', { IP: 'fe80::1' }));
    expect(e.code).toBe('NWF1101');
    expect(e.message).toContain('$IP');
  });

  it("the caller's variables override a filterref's own parameters", () => {
    const f = `<filter name='t' chain='root'><filterref filter='u'><parameter name='A' value='1.1.1.1'/><parameter name='B' value='2.2.2.2'/></filterref></filter>`;
    const u = `<filter name='u' chain='root'><rule action='accept' direction='out'><ip srcipaddr='$A' dstipaddr='$B'/></rule></filter>`;
    const p = policyFor('t', { A: '7.7.7.7' }, [f, u]);
    const r = p.l2.out.root[0];
    expect(r?.kind === 'rule' && r.rule.match).toMatchObject({ srcIp: { addr: '7.7.7.7' }, dstIp: { addr: '2.2.2.2' } });
  });
});
