// Human-readable rendering of PolicyIR, in libvirt's chain vocabulary.
import { assertNever } from '../util/errors.js';
import { l2ChainName } from './eval/chains.js';
import { l3ChainName } from './eval/iptables.js';
import type { InterfacePolicy, IpRangeTest, IpTest, L2Match, L2Rule, L3Rule, MacTest, NumTest, PolicyIR, RangeTest } from './types.js';
import { DIRECTIONS, L3_PATHS } from './types.js';

const n = (neg: boolean): string => (neg ? '!= ' : '');
const mac = (label: string, t: MacTest | undefined): string[] => (t ? [`${label} ${n(t.neg)}${t.addr}${t.mask ? `/${t.mask}` : ''}`] : []);
const num = (label: string, t: NumTest | undefined, hex = false): string[] => (t ? [`${label} ${n(t.neg)}${hex ? '0x' + t.value.toString(16).padStart(4, '0') : t.value}`] : []);
const range = (label: string, t: RangeTest | undefined): string[] => (t ? [`${label} ${n(t.neg)}${t.lo === t.hi ? t.lo : `${t.lo}-${t.hi}`}`] : []);
const ip = (label: string, t: IpTest | undefined): string[] => (t ? [`${label} ${n(t.neg)}${t.learned ? '$IP(learned)' : `${t.addr}/${t.prefix}`}`] : []);
const iprange = (label: string, t: IpRangeTest | undefined): string[] => (t ? [`${label} ${n(t.neg)}${t.from}-${t.to}`] : []);

export function describeL2Match(m: L2Match): string {
  const parts: string[] = [];
  switch (m.proto) {
    case 'any':
      return 'any frame';
    case 'mac':
      parts.push(...mac('src', m.src), ...mac('dst', m.dst), ...num('type', m.etherType, true));
      break;
    case 'vlan':
      parts.push('vlan', ...mac('src', m.src), ...mac('dst', m.dst), ...num('id', m.vlanId), ...num('encap', m.encap, true));
      break;
    case 'stp':
      parts.push('stp', ...mac('src', m.src));
      if (m.fields) parts.push(JSON.stringify(m.fields));
      break;
    case 'arp':
    case 'rarp':
      parts.push(m.proto, ...mac('src', m.src), ...mac('dst', m.dst), ...num('htype', m.hwType), ...num('ptype', m.protoType, true), ...num('opcode', m.opcode));
      parts.push(...mac('sha', m.sha), ...mac('tha', m.tha), ...ip('spa', m.spa), ...ip('tpa', m.tpa));
      if (m.gratuitous) parts.push(`${m.gratuitous.neg ? 'not ' : ''}gratuitous`);
      break;
    case 'ipv4':
    case 'ipv6':
      parts.push(m.proto, ...mac('src', m.src), ...mac('dst', m.dst), ...ip('saddr', m.srcIp), ...ip('daddr', m.dstIp), ...num('proto', m.protocol));
      parts.push(...range('sport', m.srcPort), ...range('dport', m.dstPort));
      if (m.proto === 'ipv4') parts.push(...num('tos', m.tos));
      else parts.push(...range('icmp-type', m.icmpType), ...range('icmp-code', m.icmpCode));
      break;
    default:
      return assertNever(m, 'L2 match');
  }
  return parts.length ? parts.join(' ') : 'any frame';
}

export function describeL3Rule(r: L3Rule): string {
  const parts = [r.family === 'ipv4' ? 'ip' : 'ip6', `proto ${r.protocol}`];
  parts.push(...mac('smac', r.srcMac), ...ip('saddr', r.srcIp), ...ip('daddr', r.dstIp), ...iprange('saddr', r.srcRange), ...iprange('daddr', r.dstRange));
  parts.push(...num('dscp', r.dscp), ...range('sport', r.srcPort), ...range('dport', r.dstPort), ...num('tcp-option', r.tcpOption));
  if (r.tcpFlags) parts.push(`tcp-flags ${n(r.tcpFlags.neg)}${r.tcpFlags.mask.toString(16)}/${r.tcpFlags.set.toString(16)}`);
  if (r.icmp) parts.push(`icmp ${n(r.icmp.neg)}${r.icmp.type}${r.icmp.code !== undefined ? `/${r.icmp.code}` : ''}`);
  if (r.state) parts.push(`state ${r.state.join(',')}`);
  if (r.ctDir) parts.push(`ctdir ${r.ctDir}`);
  if (r.connlimitAbove) parts.push(...num('connlimit-above', r.connlimitAbove));
  return parts.join(' ');
}

function ruleLine(r: L2Rule | L3Rule, text: string): string {
  return `    ${r.verdict.padEnd(8)} ${text.padEnd(60)} # ${r.id} p${r.priority}`;
}

export function printInterfacePolicy(p: InterfacePolicy): string {
  const out: string[] = [`interface ${p.iface} (mac ${p.mac}, ${p.source} ${p.owner}, filter ${p.filter})`];
  for (const d of DIRECTIONS) {
    const pol = p.l2[d];
    out.push(`  ${l2ChainName(d, p.iface)}  (${d === 'out' ? 'from the VM' : 'to the VM'})`);
    if (!pol.root.length) out.push('    (no rules: not hooked, everything accepted)');
    for (const e of pol.root) {
      if (e.kind === 'rule') out.push(ruleLine(e.rule, describeL2Match(e.rule.match)));
      else {
        const guard = e.guard.kind === 'ethertype' ? `type 0x${e.guard.etherType.toString(16).padStart(4, '0')}` : e.guard.kind === 'stp' ? 'dst 01:80:c2:00:00:00' : 'any frame';
        out.push(`    ${'jump'.padEnd(8)} ${(guard + ' -> ' + l2ChainName(d, p.iface, e.chain)).padEnd(60)} # p${e.priority}`);
      }
    }
    for (const c of pol.chains) {
      out.push(`  ${l2ChainName(d, p.iface, c.name)}  (priority ${c.priority})`);
      for (const r of c.rules) out.push(ruleLine(r, describeL2Match(r.match)));
    }
  }
  for (const path of L3_PATHS) {
    const rules = p.l3[path];
    if (!rules.length) continue;
    out.push(`  ${l3ChainName(path, p.iface)}  (L3, ${path === 'fromVm' ? 'forwarded from the VM' : path === 'toVm' ? 'forwarded to the VM' : 'from the VM to this host'})`);
    for (const r of rules) out.push(ruleLine(r, describeL3Rule(r)));
  }
  return out.join('\n');
}

export function printPolicy(ir: PolicyIR): string {
  return ir.interfaces.map(printInterfacePolicy).join('\n\n') + '\n';
}

/**
 * How deep jsonChunks walks a PolicyIR: the policy, its interfaces, an
 * interface, l2, a direction, its chains, a chain, its rules; each rule (and
 * each root entry) is one piece.
 */
export const POLICY_DEPTH = 8;

