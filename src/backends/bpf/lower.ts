// The tc/eBPF backend: PolicyIR -> one C header per policy shape (the rule
// structure, compiled with the templates in bpf/) plus, per interface, the
// map values that specialise it. Pure: building the objects (clang and its
// cache) and loading them are the host's (host/bpf-build.ts, host/bpf-load.ts).
//
// Design (see also plan.ts and bpf/nwf.bpf.c):
//  - L2 only. The programs enforce libvirt's ebtables layer (the root chain
//    with its rules and guarded jumps into sub-chains; accept / drop / return
//    / continue; falling off a chain accepts; RETURN from root accepts).
//    L3/L4 rules (tcp, udp, icmp, all, ... with connection state) were
//    iptables rules in libvirt, seen through br_netfilter after the L2
//    verdict; they stay with the nftables backend (`--backend both`), which
//    sees the frames the tc programs accepted (TC_ACT_OK hands the frame on to
//    the bridge, where br_netfilter and nft run). With the bpf backend alone
//    a policy with L3 rules is refused (NwfError) rather than half enforced.
//  - Shape sharing: the rule structure is compiled; the values live in the
//    nwf_cfg map. Every interface whose policy has the same shape uses the same
//    object file.
//  - Programs: from the VM as a tc program and as an XDP program (the same
//    policy), to the VM as a tc program; the host attaches them with tc, tcx
//    or XDP (host/bpf/hook.ts).
//  - Verdicts: TC_ACT_OK / XDP_PASS for accept, TC_ACT_SHOT / XDP_DROP for
//    drop; per-interface drop counters by direction and reason in nwf_stats.
import { endianness } from 'node:os';
import type { Direction, InterfacePolicy, PolicyIR } from '../../ir/types.js';
import { ruleCounts } from '../../ir/facts.js';
import { CODES, NwfError } from '../../util/errors.js';
import { emitPolicyHeader } from './emit.js';
import { MAP_NAMES, PROGRAM_NAMES, TC_HOOKS, XDP_PROGRAM_NAME } from './names.js';
import { encodeConfig, planInterface, type BpfPlan } from './plan.js';
import { seedOf } from '../nft/learn.js';
import { learnKey, type LearnedEntry } from '../../ir/learning.js';

export interface BpfMapWrite {
  map: string;
  key: Uint8Array;
  value: Uint8Array;
}

/** One policy shape: its generated header (nwf_policy.h) and the interfaces that have it. */
export interface BpfShapeSource {
  shapeId: string;
  header: string;
  interfaces: string[];
}

export interface BpfInterfaceLowering {
  iface: string;
  shapeId: string;
  /** tc program name per direction: out = from the VM (tc ingress), in = to the VM (tc egress). */
  programs: Readonly<Record<Direction, string>>;
  /** The XDP program of the from-VM direction (the same policy as programs.out). */
  xdpProgram: string;
  hooks: Readonly<Record<Direction, 'ingress' | 'egress'>>;
  /** The interface's values: nwf_cfg's value (the loader places it at the tap's index in its shape's object). */
  maps: BpfMapWrite[];
  /** The shape/value split, for explanations (group index -> IR rule ids). */
  plan: BpfPlan;
  /** L3/L4 rules of the interface left to the nftables backend. */
  l3Rules: number;
  /** A learning port's seed (learned state from user space): written before the tap is enabled. */
  learnSeed?: string;
  /**
   * A dhcp learning port: its seeded leases (unexpired, wall-clock expiry;
   * none: an infinite lease), possibly none. The loader creates the port's
   * lease entry with them before the tap is enabled.
   */
  learnDhcp?: SeedLease[];
}

/** A dhcp lease to seed: the address, its wall-clock expiry (ISO UTC; absent: infinite) and its server. */
export interface SeedLease {
  ip: string;
  expires?: string;
  server?: string;
}

/** The unexpired leases of a dhcp port's seed entry, at most 4 (the program's slots). */
export function dhcpSeedOf(p: InterfacePolicy, seeds: ReadonlyMap<string, LearnedEntry> | undefined, now = Date.now()): SeedLease[] {
  if (p.learning?.mode !== 'dhcp' || !seeds || !p.ownerUuid) return [];
  const e = seeds.get(learnKey(p.ownerUuid, p.mac));
  if (!e || e.mode !== 'dhcp') return [];
  return e.addresses
    .filter((a) => a.expires === undefined || Date.parse(a.expires) > now)
    .slice(0, 4)
    .map((a) => ({ ip: a.ip, ...(a.expires !== undefined ? { expires: a.expires } : {}), ...(a.server !== undefined ? { server: a.server } : {}) }));
}

