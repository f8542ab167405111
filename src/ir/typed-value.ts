// The datatypes of nwfilter attributes, and parsing one value according to its datatype.
import {
  ARP_OPCODE_NAMES,
  CONN_STATES,
  type ConnStateName,
  ETHERTYPE_NAMES,
  IP_PROTOCOL_NAMES,
  parseIPv4,
  parseIPv4Mask,
  parseIPv6,
  parseIPv6Mask,
  parseMac,
  parseTcpFlags,
  parseUint,
} from './values.js';

/** The datatype of an nwfilter attribute (src/xml/schema.ts says which attribute has which). */
export type DataType =
  | 'mac'
  | 'macmask'
  | 'ipv4'
  | 'ipv4mask'
  | 'ipv6'
  | 'ipv6mask'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'ethertype' // protocolid / encap-protocol: number >= 0x600 or a name
  | 'vlanid'
  | 'arpopcode'
  | 'ipproto' // protocol of ip/ipv6: a number 0-255 or a name
  | 'dscp'
  | 'boolean'
  | 'states'
  | 'tcpflags'
  | 'ipsetname'
  | 'ipsetflags'
  | 'comment';

export type TypedValue =
  | { type: 'mac' | 'macmask'; value: string }
  | { type: 'ipv4'; value: number }
  | { type: 'ipv6'; value: Uint8Array }
  | { type: 'ipv4mask' | 'ipv6mask'; value: number }
  | { type: 'uint8' | 'uint16' | 'uint32' | 'ethertype' | 'vlanid' | 'arpopcode' | 'ipproto' | 'dscp'; value: number }
  | { type: 'boolean'; value: boolean }
  | { type: 'states'; value: ConnStateName[] }
  | { type: 'tcpflags'; value: { mask: number; set: number } }
  | { type: 'ipsetname' | 'comment'; value: string }
  | { type: 'ipsetflags'; value: ('src' | 'dst')[] };

export const EXPECTED: Readonly<Record<DataType, string>> = {
  mac: 'a MAC address like 52:54:00:12:34:56',
  macmask: 'a MAC mask like ff:ff:ff:00:00:00',
  ipv4: 'an IPv4 address like 10.0.0.1',
  ipv4mask: 'a prefix length 0-32 or a netmask like 255.255.255.0',
  ipv6: 'an IPv6 address like fe80::1',
  ipv6mask: 'a prefix length 0-128',
  uint8: 'a number 0-255 (decimal or 0x hex)',
  uint16: 'a number 0-65535 (decimal or 0x hex)',
  uint32: 'a number 0-4294967295 (decimal or 0x hex)',
  ethertype: 'an EtherType number >= 0x600 or one of arp, rarp, ipv4, ipv6, vlan',
  vlanid: 'a VLAN id 0-4095',
  arpopcode: `an ARP opcode number or one of ${Object.keys(ARP_OPCODE_NAMES).join(', ')}`,
  ipproto: `an IP protocol number 0-255 or one of ${Object.keys(IP_PROTOCOL_NAMES).join(', ')}`,
  dscp: 'a DSCP value 0-63',
  boolean: 'true or false',
  states: `a comma list of ${CONN_STATES.join(', ')}`,
  tcpflags: 'MASK/SET lists of SYN, ACK, URG, PSH, FIN, RST, ALL, NONE (e.g. SYN,ACK/SYN)',
  ipsetname: 'an ipset name (letters, digits, _ . : -, at most 31 characters)',
  ipsetflags: 'a comma list of 1-6 of src, dst',
  comment: 'a text of at most 256 characters',
};

export function parseTypedValue(type: DataType, raw: string): TypedValue | undefined {
  switch (type) {
    case 'mac':
    case 'macmask': {
      const v = parseMac(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipv4': {
      const v = parseIPv4(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipv4mask': {
      const v = parseIPv4Mask(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipv6': {
      const v = parseIPv6(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipv6mask': {
      const v = parseIPv6Mask(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'uint8':
    case 'uint16':
    case 'uint32': {
      const max = type === 'uint8' ? 0xff : type === 'uint16' ? 0xffff : 0xffffffff;
      const v = parseUint(raw, max);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ethertype': {
      const named = ETHERTYPE_NAMES[raw];
      if (named !== undefined) return { type, value: named };
      const v = parseUint(raw, 0xffff);
      return v === undefined || v < 0x600 ? undefined : { type, value: v };
    }
    case 'vlanid': {
      const v = parseUint(raw, 4095);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'arpopcode': {
      const named = ARP_OPCODE_NAMES[raw];
      if (named !== undefined) return { type, value: named };
      const v = parseUint(raw, 0xffff);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipproto': {
      const named = IP_PROTOCOL_NAMES[raw];
      if (named !== undefined) return { type, value: named };
      const v = parseUint(raw, 0xff);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'dscp': {
      const v = parseUint(raw, 63);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'boolean': {
      const s = raw.toLowerCase();
      if (s === 'true' || s === '1' || s === 'yes') return { type, value: true };
      if (s === 'false' || s === '0' || s === 'no') return { type, value: false };
      return undefined;
    }
    case 'states': {
      const out: ConnStateName[] = [];
      for (const part of raw.split(',')) {
        const s = part.trim().toUpperCase();
        if (!(CONN_STATES as readonly string[]).includes(s)) return undefined;
        if (!out.includes(s as ConnStateName)) out.push(s as ConnStateName);
      }
      return out.length ? { type, value: out } : undefined;
    }
    case 'tcpflags': {
      const v = parseTcpFlags(raw);
      return v === undefined ? undefined : { type, value: v };
    }
    case 'ipsetname':
      return /^[A-Za-z0-9_.:-]{1,31}$/.test(raw) ? { type, value: raw } : undefined;
    case 'ipsetflags': {
      const parts = raw.split(',').map((p) => p.trim().toLowerCase());
      if (parts.length < 1 || parts.length > 6 || parts.some((p) => p !== 'src' && p !== 'dst')) return undefined;
      return { type, value: parts as ('src' | 'dst')[] };
    }
    case 'comment':
      return raw.length <= 256 ? { type, value: raw } : undefined;
  }
}
