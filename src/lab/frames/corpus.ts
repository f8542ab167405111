// A deterministic generated frame corpus for differential tests.
//
// The nftables and eBPF backends are checked by sending every frame of the
// corpus through the real kernel (or BPF_PROG_TEST_RUN) and comparing with
// the reference evaluator (src/ir/eval.ts). The corpus has three parts:
//
// 1. A fixed base set for any policy, in both directions: IPv4 UDP/TCP/ICMP
//    from and to each of the VM's addresses, spoofed MACs and IPs, DHCP,
//    ARP (right, wrong, gratuitous), RARP (QEMU's announce and others),
//    EtherType 0x0835, IPv6 (link-local, DHCPv6, NDP), VLAN-tagged copies,
//    broadcast and multicast, STP, an unknown EtherType, 802.3/LLC.
// 2. Frames derived from the policy: for every L2 rule (root and sub-chains)
//    and every L3 rule (fromVm -> 'out', toVm -> 'in'), a frame that
//    satisfies all of its tests, boundary frames (top of a range, a bit
//    flipped outside a mask), and for each test frames that violate exactly
//    that test. Rules with a conntrack state get `conn` variants.
// 3. Edge frames: truncated copies (pad: false), broken IPv4 header
//    checksums, IPv4 fragments and options, IPv6 extension headers, runts.
//
// Unconstrained fields are filled with the VM's own valid addresses (or the
// peer's, for frames to the VM), so frames are not dropped for unrelated
// reasons more than necessary. Nothing is random: two calls give the same
// corpus, in the same order.
//
// Tags: 'base' | 'derived'; 'l2' / 'l3' (derived from an L2 / L3 rule);
// 'match' | 'boundary' | 'violate'; 'state' (a conntrack variant);
// 'truncated', 'unpadded' (a whole frame shorter than 60 bytes), 'runt',
// 'bad-csum', 'fragment', 'ip-options', 'ipv6-ext';
// and what the bytes are: 'ipv4', 'ipv6', 'arp', 'rarp', 'vlan', 'stp',
// 'llc', 'other-ethertype', 'broadcast', 'multicast'.
import type { ConnInfo } from '../../ir/eval.js';
import type { Direction, InterfacePolicy, JumpGuard, L2Match, L2Rule, L3Rule } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { ETHERTYPE_OF, ETHERTYPES } from '../../ir/values.js';
import {
  BROADCAST_MAC,
  MIN_FRAME_LEN,
  STP_MAC,
  concat,
  ether,
  icmpv6Frame,
  ieee8023,
  ipv6UdpFrame,
  mac,
  rarpAnnounceFrame,
  rarpFrame,
  stpBpdu,
  TcpFlag,
} from './build.js';
import { type OpContext, type TestOp, type Variant, kindOfEtherType, l2Ops, l3Ops } from './corpus-rules.js';
import { type FrameSpec, cloneSpec, defaultBpdu, ipToBytes, ipToText, kindLabel, l4Offset, linkLocal, macText, renderSpec, solicitedNode } from './corpus-spec.js';

export interface CorpusFrame {
  /** Short, unique within the corpus; says what the frame is and why it is there. */
  name: string;
  /** 'out' = from the VM, 'in' = to the VM. */
  direction: Direction;
  frame: Uint8Array;
  /** Conntrack state to assume, for L3 rules with `state` (see EvalOptions.conn). */
  conn?: ConnInfo;
  tags: string[];
  /**
   * For frames derived from a rule: which rule and test, and whether the rule's
   * own match holds for the frame ('match': the match frame and boundary values;
   * 'no-match': a violation). Edge copies (truncated, bad checksum, fragments, ...)
   * name the rule but promise nothing.
   */
  rule?: CorpusRuleRef;
}

export interface CorpusRuleRef {
  stage: 'l2' | 'l3';
  /** L2Rule.id / L3Rule.id. */
  id: string;
  /** The test that was varied (violations and boundary values). */
  test?: string;
  expect?: 'match' | 'no-match';
}

export interface CorpusOptions {
  /** A neighbour on the bridge (default 52:54:00:00:00:99). */
  peerMac?: string;
  /** The neighbour's IPv4 address (default: the VM's first address with last octet 254). */
  peerIp?: string;
  /** The neighbour's IPv6 address (default: its link-local address). */
  peerIp6?: string;
  /** The router (default: the policy's GATEWAY_MAC variable, if any). */
  gatewayMac?: string;
  /** Families of edge frames, all on by default. */
  include?: { truncated?: boolean; runts?: boolean; vlan?: boolean; l3State?: boolean };
  /** Upper bound on the corpus size (default 5000). The base set is always kept whole. */
  max?: number;
}

