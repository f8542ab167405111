// The tc/eBPF backend's data plane against the reference evaluator: every
// generated program is compiled, loaded (so it passes this kernel's
// verifier) and run with BPF_PROG_TEST_RUN on a corpus of frames (built from
// the policy's own values, truncated at every length, VLAN-tagged, mutated);
// each frame must get exactly the evaluator's L2 verdict in both directions,
// and a dropped frame be counted under the evaluator's drop reason (an
// accepted one under none). The from-VM policy is also run as the XDP
// program, on every frame as the guest would write it (XDP sees VLAN tags in
// the data, before the receive path takes them out: guestView), including
// jumbo frames (multi-buffer XDP).
//
// The bpf backend enforces L2 only (L3/L4 rules go to nftables with
// --backend both), so the oracle is the evaluator's L2 stage:
// evaluate(..., { brNetfilter: false }) skips br_netfilter and the L3 rules.
//
// What BPF_PROG_TEST_RUN cannot show is checked on a real veth pair in a
// namespace this file creates: the short IPv4/IPv6 frames the test run
// refuses, non-linear skbs (jumbo frames whose linear part is the Ethernet
// header only) and VLAN tags held in skb metadata (vlan_present), as at tc
// ingress. The frames of the shared corpus (src/lab/frames/corpus.ts) are added.
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { evaluate } from '../../src/ir/eval.js';
import type { Direction, InterfacePolicy, IpTest, L2Match, MacTest, NumTest, PolicyIR, RangeTest } from '../../src/ir/types.js';
import { DIRECTIONS } from '../../src/ir/types.js';
import * as F from '../../src/lab/frames/build.js';
import { generateCorpus } from '../../src/lab/frames/corpus.js';
import { BpfError, TC_ACT, XDP_ACT, ifIndex, tcDetach, tcHookCreate, tcReplace, withNetns, type BpfMap, type BpfProgram } from '../../src/host/bpf/libbpf.js';
import { objInfo, PROG_INFO } from '../../src/host/bpf/fd.js';
import { PacketSocket, settlePacketSockets } from '../../src/lab/packet-io.js';
import { compileBpf, type BpfCompileOptions } from '../../src/host/bpf-build.js';
import { loadInterface, STAT_NAMES, updateConfig, type LoadedInterface, type StatName } from '../../src/host/bpf-load.js';
import { CommandError } from '../../src/host/runner.js';
import { CODES, NwfError } from '../../src/util/errors.js';
import { policyFor } from '../support/policy.js';

const CLANG = 'clang-19';
const REPO = join(import.meta.dirname, '..', '..');

async function which(cmd: string): Promise<boolean> {
  const r = await execa(cmd, ['--version'], { reject: false, timeout: 10_000 });
  return r.exitCode === 0;
}

const skipReason: string | undefined =
  process.getuid?.() !== 0
    ? 'needs root (CAP_BPF to load programs and run BPF_PROG_TEST_RUN)'
    : !(await which(CLANG))
      ? `${CLANG} is not installed (scripts/install-deps.sh installs it)`
      : !existsSync('/usr/include/bpf/bpf_helpers.h')
        ? 'libbpf-dev headers are not installed'
        : undefined;
if (skipReason) console.warn(`test/kernel/bpf-testrun.test.ts skipped: ${skipReason}`);

const work = mkdtempSync(join(tmpdir(), 'nwf-bpf-test-'));
const outDir = join(work, 'out');
const cacheDir = join(work, 'cache');
afterAll(() => rmSync(work, { recursive: true, force: true }));

const VM = '52:54:00:00:00:01';
const PEER = '52:54:00:00:00:99';
const EVIL = '52:54:00:00:00:66';
const GW = '52:54:00:00:00:fe';
const BCAST = 'ff:ff:ff:ff:ff:ff';
const PEER_IP = '10.0.0.9';

/** The verifier's work and the program size (struct bpf_prog_info: xlated_prog_len at 20, verified_insns at 216). */
function progStats(fd: number): string {
  const info = objInfo(fd, PROG_INFO.size, 'program');
  return `${info.readUInt32LE(216)} insns verified, ${info.readUInt32LE(20) / 8} xlated`;
}

const irOf = (...ps: InterfacePolicy[]): PolicyIR => ({ version: 1, interfaces: ps, notes: [] });

// ---- a deterministic corpus built from the policy's own values ----------------------------

