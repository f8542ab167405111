// The tc/eBPF backend's generator, without a kernel: the shape/value split
// (plan.ts), the generated C header (emit.ts), the config bytes, the L3
// refusal and the compiler-output trimming. The programs themselves are
// tested against the evaluator in test/kernel/bpf-testrun.test.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { InterfacePolicy, PolicyIR } from '../../src/ir/types.js';
import { DROP_REASONS } from '../../src/ir/reasons.js';
import { emitPolicyHeader, features, REASON_C, STAT_NAMES } from '../../src/backends/bpf/emit.js';
import { configLayout, encodeConfig, GROUP_CAPS, planInterface, shapeTag, type BpfPlan } from '../../src/backends/bpf/plan.js';
import { checkL3 } from '../../src/backends/bpf/lower.js';
import { readTemplate, relevantCompilerLines } from '../../src/host/bpf-build.js';
import { CODES, NwfError } from '../../src/util/errors.js';
import { policyFor } from '../support/policy.js';

const REPO = join(import.meta.dirname, '..', '..');
const VM = '52:54:00:00:00:01';
const OTHER = '52:54:00:aa:bb:cc';

const header = (p: InterfacePolicy): { plan: BpfPlan; text: string } => {
  const plan = planInterface(p);
  return { plan, text: emitPolicyHeader(plan.shape, plan.shapeId) };
};

/** The body of one generated C function. */
function body(text: string, fn: string): string {
  const i = text.indexOf(` ${fn}(`);
  expect(i, `function ${fn}`).toBeGreaterThan(0);
  return text.slice(text.lastIndexOf('\n', i) + 1, text.indexOf('\n}\n', i) + 2);
}

/** The statements of a chain function, without comments: the chain walk at a glance. */
function skeleton(text: string, fn: string): string[] {
  return body(text, fn)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('/*') && l !== '{' && l !== '}' && !l.startsWith('int r;'))
    .map((l) => l.replace(/\s*\/\*.*\*\/$/, ''))
    .slice(1);
}