/** How many addresses of a list get their own base frames. */
const BASE_ADDRS = 8;
const ZERO_MAC = '00:00:00:00:00:00';

// ---- environment -----------------------------------------------------------------------

interface Env {
  vmMac: string;
  vmIps: string[];
  vmIp6s: string[];
  vmLL: string;
  /** The VM's preferred IPv6 source: its first $IPV6, else its link-local address. */
  vmIp6: string;
  peerMac: string;
  peerIp: string;
  peerIp6: string;
  gatewayMac?: string;
  evilMac: string;
  evilIp: string;
  evilIp6: string;
  /** Destination MAC of derived frames from the VM; source MAC of derived frames to it. */
  remoteMac: string;
  /** Known addresses, the VM's first (see FrameSpec.known4). */
  known4: Uint8Array[];
  known6: Uint8Array[];
}

function lastByte(macAddr: string, x: number): string {
  const b = mac(macAddr);
  b[5] = x & 0xff;
  return macText(b);
}

function withLastOctet(ip: string, x: number): string {
  const b = ipToBytes('ipv4', ip);
  b[3] = x & 0xff;
  return ipToText('ipv4', b);
}

function makeEnv(p: InterfacePolicy, o: CorpusOptions): Env {
  const vmMac = macText(mac(p.vars.MAC?.[0] ?? p.mac));
  const vmIps = p.vars.IP?.length ? [...p.vars.IP] : ['10.0.0.2'];
  const vmIp6s = p.vars.IPV6?.length ? [...p.vars.IPV6] : [];
  const gw = o.gatewayMac ?? p.vars.GATEWAY_MAC?.[0];
  const gatewayMac = gw !== undefined ? macText(mac(gw)) : undefined;
  let peerMac = macText(mac(o.peerMac ?? '52:54:00:00:00:99'));
  if (peerMac === vmMac) peerMac = lastByte(peerMac, 0x98);
  const ip0 = vmIps[0] as string;
  let peerIp = o.peerIp;
  for (let x = 254; peerIp === undefined && x > 0; x--) {
    const c = withLastOctet(ip0, x);
    if (!vmIps.includes(c)) peerIp = c;
  }
  peerIp ??= '192.0.2.99';
  const taken = (m: string): boolean => m === vmMac || m === peerMac || m === gatewayMac;
  let evilMac = lastByte(vmMac, (mac(vmMac)[5] ?? 0) ^ 0x67);
  for (let x = 0x66; taken(evilMac); x++) evilMac = lastByte(vmMac, x);
  let evilIp = withLastOctet(ip0, (ipToBytes('ipv4', ip0)[3] ?? 0) ^ 0x40);
  for (let x = 66; vmIps.includes(evilIp) || evilIp === peerIp; x++) evilIp = withLastOctet(ip0, x);
  const vmLL = linkLocal(vmMac);
  let evilIp6 = '2001:db8:ffff::66';
  for (let x = 0x67; vmIp6s.includes(evilIp6); x++) evilIp6 = `2001:db8:ffff::${x.toString(16)}`;
  return {
    vmMac,
    vmIps,
    vmIp6s,
    vmLL,
    vmIp6: vmIp6s[0] ?? vmLL,
    peerMac,
    peerIp,
    peerIp6: o.peerIp6 ?? linkLocal(peerMac),
    ...(gatewayMac ? { gatewayMac } : {}),
    evilMac,
    evilIp,
    evilIp6,
    remoteMac: gatewayMac ?? peerMac,
    known4: [...vmIps, peerIp].map((a) => ipToBytes('ipv4', a)),
    known6: [...vmIp6s, vmLL, o.peerIp6 ?? linkLocal(peerMac)].map((a) => ipToBytes('ipv6', a)),
  };
}

