// PolicyIR: what one interface's protection means, per direction, with
// every variable resolved and libvirt's ordering applied. Backends lower
// this; the reference evaluator (eval.ts) interprets it.
//
// Directions: 'out' is traffic FROM the VM (libvirt's libvirt-I-TAP chain,
// ebtables PREROUTING -i TAP), 'in' is traffic TO the VM (libvirt-O-TAP,
// POSTROUTING -o TAP). Every test below is already oriented for the chain
// it sits in (inout rules are swapped for 'out').
import type { ConnStateName } from './values.js';
import type { LearnMode } from './learning.js';

export type Direction = 'out' | 'in';
export const DIRECTIONS: readonly Direction[] = ['out', 'in'];

export interface MacTest {
  addr: string;
  mask?: string;
  neg: boolean;
  /**
   * The value comes from one of the interface's own parameters ($MAC, $IP,
   * ... given in its filterref): it differs between interfaces, while every
   * other value is part of the filters themselves. Backends that share rules
   * between interfaces look such values up per interface.
   */
  port?: true;
}
export interface NumTest {
  value: number;
  neg: boolean;
}
export interface RangeTest {
  lo: number;
  hi: number;
  neg: boolean;
}
export interface IpTest {
  family: 'ipv4' | 'ipv6';
  /** Normalised text form. */
  addr: string;
  prefix: number;
  neg: boolean;
  /** The address comes from the interface's own parameters (see MacTest.port). */
  port?: true;
  /**
   * The address is the interface's learned `$IP` (InterfacePolicy.learning):
   * `addr` is only a place-holder (0.0.0.0/32); the test compares with the
   * addresses the port has learned (none while it is still learning).
   */
  learned?: true;
}
export interface IpRangeTest {
  family: 'ipv4' | 'ipv6';
  from: string;
  to: string;
  neg: boolean;
  /** An end is the learned `$IP` (its place-holder in from/to): no backend can test it (refused). */
  learned?: true;
}

interface EthTests {
  src?: MacTest;
  dst?: MacTest;
}

export type L2Match =
  | { proto: 'any' }
  | ({ proto: 'mac'; etherType?: NumTest } & EthTests)
  | ({ proto: 'vlan'; vlanId?: NumTest; encap?: NumTest } & EthTests)
  | ({
      proto: 'stp';
      /** Set when any STP field is tested: the frame must then carry an STP LLC header (42 42 03). */
      fields?: {
        type?: NumTest;
        flags?: NumTest;
        rootPriority?: RangeTest;
        rootAddress?: MacTest;
        rootCost?: RangeTest;
        senderPriority?: RangeTest;
        senderAddress?: MacTest;
        port?: RangeTest;
        age?: RangeTest;
        maxAge?: RangeTest;
        helloTime?: RangeTest;
        forwardDelay?: RangeTest;
      };
    } & EthTests)
  | ({
      proto: 'arp' | 'rarp';
      hwType?: NumTest;
      protoType?: NumTest;
      opcode?: NumTest;
      sha?: MacTest;
      tha?: MacTest;
      spa?: IpTest;
      tpa?: IpTest;
      /** ARP sender IP equals target IP. */
      gratuitous?: { neg: boolean };
    } & EthTests)
  | ({
      proto: 'ipv4';
      srcIp?: IpTest;
      dstIp?: IpTest;
      protocol?: NumTest;
      srcPort?: RangeTest;
      dstPort?: RangeTest;
      /** libvirt passes the dscp attribute to ebtables --ip-tos: the whole TOS byte is compared. */
      tos?: NumTest;
    } & EthTests)
  | ({
      proto: 'ipv6';
      srcIp?: IpTest;
      dstIp?: IpTest;
      protocol?: NumTest;
      srcPort?: RangeTest;
      dstPort?: RangeTest;
      icmpType?: RangeTest;
      icmpCode?: RangeTest;
    } & EthTests);

export type L2Verdict = 'accept' | 'drop' | 'return' | 'continue';

/** Where a rule came from: for traces, counters and messages. */
export interface RuleOrigin {
  filter: string;
  /** 1-based index among the filter's rules. */
  rule: number;
  file: string;
  line?: number;
  /** As written in the filter. */
  action: string;
  direction: string;
  /** Variable values this instance was expanded with. */
  bindings?: Record<string, string>;
}

