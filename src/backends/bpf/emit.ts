// The generated C header of one policy shape (nwf_policy.h), included by the
// template bpf/nwf.bpf.c. It holds:
//   - NWF_SHAPE_TAG, NWF_HOOKED_*, and NWF_USE_* (what the parser must read);
//   - struct nwf_config, the layout of the nwf_cfg map value (plan.ts writes it);
//   - one match function per rule group: presence checks (the frame holds the
//     fields, as ebtables requires), then a bounded loop over the group's
//     value tuples;
//   - one function per sub-chain and one per direction's root chain, as
//     straight-line code in libvirt's order.
// The text depends on the shape only (never on values), so it is stable and
// equal for every interface of the shape.
import { assertNever, InternalError } from '../../util/errors.js';
import type { Direction, JumpGuard } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { DROP_REASONS, type DropReason } from '../../ir/reasons.js';
import { ETHERTYPE_OF } from '../../ir/values.js';
import { FIELDS, LRN_SERVERS, configLayout, groupSlots, testSlots, type BpfShape, type Field, type FieldTest, type RuleTemplate, type ShapeEntry, type ShapeGroup } from './plan.js';
import { appendAll } from '../../util/arrays.js';

/** The C expression of each field in struct nwf_pkt. */
const C_FIELD: Readonly<Record<Field, string>> = {
  'eth.src': 'p->src',
  'eth.dst': 'p->dst',
  'eth.type': 'p->proto',
  'vlan.id': '(p->vlan_tci & 0x0fff)',
  'vlan.encap': 'p->vlan_encap',
  'stp.type': 'p->stp_type',
  'stp.flags': 'p->stp_flags',
  'stp.rootPriority': 'p->stp_root_prio',
  'stp.rootAddress': 'p->stp_root_addr',
  'stp.rootCost': 'p->stp_root_cost',
  'stp.senderPriority': 'p->stp_sender_prio',
  'stp.senderAddress': 'p->stp_sender_addr',
  'stp.port': 'p->stp_port',
  'stp.age': 'p->stp_age',
  'stp.maxAge': 'p->stp_max_age',
  'stp.helloTime': 'p->stp_hello',
  'stp.forwardDelay': 'p->stp_fwd',
  'arp.hwType': 'p->arp_hrd',
  'arp.protoType': 'p->arp_pro',
  'arp.opcode': 'p->arp_op',
  'arp.sha': 'p->arp_sha',
  'arp.tha': 'p->arp_tha',
  'arp.spa': 'p->arp_spa',
  'arp.tpa': 'p->arp_tpa',
  'arp.gratuitous': '(p->arp_spa == p->arp_tpa)',
  'ip4.src': 'p->ip4_src',
  'ip4.dst': 'p->ip4_dst',
  'ip4.protocol': 'p->ip_proto',
  'ip4.srcPort': 'p->l4_a',
  'ip4.dstPort': 'p->l4_b',
  'ip4.tos': 'p->ip4_tos',
  'ip6.src': 'p->ip6_src',
  'ip6.dst': 'p->ip6_dst',
  'ip6.protocol': 'p->ip_proto',
  'ip6.srcPort': 'p->l4_a',
  'ip6.dstPort': 'p->l4_b',
  'ip6.icmp': 'p->l4_a',
};

/**
 * Counter slots per direction, in the order of enum nwf_stat in
 * bpf/lib/nwf_drop_reasons.h: the drop reasons, then internal. Accepted
 * frames are not counted.
 */
export const STAT_NAMES = [...DROP_REASONS, 'internal'] as const;
export type StatName = (typeof STAT_NAMES)[number];

/** The C enumerator of each drop reason (bpf/lib/nwf_drop_reasons.h). */
export const REASON_C: Readonly<Record<DropReason, string>> = {
  'mac-spoof': 'NWF_DROP_MAC_SPOOF',
  'ip-spoof': 'NWF_DROP_IP_SPOOF',
  'arp-spoof': 'NWF_DROP_ARP_SPOOF',
  rarp: 'NWF_DROP_RARP',
  'other-l2': 'NWF_DROP_OTHER_L2',
  policy: 'NWF_DROP_POLICY',
};

const hex4 = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;