/** A frame spec of `kind` filled with valid addresses for direction `dir`. */
function defaultSpec(env: Env, dir: Direction, kind: FrameSpec['kind'], etherType = 0x88b5): FrameSpec {
  const out = dir === 'out';
  const srcMac = out ? env.vmMac : env.remoteMac;
  const vmIp = env.vmIps[0] as string;
  const s: FrameSpec = {
    dir,
    kind,
    srcMac,
    dstMac: out ? env.remoteMac : env.vmMac,
    etherType,
    src4: out ? vmIp : env.peerIp,
    dst4: out ? env.peerIp : vmIp,
    src6: out ? env.vmIp6 : env.peerIp6,
    dst6: out ? env.peerIp6 : env.vmIp6,
    proto: 17,
    sport: 40000,
    dport: 53,
    tos: 0,
    tcpFlags: TcpFlag.SYN,
    tcpFlagsFixed: false,
    icmpCode: 0,
    arp: { op: 1, sha: srcMac, spa: out ? vmIp : env.peerIp, tha: ZERO_MAC, tpa: out ? env.peerIp : vmIp, htype: 1, ptype: ETHERTYPES.IPV4 },
    stp: defaultBpdu(srcMac),
    known4: env.known4,
    known6: env.known6,
  };
  if (kind === 'arp') s.dstMac = BROADCAST_MAC;
  if (kind === 'rarp') {
    // QEMU's announce for the sender: the usual RARP frame on a libvirt host.
    s.dstMac = BROADCAST_MAC;
    s.arp = { ...s.arp, op: 3, tha: srcMac, spa: '0.0.0.0', tpa: '0.0.0.0' };
  }
  if (kind === 'stp') s.dstMac = STP_MAC;
  return s;
}

// ---- collecting ------------------------------------------------------------------------

/** Priority when the corpus must be cut to `max`: lower tiers are kept first. */
const Tier = { Base: 0, Match: 1, Violate: 2, Boundary: 3, Edge: 4 } as const;
type Tier = (typeof Tier)[keyof typeof Tier];

interface Pending extends CorpusFrame {
  tier: Tier;
}

function protoTags(f: Uint8Array): string[] {
  if (f.length < 14) return [];
  const tags: string[] = [];
  const dst = f.subarray(0, 6);
  if (dst.every((x) => x === 0xff)) tags.push('broadcast');
  else if (((dst[0] ?? 0) & 1) === 1) tags.push('multicast');
  let type = ((f[12] ?? 0) << 8) | (f[13] ?? 0);
  if (type === ETHERTYPES.VLAN || type === ETHERTYPES.QINQ) {
    tags.push('vlan');
    type = f.length >= 18 ? ((f[16] ?? 0) << 8) | (f[17] ?? 0) : -1;
  }
  const name = Object.entries(ETHERTYPE_OF).find(([n, t]) => t === type && n !== 'vlan')?.[0];
  if (name) tags.push(name);
  else if (type >= 0 && type < 0x600) tags.push(macText(dst) === STP_MAC ? 'stp' : 'llc');
  else if (type >= 0) tags.push('other-ethertype');
  return tags;
}

class Collector {
  readonly items: Pending[] = [];
  private readonly keys = new Set<string>();
  private readonly names = new Set<string>();

  add(tier: Tier, name: string, direction: Direction, frame: Uint8Array, tags: string[], conn?: ConnInfo, rule?: CorpusRuleRef): void {
    // No conn means a new connection in the original direction (the evaluator's default).
    const ct = conn ?? { state: 'new', direction: 'original' };
    const key = `${direction}|${ct.state}/${ct.direction}|${Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('latin1')}`;
    if (this.keys.has(key)) return;
    this.keys.add(key);
    let unique = name;
    for (let i = 2; this.names.has(unique); i++) unique = `${name} #${i}`;
    this.names.add(unique);
    const allTags = [...new Set([...tags, ...protoTags(frame)])];
    this.items.push({ tier, name: unique, direction, frame, tags: allTags, ...(conn ? { conn: { ...conn } } : {}), ...(rule ? { rule } : {}) });
  }
}

// ---- edge copies -------------------------------------------------------------------------

const CUTS = [14, 15, 20, 34, 38, 41, 42];

/**
 * Copies of `full` (unpadded) cut short: at the fixed offsets and just before /
 * inside the L4 ports. A cut at the frame's own length is the whole frame
 * without its padding to 60 bytes (tag 'unpadded').
 */
function addTruncations(c: Collector, tier: Tier, dir: Direction, what: string, full: Uint8Array, l4: number | undefined, tags: string[], conn?: ConnInfo, rule?: CorpusRuleRef): void {
  const cuts = [...new Set([...CUTS, ...(l4 !== undefined ? [l4, l4 + 2] : [])])].sort((a, b) => a - b);
  for (const n of cuts) {
    if (n < full.length) c.add(tier, `${dir} truncated@${n} ${what}`, dir, full.slice(0, n), [...tags, 'truncated'], conn, rule);
    else if (n === full.length && n < MIN_FRAME_LEN) c.add(tier, `${dir} unpadded ${what}`, dir, full.slice(), [...tags, 'unpadded'], conn, rule);
  }
}

