// Typed values of the nwfilter language: parsing and normalisation.
// Every parser returns undefined on invalid input; callers turn that into a
// diagnostic that names the attribute and what was expected.

export const MAC_RE = /^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$/;

/** Normalises a MAC address to lower-case, two digits per byte. */
const MAC_NORMAL_RE = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

export function parseMac(s: string): string | undefined {
  if (MAC_NORMAL_RE.test(s)) return s;
  if (!MAC_RE.test(s)) return undefined;
  return s
    .split(':')
    .map((b) => b.padStart(2, '0').toLowerCase())
    .join(':');
}

export function macToBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((b) => parseInt(b, 16)));
}

/** IPv4 dotted quad to an unsigned 32-bit number. */
export function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i] as string;
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const o = Number(part);
    if (o > 255) return undefined;
    v = v * 256 + o;
  }
  return v >>> 0;
}

export function formatIPv4(v: number): string {
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

/** A mask given as a prefix length or as a contiguous dotted netmask. */
export function parseIPv4Mask(s: string): number | undefined {
  if (/^\d{1,2}$/.test(s)) {
    const n = Number(s);
    return n <= 32 ? n : undefined;
  }
  const v = parseIPv4(s);
  if (v === undefined) return undefined;
  let bits = 0;
  while (bits < 32 && ((v >>> (31 - bits)) & 1) === 1) bits++;
  const rebuilt = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return rebuilt === v ? bits : undefined;
}

/**
 * IPv6 text (RFC 4291: full, `::`-compressed, or with a trailing dotted IPv4
 * part such as `::ffff:192.0.2.1`) to 16 bytes. No zone ids.
 */
export function parseIPv6(s: string): Uint8Array | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string, last: boolean): number[] | undefined => {
    if (part === '') return [];
    const words: number[] = [];
    const list = part.split(':');
    for (let i = 0; i < list.length; i++) {
      const g = list[i] as string;
      if (last && i === list.length - 1 && g.includes('.')) {
        const v4 = parseIPv4(g);
        if (v4 === undefined) return undefined;
        words.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) words.push(parseInt(g, 16));
      else return undefined;
    }
    return words;
  };
  const head = groups(halves[0] as string, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1] as string, true) : [];
  if (!head || !tail) return undefined;
  let words: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return undefined;
    words = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else words = head;
  if (words.length !== 8) return undefined;
  const b = new Uint8Array(16);
  words.forEach((w, i) => {
    b[2 * i] = w >> 8;
    b[2 * i + 1] = w & 255;
  });
  return b;
}

