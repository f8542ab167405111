// The ebtables matches libvirt's L2 rules use, as the kernel implements them
// (ebt_ip, ebt_ip6, ebt_arp, ebt_vlan, ebt_stp and the basic -s/-d/-p match),
// including their behaviour on frames too short to hold the field: no
// match, whatever the negation.
import { assertNever } from '../../util/errors.js';
import type { JumpGuard, L2Match, MacTest, NumTest, RangeTest } from '../types.js';
import { ETHERTYPE_OF, ETHERTYPES } from '../values.js';
import { cmpBytes, inRange, inv, macEq, prefixEq } from './compare.js';
import { skipIpv6ExtHeaders, View, type Frame } from './frame.js';

/** ebtables' basic match: -s, -d (with masks). */
function ebtEth(f: Frame, m: { src?: MacTest; dst?: MacTest }): boolean {
  if (m.src && !inv(m.src.neg, macEq(f.src, m.src))) return false;
  if (m.dst && !inv(m.dst.neg, macEq(f.dst, m.dst))) return false;
  return true;
}

function ebtProto(f: Frame, t: NumTest | undefined): boolean {
  return !t || inv(t.neg, f.proto === t.value);
}

/** ebt_ip (`-p ipv4 --ip-*`). */
function ebtIp(f: Frame, m: Extract<L2Match, { proto: 'ipv4' }>): boolean {
  // ebtables loads the ip match only when the rule has --ip-* options
  if (!m.tos && !m.srcIp && !m.dstIp && !m.protocol) return true;
  const n = f.net;
  if (!n.has(0, 20)) return false;
  if (m.tos && !inv(m.tos.neg, n.u8(1) === m.tos.value)) return false;
  if (m.srcIp && !inv(m.srcIp.neg, prefixEq(n.bytes(12, 4) as Uint8Array, m.srcIp))) return false;
  if (m.dstIp && !inv(m.dstIp.neg, prefixEq(n.bytes(16, 4) as Uint8Array, m.dstIp))) return false;
  if (m.protocol) {
    if (!inv(m.protocol.neg, n.u8(9) === m.protocol.value)) return false;
    if (!m.srcPort && !m.dstPort) return true;
    if (((n.u16(6) as number) & 0x1fff) !== 0) return false; // not the first fragment
    const l4 = ((n.u8(0) as number) & 0x0f) * 4;
    const sport = n.u16(l4);
    const dport = n.u16(l4 + 2);
    if (sport === undefined || dport === undefined) return false;
    if (m.dstPort && !inv(m.dstPort.neg, inRange(dport, m.dstPort))) return false;
    if (m.srcPort && !inv(m.srcPort.neg, inRange(sport, m.srcPort))) return false;
  }
  return true;
}

/** ebt_ip6 (`-p ipv6 --ip6-*`). */
function ebtIp6(f: Frame, m: Extract<L2Match, { proto: 'ipv6' }>): boolean {
  if (!m.srcIp && !m.dstIp && !m.protocol) return true;
  const n = f.net;
  if (!n.has(0, 40)) return false;
  if (m.srcIp && !inv(m.srcIp.neg, prefixEq(n.bytes(8, 16) as Uint8Array, m.srcIp))) return false;
  if (m.dstIp && !inv(m.dstIp.neg, prefixEq(n.bytes(24, 16) as Uint8Array, m.dstIp))) return false;
  if (m.protocol) {
    const up = skipIpv6ExtHeaders(n, 40, n.u8(6) as number);
    if (!up) return false;
    if (!inv(m.protocol.neg, up.nexthdr === m.protocol.value)) return false;
    if (!m.srcPort && !m.dstPort && !m.icmpType) return true;
    const a = n.u16(up.offset);
    const b = n.u16(up.offset + 2);
    if (a === undefined || b === undefined) return false;
    if (m.dstPort && !inv(m.dstPort.neg, inRange(b, m.dstPort))) return false;
    if (m.srcPort && !inv(m.srcPort.neg, inRange(a, m.srcPort))) return false;
    if (m.icmpType) {
      const type = a >> 8;
      const code = a & 0xff;
      const code_ = m.icmpCode ?? { lo: 0, hi: 255, neg: m.icmpType.neg };
      if (!inv(m.icmpType.neg, inRange(type, m.icmpType) && inRange(code, code_))) return false;
    }
  }
  return true;
}