/** A copy with the IPv4 header checksum broken. */
function addBadChecksum(c: Collector, tier: Tier, dir: Direction, what: string, frame: Uint8Array, vlan: boolean, tags: string[], conn?: ConnInfo, rule?: CorpusRuleRef): void {
  const bad = frame.slice();
  const off = (vlan ? 18 : 14) + 10;
  bad[off] = (bad[off] ?? 0) ^ 0xff;
  c.add(tier, `${dir} bad-ip-csum ${what}`, dir, bad, [...tags, 'bad-csum'], conn, rule);
}

// ---- the base set ----------------------------------------------------------------------

function broadcastOf(ip: string): string {
  return withLastOctet(ip, 255);
}

function ndpNs(srcMac: string, srcIp: string, target: string): Uint8Array {
  const sn = solicitedNode(target);
  const opt = srcIp === '::' ? new Uint8Array(0) : concat(Uint8Array.of(1, 1), mac(srcMac));
  return icmpv6Frame({ srcMac, dstMac: sn.mac, srcIp, dstIp: sn.ip, type: 135, code: 0, rest: new Uint8Array(4), payload: concat(ipToBytes('ipv6', target), opt) });
}

function ndpRa(srcMac: string, srcIp: string): Uint8Array {
  const rest = Uint8Array.of(64, 0, 0x07, 0x08); // hop limit 64, no flags, lifetime 1800 s
  const payload = concat(new Uint8Array(8), Uint8Array.of(1, 1), mac(srcMac));
  return icmpv6Frame({ srcMac, dstMac: '33:33:00:00:00:01', srcIp, dstIp: 'ff02::1', type: 134, code: 0, rest, payload });
}