/** xorshift32: a reproducible stream of pseudo-random numbers. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

interface Values {
  macs: string[];
  ip4: string[];
  ip6: string[];
  nums: number[];
  ports: number[];
  vlanIds: number[];
}

function macFlip(addr: string, mask: string | undefined): string[] {
  if (!mask) return [addr];
  const a = F.mac(addr);
  const m = F.mac(mask);
  const out = [addr];
  const b = Uint8Array.from(a);
  for (let i = 0; i < 6; i++) b[i] = ((a[i] as number) & (m[i] as number)) | (~(m[i] as number) & 0x5a);
  out.push(F.formatMac(b));
  return out;
}

function ipVariants(t: IpTest): string[] {
  const b = t.family === 'ipv4' ? F.ipv4(t.addr) : F.ipv6(t.addr);
  const bits = b.length * 8;
  const flip = (bit: number): Uint8Array => {
    const c = Uint8Array.from(b);
    c[bit >> 3] = (c[bit >> 3] as number) ^ (0x80 >> (bit & 7));
    return c;
  };
  const fmt = (x: Uint8Array): string => (t.family === 'ipv4' ? F.formatIpv4(x) : formatV6(x));
  const out = [t.addr];
  if (t.prefix < bits) out.push(fmt(flip(bits - 1))); // inside the prefix
  if (t.prefix > 0) out.push(fmt(flip(t.prefix - 1))); // just outside
  return out;
}

function formatV6(b: Uint8Array): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push((((b[i] as number) << 8) | (b[i + 1] as number)).toString(16));
  return g.join(':');
}

function collectValues(p: InterfacePolicy): Values {
  const v: Values = { macs: [], ip4: [], ip6: [], nums: [], ports: [], vlanIds: [] };
  const mac = (t: MacTest | undefined): void => void (t && v.macs.push(...macFlip(t.addr, t.mask)));
  const ip = (t: IpTest | undefined): void => void (t && (t.family === 'ipv4' ? v.ip4 : v.ip6).push(...ipVariants(t)));
  const num = (t: NumTest | undefined): void => void (t && v.nums.push(t.value));
  const range = (t: RangeTest | undefined, into: number[]): void => void (t && into.push(t.lo, t.hi, Math.max(0, t.lo - 1), Math.min(0xffff, t.hi + 1)));
  const visit = (m: L2Match): void => {
    if (m.proto === 'any') return;
    mac(m.src);
    mac(m.dst);
    switch (m.proto) {
      case 'mac':
        num(m.etherType);
        break;
      case 'vlan':
        if (m.vlanId) v.vlanIds.push(m.vlanId.value);
        num(m.encap);
        break;
      case 'stp':
        break;
      case 'arp':
      case 'rarp':
        num(m.opcode);
        num(m.hwType);
        num(m.protoType);
        mac(m.sha);
        mac(m.tha);
        ip(m.spa);
        ip(m.tpa);
        break;
      case 'ipv4':
      case 'ipv6':
        ip(m.srcIp);
        ip(m.dstIp);
        num(m.protocol);
        range(m.srcPort, v.ports);
        range(m.dstPort, v.ports);
        if (m.proto === 'ipv4') num(m.tos);
        else {
          range(m.icmpType, v.nums);
        }
        break;
    }
  };
  for (const d of DIRECTIONS) {
    for (const e of p.l2[d].root) if (e.kind === 'rule') visit(e.rule.match);
    for (const c of p.l2[d].chains) for (const r of c.rules) visit(r.match);
  }
  for (const ips of [p.vars.IP ?? [], p.vars.DHCPSERVER ?? []]) v.ip4.push(...ips);
  v.ip6.push(...(p.vars.IPV6 ?? []));
  const uniq = <T,>(a: T[]): T[] => [...new Set(a)];
  return { macs: uniq(v.macs), ip4: uniq(v.ip4), ip6: uniq(v.ip6), nums: uniq(v.nums), ports: uniq(v.ports), vlanIds: uniq(v.vlanIds) };
}

interface CorpusFrame {
  name: string;
  frame: Uint8Array;
}

function ext(next: number, kind: 'hbh' | 'frag0' | 'frag1' | 'ah' | 'dst'): Uint8Array {
  if (kind === 'frag0') return Uint8Array.of(next, 0, 0, 0, 0, 0, 0, 1);
  if (kind === 'frag1') return Uint8Array.of(next, 0, 0x05, 0x38, 0, 0, 0, 1); // offset 167, non-first
  if (kind === 'ah') return Uint8Array.of(next, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1); // (1 + 2) * 4 = 12 bytes
  return Uint8Array.of(next, 0, 1, 4, 0, 0, 0, 0); // hop-by-hop / destination options with PadN
}

function buildCorpus(p: InterfacePolicy, seed = 1): { frames: CorpusFrame[]; truncatable: CorpusFrame[] } {
  const v = collectValues(p);
  const frames: CorpusFrame[] = [];
  const truncatable: CorpusFrame[] = [];
  const add = (name: string, frame: Uint8Array, trunc = false): void => {
    frames.push({ name, frame });
    if (trunc) truncatable.push({ name, frame });
  };
  const macs = [...new Set([VM, PEER, EVIL, BCAST, GW, '01:00:5e:00:00:fb', '33:33:00:00:00:01', F.STP_MAC, ...v.macs])];
  const ip4s = [...new Set(['0.0.0.0', '255.255.255.255', PEER_IP, '10.0.0.66', '224.0.0.251', ...v.ip4])];
  const ip6s = [...new Set(['fe80::1', 'fe80::5054:ff:fe00:1', 'ff02::1:2', 'ff02::1', 'fd00::99', 'fd00::66', '2001:db8::1', ...v.ip6])];
  const ports = [...new Set([53, 67, 68, 546, 547, 22, 5000, ...v.ports])];
  const tos = [0, 0, ...v.nums.filter((n) => n < 256)];
  const pairs: [string, string][] = [];
  for (const s of macs) pairs.push([s, PEER], [s, BCAST]);
  for (const d of macs) pairs.push([VM, d], [PEER, d]);
  const r = rng(seed);
  const pick = <T,>(a: readonly T[]): T => a[r() % a.length] as T;

  // IPv4: every source address against every destination, and every port in both fields
  for (const [s, d] of [[VM, PEER], [VM, BCAST], [PEER, VM], [EVIL, PEER]] as const) {
    const main = s !== EVIL && d !== BCAST;
    ip4s.forEach((src, i) => {
      for (const dst of main ? ip4s : [PEER_IP, '255.255.255.255']) {
        add(`udp ${s}>${d} ${src}>${dst}`, F.udpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: dst, sport: pick(ports), dport: pick(ports), pad: false }), i === 0 && dst === PEER_IP);
      }
      if (main) {
        for (const port of ports) {
          add(`udp ${src} dport ${port}`, F.udpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip4s), sport: pick(ports), dport: port, ip: { tos: pick(tos) } }));
          add(`udp ${src} sport ${port}`, F.udpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip4s), sport: port, dport: pick(ports) }));
          add(`tcp ${src} dport ${port}`, F.tcpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip4s), sport: pick(ports), dport: port, flags: ['SYN'], ip: { tos: pick(tos) } }));
        }
      }
      add(`tcp ${src}`, F.tcpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: PEER_IP, sport: pick(ports), dport: pick(ports), flags: ['SYN'] }));
      add(`icmp ${src}`, F.icmpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip4s), type: 8 }));
    });
  }
  add('dhcp discover', F.udpFrame({ srcMac: VM, dstMac: BCAST, srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67, pad: false }), true);
  add('dhcp offer', F.udpFrame({ srcMac: PEER, dstMac: BCAST, srcIp: PEER_IP, dstIp: '255.255.255.255', sport: 67, dport: 68, pad: false }), true);
  for (const num of [...v.nums, 8, 32, 0xb8]) add(`ipv4 tos ${num}`, F.udpFrame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: PEER_IP, sport: 1, dport: 2, ip: { tos: num & 0xff } }));
  add('ipv4 non-first fragment', F.udpFrame({ srcMac: VM, dstMac: BCAST, srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67, ip: { fragOffset: 3 } }));
  add('ipv4 first fragment, more to come', F.udpFrame({ srcMac: PEER, dstMac: VM, srcIp: PEER_IP, dstIp: pick(ip4s), sport: 67, dport: 68, ip: { moreFragments: true } }));
  add('ipv4 with options', F.udpFrame({ srcMac: VM, dstMac: BCAST, srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67, ip: { options: Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 0) }, pad: false }), true);
  add('ipv4 ihl 0', F.udpFrame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: PEER_IP, sport: 68, dport: 67, ip: { ihl: 0 } }));
  add('ipv4 ihl 15, short', F.udpFrame({ srcMac: PEER, dstMac: VM, srcIp: PEER_IP, dstIp: pick(ip4s), sport: 67, dport: 68, ip: { ihl: 15 }, pad: false }), true);
  for (const proto of [...v.nums.filter((n) => n < 256), 6, 17, 1, 50, 132]) {
    add(`ipv4 proto ${proto}`, F.ipv4Frame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: pick(ip4s), protocol: proto, payload: Uint8Array.of(0, 68, 0, 67, 0, 8, 0, 0) }));
  }

  // ARP and RARP
  const ops = [1, 2, 3, 4, 8];
  for (const sha of macs.slice(0, 12)) {
    for (const spa of ip4s) {
      const src = pick([VM, sha, PEER]);
      add(`arp ${sha} ${spa}`, F.arpFrame({ srcMac: src, dstMac: pick([BCAST, PEER, VM]), sha, spa, tpa: pick(ip4s), tha: pick(macs), op: pick(ops), pad: false }), spa === ip4s[0] && sha === VM);
      add(`arp gratuitous ${spa}`, F.arpFrame({ srcMac: src, dstMac: BCAST, sha, spa, tpa: spa, op: 1 }));
    }
  }
  for (const m of [VM, PEER, EVIL, ...v.macs]) {
    add(`rarp announce ${m}`, F.rarpAnnounceFrame(m, { pad: false }), m === VM);
    add(`rarp announce ${m} to peer`, F.rarpFrame({ srcMac: m, dstMac: PEER, sha: m, tha: m, op: 'Request_Reverse' }));
    add(`rarp reply ${m}`, F.rarpFrame({ srcMac: m, sha: m, tha: m, op: 'Reply_Reverse' }));
    add(`rarp ${m} with ips`, F.rarpFrame({ srcMac: m, sha: m, tha: m, spa: pick(ip4s), tpa: '0.0.0.0', op: 'Request_Reverse' }));
    add(`rarp ${m} other tha`, F.rarpFrame({ srcMac: m, sha: m, tha: pick(macs), op: 'Request_Reverse' }));
  }
  add('arp htype 6', F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: PEER_IP, op: 1, htype: 6 }));
  add('arp hlen 8', F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: PEER_IP, op: 1, hlen: 8 }));
  add('arp hlen 0', F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: pick(ip4s), op: 1, hlen: 0 }));
  add('arp plen 16', F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: PEER_IP, op: 1, plen: 16 }));
  add('arp ptype ipv6', F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: PEER_IP, op: 2, ptype: 0x86dd }));
  add('arp to the vm', F.arpFrame({ srcMac: PEER, dstMac: VM, sha: PEER, spa: PEER_IP, tpa: pick(ip4s), op: 2, pad: false }), true);

  // IPv6, with extension headers
  for (const [s, d] of [[VM, '33:33:00:01:00:02'], [PEER, VM], [VM, PEER], [EVIL, PEER]] as const) {
    const main = s !== EVIL;
    for (const src of ip6s) {
      for (const dst of main ? ip6s : [pick(ip6s)]) {
        add(`ipv6 udp ${src}>${dst}`, F.ipv6UdpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: dst, sport: pick(ports), dport: pick(ports), pad: false }), src === 'fe80::1' && dst === 'ff02::1:2' && s === VM);
      }
      if (main) {
        for (const port of ports) {
          add(`ipv6 udp ${src} dport ${port}`, F.ipv6UdpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip6s), sport: pick(ports), dport: port }));
          add(`ipv6 udp ${src} sport ${port}`, F.ipv6UdpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip6s), sport: port, dport: pick(ports) }));
          add(`ipv6 tcp ${src} dport ${port}`, F.ipv6TcpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip6s), sport: pick(ports), dport: port, flags: ['SYN'] }));
        }
        for (const type of [128, 129, 133, 134, 135, 136, 137, 143, ...v.nums.filter((n) => n < 256)]) {
          add(`icmpv6 ${src} type ${type}`, F.icmpv6Frame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip6s), type, code: pick([0, 0, 1]) }));
        }
      }
      add(`ipv6 tcp ${src}`, F.ipv6TcpFrame({ srcMac: s, dstMac: d, srcIp: src, dstIp: pick(ip6s), sport: pick(ports), dport: pick(ports), flags: ['SYN'] }));
    }
    add('dhcpv6 solicit', F.ipv6UdpFrame({ srcMac: s, dstMac: d, srcIp: 'fe80::1', dstIp: 'ff02::1:2', sport: 546, dport: 547, pad: false }), s === VM);
    add('dhcpv6 advertise', F.ipv6UdpFrame({ srcMac: s, dstMac: d, srcIp: 'fe80::2', dstIp: 'fe80::1', sport: 547, dport: 546 }));
  }
  const udp6 = (src: string, dst: string, sp: number, dp: number): Uint8Array => F.udp({ sport: sp, dport: dp }, { src, dst });
  for (const chain of [['hbh'], ['frag0'], ['frag1'], ['ah'], ['dst'], ['hbh', 'dst', 'frag0'], ['hbh', 'frag1'], ['ah', 'ah', 'dst']] as const) {
    for (const [src, dst, sp, dp] of [
      ['fe80::1', 'ff02::1:2', 546, 547],
      [pick(ip6s), pick(ip6s), 547, 546],
    ] as const) {
      const codes = { hbh: 0, frag0: 44, frag1: 44, ah: 51, dst: 60 };
      let payload = udp6(src, dst, sp, dp);
      let next = 17;
      for (let i = chain.length - 1; i >= 0; i--) {
        const k = chain[i]!;
        payload = F.concat(ext(next, k), payload);
        next = codes[k];
      }
      add(`ipv6 ${chain.join('+')} ${src}`, F.ipv6Frame({ srcMac: VM, dstMac: PEER, srcIp: src, dstIp: dst, nextHeader: next, payload, pad: false }), sp === 546);
    }
  }
  add('ipv6 no next header', F.ipv6Frame({ srcMac: VM, dstMac: PEER, srcIp: 'fe80::1', dstIp: 'ff02::1:2', nextHeader: 59, payload: new Uint8Array(8) }));
  add('ipv6 hbh then no next header', F.ipv6Frame({ srcMac: VM, dstMac: PEER, srcIp: 'fe80::1', dstIp: 'ff02::1:2', nextHeader: 0, payload: F.concat(ext(59, 'hbh'), new Uint8Array(8)) }));
  add('ipv6 icmpv6 NS', F.icmpv6Frame({ srcMac: VM, dstMac: '33:33:ff:00:00:01', srcIp: pick(ip6s), dstIp: 'ff02::1:ff00:1', type: 135, pad: false }), true);

  // VLAN-tagged frames (never reach the arp/ipv4/ipv6 sub-chains)
  for (const id of [...v.vlanIds, 10, 0]) {
    add(`vlan ${id} ipv4`, F.udpFrame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: PEER_IP, sport: 68, dport: 67, vlan: { id }, pad: false }), id === 10);
    add(`vlan ${id} ipv4 in`, F.udpFrame({ srcMac: PEER, dstMac: VM, srcIp: PEER_IP, dstIp: pick(ip4s), sport: 67, dport: 68, vlan: { id } }));
    add(`vlan ${id} arp`, F.arpFrame({ srcMac: VM, dstMac: BCAST, sha: VM, spa: pick(ip4s), tpa: PEER_IP, op: 1, vlan: { id } }));
    add(`vlan ${id} ipv6`, F.ipv6UdpFrame({ srcMac: VM, dstMac: PEER, srcIp: 'fe80::1', dstIp: 'ff02::1:2', sport: 546, dport: 547, vlan: { id } }));
    add(`vlan ${id} rarp`, F.rarpAnnounceFrame(VM, { vlan: { id } }));
  }
  add('qinq', F.udpFrame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: PEER_IP, sport: 1, dport: 2, vlan: [{ id: 100, tpid: 0x88a8 }, { id: 10 }] }));
  add('vlan priority tag', F.udpFrame({ srcMac: VM, dstMac: PEER, srcIp: pick(ip4s), dstIp: PEER_IP, sport: 1, dport: 2, vlan: { id: 0, pcp: 5 } }));

  // STP, 802.3, other EtherTypes
  add('stp bpdu', F.stpBpdu({ srcMac: VM, pad: false }), true);
  add('stp bpdu from peer', F.stpBpdu({ srcMac: PEER, flags: 1, rootPriority: 0x1000, rootCost: 4 }));
  add('stp tcn', F.stpBpdu({ srcMac: VM, type: 0x80 }));
  add('stp to another dst', F.stpBpdu({ srcMac: VM, dstMac: PEER }));
  const kernelStp = (cfg: number[]): Uint8Array => F.ieee8023({ dst: F.STP_MAC, src: pick([VM, PEER]), payload: Uint8Array.from([0x42, 0x42, 0x03, 0, 0, 0, ...cfg]) });
  for (let i = 0; i < 8; i++) {
    const cfg = Array.from({ length: 31 }, () => pick([0, 0, 1, 4, 0x80, 0x10, r() & 0xff]));
    add(`stp kernel layout ${i}`, kernelStp(cfg));
  }
  add('stp kernel layout, short', F.ieee8023({ dst: F.STP_MAC, src: VM, payload: Uint8Array.of(0x42, 0x42, 0x03, 0, 0, 0, 1, 2, 3), pad: false }), true);
  for (const t of [...v.nums.filter((n) => n >= 0x600), 0x0835, 0x88b5, 0x88cc, 0x8035, 0x0806, 0x0800, 0x86dd, 0x8100]) {
    add(`ethertype 0x${t.toString(16)} empty`, F.ether({ src: VM, dst: BCAST, type: t, payload: new Uint8Array(46) }));
    add(`ethertype 0x${t.toString(16)} to vm`, F.ether({ src: PEER, dst: VM, type: t, payload: new Uint8Array(46) }));
  }
  add('802.3 frame', F.ieee8023({ dst: PEER, src: VM, payload: Uint8Array.of(0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00) }));
  for (const [s, d] of pairs) add(`eth ${s}>${d}`, F.ether({ src: s, dst: d, type: pick([0x0800, 0x0806, 0x86dd, 0x8035, 0x88b5, 0x0835]), payload: new Uint8Array(46) }));

  // Mutants: a few bytes of a random frame replaced.
  const base = [...frames];
  for (let i = 0; i < 400; i++) {
    const b = pick(base);
    const f = Uint8Array.from(b.frame);
    const n = 1 + (r() % 3);
    for (let k = 0; k < n; k++) f[r() % f.length] = pick([0, 0xff, 0x01, 0x06, 0x11, 0x3a, 0x2c, 0x3b, 0x00, 0x08, 0x86, 0xdd, r() & 0xff]);
    add(`mutant of ${b.name}`, f);
  }
  return { frames, truncatable };
}

/** Truncations at every length from 14 to max(60, the frame's length, capped at 100). */
function truncations(list: readonly CorpusFrame[]): CorpusFrame[] {
  const out: CorpusFrame[] = [];
  for (const c of list) {
    for (let len = 14; len <= Math.min(Math.max(60, c.frame.length), 100); len++) {
      if (len > c.frame.length) break;
      out.push({ name: `${c.name} cut at ${len}`, frame: c.frame.subarray(0, len) });
    }
  }
  return out;
}

