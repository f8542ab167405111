import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { evaluate } from '../../src/ir/eval.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import { NwfError } from '../../src/util/errors.js';
import * as F from '../../src/lab/frames/build.js';
import { policyFor } from '../support/policy.js';

const lower = (...ps: InterfacePolicy[]) => lowerToNft({ version: 1, interfaces: ps, notes: [] });
const text = (...ps: InterfacePolicy[]) => printNftText(lower(...ps).batch);
const textPerIface = (...ps: InterfacePolicy[]) => printNftText(lowerToNft({ version: 1, interfaces: ps, notes: [] }, { share: false }).batch);

function chain(t: string, name: string): string[] {
  return t
    .split('\n')
    .filter((l) => l.startsWith(`add rule bridge nwf_fast ${name} `))
    .map((l) => l.slice(`add rule bridge nwf_fast ${name} `.length));
}

describe('nft lowering', () => {
  const ct = policyFor('clean-traffic', { IP: '10.0.0.2' });

  it('builds only its own tables and dispatches by interface name', () => {
    const t = text(ct, policyFor('clean-traffic', { IP: '10.0.0.3' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' }));
    expect(t.split('\n')[0]).toBe('add table bridge nwf_fast');
    expect(t).not.toMatch(/^delete /m); // the teardown is computed at load time from the kernel's tables
    expect(t).not.toMatch(/flush ruleset|table bridge filter|table bridge nat/);
    expect(t).toContain('add map bridge nwf_fast from_vm { type ifname : verdict; elements = { "vnet0" : jump is0, "vnet1" : jump is0 }; }');
    expect(chain(t, 'pre')).toEqual(['meta iifname vmap @from_vm comment "traffic from the VMs"']);
    expect(chain(t, 'post')).toEqual(['meta oifname vmap @to_vm comment "traffic to the VMs"']);
  });

  it('shares chains between interfaces of one shape, with their addresses in sets', () => {
    const t = text(ct, policyFor('clean-traffic', { IP: ['10.0.0.3', '10.0.0.4'] }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' }));
    expect(t).toContain('add set bridge nwf_fast is0_a1 { type ifname . ipv4_addr; elements = { "vnet0" . 10.0.0.2, "vnet1" . 10.0.0.3, "vnet1" . 10.0.0.4 }; }');
    expect(chain(t, 'is0_ipv4-ip')).toContain('ether type 0x800 meta length >= 20 meta iifname . ip saddr @is0_a1 return comment "no-ip-spoofing/2"');
    expect(chain(t, 'is0_mac')).toContain('counter name meta iifname map @cnt_out_mac_spoof drop comment "no-mac-spoofing/2"');
    expect(t).toContain('add map bridge nwf_fast cnt_out_mac_spoof { type ifname : counter; elements = { "vnet0" : "drop_vnet0_mac-spoof", "vnet1" : "drop_vnet1_mac-spoof" }; }');
    expect(t).not.toContain('chain bridge nwf_fast i_vnet0');
  });

  it('falls back to per-interface chains when sharing would not be exact (negated test over a list)', () => {
    const f = `<filter name='t' chain='root'><rule action='drop' direction='out'><ip match='no' srcipaddr='$IP'/></rule></filter>`;
    const t = text(policyFor('t', { IP: ['10.0.0.2', '10.0.0.3'] }, [f]), policyFor('t', { IP: ['10.0.0.4', '10.0.0.5'] }, [f], { iface: 'vnet1', mac: '52:54:00:00:00:02' }));
    expect(t).toContain('add chain bridge nwf_fast i_vnet0');
    expect(t).toContain('"vnet1" : jump i_vnet1');
  });

  it("keeps libvirt's order and ends every chain with an explicit accept", () => {
    const t = textPerIface(ct);
    expect(chain(t, 'i_vnet0')).toEqual([
      'jump i_vnet0_mac comment "jump mac"',
      'ether type 0x800 jump i_vnet0_ipv4-ip comment "jump ipv4-ip"',
      'ether type 0x800 accept comment "clean-traffic/1"',
      'ether type 0x806 jump i_vnet0_arp-mac comment "jump arp-mac"',
      'ether type 0x806 jump i_vnet0_arp-ip comment "jump arp-ip"',
      'ether type 0x806 accept comment "clean-traffic/2"',
      'ether type 0x8035 jump i_vnet0_rarp comment "jump rarp"',
      'ether type 0x835 accept comment "qemu-announce-self/1"',
      'counter name "drop_vnet0_other-l2" drop comment "no-other-l2-traffic/1"',
      'accept comment "end of chain: libvirt accepts"',
    ]);
    expect(chain(t, 'i_vnet0_mac')).toEqual([
      'ether saddr 52:54:00:00:00:01 return comment "no-mac-spoofing/1"',
      'counter name "drop_vnet0_mac-spoof" drop comment "no-mac-spoofing/2"',
      'accept comment "end of chain: libvirt accepts"',
    ]);
  });

  it('serialises to libnftables JSON with metainfo first', () => {
    const j = toNftJson(lower(ct).batch);
    expect(Object.keys(j.nftables[0] ?? {})).toEqual(['metainfo']);
    expect(j.nftables.length).toBeGreaterThan(40);
  });

  it('puts L3 rules in the inet table with libvirt connection-state semantics', () => {
    const f = `<filter name='web' chain='root'><filterref filter='clean-traffic'/><rule action='accept' direction='in'><tcp dstportstart='80'/></rule><rule action='drop' direction='inout'><all/></rule></filter>`;
    const l = lower(policyFor('web', { IP: '10.0.0.2' }, [f]));
    expect(l.l3).toBe(true);
    const t = printNftText(l.batch);
    expect(t).toContain('add rule ip nwf_fast fo_vnet0 meta l4proto 6 jump l4chk_20');
    expect(t).toContain('add rule ip nwf_fast fo_vnet0 meta l4proto 6 @th,16,16 80 ct state == { new, established } ct direction original accept');
    expect(t).toContain('add rule ip nwf_fast fi_vnet0 meta l4proto 6 @th,0,16 80 ct state == { established } ct direction reply return');
    expect(t).toContain('add rule ip nwf_fast l4chk_20 @th,152,8 >= 0 return');
    expect(t).not.toContain('table ip6 nwf_fast {');
    expect(t).not.toMatch(/add chain ip6 /);
    expect(t).toMatch(/add rule bridge nwf_fast min_vnet0 meta mark set 0x80010000/);
  });
});

describe('refused rather than approximated (differences from libvirt)', () => {
  const refuse = (xml: string, code: string, re: RegExp) => {
    let err: unknown;
    try {
      lower(policyFor('t', { IP: '10.0.0.2' }, [xml]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NwfError);
    expect((err as NwfError).code).toBe(code);
    expect((err as NwfError).message).toMatch(re);
  };
  it('the ARP gratuitous test', () => refuse(`<filter name='t' chain='root'><rule action='drop' direction='out'><arp gratuitous='true'/></rule></filter>`, 'NWF1402', /gratuitous/));
  it('a TCP option match', () => refuse(`<filter name='t' chain='root'><rule action='drop' direction='out'><tcp option='2'/></rule></filter>`, 'NWF1402', /TCP option/));
  it('a negated ICMP type with a code', () => refuse(`<filter name='t' chain='root'><rule action='drop' direction='out'><icmp match='no' type='8' code='0'/></rule></filter>`, 'NWF1402', /ICMP/));
  it('ipset matches', () => refuse(`<filter name='t' chain='root'><rule action='drop' direction='out'><tcp ipset='x' ipsetflags='src'/></rule></filter>`, 'NWF1402', /ipset/));
});

describe('evaluator choices that differ from libvirt', () => {
  it('continue in an L3 rule goes on with the next rule', () => {
    const f = `<filter name='t' chain='root'><rule action='continue' direction='out' statematch='false'><udp/></rule><rule action='drop' direction='out' statematch='false'><udp/></rule></filter>`;
    const p = policyFor('t', {}, [f]);
    const r = evaluate(p, 'out', F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: '52:54:00:00:00:02', srcIp: '10.0.0.2', dstIp: '10.0.0.3', sport: 1, dport: 2 }));
    expect(r.verdict).toBe('drop');
    expect(r.decidedBy?.ruleId).toBe('t/2');
  });
  it("state='NONE' places the rule in its own direction only, without a state match", () => {
    const f = `<filter name='t' chain='root'><rule action='accept' direction='out'><tcp state='NONE'/></rule></filter>`;
    const p = policyFor('t', {}, [f]);
    expect(p.l3.fromVm).toHaveLength(1);
    expect(p.l3.fromVm[0]?.state).toBeUndefined();
    expect(p.l3.toVm).toHaveLength(0);
  });
});