/** The C condition of one test against the values at v[k..]. */
function testExpr(t: FieldTest, k: number): string {
  const x = C_FIELD[t.field];
  const neg = t.neg ? 1 : 0;
  // the port's learned addresses (nwf_learn.h): none while it learns, so a positive test fails
  if (t.learned) return `NWF_T(${neg}, nwf_lrn_match(p, (__u64)${x}))`;
  const kind = FIELDS[t.field];
  switch (kind) {
    case 'mac':
    case 'ip4':
      return `NWF_T(${neg}, NWF_MASKED(${x}, v[${k}], v[${k + 1}]))`;
    case 'ip6':
      return `NWF_T(${neg}, NWF_MASKED(${x}[0], v[${k}], v[${k + 2}]) && NWF_MASKED(${x}[1], v[${k + 1}], v[${k + 3}]))`;
    case 'num':
      return `NWF_T(${neg}, (__u64)${x} == v[${k}])`;
    case 'range':
      return `NWF_T(${neg}, NWF_IN_RANGE(${x}, v[${k}], v[${k + 1}]))`;
    case 'icmp6':
      return `NWF_T(${neg}, NWF_IN_RANGE(${x} >> 8, v[${k}], v[${k + 1}]) && NWF_IN_RANGE(${x} & 0xff, v[${k + 2}], v[${k + 3}]))`;
    case 'flag':
      return `NWF_T(${neg}, ${x})`;
    default:
      return assertNever(kind, 'field kind');
  }
}

const has = (t: RuleTemplate, prefix: string, except: readonly string[] = []): boolean => t.tests.some((x) => x.field.startsWith(prefix) && !except.includes(x.field));
const tests = (t: RuleTemplate, ...fields: Field[]): boolean => t.tests.some((x) => fields.includes(x.field));

/** Does the template test fields of the protocol's ebtables match module (anything beyond -s/-d)? */
const usesModule = (t: RuleTemplate): boolean => t.tests.some((x) => !x.field.startsWith('eth.'));

/**
 * What a frame must be and hold before any value is compared. As in ebtables,
 * a protocol match module (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp) is
 * only loaded when the rule has one of its options, and a loaded module does
 * not match a frame too short for its header, whatever the negation; `-p`
 * alone only checks the EtherType.
 */
export function requirements(t: RuleTemplate): { proto?: number; has: string[] } {
  const mod = usesModule(t);
  switch (t.proto) {
    case 'any':
    case 'mac':
      return { has: [] };
    case 'vlan':
      return { proto: ETHERTYPE_OF.vlan, has: mod ? ['NWF_HAS_VLAN'] : [] };
    case 'stp': {
      const h: string[] = [];
      if (has(t, 'stp.')) h.push('NWF_HAS_STP');
      if (has(t, 'stp.', ['stp.type'])) h.push('NWF_HAS_STP_CFG');
      return { has: h };
    }
    case 'arp':
    case 'rarp': {
      const h = mod ? ['NWF_HAS_ARP'] : [];
      if (tests(t, 'arp.spa', 'arp.tpa', 'arp.gratuitous')) h.push('NWF_HAS_ARP_IPS');
      if (tests(t, 'arp.sha')) h.push('NWF_HAS_ARP_SHA');
      if (tests(t, 'arp.tha')) h.push('NWF_HAS_ARP_THA');
      return { proto: ETHERTYPE_OF[t.proto], has: h };
    }
    case 'ipv4': {
      const h = mod ? ['NWF_HAS_IP4'] : [];
      if (tests(t, 'ip4.srcPort', 'ip4.dstPort')) h.push('NWF_HAS_IP4_L4');
      return { proto: ETHERTYPE_OF.ipv4, has: h };
    }
    case 'ipv6': {
      const h = mod ? ['NWF_HAS_IP6'] : [];
      if (tests(t, 'ip6.protocol')) h.push('NWF_HAS_IP6_UP');
      if (tests(t, 'ip6.srcPort', 'ip6.dstPort', 'ip6.icmp')) h.push('NWF_HAS_IP6_L4');
      return { proto: ETHERTYPE_OF.ipv6, has: h };
    }
    default:
      return assertNever(t.proto, 'L2 proto');
  }
}

