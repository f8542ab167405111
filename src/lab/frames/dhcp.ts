// DHCPv4 messages for the IP-learning tests (RFC 2131/2132): the 236-byte
// BOOTP header, the magic cookie, then options as code, length, value.
// Options are deliberately not at fixed offsets: tests put padding and other
// options before the message type (53) and the lease time (51) to exercise
// parsers that walk the options.
import { BROADCAST_MAC, concat, ipv4, mac, udpFrame } from './build.js';

export const DHCP = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8 } as const;
export const DHCP_MAGIC = Uint8Array.of(99, 130, 83, 99);

export interface DhcpOption {
  code: number;
  value: Uint8Array;
}

export interface DhcpMessage {
  /** 1 BOOTREQUEST (client), 2 BOOTREPLY (server). */
  op: 1 | 2;
  xid?: number;
  ciaddr?: string;
  yiaddr?: string;
  siaddr?: string;
  chaddr: string;
  /** Message type (option 53); left out when undefined. */
  type?: number;
  /** Lease time in seconds (option 51); left out when undefined. */
  leaseSeconds?: number;
  /** Options before 53 and 51 (server id, long vendor options, ...). */
  leading?: DhcpOption[];
  /** PAD (0) bytes right after the magic cookie. */
  padAfterMagic?: number;
  /** Leave out the END option. */
  noEnd?: boolean;
}

const u32be = (v: number): Uint8Array => Uint8Array.of((v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);

/** The UDP payload of a DHCP message. */
export function dhcpPayload(m: DhcpMessage): Uint8Array {
  const h = new Uint8Array(236);
  h[0] = m.op;
  h[1] = 1; // htype Ethernet
  h[2] = 6; // hlen
  h.set(u32be(m.xid ?? 0x4e570001), 4);
  h.set(ipv4(m.ciaddr ?? '0.0.0.0'), 12);
  h.set(ipv4(m.yiaddr ?? '0.0.0.0'), 16);
  h.set(ipv4(m.siaddr ?? '0.0.0.0'), 20);
  h.set(mac(m.chaddr), 28);
  const opts: number[] = [];
  for (let i = 0; i < (m.padAfterMagic ?? 0); i++) opts.push(0);
  for (const o of m.leading ?? []) {
    opts.push(o.code, o.value.length);
    for (const b of o.value) opts.push(b);
  }
  if (m.type !== undefined) opts.push(53, 1, m.type);
  if (m.leaseSeconds !== undefined) {
    opts.push(51, 4);
    for (const b of u32be(m.leaseSeconds)) opts.push(b);
  }
  if (!m.noEnd) opts.push(255);
  return concat(h, DHCP_MAGIC, Uint8Array.from(opts));
}

export interface DhcpFrameOptions {
  srcMac: string;
  dstMac?: string;
  srcIp: string;
  dstIp: string;
  message: DhcpMessage;
}

/** A server reply (UDP 67 -> 68); default destination MAC broadcast. */
export function dhcpServerFrame(o: DhcpFrameOptions): Uint8Array {
  return udpFrame({ srcMac: o.srcMac, dstMac: o.dstMac ?? BROADCAST_MAC, srcIp: o.srcIp, dstIp: o.dstIp, sport: 67, dport: 68, payload: dhcpPayload(o.message) });
}

/** A client message (UDP 68 -> 67); default destination MAC broadcast. */
export function dhcpClientFrame(o: DhcpFrameOptions): Uint8Array {
  return udpFrame({ srcMac: o.srcMac, dstMac: o.dstMac ?? BROADCAST_MAC, srcIp: o.srcIp, dstIp: o.dstIp, sport: 68, dport: 67, payload: dhcpPayload(o.message) });
}

/** Long harmless options (vendor-specific 43, host name 12) that push 53 and 51 far into the packet. */
export function fillerOptions(count: number, len = 40): DhcpOption[] {
  return Array.from({ length: count }, (_, i) => ({ code: i % 2 === 0 ? 43 : 12, value: new Uint8Array(len).fill(0x41 + (i % 26)) }));
}