/** Frames of the shared differential corpus (src/lab/frames/corpus.ts). */
function sharedCorpus(p: InterfacePolicy): (CorpusFrame & { dir?: Direction })[] {
  return generateCorpus(p, {}).map((c) => ({ name: `corpus: ${c.name}`, frame: c.frame, dir: c.direction }));
}

// ---- running -------------------------------------------------------------------------

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** One direction's counters, summed over CPUs. */
function dirStats(stats: BpfMap, dir: Direction): bigint[] {
  const base = dir === 'out' ? 0 : STAT_NAMES.length;
  return STAT_NAMES.map((_, i) => (stats.lookupPerCpu(u32(base + i)) ?? []).reduce((a, b) => a + b.readBigUInt64LE(0), 0n));
}

interface Mismatch {
  name: string;
  dir: Direction;
  hex: string;
  bpf: { retval: number; stat: StatName[] };
  evaluator: { verdict: string; reason?: string; trace: string[] };
}

interface Counts {
  frames: number;
  runs: number;
  /** Frames BPF_PROG_TEST_RUN itself refuses (EINVAL): see kernelRefuses. */
  refused: number;
  accepted: number;
  dropped: number;
  byStat: Partial<Record<StatName, number>>;
  /** L2 rule ids (per direction) that matched at least one frame, from the evaluator's traces. */
  matched: Set<string>;
}

