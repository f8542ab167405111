// The nwfilter language's protocol elements and their attributes, as data.
// One table drives the parser (which attributes exist, which datatype each
// has, whether a variable may stand in for it) and the resolver.
import type { DataType } from '../ir/typed-value.js';

export type L2Element = 'mac' | 'vlan' | 'stp' | 'arp' | 'rarp' | 'ip' | 'ipv6';
export type L3Element =
  | 'tcp'
  | 'udp'
  | 'udplite'
  | 'sctp'
  | 'esp'
  | 'ah'
  | 'icmp'
  | 'igmp'
  | 'all'
  | 'tcp-ipv6'
  | 'udp-ipv6'
  | 'udplite-ipv6'
  | 'sctp-ipv6'
  | 'esp-ipv6'
  | 'ah-ipv6'
  | 'icmpv6'
  | 'all-ipv6';
export type ProtocolElement = L2Element | L3Element;

/** Datatypes a variable may not stand in for (libvirt does not allow it). */
export const NON_VARIABLE_TYPES: ReadonlySet<DataType> = new Set<DataType>([
  'comment',
  'states',
  'tcpflags',
  'boolean',
  'ipsetflags',
]);

type Attrs = Readonly<Record<string, DataType>>;

const MAC_PROPS: Attrs = {
  srcmacaddr: 'mac',
  srcmacmask: 'macmask',
  dstmacaddr: 'mac',
  dstmacmask: 'macmask',
  comment: 'comment',
};

/** arp and rarp take the same attributes. */
const ARP_PROPS: Attrs = {
  ...MAC_PROPS,
  hwtype: 'uint16',
  protocoltype: 'uint16',
  opcode: 'arpopcode',
  arpsrcmacaddr: 'mac',
  arpdstmacaddr: 'mac',
  arpsrcipaddr: 'ipv4',
  arpsrcipmask: 'ipv4mask',
  arpdstipaddr: 'ipv4',
  arpdstipmask: 'ipv4mask',
  gratuitous: 'boolean',
};

const PORT_PROPS: Attrs = {
  srcportstart: 'uint16',
  srcportend: 'uint16',
  dstportstart: 'uint16',
  dstportend: 'uint16',
};

function l3Props(addr: DataType, mask: DataType): Attrs {
  return {
    srcmacaddr: 'mac',
    srcipaddr: addr,
    srcipmask: mask,
    dstipaddr: addr,
    dstipmask: mask,
    srcipfrom: addr,
    srcipto: addr,
    dstipfrom: addr,
    dstipto: addr,
    dscp: 'dscp',
    'connlimit-above': 'uint16',
    state: 'states',
    ipset: 'ipsetname',
    ipsetflags: 'ipsetflags',
    comment: 'comment',
  };
}

const V4 = l3Props('ipv4', 'ipv4mask');
const V6 = l3Props('ipv6', 'ipv6mask');