function addBase(c: Collector, env: Env, inc: Required<NonNullable<CorpusOptions['include']>>): void {
  const T = Tier.Base;
  const B = ['base'];
  const ips = env.vmIps.slice(0, BASE_ADDRS);
  const ip6s = env.vmIp6s.slice(0, BASE_ADDRS);
  const ip0 = ips[0] as string;
  const llcPayload = concat(Uint8Array.of(0xf0, 0xf0, 0x03), new Uint8Array(40).fill(0x20));
  const rawPayload = new Uint8Array(46).fill(0x5a);

  for (const dir of DIRECTIONS) {
    const out = dir === 'out';
    const add = (name: string, frame: Uint8Array, tags: string[] = []): void => c.add(T, `${dir} ${name}`, dir, frame, [...B, ...tags]);
    // From the VM to the peer, or from the peer to the VM.
    const src = out ? env.vmMac : env.peerMac;
    const dst = out ? env.peerMac : env.vmMac;
    /** A spec of `kind` between src and dst (ARP/RARP broadcast), with `patch` applied. */
    const spec = (kind: FrameSpec['kind'], patch: Partial<FrameSpec> = {}, arp: Partial<FrameSpec['arp']> = {}): FrameSpec => {
      const s = defaultSpec(env, dir, kind);
      s.srcMac = src;
      s.dstMac = kind === 'arp' || kind === 'rarp' ? BROADCAST_MAC : dst;
      s.arp.sha = src;
      if (kind === 'rarp') s.arp.tha = src;
      s.stp = defaultBpdu(src);
      Object.assign(s, patch);
      Object.assign(s.arp, arp);
      return s;
    };
    const v4 = (src4: string, dst4: string, patch: Partial<FrameSpec> = {}): FrameSpec => spec('ipv4', { src4, dst4, ...patch });
    const v6 = (src6: string, dst6: string, patch: Partial<FrameSpec> = {}): FrameSpec => spec('ipv6', { src6, dst6, ...patch });
    const arpSpec = (arp: Partial<FrameSpec['arp']>, patch: Partial<FrameSpec> = {}): FrameSpec => spec('arp', patch, arp);
    const R = renderSpec;
    const TCP = { proto: 6, dport: 80 };
    // [this end, other end] of IPv4 traffic with one of the VM's addresses
    const pair = (vmIp: string): [string, string] => (out ? [vmIp, env.peerIp] : [env.peerIp, vmIp]);

    // IPv4 with each of the VM's addresses
    for (const ip of ips) {
      const [a, b] = pair(ip);
      add(`ipv4-udp ${a}>${b}`, R(v4(a, b)));
      add(`ipv4-tcp-syn ${a}>${b}:80`, R(v4(a, b, TCP)));
      add(`ipv4-icmp-echo ${a}>${b}`, R(v4(a, b, { proto: 1 })));
      add(`arp-request ${a} who-has ${b}`, R(arpSpec({ spa: a, tpa: b })));
    }
    const [a0, b0] = pair(ip0);
    add(`arp-reply ${a0} is-at ${src} to ${b0}`, R(arpSpec({ op: 2, spa: a0, tpa: b0, tha: dst }, { dstMac: dst })));
    add(`ipv4-tcp-synack ${a0}:80>${b0}`, R(v4(a0, b0, { proto: 6, sport: 80, dport: 40000, tcpFlags: TcpFlag.SYN | TcpFlag.ACK, tcpFlagsFixed: true })));
    // spoofs (from the VM) and strangers (to the VM)
    add(`ipv4-udp src-mac=${env.evilMac} (${out ? 'wrong source MAC' : 'another sender'})`, R(v4(a0, b0, { srcMac: env.evilMac })));
    if (out) {
      add(`ipv4-udp src-ip=${env.evilIp} (wrong source IP)`, R(v4(env.evilIp, env.peerIp)));
      add('ipv4-tcp src-ip=0.0.0.0 (only UDP may use it)', R(v4('0.0.0.0', env.peerIp, TCP)));
    } else {
      add(`ipv4-udp dst-ip=${env.evilIp} (not the VM's address)`, R(v4(env.peerIp, env.evilIp)));
    }
    // DHCP
    add('dhcp-discover 0.0.0.0:68>255.255.255.255:67', R(v4('0.0.0.0', '255.255.255.255', { dstMac: BROADCAST_MAC, sport: 68, dport: 67 })));
    const server = out ? ip0 : env.peerIp;
    add(`dhcp-offer ${server}:67>255.255.255.255:68`, R(v4(server, '255.255.255.255', { dstMac: BROADCAST_MAC, sport: 67, dport: 68 })));
    if (!out) add(`dhcp-offer ${server}:67>${ip0}:68 (unicast)`, R(v4(server, ip0, { sport: 67, dport: 68 })));
    // ARP
    add(`arp-request sha=${env.evilMac} (sender MAC differs from the Ethernet source)`, R(arpSpec({ sha: env.evilMac, spa: a0, tpa: b0 })));
    if (out) {
      add(`arp-request spa=${env.evilIp} (wrong sender IP)`, R(arpSpec({ spa: env.evilIp, tpa: env.peerIp })));
      add(`arp-request eth-src=${env.evilMac} (wrong Ethernet source)`, R(arpSpec({ spa: ip0, tpa: env.peerIp }, { srcMac: env.evilMac })));
    }
    add(`arp-gratuitous ${a0} (own IP)`, R(arpSpec({ spa: a0, tpa: a0 })));
    const foreign = out ? env.evilIp : ip0;
    add(`arp-gratuitous ${foreign} (${out ? 'foreign IP' : "claims the VM's IP"})`, R(arpSpec({ spa: foreign, tpa: foreign })));
    // RARP
    add(`rarp-announce ${env.vmMac} (QEMU, the VM's MAC)`, rarpAnnounceFrame(env.vmMac));
    add(`rarp-announce ${env.peerMac} (QEMU, a peer's MAC)`, rarpAnnounceFrame(env.peerMac));
    add(`rarp-reply-reverse from ${src}`, rarpFrame({ srcMac: src, sha: src, tha: src, op: 'Reply_Reverse' }));
    add(`rarp-request from ${src} for ${dst}`, rarpFrame({ srcMac: src, sha: src, tha: dst }));
    // QEMU's self-announce EtherType
    add(`ether-0x0835 from ${src} to broadcast`, ether({ src, dst: BROADCAST_MAC, type: ETHERTYPES.QEMU_ANNOUNCE, payload: rawPayload }));
    // IPv6: link-local, DHCPv6, NDP, the VM's own addresses
    const [la, lb] = out ? [env.vmLL, env.peerIp6] : [env.peerIp6, env.vmLL];
    add(`ipv6-udp ${la}>${lb}`, R(v6(la, lb)));
    add(`ipv6-tcp-syn ${la}>${lb}:80`, R(v6(la, lb, TCP)));
    add(`dhcpv6-solicit ${la}:546>ff02::1:2:547`, ipv6UdpFrame({ srcMac: src, dstMac: '33:33:00:01:00:02', srcIp: la, dstIp: 'ff02::1:2', sport: 546, dport: 547, payload: Uint8Array.of(1, 0, 0, 1) }));
    if (!out) add(`dhcpv6-advertise ${la}:547>${lb}:546`, ipv6UdpFrame({ srcMac: src, dstMac: dst, srcIp: la, dstIp: lb, sport: 547, dport: 546, payload: Uint8Array.of(2, 0, 0, 1) }));
    add(`icmpv6-ns ${la} who-has ${lb}`, ndpNs(src, la, lb));
    if (out) add(`icmpv6-ns dad :: for ${env.vmLL}`, ndpNs(src, '::', env.vmLL));
    add(`icmpv6-ra ${la}>ff02::1`, ndpRa(src, la));
    for (const ip6 of ip6s) {
      const [x, y] = out ? [ip6, env.peerIp6] : [env.peerIp6, ip6];
      add(`ipv6-udp ${x}>${y}`, R(v6(x, y)));
      add(`ipv6-icmpv6-echo ${x}>${y}`, R(v6(x, y, { proto: 58 })));
    }
    if (out) {
      add(`ipv6-udp src-ip=${env.evilIp6} (wrong source IPv6)`, R(v6(env.evilIp6, env.peerIp6)));
      add(`ipv6-tcp-syn src-ip=${env.evilIp6} (wrong source IPv6)`, R(v6(env.evilIp6, env.peerIp6, TCP)));
    }
    // VLAN-tagged copies (and a priority tag, VLAN 0)
    if (inc.vlan) {
      for (const vlan of [10, 0]) add(`vlan${vlan}-ipv4-udp ${a0}>${b0}`, R(v4(a0, b0, { vlan })));
      add(`vlan10-arp-request ${a0} who-has ${b0}`, R(arpSpec({ spa: a0, tpa: b0 }, { vlan: 10 })));
    }
    // broadcast and multicast
    const bsrc = out ? ip0 : env.peerIp;
    add(`ipv4-udp ${bsrc}>${broadcastOf(ip0)} (broadcast)`, R(v4(bsrc, broadcastOf(ip0), { dstMac: BROADCAST_MAC })));
    add(`ipv4-udp ${bsrc}>224.0.0.251:5353 (multicast)`, R(v4(bsrc, '224.0.0.251', { dstMac: '01:00:5e:00:00:fb', sport: 5353, dport: 5353 })));
    add(`ipv6-udp ${la}>ff02::1 (multicast)`, ipv6UdpFrame({ srcMac: src, dstMac: '33:33:00:00:00:01', srcIp: la, dstIp: 'ff02::1', sport: 5353, dport: 5353 }));
    // other L2
    add(`stp-bpdu from ${src}`, stpBpdu({ srcMac: src }));
    add(`ether-0x88b5 from ${src} (unknown EtherType)`, ether({ src, dst, type: 0x88b5, payload: rawPayload }));
    if (out) add(`ether-0x88b5 from ${env.evilMac} (unknown EtherType, wrong source MAC)`, ether({ src: env.evilMac, dst, type: 0x88b5, payload: rawPayload }));
    add(`llc 802.3 from ${src}`, ieee8023({ src, dst, payload: llcPayload }));
    // through the gateway
    if (env.gatewayMac) {
      const gw = env.gatewayMac;
      const via: Partial<FrameSpec> = out ? { dstMac: gw } : { srcMac: gw };
      const far4 = '8.8.8.8';
      const far6 = '2001:4860:4860::8888';
      const [x, y] = out ? [ip0, far4] : [far4, ip0];
      add(`ipv4-udp ${x}>${y} via gateway ${gw}`, R(v4(x, y, via)));
      add(`ipv4-tcp-syn ${x}>${y}:80 via gateway ${gw}`, R(v4(x, y, { ...via, ...TCP })));
      add(`ipv6-udp via gateway ${gw}`, R(out ? v6(env.vmIp6, far6, via) : v6(far6, env.vmIp6, via)));
      add(`ether-0x88b5 via gateway ${gw}`, ether({ src: out ? env.vmMac : gw, dst: out ? gw : env.vmMac, type: 0x88b5, payload: rawPayload }));
    }

    // edge copies of base frames
    const udp0 = v4(a0, b0);
    const tcp0 = v4(a0, b0, TCP);
    const v60 = v6(la, lb);
    if (inc.truncated) {
      const rarp0 = spec('rarp');
      const sources: [string, FrameSpec][] = [
        [`ipv4-udp ${a0}>${b0}`, udp0],
        [`ipv4-tcp ${a0}>${b0}:80`, tcp0],
        [`arp-request ${a0} who-has ${b0}`, arpSpec({ spa: a0, tpa: b0 })],
        [`ipv6-udp ${la}>${lb}`, v60],
        [`rarp-announce ${rarp0.srcMac}`, rarp0],
      ];
      for (const [what, s] of sources) addTruncations(c, T, dir, what, R(s, false), l4Offset(s), B);
    }
    addBadChecksum(c, T, dir, `ipv4-udp ${a0}>${b0}`, R(udp0), false, B);
    addBadChecksum(c, T, dir, `ipv4-tcp ${a0}>${b0}:80`, R(tcp0), false, B);
    for (const frag of ['first', 'later'] as const) add(`ipv4-udp ${a0}>${b0} (${frag} fragment)`, R({ ...udp0, frag }), ['fragment']);
    add(`ipv4-udp ${a0}>${b0} (IP options)`, R({ ...udp0, ipOptions: true }), ['ip-options']);
    add(`ipv6-udp ${la}>${lb} (hop-by-hop header)`, R({ ...v60, ipv6Ext: true }), ['ipv6-ext']);
    if (inc.runts) {
      const whole = R(udp0);
      for (const n of [1, 6, 12, 13]) c.add(T, `${dir} runt ${n} bytes`, dir, whole.slice(0, n), [...B, 'runt']);
    }
  }
}

