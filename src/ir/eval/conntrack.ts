// Connection tracking as the L3 rules see it: the state and direction of a
// packet's connection, what conntrack makes of a flow's first packet, and
// which policies make the kernel track a family at all.
import type { InterfacePolicy } from '../types.js';
import type { ConnStateName } from '../values.js';
import type { L3Packet } from './frame.js';

export interface ConnInfo {
  /** Conntrack state of the packet's connection ('untracked': conntrack does not follow it, e.g. ICMPv6 neighbour discovery). */
  state: 'new' | 'established' | 'related' | 'invalid' | 'untracked';
  /** Whether the packet goes in the connection's original or reply direction. */
  direction: 'original' | 'reply';
}

/** The nwfilter state name (`state='NEW'`) of each conntrack state. */
export const STATE_NAME: Record<Exclude<ConnInfo['state'], 'untracked'>, ConnStateName> = { new: 'NEW', established: 'ESTABLISHED', related: 'RELATED', invalid: 'INVALID' };

const TCP_VALID_FLAGS = new Set([0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30]);
const ICMP_NEW = new Set([8, 13, 15, 17]);
const ICMPV6_NEW = new Set([128, 139]);
const ICMPV6_UNTRACKED = new Set([130, 131, 132, 133, 134, 135, 136, 143]);

/**
 * What conntrack makes of a packet that is the first of its flow (nothing
 * tracked before it): NEW when the packet can start a connection, INVALID
 * when it cannot (TCP without SYN/ACK or with invalid flags, ICMP replies and
 * errors, UDP-Lite without a checksum, SCTP without INIT), untracked for
 * ICMPv6 neighbour discovery and MLD.
 */
export function classifyFirstPacket(pkt: L3Packet): ConnInfo {
  const new_: ConnInfo = { state: 'new', direction: 'original' };
  const invalid: ConnInfo = { state: 'invalid', direction: 'original' };
  const l4 = pkt.l4;
  switch (pkt.protocol) {
    case 6: {
      const fl = l4?.u8(13);
      if (fl === undefined || !l4?.has(0, 20)) return invalid;
      const f = fl & ~(0x08 | 0x40 | 0x80) & 0x3f; // ignore PSH, ECE, CWR
      if (!TCP_VALID_FLAGS.has(f)) return invalid;
      // from no state, only SYN and ACK (loose pickup) start tracking; RST, FIN, SYN-ACK do not
      if (f & 0x04 || (f & 0x02 && f & 0x10) || (f & 0x01 && !(f & 0x02))) return invalid;
      return new_;
    }
    case 17:
      if (!l4?.has(0, 8)) return invalid;
      if (pkt.family === 'ipv6' && l4.u16(6) === 0) return invalid;
      return new_;
    case 136:
      if (!l4?.has(0, 8) || l4.u16(6) === 0) return invalid;
      {
        const cov = l4.u16(4) as number;
        if (cov !== 0 && cov < 8) return invalid;
      }
      return new_;
    case 132:
      return l4?.u8(12) === 1 ? new_ : invalid; // first chunk INIT
    case 1: {
      const t = l4?.u8(0);
      return t !== undefined && ICMP_NEW.has(t) ? new_ : invalid;
    }
    case 58: {
      const t = l4?.u8(0);
      if (t === undefined) return invalid;
      if (ICMPV6_UNTRACKED.has(t)) return { state: 'untracked', direction: 'original' };
      return ICMPV6_NEW.has(t) ? new_ : invalid;
    }
    default:
      return new_;
  }
}

/** Whether the policy's L3 rules of a family use connection tracking (state, ctdir, connlimit). */
export function hasStatefulRules(p: InterfacePolicy, family: 'ipv4' | 'ipv6'): boolean {
  return [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost].some((r) => r.family === family && (r.state !== undefined || r.ctDir !== undefined || r.connlimitAbove !== undefined));
}
