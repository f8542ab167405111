import { describe, expect, it } from 'vitest';
import { nwfErrorOf } from '../support/cli.js';
import { policyFor } from '../support/policy.js';
import { learningModeOf, parseIpLearning, type IpLearning } from '../../src/resolve/learning.js';

const ctx = { iface: 'vnet0', filter: 'clean-traffic', loc: { file: 'binding.xml' } };
const parse = (params: Record<string, string[]>): IpLearning => parseIpLearning(new Map(Object.entries(params)), ctx);

describe('CTRL_IP_LEARNING and DHCPSERVER', () => {
  it('unset is any; any, dhcp and none in any case', () => {
    expect(parse({})).toEqual({ mode: 'any', dhcpServers: [] });
    expect(parse({ CTRL_IP_LEARNING: ['ANY'] }).mode).toBe('any');
    expect(parse({ CTRL_IP_LEARNING: ['Dhcp'] }).mode).toBe('dhcp');
    expect(parse({ CTRL_IP_LEARNING: ['none'] }).mode).toBe('none');
    expect(learningModeOf('nOnE')).toBe('none');
    expect(learningModeOf('all')).toBeUndefined();
  });

  it('only the first value counts', () => {
    expect(parse({ CTRL_IP_LEARNING: ['dhcp', 'bogus'] }).mode).toBe('dhcp');
  });

  it('another value is NWF1215, naming the value and what is expected', () => {
    const e = nwfErrorOf(() => parse({ CTRL_IP_LEARNING: ['sometimes'] }));
    expect(e.code).toBe('NWF1215');
    expect(e.message).toContain("'sometimes'");
    expect(e.details.expected).toContain('any, dhcp or none');
    expect(e.details.iface).toBe('vnet0');
    expect(nwfErrorOf(() => parse({ CTRL_IP_LEARNING: [''] })).code).toBe('NWF1215');
  });

  it('dhcp: DHCPSERVER are IPv4 addresses, normalised, repeats dropped; anything else is NWF1215', () => {
    expect(parse({ CTRL_IP_LEARNING: ['dhcp'], DHCPSERVER: ['10.0.0.1', '10.0.0.254', '10.0.0.1'] }).dhcpServers).toEqual(['10.0.0.1', '10.0.0.254']);
    const e = nwfErrorOf(() => parse({ CTRL_IP_LEARNING: ['dhcp'], DHCPSERVER: ['fd00::1'] }));
    expect(e.code).toBe('NWF1215');
    expect(e.message).toContain("'fd00::1'");
  });

  it('other modes keep DHCPSERVER as given (allow-dhcpv6-server reads IPv6 servers from it)', () => {
    expect(parse({ DHCPSERVER: ['fd00::1'] })).toEqual({ mode: 'any', dhcpServers: ['fd00::1'] });
  });
});

describe('a missing $IP and CTRL_IP_LEARNING in the resolver', () => {
  it('none: NWF1206, learning is off', () => {
    const e = nwfErrorOf(() => policyFor('clean-traffic', { CTRL_IP_LEARNING: 'none' }));
    expect(e.code).toBe('NWF1206');
    expect(e.message).toContain('CTRL_IP_LEARNING=none');
  });

  it('an invalid value: NWF1215', () => {
    expect(nwfErrorOf(() => policyFor('clean-traffic', { CTRL_IP_LEARNING: 'often' })).code).toBe('NWF1215');
  });

  it('an invalid value with $IP given is not read, as in libvirt', () => {
    expect(policyFor('clean-traffic', { IP: '10.0.0.2', CTRL_IP_LEARNING: 'often' }).iface).toBe('vnet0');
  });
});