/** RFC 5952 text form of 16 bytes. */
export function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(((b[2 * i] ?? 0) << 8) | (b[2 * i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function normalizeIPv6(s: string): string | undefined {
  const b = parseIPv6(s);
  return b ? formatIPv6(b) : undefined;
}

/** IPv6 mask: a prefix length 0-128 or a contiguous IPv6 netmask. */
export function parseIPv6Mask(s: string): number | undefined {
  if (/^\d{1,3}$/.test(s)) {
    const n = Number(s);
    return n <= 128 ? n : undefined;
  }
  const b = parseIPv6(s);
  if (!b) return undefined;
  let bits = 0;
  while (bits < 128 && ((b[bits >> 3] ?? 0) >> (7 - (bits & 7))) & 1) bits++;
  for (let i = bits; i < 128; i++) if (((b[i >> 3] ?? 0) >> (7 - (i & 7))) & 1) return undefined;
  return bits;
}

/** Unsigned integer, decimal or 0x-hex, at most `max`. */
export function parseUint(s: string, max: number): number | undefined {
  let v: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(s)) v = parseInt(s.slice(2), 16);
  else if (/^\d+$/.test(s)) v = Number(s);
  else return undefined;
  if (!Number.isSafeInteger(v) || v > max) return undefined;
  return v;
}

/** Signed decimal integer (priorities). */
export function parseInt32(s: string): number | undefined {
  if (!/^[+-]?\d{1,10}$/.test(s)) return undefined;
  return Number(s);
}

/** The EtherTypes nwf-fast knows: one table for the parser, the evaluator, the backends and the frame tools. */
export const ETHERTYPES = {
  IPV4: 0x0800,
  ARP: 0x0806,
  /** QEMU's self-announce EtherType, matched by the qemu-announce-self filter. */
  QEMU_ANNOUNCE: 0x0835,
  RARP: 0x8035,
  VLAN: 0x8100,
  IPV6: 0x86dd,
  /** 802.1ad S-tag. */
  QINQ: 0x88a8,
} as const;

/**
 * nwfilter's EtherType names (`protocolid='arp'`). They are also the L2
 * matches (and sub-chain prefixes) that require one EtherType: an `arp`
 * rule or chain only sees frames of EtherType 0x0806.
 */
export const ETHERTYPE_OF = {
  arp: ETHERTYPES.ARP,
  rarp: ETHERTYPES.RARP,
  ipv4: ETHERTYPES.IPV4,
  ipv6: ETHERTYPES.IPV6,
  vlan: ETHERTYPES.VLAN,
} as const;
export type EtherTypeName = keyof typeof ETHERTYPE_OF;
export const ETHERTYPE_NAMES: Readonly<Record<string, number>> = ETHERTYPE_OF;

/** ARP/RARP opcodes, named as in nwfilter's `opcode` attribute. */
export const ARP_OPCODES = {
  Request: 1,
  Reply: 2,
  Request_Reverse: 3,
  Reply_Reverse: 4,
  DRARP_Request: 5,
  DRARP_Reply: 6,
  DRARP_Error: 7,
  InARP_Request: 8,
  ARP_NAK: 9,
} as const;
export type ArpOpName = keyof typeof ARP_OPCODES;
export const ARP_OPCODE_NAMES: Readonly<Record<string, number>> = ARP_OPCODES;

/** IP protocol numbers by nwfilter name (`protocol='tcp'`). */
export const IP_PROTOCOLS = {
  tcp: 6,
  udp: 17,
  udplite: 136,
  esp: 50,
  ah: 51,
  icmp: 1,
  igmp: 2,
  sctp: 132,
  icmpv6: 58,
} as const;
export const IP_PROTOCOL_NAMES: Readonly<Record<string, number>> = IP_PROTOCOLS;

/**
 * Bytes of the protocol header an iptables port, TCP-flag or ICMP-type match
 * reads (struct tcphdr, udphdr, sctphdr, icmphdr, icmp6hdr); the match drops
 * a packet whose header is shorter.
 */
export const L4_HEADER_SIZE: Readonly<Record<number, number>> = {
  [IP_PROTOCOLS.tcp]: 20,
  [IP_PROTOCOLS.udp]: 8,
  [IP_PROTOCOLS.udplite]: 8,
  [IP_PROTOCOLS.sctp]: 12,
  [IP_PROTOCOLS.icmp]: 8,
  [IP_PROTOCOLS.icmpv6]: 8,
};

export const CONN_STATES = ['NEW', 'ESTABLISHED', 'RELATED', 'INVALID', 'NONE'] as const;
export type ConnStateName = (typeof CONN_STATES)[number];

/** The TCP flag bits nwfilter names (`flags='SYN/SYN,ACK'`). */
export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;
export const TCP_FLAG_BITS: Readonly<Record<string, number>> = { ...TCP_FLAGS, ALL: 0x3f, NONE: 0 };

/** `MASK/SET` lists of TCP flag names, e.g. `SYN,ACK/SYN`. */
export function parseTcpFlags(s: string): { mask: number; set: number } | undefined {
  const parts = s.split('/');
  if (parts.length !== 2) return undefined;
  const list = (p: string): number | undefined => {
    let v = 0;
    for (const name of p.split(',')) {
      const bit = TCP_FLAG_BITS[name.trim().toUpperCase()];
      if (bit === undefined) return undefined;
      v |= bit;
    }
    return v;
  };
  const mask = list(parts[0] as string);
  const set = list(parts[1] as string);
  if (mask === undefined || set === undefined) return undefined;
  return { mask, set };
}

/**
 * Linux interface names: 1-15 bytes, no '/', ':', whitespace, quotes or
 * control characters, not '.' or '..'. nwf-fast is stricter than the kernel
 * and also refuses anything outside [A-Za-z0-9_.@+-] (and a first character
 * other than a letter, digit or _), so that a name can never inject syntax
 * into a generated ruleset or path.
 */
export function isValidIfName(s: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,14}$/.test(s);
}