export const ELEMENT_ATTRIBUTES: Readonly<Record<ProtocolElement, Attrs>> = {
  mac: { ...MAC_PROPS, protocolid: 'ethertype' },
  vlan: { ...MAC_PROPS, vlanid: 'vlanid', 'encap-protocol': 'ethertype' },
  stp: {
    srcmacaddr: 'mac',
    srcmacmask: 'macmask',
    type: 'uint8',
    flags: 'uint8',
    'root-priority': 'uint16',
    'root-priority-hi': 'uint16',
    'root-address': 'mac',
    'root-address-mask': 'macmask',
    'root-cost': 'uint32',
    'root-cost-hi': 'uint32',
    'sender-priority': 'uint16',
    'sender-priority-hi': 'uint16',
    'sender-address': 'mac',
    'sender-address-mask': 'macmask',
    port: 'uint16',
    'port-hi': 'uint16',
    age: 'uint16',
    'age-hi': 'uint16',
    'max-age': 'uint16',
    'max-age-hi': 'uint16',
    'hello-time': 'uint16',
    'hello-time-hi': 'uint16',
    'forward-delay': 'uint16',
    'forward-delay-hi': 'uint16',
    comment: 'comment',
  },
  arp: ARP_PROPS,
  rarp: ARP_PROPS,
  ip: {
    ...MAC_PROPS,
    srcipaddr: 'ipv4',
    srcipmask: 'ipv4mask',
    dstipaddr: 'ipv4',
    dstipmask: 'ipv4mask',
    protocol: 'ipproto',
    ...PORT_PROPS,
    dscp: 'dscp',
  },
  ipv6: {
    ...MAC_PROPS,
    srcipaddr: 'ipv6',
    srcipmask: 'ipv6mask',
    dstipaddr: 'ipv6',
    dstipmask: 'ipv6mask',
    protocol: 'ipproto',
    ...PORT_PROPS,
    type: 'uint8',
    typeend: 'uint8',
    code: 'uint8',
    codeend: 'uint8',
  },
  tcp: { ...V4, ...PORT_PROPS, option: 'uint8', flags: 'tcpflags' },
  udp: { ...V4, ...PORT_PROPS },
  udplite: V4,
  sctp: { ...V4, ...PORT_PROPS },
  esp: V4,
  ah: V4,
  icmp: { ...V4, type: 'uint8', code: 'uint8' },
  igmp: V4,
  all: V4,
  'tcp-ipv6': { ...V6, ...PORT_PROPS, option: 'uint8', flags: 'tcpflags' },
  'udp-ipv6': { ...V6, ...PORT_PROPS },
  'udplite-ipv6': V6,
  'sctp-ipv6': { ...V6, ...PORT_PROPS },
  'esp-ipv6': V6,
  'ah-ipv6': V6,
  icmpv6: { ...V6, type: 'uint8', code: 'uint8' },
  'all-ipv6': V6,
};

export const L2_ELEMENTS: ReadonlySet<string> = new Set<L2Element>(['mac', 'vlan', 'stp', 'arp', 'rarp', 'ip', 'ipv6']);

export function isProtocolElement(name: string): name is ProtocolElement {
  return Object.hasOwn(ELEMENT_ATTRIBUTES, name);
}

export function isL2Element(e: ProtocolElement): e is L2Element {
  return L2_ELEMENTS.has(e);
}

/** IP protocol number and address family of each L3/L4 element. */
export const L3_ELEMENT_INFO: Readonly<Record<L3Element, { family: 'ipv4' | 'ipv6'; proto: number | 'all' }>> = {
  tcp: { family: 'ipv4', proto: 6 },
  udp: { family: 'ipv4', proto: 17 },
  udplite: { family: 'ipv4', proto: 136 },
  sctp: { family: 'ipv4', proto: 132 },
  esp: { family: 'ipv4', proto: 50 },
  ah: { family: 'ipv4', proto: 51 },
  icmp: { family: 'ipv4', proto: 1 },
  igmp: { family: 'ipv4', proto: 2 },
  all: { family: 'ipv4', proto: 'all' },
  'tcp-ipv6': { family: 'ipv6', proto: 6 },
  'udp-ipv6': { family: 'ipv6', proto: 17 },
  'udplite-ipv6': { family: 'ipv6', proto: 136 },
  'sctp-ipv6': { family: 'ipv6', proto: 132 },
  'esp-ipv6': { family: 'ipv6', proto: 50 },
  'ah-ipv6': { family: 'ipv6', proto: 51 },
  icmpv6: { family: 'ipv6', proto: 58 },
  'all-ipv6': { family: 'ipv6', proto: 'all' },
};

/** Chain-name prefixes and their default priorities. */
export const CHAIN_PREFIX_PRIORITY: Readonly<Record<string, number>> = {
  root: 0,
  stp: -810,
  mac: -800,
  vlan: -750,
  ipv4: -700,
  ipv6: -600,
  arp: -500,
  rarp: -400,
};

export const CHAIN_RE = /^(?:root|(?:mac|vlan|stp|arp|rarp|ipv4|ipv6)(?:-[A-Za-z0-9_.:-]{1,12})?)$/;
