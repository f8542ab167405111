// DHCPv4 messages as IP learning reads them (docs/design/ip-learning.md 1.3,
// 2.2, 3): the BOOTP header, the magic cookie and a bounded walk over the
// options, with the same rules as the eBPF parser. This is the user-space
// side (the nft backend's snooper and tests); nothing here trusts a length
// it has not checked.
import { formatIPv4 } from '../../ir/values.js';

export const DHCP_TYPES = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8 } as const;

/** Options looked at: a message with more before END is not learned from. */
export const DHCP_MAX_OPTIONS = 64;

const BOOTP_LEN = 236;
const MAGIC = 0x63825363;

export interface DhcpInfo {
  /** 1 BOOTREQUEST, 2 BOOTREPLY. */
  op: number;
  /** Message type (option 53). */
  type: number;
  ciaddr: string;
  yiaddr: string;
  /** Client hardware address (lower case). */
  chaddr: string;
  /** Lease time in seconds (option 51); 0xffffffff is infinite. */
  lease?: number;
  /** Server identifier (option 54). */
  serverId?: string;
}

/**
 * The DHCP message in a UDP payload, or undefined when it is not one the
 * learning rules read: too short, no magic cookie, no message type, a
 * second 53 or 51, a 51 whose length is not 4, an option cut by the end of
 * the payload, no END, or more than `maxOptions` options.
 */
export function parseDhcp(msg: Uint8Array, maxOptions = DHCP_MAX_OPTIONS): DhcpInfo | undefined {
  if (msg.length < BOOTP_LEN + 4) return undefined;
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  if (v.getUint32(BOOTP_LEN) !== MAGIC) return undefined;
  if (msg[1] !== 1 || msg[2] !== 6) return undefined; // Ethernet addresses only
  let type: number | undefined;
  let lease: number | undefined;
  let serverId: string | undefined;
  let ended = false;
  let at = BOOTP_LEN + 4;
  for (let n = 0; n < maxOptions && at < msg.length; n++) {
    const code = msg[at] as number;
    if (code === 0) {
      at++;
      continue;
    }
    if (code === 255) {
      ended = true;
      break;
    }
    if (at + 1 >= msg.length) return undefined;
    const len = msg[at + 1] as number;
    const val = at + 2;
    if (val + len > msg.length) return undefined;
    if (code === 53) {
      if (type !== undefined || len !== 1) return undefined;
      type = msg[val] as number;
    } else if (code === 51) {
      if (lease !== undefined || len !== 4) return undefined;
      lease = v.getUint32(val);
    } else if (code === 54 && len === 4) {
      serverId = formatIPv4(v.getUint32(val));
    }
    at = val + len;
  }
  if (!ended || type === undefined) return undefined;
  const hex = (i: number): string => (msg[i] as number).toString(16).padStart(2, '0');
  return {
    op: msg[0] as number,
    type,
    ciaddr: formatIPv4(v.getUint32(12)),
    yiaddr: formatIPv4(v.getUint32(16)),
    chaddr: [28, 29, 30, 31, 32, 33].map(hex).join(':'),
    ...(lease !== undefined ? { lease } : {}),
    ...(serverId !== undefined ? { serverId } : {}),
  };
}

/**
 * The lease a message teaches a `dhcp` port with MAC `mac`: a DHCPACK (op 2,
 * 53 = 5) for that chaddr with a non-zero yiaddr and a lease time above 0.
 * Whether its server is trusted is the caller's (the IP source, DHCPSERVER).
 */
export function teachingLease(d: DhcpInfo | undefined, mac: string): { ip: string; seconds: number } | undefined {
  if (!d || d.op !== 2 || d.type !== DHCP_TYPES.ACK || d.chaddr !== mac.toLowerCase()) return undefined;
  if (d.yiaddr === '0.0.0.0' || !d.lease) return undefined;
  return { ip: d.yiaddr, seconds: d.lease };
}

/** The lease a DHCPRELEASE from the VM ends (RFC 2131: the address in ciaddr). */
export function releasedLease(d: DhcpInfo | undefined, mac: string): string | undefined {
  if (!d || d.op !== 1 || d.type !== DHCP_TYPES.RELEASE || d.chaddr !== mac.toLowerCase() || d.ciaddr === '0.0.0.0') return undefined;
  return d.ciaddr;
}