/** Every L2 rule of the policy, as `dir:id`. */
function allRules(p: InterfacePolicy): string[] {
  const out: string[] = [];
  for (const d of DIRECTIONS) {
    for (const e of p.l2[d].root) if (e.kind === 'rule') out.push(`${d}:${e.rule.id}`);
    for (const c of p.l2[d].chains) for (const r of c.rules) out.push(`${d}:${r.id}`);
  }
  return out;
}

/**
 * What ebtables sees of a frame the guest wrote: the receive path (before tc
 * ingress and the bridge) takes an 802.1Q/802.1ad tag out of the data into
 * skb metadata (skb_vlan_untag), so ebtables sees protocol 0x8100 and, as the
 * encapsulated protocol, skb->protocol: the inner EtherType, or for an 802.3
 * length field 0x0001 (Novell raw, 0xffff follows) or 0x0004 (802.2 LLC).
 * The evaluator reads a tag in the data, so that is what it gets. Undefined:
 * the kernel drops the frame first (a tag without 2 more bytes after it).
 */
function guestView(f: Uint8Array): Uint8Array | undefined {
  const type = f.length >= 14 ? ((f[12] as number) << 8) | (f[13] as number) : -1;
  if (type !== 0x8100 && type !== 0x88a8) return f;
  if (f.length < 20) return undefined;
  const v = Uint8Array.from(f);
  v[12] = 0x81;
  v[13] = 0x00;
  if ((((f[16] as number) << 8) | (f[17] as number)) < 0x600) {
    const encap = (((f[18] as number) << 8) | (f[19] as number)) === 0xffff ? 0x0001 : 0x0004;
    v[16] = encap >> 8;
    v[17] = encap & 0xff;
  }
  return v;
}

/**
 * A tagged frame to the STP address: once the tag is in metadata, ebt_stp
 * reads the BPDU after it, while the evaluator (given the tag in the data)
 * reads the tag. The one case the evaluator cannot state for XDP's view.
 */
function taggedBpdu(f: Uint8Array): boolean {
  const type = f.length >= 14 ? ((f[12] as number) << 8) | (f[13] as number) : -1;
  return (type === 0x8100 || type === 0x88a8) && f[0] === 0x01 && f[1] === 0x80 && f[2] === 0xc2 && f[3] === 0 && f[4] === 0 && f[5] === 0;
}

/** The program kinds a frame is run through: the tc programs (both directions) or the XDP program (from the VM). */
type ProgKind = 'tc' | 'xdp';

function checkFrames(p: InterfacePolicy, l: LoadedInterface, frames: readonly (CorpusFrame & { dir?: Direction })[], kind: ProgKind = 'tc'): { mismatches: Mismatch[]; counts: Counts } {
  const mismatches: Mismatch[] = [];
  const counts: Counts = { frames: frames.length, runs: 0, refused: 0, accepted: 0, dropped: 0, byStat: {}, matched: new Set() };
  for (const c of frames) {
    const dirs = kind === 'xdp' ? (c.dir === 'in' ? [] : (['out'] as const)) : c.dir ? [c.dir] : DIRECTIONS;
    for (const dir of dirs) {
      if (kind === 'xdp' && taggedBpdu(c.frame)) continue;
      const prog = kind === 'xdp' ? (l.xdp as BpfProgram) : l.programs[dir];
      const before = dirStats(l.maps.stats, dir);
      let res: { retval: number };
      try {
        res = prog.testRun(c.frame);
      } catch (e) {
        if (e instanceof BpfError && e.details.errnoName === 'EINVAL' && (kind === 'xdp' ? c.frame.length < 14 : kernelRefuses(c.frame))) {
          counts.refused++;
          if (kind === 'tc') refusedFrames.push({ ...c, dir });
          continue;
        }
        throw new Error(`${kind} test run of ${c.name} (${Buffer.from(c.frame).toString('hex')}) failed: ${(e as Error).message}`);
      }
      const after = dirStats(l.maps.stats, dir);
      const stat = STAT_NAMES.filter((_, i) => after[i] !== before[i]);
      const view = kind === 'xdp' ? guestView(c.frame) : c.frame;
      const ev = view ? evaluate(p, dir, view, { brNetfilter: false }) : { verdict: 'drop', reason: 'internal', trace: [] as ReturnType<typeof evaluate>['trace'] };
      for (const t of ev.trace) if (t.event === 'match' && t.ruleId) counts.matched.add(`${dir}:${t.ruleId}`);
      const ok = kind === 'xdp' ? XDP_ACT.PASS : TC_ACT.OK;
      const want = ev.verdict === 'accept' ? ok : kind === 'xdp' ? XDP_ACT.DROP : TC_ACT.SHOT;
      const wantStat: StatName[] = ev.verdict === 'accept' ? [] : [ev.reason as StatName];
      counts.runs++;
      if (res.retval === ok) counts.accepted++;
      else counts.dropped++;
      for (const s of stat) counts.byStat[s] = (counts.byStat[s] ?? 0) + 1;
      if (res.retval !== want || stat.join() !== wantStat.join()) {
        mismatches.push({
          name: `${kind === 'xdp' ? '[xdp] ' : ''}${c.name}`,
          dir,
          hex: Buffer.from(c.frame).toString('hex'),
          bpf: { retval: res.retval, stat },
          evaluator: { verdict: ev.verdict, ...(ev.reason ? { reason: ev.reason } : {}), trace: ev.trace.map((t) => `${t.chain} ${t.event} ${t.ruleId ?? ''} ${t.verdict ?? ''} ${t.note ?? ''}`) },
        });
      }
    }
  }
  return { mismatches, counts };
}