// ---- frames derived from the rules ----------------------------------------------------------

interface RuleJob {
  dir: Direction;
  stage: 'l2' | 'l3';
  id: string;
  ops: TestOp[];
  /** A fresh spec with the rule's default kind. */
  start(): FrameSpec;
}

/** Default kind of frame for an L2 match, given the guard of the chain it sits in. */
function startKind(m: L2Match, guard: JumpGuard): { kind: FrameSpec['kind']; vlan?: number } {
  switch (m.proto) {
    case 'arp':
    case 'rarp':
    case 'ipv4':
    case 'ipv6':
    case 'stp':
      return { kind: m.proto };
    case 'vlan':
      return { kind: 'ipv4', vlan: 10 };
    case 'mac':
    case 'any':
      if (guard.kind === 'ethertype') return kindOfEtherType(guard.etherType);
      if (guard.kind === 'stp') return { kind: 'stp' };
      return { kind: 'ipv4' };
  }
}

function l2Jobs(env: Env, p: InterfacePolicy): RuleJob[] {
  const jobs: RuleJob[] = [];
  for (const dir of DIRECTIONS) {
    const pol = p.l2[dir];
    const ctx: OpContext = {
      setKind(s, kind, etherType) {
        const vlan = s.vlan;
        Object.assign(s, defaultSpec(env, dir, kind, etherType));
        if (vlan !== undefined) s.vlan = vlan;
        else delete s.vlan;
      },
    };
    const guards = new Map<string, JumpGuard>();
    for (const e of pol.root) if (e.kind === 'jump' && !guards.has(e.chain)) guards.set(e.chain, e.guard);
    const rules: [L2Rule, JumpGuard][] = [];
    for (const e of pol.root) if (e.kind === 'rule') rules.push([e.rule, { kind: 'none' }]);
    for (const ch of pol.chains) for (const r of ch.rules) rules.push([r, guards.get(ch.name) ?? { kind: 'none' }]);
    for (const [r, guard] of rules) {
      const k = startKind(r.match, guard);
      jobs.push({
        dir,
        stage: 'l2',
        id: r.id,
        ops: l2Ops(r.match, ctx),
        start: () => {
          const s = defaultSpec(env, dir, k.kind);
          if (k.vlan !== undefined) s.vlan = k.vlan;
          return s;
        },
      });
    }
  }
  return jobs;
}