describe('bpf shape planning and C emission', () => {
  const ct = header(policyFor('clean-traffic', { IP: '10.0.0.2' }));

  it('emits a stable header for clean-traffic: features, config layout and the chain walk in libvirt order', () => {
    const t = ct.text;
    expect(header(policyFor('clean-traffic', { IP: '10.0.0.2' })).text).toBe(t);
    expect(t).toContain(`#define NWF_SHAPE_TAG 0x${ct.plan.shapeId}ULL`);
    for (const [k, v] of Object.entries({
      NWF_HOOKED_OUT: 1,
      NWF_HOOKED_IN: 1,
      NWF_USE_VLAN: 0,
      NWF_USE_IP4: 1,
      NWF_USE_IP4_L4: 0,
      NWF_USE_IP6: 0,
      NWF_USE_ARP: 1,
      NWF_USE_ARP_IPS: 1,
      NWF_USE_ARP_MACS: 1,
      NWF_USE_STP: 0,
      NWF_NGROUPS: 20,
    })) {
      expect(t, k).toContain(`#define ${k} ${v}\n`);
    }
    // No values in the code: no MAC or address of this interface appears.
    expect(t).not.toMatch(/52:54:00|10\.0\.0\.2|0x525400/);
    expect(skeleton(t, 'nwf_policy_out')).toEqual([
      'r = nwf_out_chain0(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (p->proto == 0x0800) {',
      'r = nwf_out_chain1(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (nwf_g5(p, c))',
      'return NWF_STAT_ACCEPT;',
      'if (p->proto == 0x0806) {',
      'r = nwf_out_chain2(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (p->proto == 0x0806) {',
      'r = nwf_out_chain3(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (nwf_g10(p, c))',
      'return NWF_STAT_ACCEPT;',
      'if (p->proto == 0x8035) {',
      'r = nwf_out_chain4(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (nwf_g13(p, c))',
      'return NWF_STAT_ACCEPT;',
      'if (nwf_g14(p, c))',
      'return NWF_DROP_OTHER_L2;',
      'return NWF_STAT_ACCEPT;',
    ]);
    // The mac sub-chain (no-mac-spoofing) and the ipv4-ip sub-chain (no-ip-spoofing).
    expect(skeleton(t, 'nwf_out_chain0')).toEqual(['if (nwf_g0(p, c))', 'return NWF_CHAIN_RETURN;', 'if (nwf_g1(p, c))', 'return NWF_DROP_MAC_SPOOF;', 'return NWF_CHAIN_FALLOFF;']);
    expect(skeleton(t, 'nwf_out_chain1')).toEqual([
      'if (nwf_g2(p, c))',
      'return NWF_CHAIN_RETURN;',
      'if (nwf_g3(p, c))',
      'return NWF_CHAIN_RETURN;',
      'if (nwf_g4(p, c))',
      'return NWF_DROP_IP_SPOOF;',
      'return NWF_CHAIN_FALLOFF;',
    ]);
    expect(skeleton(t, 'nwf_policy_in')).toEqual([
      'if (p->proto == 0x0800) {',
      'r = nwf_in_chain0(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (nwf_g16(p, c))',
      'return NWF_STAT_ACCEPT;',
      'if (p->proto == 0x8035) {',
      'r = nwf_in_chain1(p, c);',
      'if (r != NWF_CHAIN_RETURN)',
      'return r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;',
      'if (nwf_g19(p, c))',
      'return NWF_DROP_OTHER_L2;',
      'return NWF_STAT_ACCEPT;',
    ]);
    // "return if src IP = $IP": presence check (ebt_ip needs 20 bytes), then a bounded loop over the values.
    expect(body(t, 'nwf_g3')).toBe(
      [
        'NWF_GROUP_FN int nwf_g3(const struct nwf_pkt *p, const struct nwf_config *c)',
        '{',
        '\tif (!p || !c)',
        '\t\treturn 0;',
        '\tif (p->proto != 0x0800 || !(p->has & NWF_HAS_IP4))',
        '\t\treturn 0;',
        '\t__u64 n = c->n[3];',
        '',
        '\tfor (__u32 i = 0; i < 4; i++) {',
        '\t\tif (i >= n)',
        '\t\t\tbreak;',
        '\t\tconst __u64 *v = c->g3[i];',
        '',
        '\t\tif (NWF_T(0, NWF_MASKED(p->ip4_src, v[0], v[1])))',
        '\t\t\treturn 1;',
        '\t}',
        '\treturn 0;',
        '}',
      ].join('\n'),
    );
    // "drop every IPv4 frame" needs no module, so no header length: `-p IPv4` only.
    expect(body(t, 'nwf_g4')).toContain('if (p->proto != 0x0800)\n\t\treturn false;\n\treturn c->n[4] > 0;');
  });

  it('gives interfaces of the same shape the same shape id and header, whatever their values', () => {
    const a = header(policyFor('clean-traffic', { IP: '10.0.0.2' }, [], { iface: 'vnet0', mac: VM }));
    const b = header(policyFor('clean-traffic', { IP: ['192.168.1.1', '192.168.1.2', '192.168.1.3', '192.168.1.4'] }, [], { iface: 'vnet7', mac: OTHER }));
    expect(b.plan.shapeId).toBe(a.plan.shapeId);
    expect(b.text).toBe(a.text);
    expect(encodeConfig(b.plan)).not.toEqual(encodeConfig(a.plan));
    const gw1 = planInterface(policyFor('clean-traffic-gateway', { IP: '10.0.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' }));
    const gw2 = planInterface(policyFor('clean-traffic-gateway', { IP: ['10.9.9.9', '10.9.9.8'], GATEWAY_MAC: '02:00:00:00:00:01' }, [], { mac: OTHER }));
    expect(gw2.shapeId).toBe(gw1.shapeId);
  });

  it('gives different shapes different ids', () => {
    const ids = new Map<string, string>([
      ['clean-traffic', ct.plan.shapeId],
      ['clean-traffic, 5 IPs (next capacity bucket)', planInterface(policyFor('clean-traffic', { IP: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'] })).shapeId],
      ['clean-traffic-gateway', planInterface(policyFor('clean-traffic-gateway', { IP: '10.0.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' })).shapeId],
      ['no-mac-spoofing', planInterface(policyFor('no-mac-spoofing')).shapeId],
      ['no-ip-spoofing', planInterface(policyFor('no-ip-spoofing', { IP: '10.0.0.2' })).shapeId],
      ['allow-dhcp', planInterface(policyFor('allow-dhcp')).shapeId],
      ['allow-dhcpv6', planInterface(policyFor('allow-dhcpv6')).shapeId],
      ['allow-arp', planInterface(policyFor('allow-arp')).shapeId],
    ]);
    expect(new Set(ids.values()).size).toBe(ids.size);
    for (const id of ids.values()) expect(id).toMatch(/^[0-9a-f]{16}$/);
  });

  it('merges an expanded list into one group with one tuple per value, and drops duplicates and continue rules', () => {
    const p = planInterface(policyFor('no-ip-spoofing', { IP: ['10.0.0.2', '10.0.0.3', '10.0.0.2'] }));
    const byId = p.groups.map((g) => ({ ids: g.ruleIds, n: g.tuples.length, cap: g.cap, verdict: g.template.verdict }));
    expect(byId).toEqual([
      { ids: ['no-ip-spoofing/1'], n: 1, cap: 4, verdict: 'return' },
      { ids: ['no-ip-spoofing/2#0', 'no-ip-spoofing/2#1'], n: 2, cap: 4, verdict: 'return' },
      { ids: ['no-ip-spoofing/3'], n: 1, cap: 4, verdict: 'drop' },
    ]);
    const cont = `<filter name='c' chain='root'><rule action='continue' direction='out'><mac protocolid='arp'/></rule><rule action='drop' direction='out'><mac protocolid='arp'/></rule></filter>`;
    const q = planInterface(policyFor('c', {}, [cont]));
    expect(q.groups.map((g) => g.ruleIds)).toEqual([['c/2']]);
    expect(q.dirs.in.hooked).toBe(false);
  });

  it('refuses more values than the largest group capacity', () => {
    const max = GROUP_CAPS[GROUP_CAPS.length - 1] as number;
    const ips = Array.from({ length: max + 1 }, (_, i) => `10.${i >> 8}.${i & 255}.1`);
    expect(() => planInterface(policyFor('no-ip-spoofing', { IP: ips }))).toThrow(NwfError);
  });

  it('encodes the config as the header declares it: shape tag, counts, masked values', () => {
    const p = policyFor('no-mac-spoofing', {}, [], { mac: OTHER });
    const plan = planInterface(p);
    const cfg = encodeConfig(plan);
    const layout = configLayout(plan.groups);
    expect(cfg.length).toBe(layout.size);
    const b = Buffer.from(cfg);
    expect(b.readBigUInt64LE(0)).toBe(shapeTag(plan.shapeId));
    expect(b.readBigUInt64LE(8)).toBe(1n); // g0: one MAC
    expect(b.readBigUInt64LE(16)).toBe(1n); // g1: the drop-all rule
    const g0 = layout.groupOffsets[0] as number;
    expect([...b.subarray(g0, g0 + 8)]).toEqual([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0, 0]); // addr & mask
    expect([...b.subarray(g0 + 8, g0 + 16)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]); // mask
    expect(layout.groupOffsets[1]).toBe(-1); // no values
    const { text } = header(p);
    expect(text).toContain(`/* The nwf_cfg map value: ${layout.size} bytes`);
    expect(text).toContain('__u64 g0[4][2]; /* eth.src */');
  });

  it('masks prefixes and MAC masks in the values', () => {
    const f = `<filter name='m' chain='root'>
      <rule action='accept' direction='out'><ip srcipaddr='10.1.2.3' srcipmask='16'/></rule>
      <rule action='accept' direction='out'><mac srcmacaddr='52:54:00:12:34:56' srcmacmask='ff:ff:ff:00:00:00'/></rule>
      <rule action='accept' direction='out'><ipv6 srcipaddr='fd00:1:2:3::9' srcipmask='48'/></rule></filter>`;
    const plan = planInterface(policyFor('m', {}, [f]));
    const [ip4, mac, ip6] = plan.groups.map((g) => Buffer.from(g.tuples[0] as Uint8Array));
    expect([...ip4!]).toEqual([10, 1, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 0, 0]);
    expect([...mac!.subarray(0, 8)]).toEqual([0x52, 0x54, 0x00, 0, 0, 0, 0, 0]);
    expect(ip6!.subarray(0, 16).toString('hex')).toBe('fd000001000200000000000000000000');
    expect(ip6!.subarray(16, 32).toString('hex')).toBe('ffffffffffff00000000000000000000');
  });

  it('asks the parser only for what the shape tests', () => {
    expect(features(planInterface(policyFor('no-mac-spoofing')).shape)).toMatchObject({ NWF_USE_IP4: false, NWF_USE_ARP: false, NWF_USE_IP6: false });
    expect(features(planInterface(policyFor('allow-dhcpv6')).shape)).toMatchObject({ NWF_USE_IP6: true, NWF_USE_IP6_UP: true, NWF_USE_IP6_L4: true, NWF_USE_IP4: false });
    expect(features(planInterface(policyFor('allow-dhcp')).shape)).toMatchObject({ NWF_USE_IP4: true, NWF_USE_IP4_L4: true });
  });

  it('keeps the C drop reasons in the order of DROP_REASONS', () => {
    const h = readFileSync(join(REPO, 'bpf', 'lib', 'nwf_drop_reasons.h'), 'utf8');
    const enumerators = [...h.matchAll(/^\s*(NWF_[A-Z0-9_]+) = (\d+),/gm)].map((m) => [m[1], Number(m[2])] as const);
    expect(enumerators[0]).toEqual(['NWF_STAT_ACCEPT', 0]);
    DROP_REASONS.forEach((r, i) => expect(enumerators[i + 1]).toEqual([REASON_C[r], i + 1]));
    // counter slots: the reasons from NWF_DROP_MIN (1) on; accepted frames are not counted
    expect(enumerators.at(-2)).toEqual(['NWF_DROP_INTERNAL', STAT_NAMES.indexOf('internal') + 1]);
    expect(enumerators.at(-1)).toEqual(['NWF_STAT_END', STAT_NAMES.length + 1]);
    expect(STAT_NAMES).not.toContain('accepted');
  });

  it('reads the template files it compiles', () => {
    const files = readTemplate(join(REPO, 'bpf'));
    expect([...files.keys()]).toEqual(expect.arrayContaining(['nwf.bpf.c', 'lib/nwf_common.h', 'lib/nwf_load.h', 'lib/nwf_parse.h', 'lib/nwf_run.h']));
    // One read helper per program kind (nwf_load), and direct packet access in one place only:
    // the block of headers, copied when the linear data holds all of it.
    const all = [...files.values()].join('\n');
    expect(all.match(/bpf_skb_load_bytes\(/g)).toHaveLength(1);
    expect(all.match(/bpf_xdp_load_bytes\(/g)).toHaveLength(1);
    const direct = [...files].filter(([, text]) => /->data\b|data_end/.test(text)).map(([name]) => name);
    expect(direct).toEqual(['lib/nwf_parse.h']);
    const parse = files.get('lib/nwf_parse.h') as string;
    expect(parse.match(/data_end/g)).toHaveLength(2); // XDP's and the skb's, both handed to nwf_head_direct
    expect(parse).toMatch(/if \(data \+ NWF_HEAD_LEN > end\)\n\t\treturn false;/);
  });
});

describe('bpf backend: L3 rules and compiler errors', () => {
  const ir = (p: InterfacePolicy): PolicyIR => ({ version: 1, interfaces: [p], notes: [] });
  const l3 = `<filter name='web' chain='root'><filterref filter='no-mac-spoofing'/><rule action='accept' direction='in'><tcp dstportstart='80'/></rule></filter>`;

  it('refuses L3/L4 rules with --backend bpf and names --backend both', () => {
    const p = policyFor('web', {}, [l3]);
    let err: unknown;
    try {
      checkL3(ir(p), 'bpf');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NwfError);
    const e = err as NwfError;
    expect(e.code).toBe(CODES.USAGE);
    expect(e.message).toContain('vnet0');
    expect(e.message).toContain('web');
    expect(e.format()).toMatch(/hint: use --backend both/);
    expect(() => checkL3(ir(p), 'both')).not.toThrow();
    expect(() => checkL3(ir(policyFor('clean-traffic', { IP: '10.0.0.2' })), 'bpf')).not.toThrow();
  });

  it('keeps the diagnostics of clang output with their source lines', () => {
    const stderr = [
      'In file included from /c/nwf.bpf.c:3:',
      "/c/lib/nwf_run.h:47:6: error: unused variable 'x' [-Werror,-Wunused-variable]",
      '   47 |         int x;',
      '      |             ^',
      '1 error generated.',
    ].join('\n');
    expect(relevantCompilerLines(stderr)).toEqual([
      "/c/lib/nwf_run.h:47:6: error: unused variable 'x' [-Werror,-Wunused-variable]",
      '   47 |         int x;',
      '      |             ^',
    ]);
    expect(relevantCompilerLines('something odd\n')).toEqual(['something odd']);
  });
});