/**
 * BPF_PROG_TEST_RUN on this kernel refuses (EINVAL) tc frames whose
 * EtherType is IPv4 or IPv6 but which are too short for the fixed IP header
 * (bpf_prog_test_run_skb pulls it). Those frames do reach tc programs in real
 * life; bpf-shortframes.test.ts sends them through a real veth instead.
 */
export function kernelRefuses(f: Uint8Array): boolean {
  const type = f.length >= 14 ? ((f[12] as number) << 8) | (f[13] as number) : -1;
  return f.length < 14 || (type === 0x0800 && f.length < 34) || (type === 0x86dd && f.length < 54);
}

/** Frames the test run refused, for the real-path test. */
const refusedFrames: (CorpusFrame & { dir: Direction })[] = [];

/** Runts: BPF_PROG_TEST_RUN refuses tc and XDP frames shorter than an Ethernet header (EINVAL). */
function checkRunts(l: LoadedInterface): void {
  const progs: [string, BpfProgram][] = [...DIRECTIONS.map((d): [string, BpfProgram] => [d, l.programs[d]]), ...(l.xdp ? [['xdp', l.xdp] as [string, BpfProgram]] : [])];
  for (const [what, prog] of progs) {
    for (let len = 0; len < 14; len++) {
      let err: unknown;
      try {
        prog.testRun(new Uint8Array(len).fill(0xff));
      } catch (e) {
        err = e;
      }
      expect(err, `a ${len}-byte runt (${what})`).toBeInstanceOf(BpfError);
      expect((err as BpfError).details.errnoName).toBe('EINVAL');
    }
  }
}

// ---- the real path: a veth pair in a namespace ----------------------------------------
//
// BPF_PROG_TEST_RUN cannot run the short IPv4/IPv6 frames (kernelRefuses)
// and only makes linear skbs. So each program is also attached (tcReplace:
// replace in place, one filter per hook for the whole file) to the egress
// of one end of a veth pair, and frames are sent with an AF_PACKET socket:
// the egress hook runs inside send(), so the counters can be read right
// after. Frames above a page (the veth has MTU 9000) are built by
// AF_PACKET as non-linear skbs whose linear part is only the 14-byte
// Ethernet header, like trafgen's: the programs must read everything with
// bpf_skb_load_bytes.

const NS = `nwfbpf-${process.pid}`;
const veth = { out: { ifname: 'nwfa', ifindex: 0 }, in: { ifname: 'nwfb', ifindex: 0 } };
let sockets: Record<Direction, PacketSocket> | undefined;