/** The parser features a shape needs (NWF_USE_*). */
export function features(shape: BpfShape): Record<string, boolean> {
  const all: RuleTemplate[] = [];
  for (const d of DIRECTIONS) {
    for (const e of shape.dirs[d].entries) {
      if (e.kind === 'group') all.push(e.group.template);
      else appendAll(all, e.groups.map((g) => g.template));
    }
  }
  const req = all.map((t) => new Set(requirements(t).has));
  const any = (flag: string): boolean => req.some((r) => r.has(flag));
  return {
    NWF_USE_VLAN: any('NWF_HAS_VLAN'),
    // learning reads the IPv4 source of every frame; dhcp learning its UDP ports
    NWF_USE_IP4: any('NWF_HAS_IP4') || shape.learn !== undefined,
    NWF_USE_IP4_L4: any('NWF_HAS_IP4_L4') || shape.learn === 'dhcp',
    NWF_USE_IP6: any('NWF_HAS_IP6'),
    NWF_USE_IP6_UP: any('NWF_HAS_IP6_UP'),
    NWF_USE_IP6_L4: any('NWF_HAS_IP6_L4'),
    NWF_USE_ARP: any('NWF_HAS_ARP'),
    NWF_USE_ARP_IPS: any('NWF_HAS_ARP_IPS'),
    NWF_USE_ARP_MACS: any('NWF_HAS_ARP_SHA') || any('NWF_HAS_ARP_THA'),
    NWF_USE_STP: any('NWF_HAS_STP'),
    NWF_USE_STP_CFG: any('NWF_HAS_STP_CFG'),
  };
}

function describeTemplate(t: RuleTemplate): string {
  const verdict = t.verdict === 'drop' ? `drop (${t.reason})` : t.verdict;
  const ts = t.tests.map((x) => `${x.neg ? '!' : ''}${x.field}${x.learned ? '(learned)' : ''}`).join(' ');
  return `${verdict} if ${t.proto}${ts ? ' ' + ts : ''}`;
}

function guardExpr(g: JumpGuard): string | undefined {
  switch (g.kind) {
    case 'none':
      return undefined;
    case 'stp':
      return 'nwf_is_bga(p)';
    case 'ethertype':
      return `p->proto == ${hex4(g.etherType)}`;
    default:
      return assertNever(g, 'jump guard');
  }
}

function describeGuard(g: JumpGuard): string {
  return g.kind === 'none' ? 'every frame' : g.kind === 'stp' ? 'dst 01:80:c2:00:00:00' : `ethertype ${hex4(g.etherType)}`;
}

interface Indexed {
  index: number;
  group: ShapeGroup;
}

/** Group indexes in the order plan.ts assigns them (out then in; entries in order). */
function indexGroups(shape: BpfShape): { entries: Record<Direction, ({ kind: 'group'; g: Indexed } | { kind: 'jump'; guard: JumpGuard; groups: Indexed[] })[]>; all: Indexed[] } {
  const all: Indexed[] = [];
  const take = (group: ShapeGroup): Indexed => {
    const x = { index: all.length, group };
    all.push(x);
    return x;
  };
  const entries = {} as ReturnType<typeof indexGroups>['entries'];
  for (const d of DIRECTIONS) {
    entries[d] = shape.dirs[d].entries.map((e: ShapeEntry) =>
      e.kind === 'group' ? { kind: 'group' as const, g: take(e.group) } : { kind: 'jump' as const, guard: e.guard, groups: e.groups.map(take) },
    );
  }
  return { entries, all };
}