/** ebt_arp (`-p 0x806|0x8035 --arp-*`). */
function ebtArp(f: Frame, m: Extract<L2Match, { proto: 'arp' | 'rarp' }>): boolean {
  if (!m.opcode && !m.hwType && !m.protoType && !m.spa && !m.tpa && !m.gratuitous && !m.sha && !m.tha) return true;
  const n = f.net;
  if (!n.has(0, 8)) return false;
  const hrd = n.u16(0) as number;
  const pro = n.u16(2) as number;
  const hln = n.u8(4) as number;
  const pln = n.u8(5) as number;
  const op = n.u16(6) as number;
  if (m.opcode && !inv(m.opcode.neg, op === m.opcode.value)) return false;
  if (m.hwType && !inv(m.hwType.neg, hrd === m.hwType.value)) return false;
  if (m.protoType && !inv(m.protoType.neg, pro === m.protoType.value)) return false;
  if (m.spa || m.tpa || m.gratuitous) {
    if (pln !== 4 || pro !== ETHERTYPES.IPV4) return false;
    const sip = n.bytes(8 + hln, 4);
    const tip = n.bytes(8 + 2 * hln + 4, 4);
    if (!sip || !tip) return false;
    if (m.spa && !inv(m.spa.neg, prefixEq(sip, m.spa))) return false;
    if (m.tpa && !inv(m.tpa.neg, prefixEq(tip, m.tpa))) return false;
    if (m.gratuitous && !inv(m.gratuitous.neg, cmpBytes(sip, tip) === 0)) return false;
  }
  if (m.sha || m.tha) {
    if (hln !== 6 || hrd !== 1) return false;
    if (m.sha) {
      const sha = n.bytes(8, 6);
      if (!sha || !inv(m.sha.neg, macEq(sha, m.sha))) return false;
    }
    if (m.tha) {
      const tha = n.bytes(8 + hln + pln, 6);
      if (!tha || !inv(m.tha.neg, macEq(tha, m.tha))) return false;
    }
  }
  return true;
}

/** ebt_vlan (`-p 0x8100 --vlan-*`): the tag right after the Ethernet header. */
function ebtVlan(f: Frame, m: Extract<L2Match, { proto: 'vlan' }>): boolean {
  if (!m.vlanId && !m.encap) return true;
  const tci = f.net.u16(0);
  const encap = f.net.u16(2);
  if (tci === undefined || encap === undefined) return false;
  if (m.vlanId && !inv(m.vlanId.neg, (tci & 0x0fff) === m.vlanId.value)) return false;
  if (m.encap && !inv(m.encap.neg, encap === m.encap.value)) return false;
  return true;
}

/**
 * ebt_stp, with the kernel's exact layout: it compares the first six bytes
 * after the Ethernet header with 42 42 03 00 00 00, reads "type" at byte 5
 * and the configuration fields from byte 6 (one byte earlier than a real
 * BPDU puts them). libvirt's rules go through this match, so we keep it.
 */
function ebtStp(f: Frame, m: Extract<L2Match, { proto: 'stp' }>): boolean {
  const s = m.fields;
  if (!s) return true;
  const hdr = f.net.bytes(0, 6);
  if (!hdr || cmpBytes(hdr, Uint8Array.of(0x42, 0x42, 0x03, 0, 0, 0)) !== 0) return false;
  const type = hdr[5] as number;
  if (s.type && !inv(s.type.neg, type === s.type.value)) return false;
  const cfgTests = Object.keys(s).filter((k) => k !== 'type');
  if (type !== 0 || cfgTests.length === 0) return true;
  const c = f.net.bytes(6, 31);
  if (!c) return false;
  const v = new View(c, 0);
  const r16 = (off: number, t: RangeTest | undefined): boolean => !t || inv(t.neg, inRange(v.u16(off) as number, t));
  if (s.flags && !inv(s.flags.neg, v.u8(0) === s.flags.value)) return false;
  if (!r16(1, s.rootPriority)) return false;
  if (s.rootAddress && !inv(s.rootAddress.neg, macEq(c.subarray(3, 9), s.rootAddress))) return false;
  if (s.rootCost && !inv(s.rootCost.neg, inRange(v.u32(9) as number, s.rootCost))) return false;
  if (!r16(13, s.senderPriority)) return false;
  if (s.senderAddress && !inv(s.senderAddress.neg, macEq(c.subarray(15, 21), s.senderAddress))) return false;
  if (!r16(21, s.port)) return false;
  if (!r16(23, s.age)) return false;
  if (!r16(25, s.maxAge)) return false;
  if (!r16(27, s.helloTime)) return false;
  if (!r16(29, s.forwardDelay)) return false;
  return true;
}

/** Does an L2 rule's match hold for the frame? */
export function matchL2(f: Frame, m: L2Match): boolean {
  switch (m.proto) {
    case 'any':
      return true;
    case 'mac':
      return ebtEth(f, m) && ebtProto(f, m.etherType);
    case 'vlan':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.vlan && ebtVlan(f, m);
    case 'stp':
      return ebtEth(f, m) && ebtStp(f, m);
    case 'arp':
    case 'rarp':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF[m.proto] && ebtArp(f, m);
    case 'ipv4':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.ipv4 && ebtIp(f, m);
    case 'ipv6':
      return ebtEth(f, m) && f.proto === ETHERTYPE_OF.ipv6 && ebtIp6(f, m);
    default:
      return assertNever(m, 'L2 match');
  }
}

export function guardHolds(f: Frame, g: JumpGuard): boolean {
  if (g.kind === 'none') return true;
  if (g.kind === 'stp') return macEq(f.dst, { addr: '01:80:c2:00:00:00', neg: false });
  return f.proto === g.etherType;
}
