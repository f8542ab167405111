import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { nftNames } from '../../src/backends/nft/names.js';
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

/** The name of the shape chain a port's dispatch entry jumps to. */
function entry(t: string, iface: string, map = 'from_vm'): string {
  const m = new RegExp(`add element bridge nwf_fast ${map} \\{ "${iface}" : (?:jump|goto) (\\S+) \\}`).exec(t);
  if (!m) throw new Error(`no ${map} entry for ${iface}`);
  return m[1] as string;
}

describe('nft lowering', () => {
  const ct = policyFor('clean-traffic', { IP: '10.0.0.2' });
  const vnet1 = (ips: string | string[] = '10.0.0.3') => policyFor('clean-traffic', { IP: ips }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' });

  it('builds only its own tables, dispatches by interface name, and fails closed for ports without an entry', () => {
    const t = text(ct, vnet1());
    expect(t.split('\n')[0]).toBe('add table bridge nwf_fast');
    expect(t).not.toMatch(/^delete /m); // the teardown is computed at load time from the kernel's tables
    expect(t).not.toMatch(/flush ruleset|table bridge filter|table bridge nat/);
    expect(t).toContain('add map bridge nwf_fast from_vm { type ifname : verdict; }');
    // one tap pattern: compared directly (a prefix compare), no set
    expect(t).not.toContain(`add set bridge nwf_fast ${nftNames.configSet('taps', ['vnet*'])}`);
    expect(chain(t, 'pre')).toEqual([
      // the optimizer's fast paths from the VMs (opt/fast-base.ts), then the dispatch
      'ether type 0x800 meta length >= 20 meta iifname . ether saddr . ip saddr @fast_ip4 accept comment "fast-base ip4: a valid frame from a VM, accepted before the dispatch"',
      'ether type 0x806 @nh,0,32 0x10800 @nh,32,16 0x604 meta length >= 28 meta iifname . ether saddr . arp saddr ether . arp saddr ip @fast_arp accept comment "fast-base arp: a valid frame from a VM, accepted before the dispatch"',
      'ether type 0x86dd meta length >= 40 meta iifname . ether saddr . ip6 saddr @fast_ip6 accept comment "fast-base ip6: a valid frame from a VM, accepted before the dispatch"',
      'meta iifname vmap @from_vm comment "traffic from the VMs"',
      'meta iifname "vnet*" goto drop-out-unprotected comment "a VM port without an entry: unprotected, dropped"',
    ]);
    expect(chain(t, 'post')).toEqual([
      'meta oifname vmap @to_vm comment "traffic to the VMs"',
      'meta oifname "vnet*" goto drop-in-unprotected comment "a VM port without an entry: unprotected, dropped"',
    ]);
    expect(chain(t, 'drop-out-unprotected')).toEqual([
      'meta iifname @cnt-out-unprotected drop comment "a unprotected drop of the port, counted"',
      'counter name "dropc-out-unprotected" drop comment "a unprotected drop of a port without its counter"',
    ]);
    expect(entry(t, 'vnet0')).toBe(entry(t, 'vnet1'));
  });

  it('with managed bridges, matches only their ports', () => {
    const t = printNftText(lowerToNft({ version: 1, interfaces: [ct], notes: [] }, { skeleton: { tapPatterns: ['vnet*', 'tap0'], bridges: ['br0'], bridgeMeta: true } }).batch);
    const bridges = nftNames.configSet('bridges', ['br0']);
    const taps = nftNames.configSet('taps', ['vnet*', 'tap0']);
    expect(t).toContain(`add set bridge nwf_fast ${bridges} { type ifname; elements = { "br0" }; }`);
    expect(chain(t, 'pre')).toContain(`meta ibrname @${bridges} meta iifname @${taps} goto drop-out-unprotected comment "a VM port without an entry: unprotected, dropped"`);
    expect(t).toContain('elements = { "vnet*", "tap0" }');
    const one = printNftText(lowerToNft({ version: 1, interfaces: [ct], notes: [] }, { skeleton: { tapPatterns: ['tap0'], bridges: ['br0'], bridgeMeta: true } }).batch);
    expect(chain(one, 'post')).toContain(`meta oifname "tap0" meta obrname @${bridges} goto drop-in-unprotected comment "a VM port without an entry: unprotected, dropped"`);
  });

  it('shares chains between interfaces of one shape, with their addresses in sets; drops go to counting drop chains', () => {
    const t = text(ct, vnet1(['10.0.0.3', '10.0.0.4']));
    const root = entry(t, 'vnet0');
    expect(root).toMatch(/^sh-[0-9a-f]{16}$/);
    const h = root.slice(3);
    expect(t).toContain(`add element bridge nwf_fast ss-${h}-1 { "vnet1" . 10.0.0.3, "vnet1" . 10.0.0.4 }`);
    expect(t).toContain(`add element bridge nwf_fast ss-${h}-1 { "vnet0" . 10.0.0.2 }`);
    expect(chain(t, `${root}-ipv4_2dip`)).toContain(`ether type 0x800 meta length >= 20 meta iifname . ip saddr @ss-${h}-1 return comment "no-ip-spoofing/2"`);
    expect(chain(t, `${root}-mac`)).toContain('goto drop-out-mac_spoof comment "no-mac-spoofing/2"');
    expect(t).toContain('add element bridge nwf_fast cnt-out-mac_spoof { "vnet0" }');
    expect(t).toContain('add set bridge nwf_fast cnt-out-mac_spoof { type ifname; counter; }');
    expect(t).not.toContain('own-out-vnet0');
  });

  it('lowers a shape the same whoever else is on the host (compositional: the shape and the port part depend on the port alone)', () => {
    const alone = lowerToNft({ version: 1, interfaces: [ct], notes: [] }).parts;
    const among = lowerToNft({ version: 1, interfaces: [vnet1(['10.0.0.7', '10.0.0.8']), ct], notes: [] }).parts;
    expect(among.shapes.map((x) => x.name).sort()).toEqual(alone.shapes.map((x) => x.name).sort());
    for (const s of alone.shapes) expect(among.shapes.find((x) => x.name === s.name)).toEqual(s);
    expect(among.ports.find((x) => x.iface === 'vnet0')).toEqual(alone.ports.find((x) => x.iface === 'vnet0'));
  });

  it('falls back to per-interface chains when sharing would not be exact (negated test over a list)', () => {
    const f = `<filter name='t' chain='root'><rule action='drop' direction='out'><ip match='no' srcipaddr='$IP'/></rule></filter>`;
    const t = text(policyFor('t', { IP: ['10.0.0.2', '10.0.0.3'] }, [f]), policyFor('t', { IP: ['10.0.0.4', '10.0.0.5'] }, [f], { iface: 'vnet1', mac: '52:54:00:00:00:02' }));
    expect(t).toContain('add chain bridge nwf_fast own-out-vnet0');
    expect(entry(t, 'vnet1')).toBe('own-out-vnet1');
  });

  it("keeps libvirt's order and ends every chain with an explicit accept", () => {
    const t = textPerIface(ct);
    expect(chain(t, 'own-out-vnet0')).toEqual([
      'jump own-out-vnet0-mac comment "jump mac"',
      'ether type 0x800 jump own-out-vnet0-ipv4_2dip comment "jump ipv4-ip"',
      'ether type 0x800 accept comment "clean-traffic/1"',
      'ether type 0x806 jump own-out-vnet0-arp_2dmac comment "jump arp-mac"',
      'ether type 0x806 jump own-out-vnet0-arp_2dip comment "jump arp-ip"',
      'ether type 0x806 accept comment "clean-traffic/2"',
      'ether type 0x8035 jump own-out-vnet0-rarp comment "jump rarp"',
      'ether type 0x835 accept comment "qemu-announce-self/1"',
      'goto drop-out-other_l2 comment "no-other-l2-traffic/1"',
      'accept comment "end of chain: libvirt accepts"',
    ]);
    expect(chain(t, 'own-out-vnet0-mac')).toEqual([
      'ether saddr 52:54:00:00:00:01 return comment "no-mac-spoofing/1"',
      'goto drop-out-mac_spoof comment "no-mac-spoofing/2"',
      'accept comment "end of chain: libvirt accepts"',
    ]);
  });

  it('gives a direction without rules an explicit accept entry', () => {
    const f = `<filter name='t' chain='root'><rule action='drop' direction='out'><mac srcmacaddr='$MAC' match='no'/></rule></filter>`;
    const t = text(policyFor('t', {}, [f]));
    expect(t).toContain('add element bridge nwf_fast to_vm { "vnet0" : accept }');
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
    expect(l.parts.ports[0]?.l3).toEqual(['ipv4']);
    const t = printNftText(l.batch);
    expect(t).toContain('add rule ip nwf_fast fo-vnet0 meta l4proto 6 jump l4chk-20');
    expect(t).toContain('add rule ip nwf_fast fo-vnet0 meta l4proto 6 @th,16,16 80 ct state == { new, established } ct direction original accept');
    expect(t).toContain('add rule ip nwf_fast fi-vnet0 meta l4proto 6 @th,0,16 80 ct state == { established } ct direction reply return');
    expect(t).toContain('add rule ip nwf_fast l4chk-20 @th,152,8 >= 0 return');
    expect(t).not.toContain('table ip6 nwf_fast {');
    expect(t).not.toMatch(/add chain ip6 /);
    expect(t).toMatch(/add rule bridge nwf_fast mk-in-vnet0 meta mark set 0x80010000/);
    // the port-id part is not in the port's part: the host gives ids and keeps them
    expect(JSON.stringify(l.parts.ports)).not.toContain('mk-in-vnet0');
  });

  it('dispatch only (--backend bpf): every port accepted behind the eBPF gate of its tap, the programs enforce', () => {
    const t = printNftText(lowerToNft({ version: 1, interfaces: [ct], notes: [] }, { mode: 'dispatch' }).batch);
    expect(t).toContain('add element bridge nwf_fast from_vm { "vnet0" : goto gatec-out }');
    expect(t).toContain('add element bridge nwf_fast to_vm { "vnet0" : goto gatec-in }');
    expect(t).toContain('add element bridge nwf_fast gate_from_vm { "vnet0" : accept }');
    expect(t).toContain('add element bridge nwf_fast gate_to_vm { "vnet0" : accept }');
    // the gate: the attached tap instance (host-managed elements) on, any other dropped and counted as the port's unprotected drop
    expect(t).toContain('add set bridge nwf_fast gate-on { type ifname . iface_index; }');
    expect(t).not.toMatch(/add element bridge nwf_fast gate-on/);
    expect(t).toContain('add rule bridge nwf_fast gatec-out meta iifname . meta iif @gate-on meta iifname vmap @gate_from_vm');
    expect(t).toContain('add rule bridge nwf_fast gatec-in meta oifname . meta oif @gate-on meta oifname vmap @gate_to_vm');
    expect(t).toMatch(/add rule bridge nwf_fast gatec-out goto drop-out-unprotected/);
    expect(t).toContain('add element bridge nwf_fast cnt-out-unprotected { "vnet0" }');
    expect(t).toContain('add element bridge nwf_fast cnt-in-unprotected { "vnet0" }');
    expect(t).not.toMatch(/sh-/);
    // the nft backend has no gate
    expect(printNftText(lowerToNft({ version: 1, interfaces: [ct], notes: [] }).batch)).not.toContain('gate');
  });
});

describe('refused rather than approximated (differences from libvirt)', () => {
  const refuse = (xml: string, code: string, re: RegExp) => {
    let p: InterfacePolicy | undefined;
    let err: unknown;
    try {
      p = policyFor('t', { IP: '10.0.0.2' }, [xml]);
      lowerToNft({ version: 1, interfaces: [p], notes: [] }, { strict: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NwfError);
    expect((err as NwfError).code).toBe(code);
    expect((err as NwfError).message).toMatch(re);
    if (!p) return; // refused by the resolver already (a partial compile fails the port there)
    // strict false (a partial lowering): the port fails closed, the others are lowered
    const l = lowerToNft({ version: 1, interfaces: [p, policyFor('clean-traffic', { IP: '10.0.0.3' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' })], notes: [] }, { strict: false });
    expect(l.failed.map((f) => [f.iface, f.code])).toEqual([['vnet0', code]]);
    const t = printNftText(l.batch);
    expect(t).toContain('add element bridge nwf_fast from_vm { "vnet0" : goto drop-out-unprotected }');
    expect(t).toContain('add element bridge nwf_fast to_vm { "vnet0" : goto drop-in-unprotected }');
    expect(t).toMatch(/add element bridge nwf_fast from_vm \{ "vnet1" : jump sh-/);
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