function emitGroup(x: Indexed): string[] {
  const t = x.group.template;
  const req = requirements(t);
  const conds: string[] = [];
  if (req.proto !== undefined) conds.push(`p->proto != ${hex4(req.proto)}`);
  if (req.has.length) {
    const m = req.has.join(' | ');
    conds.push(req.has.length === 1 ? `!(p->has & ${m})` : `(p->has & (${m})) != (${m})`);
  }
  const slots = groupSlots(t);
  const L: string[] = [];
  L.push(`/* g${x.index}: ${describeTemplate(t)}; up to ${x.group.cap} value tuples */`);
  if (slots === 0) {
    L.push(`static __always_inline bool nwf_g${x.index}(const struct nwf_pkt *p, const struct nwf_config *c)`);
  } else {
    // A global function: the verifier checks it once, not once per path through the chains.
    L.push(`NWF_GROUP_FN int nwf_g${x.index}(const struct nwf_pkt *p, const struct nwf_config *c)`);
  }
  L.push('{');
  if (slots > 0) {
    L.push('\tif (!p || !c)');
    L.push('\t\treturn 0;');
  }
  if (conds.length) {
    L.push(`\tif (${conds.join(' || ')})`);
    L.push(`\t\treturn ${slots > 0 ? '0' : 'false'};`);
  }
  if (slots === 0) {
    const flagTests = t.tests.map((tt) => testExpr(tt, 0));
    L.push(`\treturn c->n[${x.index}] > 0${flagTests.map((f) => ` && ${f}`).join('')};`);
  } else {
    const parts: string[] = [];
    let k = 0;
    for (const tt of t.tests) {
      parts.push(testExpr(tt, k));
      k += testSlots(tt);
    }
    L.push(`\t__u64 n = c->n[${x.index}];`);
    L.push('');
    L.push(`\tfor (__u32 i = 0; i < ${x.group.cap}; i++) {`);
    L.push('\t\tif (i >= n)');
    L.push('\t\t\tbreak;');
    L.push(`\t\tconst __u64 *v = c->g${x.index}[i];`);
    L.push('');
    L.push(`\t\tif (${parts.join(' &&\n\t\t    ')})`);
    L.push('\t\t\treturn 1;');
    L.push('\t}');
    L.push('\treturn 0;');
  }
  L.push('}');
  return L;
}

/** What a matching group does, in a sub-chain (inChain) or in the root chain. */
function verdictStmt(t: RuleTemplate, inChain: boolean): string {
  switch (t.verdict) {
    case 'accept':
      return 'return NWF_STAT_ACCEPT;';
    case 'drop':
      if (!t.reason) throw new InternalError('drop template without a reason');
      return `return ${REASON_C[t.reason]};`;
    case 'return':
      // RETURN from the root chain goes back to PREROUTING/POSTROUTING, whose policy accepts.
      return inChain ? 'return NWF_CHAIN_RETURN;' : 'return NWF_STAT_ACCEPT;';
    default:
      return assertNever(t.verdict, 'group verdict');
  }
}