async function setUpVeth(): Promise<void> {
  const ip = (...args: string[]) => execa('ip', args, { timeout: 30_000 });
  await ip('netns', 'add', NS);
  // No IPv6 autoconfiguration: nothing but the test's frames may cross the hooks.
  await ip('netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
  await ip('-n', NS, 'link', 'add', 'name', 'nwfa', 'mtu', '9000', 'type', 'veth', 'peer', 'name', 'nwfb', 'mtu', '9000');
  await ip('-n', NS, 'link', 'set', 'nwfa', 'up');
  await ip('-n', NS, 'link', 'set', 'nwfb', 'up');
  withNetns(NS, () => {
    for (const d of DIRECTIONS) {
      veth[d].ifindex = ifIndex(veth[d].ifname);
      tcHookCreate(veth[d].ifindex);
    }
  });
  sockets = { out: PacketSocket.open(NS, 'nwfa', { receive: false }), in: PacketSocket.open(NS, 'nwfb', { receive: false }) };
}

async function tearDownVeth(): Promise<void> {
  if (sockets) for (const d of DIRECTIONS) sockets[d].close();
  await settlePacketSockets();
  await execa('ip', ['netns', 'del', NS], { reject: false, timeout: 30_000 });
}

/**
 * Send every frame through the attached program of its direction(s) (the
 * egress hook runs inside send(): the counters are final when it returns);
 * compare the counters with the evaluator: the drop reason, or none for an
 * accepted frame.
 */
function checkRealPath(p: InterfacePolicy, l: LoadedInterface, frames: readonly (CorpusFrame & { dir?: Direction })[]): { mismatches: Mismatch[]; sent: number } {
  withNetns(NS, () => {
    for (const d of DIRECTIONS) {
      l.addIfindex(veth[d].ifindex); // the programs find the interface's values by the ifindex the frame passes
      tcReplace(l.programs[d], { ifindex: veth[d].ifindex, direction: 'egress', handle: 1, priority: 1 });
    }
  });
  const mismatches: Mismatch[] = [];
  let sent = 0;
  for (const c of frames) {
    if (c.frame.length < 14) continue;
    for (const dir of c.dir ? [c.dir] : DIRECTIONS) {
      const before = dirStats(l.maps.stats, dir);
      let after = before;
      // A frame the program drops makes send() fail with ENOBUFS (trySend false, a counter moved);
      // a send that failed for another reason (a full socket buffer) is tried again.
      for (let attempt = 0; attempt < 3; attempt++) {
        const ok = sockets![dir].trySend(c.frame);
        after = dirStats(l.maps.stats, dir);
        if (ok || after.some((x, i) => x !== before[i])) break;
      }
      sent++;
      const stat = STAT_NAMES.filter((_, i) => after[i] !== before[i]);
      const ev = evaluate(p, dir, c.frame, { brNetfilter: false });
      const wantStat: StatName[] = ev.verdict === 'accept' ? [] : [ev.reason as StatName];
      if (stat.join() !== wantStat.join()) {
        mismatches.push({
          name: c.name,
          dir,
          hex: Buffer.from(c.frame.subarray(0, 80)).toString('hex'),
          bpf: { retval: -1, stat },
          evaluator: { verdict: ev.verdict, ...(ev.reason ? { reason: ev.reason } : {}), trace: ev.trace.map((t) => `${t.chain} ${t.event} ${t.ruleId ?? ''}`) },
        });
      }
    }
  }
  return { mismatches, sent };
}

/** Jumbo copies (5000 bytes, zero-filled tail): non-linear skbs on the real path. */
function jumbo(list: readonly CorpusFrame[]): CorpusFrame[] {
  return list.map((c) => ({ name: `${c.name} (jumbo, non-linear)`, frame: F.concat(c.frame, new Uint8Array(5000 - c.frame.length)) }));
}

interface PolicyCase {
  name: string;
  policy: () => InterfacePolicy;
  /** Policies with L3 rules compile only with --backend both. */
  backend?: 'bpf' | 'both';
}

const V6_ROOT = `<filter name='v6-test' chain='root'>
  <filterref filter='no-mac-spoofing'/>
  <filterref filter='no-ipv6-spoofing'/>
  <filterref filter='allow-ipv6'/>
  <rule action='drop' direction='inout' priority='1000'><mac/></rule>
</filter>`;

const L3_ROOT = `<filter name='l3-test' chain='root'>
  <filterref filter='no-mac-spoofing'/>
  <filterref filter='no-arp-spoofing'/>
  <rule action='accept' direction='out' priority='-650'><mac protocolid='ipv4'/></rule>
  <rule action='accept' direction='in'><tcp dstportstart='22'/></rule>
  <rule action='accept' direction='out'><udp dstportstart='53'/></rule>
  <rule action='drop' direction='inout' priority='900'><all/></rule>
  <filterref filter='allow-incoming-ipv4'/>
  <filterref filter='no-other-l2-traffic'/>
</filter>`;

// Every L2 element and field kind: masks, negations, ranges, sub-chains with return/continue, stp, vlan.
const KITCHEN = [
  `<filter name='kitchen' chain='root'>
    <rule action='continue' direction='inout' priority='-900'><mac protocolid='ipv4'/></rule>
    <rule action='drop' direction='out' priority='-900'><mac srcmacaddr='52:54:00:00:00:00' srcmacmask='ff:ff:ff:00:00:00' match='no'/></rule>
    <filterref filter='kitchen-v4'/>
    <filterref filter='kitchen-arp'/>
    <filterref filter='kitchen-v6'/>
    <filterref filter='kitchen-vlan'/>
    <filterref filter='kitchen-stp'/>
    <rule action='return' direction='in' priority='100'><mac srcmacaddr='$GATEWAY_MAC'/></rule>
    <rule action='accept' direction='inout' priority='200'><rarp opcode='Request_Reverse' arpsrcmacaddr='$MAC' gratuitous='true'/></rule>
    <rule action='accept' direction='inout' priority='300'><mac protocolid='0x0835' dstmacaddr='ff:ff:ff:ff:ff:ff'/></rule>
    <rule action='drop' direction='inout' priority='1000'/>
  </filter>`,
  `<filter name='kitchen-v4' chain='ipv4-k' priority='-700'>
    <rule action='return' direction='out' priority='100'><ip srcipaddr='$IP' dscp='8' match='no'/></rule>
    <rule action='drop' direction='out' priority='200'><ip srcipaddr='10.0.0.0' srcipmask='255.0.0.0' protocol='tcp' dstportstart='20' dstportend='25'/></rule>
    <rule action='accept' direction='inout' priority='300'><ip protocol='udp' srcportstart='67' srcportend='68' dstportstart='67' dstportend='68'/></rule>
    <rule action='continue' direction='inout' priority='350'><ip protocol='icmp'/></rule>
    <rule action='accept' direction='in' priority='400'><ip dstipaddr='$IP' protocol='udp' srcportstart='53' match='no'/></rule>
    <rule action='accept' direction='out' priority='500'><ip dstipaddr='224.0.0.0' dstipmask='4'/></rule>
  </filter>`,
  `<filter name='kitchen-arp' chain='arp-k' priority='-500'>
    <rule action='drop' direction='out' priority='100'><arp gratuitous='true' match='no' opcode='Reply'/></rule>
    <rule action='return' direction='inout' priority='200'><arp hwtype='1' protocoltype='0x0800' arpsrcipaddr='$IP' arpsrcipmask='24'/></rule>
    <rule action='accept' direction='in' priority='300'><arp arpdstmacaddr='$MAC'/></rule>
    <rule action='drop' direction='inout' priority='400'><arp arpsrcmacaddr='52:54:00:00:00:66' match='no'/></rule>
  </filter>`,
  `<filter name='kitchen-v6' chain='ipv6-k' priority='-600'>
    <rule action='accept' direction='inout' priority='100'><ipv6 protocol='icmpv6' type='133' typeend='136'/></rule>
    <rule action='drop' direction='inout' priority='250'><ipv6 protocol='icmpv6' type='128' code='0' match='no'/></rule>
    <rule action='return' direction='out' priority='200'><ipv6 srcipaddr='$IPV6' srcipmask='64' protocol='udp' dstportstart='547'/></rule>
    <rule action='accept' direction='in' priority='300'><ipv6 dstipaddr='ff02::' dstipmask='16'/></rule>
    <rule action='drop' direction='out' priority='400'><ipv6 protocol='tcp' match='no'/></rule>
  </filter>`,
  `<filter name='kitchen-vlan' chain='vlan-k' priority='-750'>
    <rule action='accept' direction='inout' priority='100'><vlan vlanid='10' encap-protocol='ipv4'/></rule>
    <rule action='drop' direction='inout' priority='200'><vlan vlanid='0' match='no'/></rule>
  </filter>`,
  `<filter name='kitchen-stp' chain='stp-k' priority='-810'>
    <rule action='drop' direction='in' priority='100'><stp flags='1' root-priority='0' root-priority-hi='4096' root-cost='1' root-cost-hi='100'/></rule>
    <rule action='accept' direction='in' priority='200'><stp type='0' sender-address='52:54:00:00:00:99' sender-address-mask='ff:ff:ff:00:00:00' port='0' port-hi='0x8fff'/></rule>
    <rule action='drop' direction='out' priority='300'><stp srcmacaddr='$MAC' age='1' age-hi='100' match='no'/></rule>
    <rule action='return' direction='inout' priority='400'><stp max-age='0' max-age-hi='0x1000' hello-time='0' forward-delay='0' forward-delay-hi='0xffff' root-address='00:00:00:00:00:00' root-address-mask='00:00:00:00:00:00' sender-priority='0' sender-priority-hi='0x8000'/></rule>
  </filter>`,
];

const CASES: PolicyCase[] = [
  { name: 'clean-traffic, one IP', policy: () => policyFor('clean-traffic', { IP: '10.0.0.2' }) },
  { name: 'clean-traffic, an IP list', policy: () => policyFor('clean-traffic', { IP: ['10.0.0.2', '10.0.0.3', '10.0.0.4'] }) },
  { name: 'clean-traffic-gateway', policy: () => policyFor('clean-traffic-gateway', { IP: ['10.0.0.2', '10.0.0.3'], GATEWAY_MAC: GW }) },
  { name: 'no-mac-spoofing', policy: () => policyFor('no-mac-spoofing') },
  { name: 'no-ip-spoofing, an IP list', policy: () => policyFor('no-ip-spoofing', { IP: ['10.0.0.2', '10.0.0.3'] }) },
  { name: 'no-arp-spoofing', policy: () => policyFor('no-arp-spoofing', { IP: '10.0.0.2' }) },
  { name: 'allow-dhcp', policy: () => policyFor('allow-dhcp') },
  { name: 'no-ipv6-spoofing + allow-ipv6', policy: () => policyFor('v6-test', { IPV6: ['fd00::2', '2001:db8::2'] }, [V6_ROOT]) },
  { name: 'allow-dhcpv6', policy: () => policyFor('allow-dhcpv6') },
  { name: 'kitchen sink (every L2 field kind)', policy: () => policyFor('kitchen', { IP: ['10.0.0.2', '10.1.2.3'], IPV6: 'fd00::2', GATEWAY_MAC: GW }, KITCHEN) },
  { name: 'an L3 policy (L2 part; L3 left to nftables)', policy: () => policyFor('l3-test', { IP: '10.0.0.2' }, [L3_ROOT]), backend: 'both' },
];

describe.skipIf(skipReason !== undefined)(`tc programs vs the reference evaluator (BPF_PROG_TEST_RUN)${skipReason ? ` [skipped: ${skipReason}]` : ''}`, () => {
  const opts: BpfCompileOptions = { outDir, cacheDir };
  beforeAll(setUpVeth);
  afterAll(tearDownVeth);

  for (const c of CASES) {
    it(`${c.name}: every frame gets the evaluator's L2 verdict and drop reason`, async () => {
      const p = c.policy();
      const build = await compileBpf(irOf(p), { ...opts, backend: c.backend ?? 'bpf' });
      const b = build.interfaces[0]!;
      const l = loadInterface(b, { xdp: true });
      try {
        const { frames, truncatable } = buildCorpus(p);
        const cut = truncations(truncatable);
        const shared = sharedCorpus(p);
        const all = [...frames, ...cut, ...shared];
        const refusedBefore = refusedFrames.length;
        const { mismatches, counts } = checkFrames(p, l, all);
        checkRunts(l);
        // The from-VM policy as XDP: every frame as the guest writes it, and jumbo (multi-buffer) copies of a sample.
        const sample = frames.filter((_, i) => i % 7 === 0);
        const xdp = checkFrames(p, l, [...all, ...jumbo(sample)], 'xdp');
        // What the test run refused, and non-linear copies of a sample, through the real hooks.
        const refused = refusedFrames.slice(refusedBefore);
        const real = checkRealPath(p, l, [...refused, ...jumbo(sample)]);
        const rules = allRules(p);
        const unmatched = rules.filter((r) => !counts.matched.has(r));
        console.log(
          `[bpf-testrun] ${c.name}: shape ${b.shapeId}, ${counts.frames} frames (${cut.length} truncated, ${shared.length} from corpus.ts), ` +
            `${counts.runs} runs: ${counts.accepted} accepted, ${counts.dropped} dropped, ${counts.refused} refused by the test run ${JSON.stringify(counts.byStat)}; ` +
            `L2 rules matched ${rules.length - unmatched.length}/${rules.length}${unmatched.length ? ` (never: ${unmatched.join(', ')})` : ''}; ` +
            `XDP: ${xdp.counts.runs} runs (${sample.length} jumbo), ${xdp.counts.accepted} passed, ${xdp.counts.dropped} dropped ${JSON.stringify(xdp.counts.byStat)}, ${xdp.mismatches.length} mismatches; ` +
            `real path (veth egress): ${real.sent} sends (${refused.length} refused by the test run, ${sample.length} non-linear jumbo frames); ` +
            `verifier: out ${progStats(l.fds.out)}, in ${progStats(l.fds.in)}, xdp ${progStats(l.xdp!.fd)}`,
        );
        expect(mismatches.slice(0, 5)).toEqual([]);
        expect(mismatches.length).toBe(0);
        expect(xdp.mismatches.slice(0, 5)).toEqual([]);
        expect(xdp.mismatches.length).toBe(0);
        expect(xdp.counts.runs).toBeGreaterThan(counts.runs / 3);
        expect(real.mismatches.slice(0, 5)).toEqual([]);
        expect(cut.some((f) => f.frame.length === 14)).toBe(true);
      } finally {
        l.close();
      }
    });
  }

  it('handles VLAN tags the receive path moved into skb metadata (vlan_present), as ebtables does', async () => {
    // At tc ingress the kernel has already untagged 802.1Q/802.1ad frames: the
    // tag is in skb->vlan_tci and the data holds the inner frame. ebtables then
    // sees protocol 0x8100 (also for an 802.1ad outer tag), the metadata TCI and
    // skb->protocol as the encapsulated protocol. The 'out' program goes on the
    // ingress of one veth end; frames come from the other end (whose egress
    // filter is removed for this test).
    const sleep = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    for (const c of CASES.filter((x) => /kitchen|clean-traffic, one IP/.test(x.name))) {
      const p = c.policy();
      const build = await compileBpf(irOf(p), opts);
      const l = loadInterface(build.interfaces[0]!);
      try {
        withNetns(NS, () => {
          tcDetach({ ifindex: veth.in.ifindex, direction: 'egress', handle: 1, priority: 1 });
          l.addIfindex(veth.out.ifindex);
          tcReplace(l.programs.out, { ifindex: veth.out.ifindex, direction: 'ingress', handle: 1, priority: 1 });
        });
        const tagged = buildCorpus(p, 11).frames.filter((f) => {
          const type = ((f.frame[12] as number) << 8) | (f.frame[13] as number);
          return f.frame.length >= 18 && (type === 0x8100 || type === 0x88a8) && !(f.frame[0] === 0x01 && f.frame[1] === 0x80 && f.frame[2] === 0xc2);
        });
        expect(tagged.length).toBeGreaterThan(10);
        // Ingress runs after send() returns, and an accepted frame moves no counter: each
        // frame is followed by a marker the policy drops, and the frame has been processed
        // when the counters add up to both (a wrong verdict shows as a wrong sum here, or
        // in the next frame's window, and in the total at the end).
        const want = (f: Uint8Array): StatName[] => {
          const ev = evaluate(p, 'out', guestView(f) as Uint8Array, { brNetfilter: false });
          return ev.verdict === 'accept' ? [] : [ev.reason as StatName];
        };
        const marker = buildCorpus(p, 11).frames.find((f) => f.frame.length >= 60 && f.frame[12] !== 0x81 && want(f.frame).length === 1);
        expect(marker).toBeDefined();
        const markerStat = want(marker!.frame)[0] as StatName;
        const bad: Mismatch[] = [];
        const start = dirStats(l.maps.stats, 'out');
        const total = STAT_NAMES.map(() => 0n);
        for (const t of tagged) {
          const before = dirStats(l.maps.stats, 'out');
          const expected = STAT_NAMES.map((n) => BigInt((want(t.frame).includes(n) ? 1 : 0) + (n === markerStat ? 1 : 0)));
          expected.forEach((x, k) => (total[k] = (total[k] as bigint) + x));
          const need = expected.reduce((a, b) => a + b, 0n);
          sockets!.in.trySend(t.frame);
          sockets!.in.trySend(marker!.frame);
          let delta = STAT_NAMES.map(() => 0n);
          for (let i = 0; i < 2000; i++) {
            delta = dirStats(l.maps.stats, 'out').map((x, k) => x - (before[k] as bigint));
            if (delta.reduce((a, b) => a + b, 0n) >= need) break;
            sleep(1);
          }
          if (delta.join() !== expected.join()) {
            const ev = evaluate(p, 'out', guestView(t.frame) as Uint8Array, { brNetfilter: false });
            bad.push({ name: t.name, dir: 'out', hex: Buffer.from(t.frame).toString('hex'), bpf: { retval: -1, stat: STAT_NAMES.filter((_, k) => delta[k] !== expected[k]) }, evaluator: { verdict: ev.verdict, trace: ev.trace.map((x) => `${x.chain} ${x.event} ${x.ruleId ?? ''}`) } });
          }
        }
        sleep(50);
        const end = dirStats(l.maps.stats, 'out');
        expect(end.map((x, k) => x - (start[k] as bigint))).toEqual(total);
        console.log(`[bpf-testrun] ${c.name}: ${tagged.length} VLAN-tagged frames through tc ingress (tag in skb metadata)`);
        expect(bad.slice(0, 5)).toEqual([]);
      } finally {
        withNetns(NS, () => tcDetach({ ifindex: veth.out.ifindex, direction: 'ingress', handle: 1, priority: 1 }));
        l.close();
      }
    }
  });

  it('refuses an L3 policy with --backend bpf, and explains --backend both', async () => {
    const p = policyFor('l3-test', { IP: '10.0.0.2' }, [L3_ROOT]);
    const err = await compileBpf(irOf(p), opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NwfError);
    expect((err as NwfError).code).toBe(CODES.USAGE);
    expect((err as NwfError).message).toMatch(/L3\/L4 rule/);
    expect((err as NwfError).format()).toMatch(/--backend both/);
    const ok = await compileBpf(irOf(p), { ...opts, backend: 'both' });
    expect(ok.interfaces[0]!.l3Rules).toBeGreaterThan(0);
  });

  it('shares one object between interfaces of the same shape; each gets its own values', async () => {
    const a = policyFor('clean-traffic', { IP: '10.0.0.2' }, [], { iface: 'vnet0', mac: VM });
    const b = policyFor('clean-traffic', { IP: ['10.0.0.7', '10.0.0.8', '10.0.0.9'] }, [], { iface: 'vnet1', mac: PEER });
    const build = await compileBpf(irOf(a, b), opts);
    expect(build.shapes).toHaveLength(1);
    expect(build.interfaces[0]!.shapeId).toBe(build.interfaces[1]!.shapeId);
    expect(build.interfaces[0]!.objectPath).toBe(build.interfaces[1]!.objectPath);
    for (const [p, bi] of [
      [a, build.interfaces[0]!],
      [b, build.interfaces[1]!],
    ] as const) {
      const l = loadInterface(bi);
      try {
        const { frames } = buildCorpus(p, 7);
        const other = buildCorpus(p === a ? b : a, 7).frames;
        const { mismatches } = checkFrames(p, l, [...frames.slice(0, 300), ...other.slice(0, 300)]);
        expect(mismatches.slice(0, 3)).toEqual([]);
      } finally {
        l.close();
      }
    }
  });

  it('updates values in place (double-buffered config) without reloading', async () => {
    const a = policyFor('clean-traffic', { IP: '10.0.0.2' }, [], { iface: 'vnet0', mac: VM });
    const b = policyFor('clean-traffic', { IP: '10.0.0.5' }, [], { iface: 'vnet0', mac: EVIL });
    const build = await compileBpf(irOf(a), opts);
    const next = await compileBpf(irOf(b), opts);
    const l = loadInterface(build.interfaces[0]!);
    try {
      const f = F.udpFrame({ srcMac: EVIL, dstMac: PEER, srcIp: '10.0.0.5', dstIp: PEER_IP, sport: 1, dport: 2 });
      expect(l.programs.out.testRun(f).retval).toBe(TC_ACT.SHOT);
      updateConfig(l, next.interfaces[0]!);
      expect(l.programs.out.testRun(f).retval).toBe(TC_ACT.OK);
      const { mismatches } = checkFrames(b, l, buildCorpus(b, 3).frames.slice(0, 400));
      expect(mismatches.slice(0, 3)).toEqual([]);
    } finally {
      l.close();
    }
  });

  it('fails closed without a config: every frame is dropped and counted as internal', async () => {
    const p = policyFor('no-mac-spoofing');
    const build = await compileBpf(irOf(p), opts);
    const l = loadInterface({ ...build.interfaces[0]!, maps: [] });
    try {
      const f = F.ether({ src: VM, dst: PEER, type: 0x0800, payload: new Uint8Array(46) });
      expect(l.programs.out.testRun(f).retval).toBe(TC_ACT.SHOT);
      expect(dirStats(l.maps.stats, 'out')[STAT_NAMES.indexOf('internal')]).toBe(1n);
      // 'in' has no rules in no-mac-spoofing: nothing hooked, accepted without looking at the config.
      expect(l.programs.in.testRun(f).retval).toBe(TC_ACT.OK);
    } finally {
      l.close();
    }
  });

  it('caches objects by content: the same source is not compiled twice', async () => {
    const p = policyFor('clean-traffic-gateway', { IP: '10.0.0.2', GATEWAY_MAC: GW });
    const cache = join(work, 'cache-timing');
    const t0 = performance.now();
    const first = await compileBpf(irOf(p), { outDir: join(work, 'out-timing-1'), cacheDir: cache });
    const t1 = performance.now();
    const second = await compileBpf(irOf(p), { outDir: join(work, 'out-timing-2'), cacheDir: cache });
    const t2 = performance.now();
    expect(first.shapes[0]!.cached).toBe(false);
    expect(second.shapes[0]!.cached).toBe(true);
    expect(readFileSync(second.interfaces[0]!.objectPath)).toEqual(readFileSync(first.interfaces[0]!.objectPath));
    console.log(`[bpf-testrun] compile clean-traffic-gateway: ${(t1 - t0).toFixed(1)} ms (clang), cached ${(t2 - t1).toFixed(1)} ms`);
  });

  it('reports a verifier rejection of a broken template with the relevant log lines', async () => {
    const tdir = join(work, 'broken-verifier');
    cpSync(join(REPO, 'bpf'), tdir, { recursive: true });
    // Break the direct read of the header block: packet access without its bounds check.
    const f = join(tdir, 'lib', 'nwf_parse.h');
    const src = readFileSync(f, 'utf8').replace('if (data + NWF_HEAD_LEN > end)\n\t\treturn false;', 'if (!end)\n\t\treturn false;');
    expect(src).toContain('if (!end)');
    writeFileSync(f, src);
    const build = await compileBpf(irOf(policyFor('no-mac-spoofing')), { outDir: join(work, 'out-broken'), cacheDir, templateDir: tdir });
    let err: unknown;
    try {
      loadInterface(build.interfaces[0]!).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    const be = err as BpfError;
    expect(be.code).toBe(CODES.BPF_FAILED);
    expect(be.details.op).toBe('bpf_object__load');
    expect(be.verifierLog).toBeDefined();
    expect(be.message).toMatch(/verifier: .*(invalid access to packet|R\d+ .*pkt|math between pkt)/);
  });

  it('reports a clang failure with the compiler lines', async () => {
    const tdir = join(work, 'broken-clang');
    cpSync(join(REPO, 'bpf'), tdir, { recursive: true });
    const f = join(tdir, 'lib', 'nwf_run.h');
    writeFileSync(f, readFileSync(f, 'utf8').replace('int v;', 'int v;\n\tint unused_on_purpose;'));
    const err = await compileBpf(irOf(policyFor('no-mac-spoofing')), { outDir: join(work, 'out-broken2'), cacheDir, templateDir: tdir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const ce = err as CommandError;
    expect(ce.code).toBe(CODES.CLANG_FAILED);
    // the message holds the relevant compiler lines (relevantCompilerLines), stderr all of it
    expect(ce.message).toMatch(/nwf_run\.h:\d+:\d+: error: unused variable 'unused_on_purpose'/);
    expect(ce.stderr).toContain('unused_on_purpose');
    expect(ce.argv[0]).toBe('clang-19');
  });
});