function l3Jobs(env: Env, p: InterfacePolicy, withState: boolean): RuleJob[] {
  const jobs: RuleJob[] = [];
  const paths: [Direction, L3Rule[]][] = [
    ['out', p.l3.fromVm],
    ['in', p.l3.toVm],
  ];
  for (const [dir, rules] of paths) {
    for (const r of rules) {
      jobs.push({ dir, stage: 'l3', id: r.id, ops: l3Ops(r, withState), start: () => defaultSpec(env, dir, r.family) });
    }
  }
  return jobs;
}

/** Keys of tests that only look at the Ethernet header. */
const ETH_ONLY = new Set(['src', 'dst', 'type']);

function addDerived(c: Collector, job: RuleJob, inc: Required<NonNullable<CorpusOptions['include']>>): void {
  const ops = job.ops.map((op, i) => ({ op, i })).sort((a, b) => a.op.phase - b.op.phase || a.i - b.i);
  const ref = `${job.stage} ${job.id}`;
  const base = ['derived', job.stage];
  const build = (pick?: { index: number; variant: Variant }): { spec: FrameSpec; labels: string[] } | undefined => {
    const s = job.start();
    const labels: string[] = [];
    let picked = '';
    for (const { op, i } of ops) {
      const variant = pick && pick.index === i ? pick.variant : op.sat[0];
      if (!variant) return undefined;
      const label = variant.apply(s);
      labels.push(label);
      if (pick && pick.index === i) picked = label;
    }
    return { spec: s, labels: pick ? [picked] : labels };
  };
  const emit = (tier: Tier, what: string, tags: string[], r: { spec: FrameSpec; labels: string[] }, rule: CorpusRuleRef): void => {
    const label = r.labels.filter((l) => l !== '').join(' ') || 'any';
    c.add(tier, `${job.dir} ${kindLabel(r.spec)} ${label} (${what})`, job.dir, renderSpec(r.spec), [...base, ...tags], r.spec.conn, rule);
  };
  const edgeRef: CorpusRuleRef = { stage: job.stage, id: job.id };

  const match = build();
  if (match) {
    emit(Tier.Match, `matches ${ref}`, ['match'], match, { ...edgeRef, expect: 'match' });
    // edge copies of the matching frame, when the rule looks past the Ethernet header
    const s = match.spec;
    const deep = job.ops.some((op) => !ETH_ONLY.has(op.key));
    const what = `(matches ${ref})`;
    if (deep && s.kind !== 'raw') {
      if (inc.truncated) addTruncations(c, Tier.Edge, job.dir, `${kindLabel(s)} ${what}`, renderSpec(s, false), l4Offset(s), base, s.conn, edgeRef);
      if (s.kind === 'ipv4') addBadChecksum(c, Tier.Edge, job.dir, `${kindLabel(s)} ${what}`, renderSpec(s), s.vlan !== undefined, base, s.conn, edgeRef);
      const ports = job.ops.some((op) => op.key === 'sport' || op.key === 'dport' || op.key === 'icmp' || op.key.startsWith('icmp-') || op.key === 'tcp-flags');
      if (s.kind === 'ipv4' && ports) {
        for (const frag of ['first', 'later'] as const) {
          const f = cloneSpec(s);
          f.frag = frag;
          c.add(Tier.Edge, `${job.dir} ${kindLabel(s)} ${frag}-fragment ${what}`, job.dir, renderSpec(f), [...base, 'fragment'], f.conn, edgeRef);
        }
        const o = cloneSpec(s);
        o.ipOptions = true;
        c.add(Tier.Edge, `${job.dir} ${kindLabel(s)} ip-options ${what}`, job.dir, renderSpec(o), [...base, 'ip-options'], o.conn, edgeRef);
      }
      if (s.kind === 'ipv6' && job.ops.some((op) => op.key === 'proto' || ports)) {
        const e = cloneSpec(s);
        e.ipv6Ext = true;
        c.add(Tier.Edge, `${job.dir} ${kindLabel(s)} hop-by-hop ${what}`, job.dir, renderSpec(e), [...base, 'ipv6-ext'], e.conn, edgeRef);
      }
    }
  }
  ops.forEach(({ op, i }) => {
    const stateTag = op.key === 'state' ? ['state'] : [];
    op.sat.slice(1).forEach((variant) => {
      const r = build({ index: i, variant });
      if (r) emit(Tier.Boundary, `boundary of ${ref} ${op.key}`, ['boundary', ...stateTag], r, { ...edgeRef, test: op.key, expect: 'match' });
    });
    op.viol.forEach((variant) => {
      const r = build({ index: i, variant });
      if (r) emit(Tier.Violate, `violates ${ref} ${op.key}`, ['violate', ...stateTag], r, { ...edgeRef, test: op.key, expect: 'no-match' });
    });
  });
}

// ---- entry point ---------------------------------------------------------------------------

/** The corpus for one interface's policy: base set, rule-derived frames and edge frames. */
export function generateCorpus(policy: InterfacePolicy, opts: CorpusOptions = {}): CorpusFrame[] {
  const inc = { truncated: true, runts: true, vlan: true, l3State: true, ...opts.include };
  const max = opts.max ?? 5000;
  const env = makeEnv(policy, opts);
  const c = new Collector();
  addBase(c, env, inc);
  for (const job of [...l2Jobs(env, policy), ...l3Jobs(env, policy, inc.l3State)]) addDerived(c, job, inc);

  let items = c.items.filter((f) => inc.vlan || !f.tags.includes('vlan'));
  if (items.length > max) {
    const keep = new Set<Pending>();
    let budget = max;
    for (const f of items) if (f.tier === Tier.Base) keep.add(f);
    budget -= keep.size;
    for (const tier of [Tier.Match, Tier.Violate, Tier.Boundary, Tier.Edge]) {
      for (const f of items) {
        if (budget <= 0) break;
        if (f.tier === tier) {
          keep.add(f);
          budget--;
        }
      }
    }
    items = items.filter((f) => keep.has(f));
  }
  return items.map(({ tier: _tier, ...f }) => f);
}