/** The whole generated header for a shape. */
export function emitPolicyHeader(shape: BpfShape, shapeId: string): string {
  const { entries, all } = indexGroups(shape);
  const layout = configLayout(
    all.map((x) => x.group),
    shape.learn,
  );
  const feat = features(shape);
  const L: string[] = [];
  L.push('/* SPDX-License-Identifier: LGPL-2.1-or-later */');
  L.push('/*');
  L.push(` * Generated by nwf-fast (src/backends/bpf/emit.ts) for policy shape ${shapeId}. Do not edit.`);
  L.push(' * Rule structure only: the values live in the nwf_cfg map (struct nwf_config).');
  L.push(' */');
  L.push('#ifndef NWF_POLICY_H');
  L.push('#define NWF_POLICY_H');
  L.push('');
  L.push('#include "nwf_common.h"');
  L.push('');
  L.push(`#define NWF_SHAPE_ID "${shapeId}"`);
  L.push(`#define NWF_SHAPE_TAG 0x${shapeId}ULL`);
  L.push(`#define NWF_HOOKED_OUT ${shape.dirs.out.hooked ? 1 : 0}`);
  L.push(`#define NWF_HOOKED_IN ${shape.dirs.in.hooked ? 1 : 0}`);
  for (const [k, v] of Object.entries(feat)) L.push(`#define ${k} ${v ? 1 : 0}`);
  if (shape.learn === 'any') L.push(`#define NWF_LEARN_ANY 1 /* the ports learn $IP (nwf_learn.h) */`);
  if (shape.learn === 'dhcp') {
    L.push(`#define NWF_LEARN_DHCP 1 /* the ports learn $IP from DHCPACKs (nwf_learn.h) */`);
    L.push(`#define NWF_LRN_SERVERS ${LRN_SERVERS} /* DHCPSERVER values in the config */`);
  }
  L.push(`#define NWF_NGROUPS ${all.length}`);
  L.push('');
  L.push(`/* The nwf_cfg map value: ${layout.size} bytes, all members __u64 (no padding). */`);
  L.push('struct nwf_config {');
  L.push('\t__u64 shape; /* NWF_SHAPE_TAG, checked before use */');
  L.push(`\t__u64 n[${Math.max(1, all.length)}]; /* value tuples per group */`);
  for (const x of all) {
    const slots = groupSlots(x.group.template);
    if (slots > 0) L.push(`\t__u64 g${x.index}[${x.group.cap}][${slots}]; /* ${x.group.template.tests.filter((t) => !t.learned).map((t) => t.field).join(' ')} */`);
  }
  if (shape.learn) L.push('\t__u64 lrn_mac; /* the port\'s MAC (memory image): the learning table tests it */');
  if (shape.learn === 'dhcp') {
    L.push('\t__u64 lrn_nsrv; /* DHCPSERVER values in lrn_srv; 0: any server is trusted */');
    L.push('\t__u64 lrn_srv[NWF_LRN_SERVERS]; /* the trusted servers (memory images) */');
  }
  L.push('};');
  L.push('');
  L.push('static __always_inline bool nwf_is_bga(const struct nwf_pkt *p)');
  L.push('{');
  L.push('\tconst __u8 *d = (const __u8 *)&p->dst;');
  L.push('');
  L.push('\treturn d[0] == 0x01 && d[1] == 0x80 && d[2] == 0xc2 && d[3] == 0 && d[4] == 0 && d[5] == 0;');
  L.push('}');
  for (const x of all) {
    L.push('');
    appendAll(L, emitGroup(x));
  }
  for (const d of DIRECTIONS) {
    const dn = d === 'out' ? 'from the VM' : 'to the VM';
    let chainNo = 0;
    const chainFns: string[] = [];
    const root: string[] = [];
    for (const e of entries[d]) {
      if (e.kind === 'group') {
        root.push(`\tif (nwf_g${e.g.index}(p, c))`);
        root.push(`\t\t${verdictStmt(e.g.group.template, false)}`);
        continue;
      }
      const fn = `nwf_${d}_chain${chainNo++}`;
      chainFns.push('');
      chainFns.push(`/* ${dn}: a sub-chain entered for ${describeGuard(e.guard)} */`);
      chainFns.push(`static __always_inline int ${fn}(const struct nwf_pkt *p, const struct nwf_config *c)`);
      chainFns.push('{');
      for (const g of e.groups) {
        chainFns.push(`\tif (nwf_g${g.index}(p, c))`);
        chainFns.push(`\t\t${verdictStmt(g.group.template, true)}`);
      }
      chainFns.push('\treturn NWF_CHAIN_FALLOFF;');
      chainFns.push('}');
      const guard = guardExpr(e.guard);
      const ind = guard ? '\t\t' : '\t';
      root.push(`\t/* jump: ${describeGuard(e.guard)} */`);
      if (guard) root.push(`\tif (${guard}) {`);
      root.push(`${ind}r = ${fn}(p, c);`);
      root.push(`${ind}if (r != NWF_CHAIN_RETURN) /* falling off a user chain accepts (policy ACCEPT) */`);
      root.push(`${ind}\treturn r == NWF_CHAIN_FALLOFF ? NWF_STAT_ACCEPT : r;`);
      if (guard) root.push('\t}');
    }
    appendAll(L, chainFns);
    L.push('');
    L.push(`/* The root chain, ${dn} (${shape.dirs[d].hooked ? 'hooked' : 'no rules: not hooked'}). NWF_STAT_ACCEPT or a drop reason. */`);
    L.push(`static __always_inline int nwf_policy_${d}(const struct nwf_pkt *p, const struct nwf_config *c)`);
    L.push('{');
    if (root.some((l) => l.includes('r = '))) L.push('\tint r;', '');
    appendAll(L, root);
    L.push('\treturn NWF_STAT_ACCEPT; /* end of the root chain: policy ACCEPT */');
    L.push('}');
  }
  L.push('');
  L.push('#endif');
  L.push('');
  return L.join('\n');
}