export interface BpfLowering {
  shapes: BpfShapeSource[];
  interfaces: BpfInterfaceLowering[];
}

/** The bpf backend alone cannot enforce L3/L4 rules: refuse rather than half enforce. */
export function checkL3(ir: PolicyIR, backend: 'bpf' | 'both'): void {
  for (const p of ir.interfaces) checkInterfaceL3(p, backend);
}

function checkInterfaceL3(p: InterfacePolicy, backend: 'bpf' | 'both', n = ruleCounts(p).l3Rules): void {
  if (backend === 'both') return;
  if (n === 0) return;
  const all = [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost];
  const filters = [...new Set(all.map((r) => r.origin.filter))];
  const first = all[0]!;
  throw new NwfError(
    CODES.USAGE,
    `interface ${p.iface}: its policy has ${n} L3/L4 rule placement${n === 1 ? '' : 's'} (tcp/udp/icmp/all ... elements, from ${filters.join(', ')}), which the bpf backend does not enforce: its tc programs implement the L2 (ebtables) layer only`,
    {
      location: { file: first.origin.file, ...(first.origin.line !== undefined ? { line: first.origin.line } : {}) },
      iface: p.iface,
      filter: first.origin.filter,
      expected: 'a policy made of L2 elements only (mac, vlan, stp, arp, rarp, ip, ipv6) for --backend bpf',
      hint: 'use --backend both: the tc programs enforce L2 and nftables enforces the L3/L4 rules with connection tracking (or --backend nft)',
    },
  );
}

/** A __u32 map key or value, in host byte order. */
function u32(n: number): Uint8Array {
  const b = Buffer.alloc(4);
  if (endianness() === 'LE') b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

/** One interface's values and shape (throws the NwfError of a policy this backend refuses). */
export function lowerBpfInterface(p: InterfacePolicy, backend: 'bpf' | 'both' = 'bpf', seed?: string, leases: SeedLease[] = []): BpfInterfaceLowering {
  const l3Rules = ruleCounts(p).l3Rules;
  checkInterfaceL3(p, backend, l3Rules);
  const plan = planInterface(p);
  return {
    iface: p.iface,
    shapeId: plan.shapeId,
    programs: PROGRAM_NAMES,
    xdpProgram: XDP_PROGRAM_NAME,
    hooks: TC_HOOKS,
    maps: [{ map: MAP_NAMES.cfg, key: u32(0), value: encodeConfig(plan) }],
    plan,
    l3Rules,
    ...(seed !== undefined && p.learning?.mode === 'any' ? { learnSeed: seed } : {}),
    ...(p.learning?.mode === 'dhcp' ? { learnDhcp: leases } : {}),
  };
}

/**
 * Lowers every interface of `ir`: one header per distinct shape, one map set
 * per interface. `backend` 'bpf' (default): the programs are the only
 * enforcement, so L3/L4 rules are refused; 'both': nftables enforces them.
 * With `onError`, an interface this backend refuses is handed to it and left
 * out (a partial lowering); without, the first refusal throws.
 */
export function lowerToBpf(ir: PolicyIR, backend: 'bpf' | 'both' = 'bpf', onError?: (p: InterfacePolicy, e: NwfError) => void, seeds?: ReadonlyMap<string, LearnedEntry>): BpfLowering {
  const shapes = new Map<string, BpfShapeSource>();
  const interfaces: BpfInterfaceLowering[] = [];
  for (const p of ir.interfaces) {
    let l: BpfInterfaceLowering;
    try {
      l = lowerBpfInterface(p, backend, seedOf(p, seeds)[0], dhcpSeedOf(p, seeds));
    } catch (e) {
      if (!onError || !(e instanceof NwfError)) throw e;
      onError(p, e);
      continue;
    }
    let s = shapes.get(l.shapeId);
    if (!s) shapes.set(l.shapeId, (s = { shapeId: l.shapeId, header: emitPolicyHeader(l.plan.shape, l.shapeId), interfaces: [] }));
    s.interfaces.push(p.iface);
    interfaces.push(l);
  }
  return { shapes: [...shapes.values()], interfaces };
}
