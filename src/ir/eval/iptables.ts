// libvirt's L3/L4 rules as the iptables rules it writes (FI-, FO-, HI-<tap>),
// seen through br_netfilter: the match, with iptables' hotdrop of truncated
// protocol headers, and the walk of one chain.
import { assertNever } from '../../util/errors.js';
import { l4MatchHeaderSize } from '../facts.js';
import { ETHERTYPES } from '../values.js';
import type { Direction, InterfacePolicy, L3Path, L3Rule } from '../types.js';
import { inIpRange, inRange, inv, macEq, prefixEq } from './compare.js';
import { classifyFirstPacket, STATE_NAME, type ConnInfo } from './conntrack.js';
import { l3Packet, type Frame, type L3Packet, type View } from './frame.js';
import type { TraceStep } from './trace.js';

function tcpHasOption(l4: View, kind: number): boolean {
  const doff = ((l4.u8(12) ?? 0) >> 4) * 4;
  for (let i = 20; i < doff; ) {
    const k = l4.u8(i);
    if (k === undefined || k === 0) return false;
    if (k === kind) return true;
    if (k === 1) {
      i++;
      continue;
    }
    const len = l4.u8(i + 1);
    if (len === undefined || len < 2) return false;
    i += len;
  }
  return false;
}

/**
 * Does an iptables rule written by libvirt match the packet? 'hotdrop' when
 * the rule's L4 match finds the protocol header truncated: iptables then
 * drops the packet on the spot (xt_tcpudp, xt_sctp, icmp matches).
 */
export function matchL3(f: Frame, pkt: L3Packet, r: L3Rule, conn: ConnInfo, connCount: number): boolean | 'hotdrop' {
  if (r.family !== pkt.family) return false;
  if (r.protocol !== 'all' && pkt.protocol !== r.protocol) return false;
  if (r.srcMac && !inv(r.srcMac.neg, macEq(f.src, r.srcMac))) return false;
  if (r.srcIp && !inv(r.srcIp.neg, prefixEq(pkt.src, r.srcIp))) return false;
  if (r.dstIp && !inv(r.dstIp.neg, prefixEq(pkt.dst, r.dstIp))) return false;
  if (r.srcRange && !inv(r.srcRange.neg, inIpRange(pkt.src, r.srcRange))) return false;
  if (r.dstRange && !inv(r.dstRange.neg, inIpRange(pkt.dst, r.dstRange))) return false;
  if (r.dscp && !inv(r.dscp.neg, pkt.dscp === r.dscp.value)) return false;
  const need = l4MatchHeaderSize(r);
  if (need !== undefined && (!pkt.l4 || !pkt.l4.has(0, need))) return 'hotdrop';
  if (r.srcPort || r.dstPort || r.tcpFlags || r.tcpOption || r.icmp) {
    const l4 = pkt.l4;
    if (!l4) return false;
    if (r.srcPort || r.dstPort) {
      const sp = l4.u16(0);
      const dp = l4.u16(2);
      if (sp === undefined || dp === undefined) return false;
      if (r.srcPort && !inv(r.srcPort.neg, inRange(sp, r.srcPort))) return false;
      if (r.dstPort && !inv(r.dstPort.neg, inRange(dp, r.dstPort))) return false;
    }
    if (r.tcpFlags) {
      const fl = l4.u8(13);
      if (fl === undefined || !inv(r.tcpFlags.neg, (fl & r.tcpFlags.mask) === r.tcpFlags.set)) return false;
    }
    if (r.tcpOption && !inv(r.tcpOption.neg, tcpHasOption(l4, r.tcpOption.value))) return false;
    if (r.icmp) {
      const t = l4.u8(0);
      const c = l4.u8(1);
      if (t === undefined || c === undefined) return false;
      if (!inv(r.icmp.neg, t === r.icmp.type && (r.icmp.code === undefined || c === r.icmp.code))) return false;
    }
  }
  if (r.state && (conn.state === 'untracked' || !r.state.includes(STATE_NAME[conn.state]))) return false;
  // --ctdir needs a conntrack entry: invalid and untracked packets have none
  if (r.ctDir && (conn.state === 'invalid' || conn.state === 'untracked' || r.ctDir !== conn.direction)) return false;
  if (r.connlimitAbove && !inv(r.connlimitAbove.neg, connCount > r.connlimitAbove.value)) return false;
  return true;
}

export function l3ChainName(path: L3Path, iface: string): string {
  return `${path === 'fromVm' ? 'FI' : path === 'toVm' ? 'FO' : 'HI'}-${iface}`;
}

/** What the L3 stage needs to know beyond the frame. */
export interface L3Options {
  /**
   * Connection state seen by the L3 rules. Default: what conntrack makes of
   * the packet as the first of its flow (classifyFirstPacket): usually a new
   * connection, but INVALID for packets that cannot start one and untracked
   * for ICMPv6 neighbour discovery and MLD.
   */
  conn?: ConnInfo;
  /** For traffic from the VM: forwarded (default) or addressed to the host itself. */
  path?: 'forward' | 'host';
  /** Connections already counted for connlimit (default 0). */
  connCount?: number;
}

/** libvirt's iptables chain for the frame's path (FI, FO or HI): the first rule that decides, or accept. */
export function evalL3(p: InterfacePolicy, dir: Direction, f: Frame, opts: L3Options, trace: TraceStep[]): { verdict: 'accept' | 'drop'; rule?: L3Rule; hotdrop?: boolean } {
  const path = dir === 'in' ? 'toVm' : opts.path === 'host' ? 'toHost' : 'fromVm';
  const rules = p.l3[path];
  const chain = l3ChainName(path, p.iface);
  const hasFamily = rules.some((r) => (f.proto === ETHERTYPES.IPV4 ? r.family === 'ipv4' : r.family === 'ipv6'));
  if (!hasFamily) return { verdict: 'accept' };
  const pkt = l3Packet(f);
  if (!pkt) return { verdict: 'accept' };
  const conn = opts.conn ?? classifyFirstPacket(pkt);
  for (const r of rules) {
    const m = matchL3(f, pkt, r, conn, opts.connCount ?? 0);
    if (m === 'hotdrop') {
      trace.push({ stage: 'l3', chain, event: 'drop', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, note: 'truncated L4 header: the iptables match drops the packet (hotdrop)' });
      return { verdict: 'drop', rule: r, hotdrop: true };
    }
    if (!m) continue;
    trace.push({ stage: 'l3', chain, event: 'match', ruleId: r.id, filter: r.origin.filter, rule: r.origin.rule, verdict: r.verdict });
    switch (r.verdict) {
      case 'accept':
      case 'return':
        return { verdict: 'accept', rule: r };
      case 'drop':
      case 'reject':
        return { verdict: 'drop', rule: r };
      case 'continue':
        continue;
      default:
        return assertNever(r.verdict, 'L3 verdict');
    }
  }
  trace.push({ stage: 'l3', chain, event: 'fall-off', verdict: 'accept', note: 'no L3 rule decided: the packet goes on' });
  return { verdict: 'accept' };
}