export interface L2Rule {
  /** Unique within the interface, e.g. `no-mac-spoofing/1#0`. */
  id: string;
  verdict: L2Verdict;
  match: L2Match;
  /** Effective priority (sub-chain rules raised to their chain's priority). */
  priority: number;
  origin: RuleOrigin;
}

export type JumpGuard = { kind: 'ethertype'; etherType: number } | { kind: 'stp' } | { kind: 'none' };

export type L2Entry = { kind: 'rule'; rule: L2Rule } | { kind: 'jump'; chain: string; guard: JumpGuard; priority: number };

export interface L2Chain {
  /** The filter chain name, e.g. `mac`, `ipv4-ip`, `arp-mac`. */
  name: string;
  priority: number;
  rules: L2Rule[];
}

export interface L2Policy {
  /** The root chain (libvirt-I-TAP / libvirt-O-TAP); empty = nothing hooked, all accepted. */
  root: L2Entry[];
  chains: L2Chain[];
}

/** libvirt's three iptables chains per interface. */
export type L3Path = 'fromVm' | 'toVm' | 'toHost';
export const L3_PATHS: readonly L3Path[] = ['fromVm', 'toVm', 'toHost'];

export type L3Verdict = 'accept' | 'drop' | 'reject' | 'return' | 'continue';

export interface L3Rule {
  id: string;
  verdict: L3Verdict;
  family: 'ipv4' | 'ipv6';
  /** IP protocol number, or 'all'. */
  protocol: number | 'all';
  srcMac?: MacTest;
  srcIp?: IpTest;
  dstIp?: IpTest;
  srcRange?: IpRangeTest;
  dstRange?: IpRangeTest;
  dscp?: NumTest;
  srcPort?: RangeTest;
  dstPort?: RangeTest;
  tcpFlags?: { mask: number; set: number; neg: boolean };
  tcpOption?: NumTest;
  icmp?: { type: number; code?: number; neg: boolean };
  /** Connection states that match (absent = any). */
  state?: ConnStateName[];
  /** Conntrack direction of the packet, as libvirt's --ctdir. */
  ctDir?: 'original' | 'reply';
  connlimitAbove?: NumTest;
  ipset?: { name: string; flags: ('src' | 'dst')[] };
  priority: number;
  origin: RuleOrigin;
}

export interface L3Policy {
  /** Forwarded traffic from the VM (libvirt FI-TAP; accept = stop checking, pass). */
  fromVm: L3Rule[];
  /** Forwarded traffic to the VM (libvirt FO-TAP; accept = accept). */
  toVm: L3Rule[];
  /** Traffic from the VM to the host itself (libvirt HI-TAP). */
  toHost: L3Rule[];
}

export interface InterfacePolicy {
  iface: string;
  mac: string;
  owner: string;
  source: 'domain' | 'binding';
  /** The top-level filter. */
  filter: string;
  /** Top-level variables (including MAC). */
  vars: Record<string, string[]>;
  l2: Record<Direction, L2Policy>;
  l3: L3Policy;
  file: string;
  /** The owner's UUID (domain <uuid>, binding <owner><uuid>), when the input gives it: the key of learned state. */
  ownerUuid?: string;
  /**
   * The port learns its IPv4 address (`$IP` referenced without a value,
   * CTRL_IP_LEARNING any or dhcp): its tests of `$IP` are marked `learned`.
   */
  learning?: PortLearning;
}

/** How a port learns (docs/design/ip-learning.md section 3). */
export interface PortLearning {
  mode: LearnMode;
  /** dhcp: the trusted servers (DHCPSERVER); empty: any server. */
  dhcpServers: string[];
}

/**
 * An interface whose policy did not resolve or compile (a missing variable,
 * a construct the backend refuses): it is not in `interfaces`, and every
 * backend drops its traffic, counted as unprotected (fail closed).
 */
export interface FailedInterface {
  iface: string;
  owner: string;
  mac: string;
  filter: string;
  /** The error's stable code (NWF....). */
  code: string;
  message: string;
  /** Where it came from (the binding, or the rule at fault). */
  file?: string;
}

export interface PolicyIR {
  version: 1;
  interfaces: InterfacePolicy[];
  notes: string[];
  /** Interfaces left out because their policy failed (a partial policy; absent: none). */
  failed?: FailedInterface[];
}
