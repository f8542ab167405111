// The skeleton of the bridge table: what every generation has whatever its
// ports (and, while some port has L3 rules of a family, that family's table).
//
//   chain pre  { type filter hook prerouting priority -300; policy accept;
//     [iifname vmap @mark_in]                  ports with L3 rules: mark
//     [ether type ... @fast_ip4 accept ...]     the optimizer's fast paths (opt/fast-base.ts)
//     iifname vmap @from_vm                     a protected port: its chains
//     iifname "vnet*" [ibrname @bridges-H] goto drop-out-unprotected
//                                               (several tap patterns: iifname @taps-H)
//   }
//   chain post { type filter hook postrouting priority 300; policy accept;
//     oifname vmap @to_vm
//     oifname "vnet*" [obrname @bridges-H] goto drop-in-unprotected
//   }
//   [chain lrn_snoop { type filter hook postrouting priority 301; ... }]
//                                              only while a port learns from DHCPACKs in nft
//                                              (`snoop`, learn.ts): otherwise every frame to a
//                                              VM would pay one more hook for nothing
//
// Fail closed: a frame from or to a bridge port whose name matches the tap
// patterns and that has no entry in the dispatch maps is dropped and counted
// as `unprotected`. Every port nwf-fast knows has an entry in both maps: a
// jump to its chains, `accept` for a direction without rules (or whose rules
// the eBPF programs enforce alone), or a goto to the unprotected drop chain
// for a port whose policy failed to compile.
//
// The eBPF gate (`gate: true`, --backend bpf and both): the programs on a
// tap enforce its policy (all of it under bpf, the L2 tests nft leaves out
// under both), so nftables must let a port's frames on only while they come
// from or go to the tap instance those programs are attached to. A tap
// deleted and re-created outside nwf-fast (same name, no program) must not
// inherit the port's accept:
//   set gate-on { type ifname . iface_index; }        persistent, host-managed
//   map gate_from_vm { type ifname : verdict; }       the port's verdict behind the gate
//   chain gatec-out {
//     iifname . meta iif @gate-on iifname vmap @gate_from_vm
//     goto drop-out-unprotected
//   }
//   (gatec-in, gate_to_vm: the same with oifname . meta oif)
// The dispatch entry of a port with programs is `goto gatec-<dir>`; its
// verdict (accept under bpf, its policy under both) is its entry in
// gate_<dir>_vm. The host adds `tap . ifindex` to gate-on right after it
// attached the programs to that ifindex and removes it when it detaches
// them or the port goes (host/bpf-apply.ts): until then the port's frames
// drop, counted as unprotected (fail closed). The kernel allocates ifindexes
// cyclically (never the lowest free one), so a re-created tap gets a new
// ifindex and never carries an old element's in practice; the name in the
// key makes an index taken over by another device match nothing either.
// Drift checks ignore gate-on's elements (host state, like learned
// addresses); `status` checks them against the taps.
//
// Drops: every rule that drops goes to the drop chain of its direction and
// reason:
//   chain drop-out-mac_spoof { iifname @cnt-out-mac_spoof drop; counter name dropc-out-mac_spoof drop }
// The counting set holds each port's name with a counter per element (the
// port's drops for that reason; a lookup that finds the element counts it);
// a frame whose port has no element is still dropped, by the second rule,
// and counted there. The counting sets and counters keep their names (and
// counts) across loads. They are plain sets, not verdict maps: the kernel
// walks every element of every verdict map when it checks the ruleset for
// loops after a change that adds a jump, and these sets hold every port.
import { CODES, NwfError } from '../../util/errors.js';
import { DIRECTIONS, type Direction } from '../../ir/types.js';
import { add, concat, counterRef, del, drop, goto, match, meta, num, setRef, str, tuple, vmap } from './build.js';
import type { NftCommand, Statement } from './model.js';
import { BASE_CHAINS, COUNT_REASONS, FIXED, nftNames, type CountReason } from './names.js';
import { br } from './l2.js';
import { learnedSkeleton, portSnoops, snoopBaseChain } from './learn.js';
import type { PortPart } from './parts.js';
import { appendAll } from '../../util/arrays.js';
import { BRIDGE_PRE_PRIORITY, l3BridgeSkeleton, l3FamilySkeleton, type L3Family } from './l3.js';
import { FAST_KINDS, fastBaseSkeleton, type FastKind } from './opt/fast-base.js';

export const BRIDGE_POST_PRIORITY = 300;

export interface SkeletonConfig {
  /** Names of the ports nwf-fast protects: a name, or a prefix followed by `*`. Default `vnet*`. */
  tapPatterns: readonly string[];
  /** Bridges nwf-fast manages (empty: every bridge). */
  bridges: readonly string[];
  /**
   * Whether the kernel matches `meta ibrname`/`obrname` in the bridge
   * family (CONFIG_NFT_BRIDGE_META). Without it the unprotected-port rule
   * applies to every bridge (stricter than asked: said by the host).
   */
  bridgeMeta: boolean;
  /** The eBPF gate (see the module comment): --backend bpf and both. */
  gate?: boolean;
  /**
   * Kinds of frames whose fast paths are hoisted into `pre` (the optimizer's
   * fast-base pass, opt/fast-base.ts): their sets and rules, filled by the
   * ports; a set a port puts elements in must be here. Absent: none; the
   * default: all (IPv4, ARP, IPv6), whichever the ports fill, as a host
   * loads them.
   */
  fastBase?: readonly FastKind[];
  /**
   * The dhcp snoop base chain `lrn_snoop` and its map (learn.ts): some port
   * learns from DHCPACKs in nft (CTRL_IP_LEARNING=dhcp, nft is its learner).
   * Set from the ports (withSnoop), never configured.
   */
  snoop?: boolean;
}

export const DEFAULT_SKELETON_CONFIG: SkeletonConfig = { tapPatterns: ['vnet*'], bridges: [], bridgeMeta: true, fastBase: FAST_KINDS };

/**
 * `cfg` with `snoop` as `ports` need it: the snoop base chain exists exactly
 * while a port's part sends its DHCPACKs to its snoop chain (portSnoops).
 */
export function withSnoop(cfg: SkeletonConfig, ports: Iterable<Pick<PortPart, 'learn' | 'commands'>>): SkeletonConfig {
  const { snoop: _was, ...rest } = cfg;
  for (const p of ports) if (portSnoops(p)) return { ...rest, snoop: true };
  return rest;
}

const IFNAME_PATTERN_RE = /^[^*?[\]\s"\\/]{1,15}\*?$/;

/** Checks tap patterns: nftables matches a name or a prefix followed by `*` (a wildcard element). */
export function checkTapPatterns(patterns: readonly string[]): void {
  for (const p of patterns) {
    if (!IFNAME_PATTERN_RE.test(p) || Buffer.byteLength(p) > 15 || p === '*') {
      throw new NwfError(CODES.VALUE_INVALID, `tap pattern '${p}' cannot be matched by nftables`, {
        expected: 'an interface name, or a prefix of one followed by * (e.g. vnet*, tap*), at most 15 bytes',
      });
    }
  }
}

const ifKey = (dir: Direction) => meta(dir === 'out' ? 'iifname' : 'oifname');
const ifIndexKey = (dir: Direction) => meta(dir === 'out' ? 'iif' : 'oif');

/** The map of the verdicts behind the gate, per direction. */
export const gateMap = (dir: Direction): string => (dir === 'out' ? FIXED.gateFromVm : FIXED.gateToVm);

/** The gate's maps and chains (see the module comment; its set is persistent, declared with the other persistent objects). */
function gateObjects(): NftCommand[] {
  const out: NftCommand[] = [];
  for (const dir of DIRECTIONS) {
    const chain = nftNames.gateChain(dir);
    out.push(
      add(br.verdictMap(gateMap(dir), 'ifname')),
      add(br.chain(chain)),
      add(br.rule(chain, [match(concat(ifKey(dir), ifIndexKey(dir)), '==', setRef(nftNames.gateSet())), vmap(ifKey(dir), gateMap(dir))], 'the tap instance its eBPF programs are attached to: its verdict')),
      add(br.rule(chain, [goto(nftNames.dropChain(dir, 'unprotected'))], 'a tap without its eBPF programs (re-created, not attached yet): unprotected, dropped')),
    );
  }
  return out;
}

/**
 * The host's change of the gate's elements (tap instances, see the module
 * comment): additions, then removals, each removal preceded by an addition of
 * the same element so that it cannot fail on an element that is not there
 * (nft 1.0.6 has no `destroy`). `add` and `remove` must not share elements.
 */
export function gateElementCommands(addOn: readonly { iface: string; ifindex: number }[], remove: readonly { iface: string; ifindex: number }[]): NftCommand[] {
  const item = (x: { iface: string; ifindex: number }) => tuple(str(x.iface), num(x.ifindex));
  const out: NftCommand[] = [];
  if (addOn.length) out.push(add(br.element(nftNames.gateSet(), addOn.map(item))));
  if (remove.length) out.push(add(br.element(nftNames.gateSet(), remove.map(item))), del(br.element(nftNames.gateSet(), remove.map(item))));
  return out;
}

/** The drop chain of a direction and reason (see the module comment). */
function dropChain(dir: Direction, reason: CountReason): NftCommand[] {
  const name = nftNames.dropChain(dir, reason);
  return [
    add(br.chain(name)),
    add(br.rule(name, [match(ifKey(dir), '==', setRef(nftNames.countMap(dir, reason))), drop()], `a ${reason} drop of the port, counted`)),
    add(br.rule(name, [counterRef(nftNames.dropCounter(dir, reason)), drop()], `a ${reason} drop of a port without its counter`)),
  ];
}

/** The skeleton commands (unordered: load-plan orders a batch) for a configuration and the L3 families in use. */
export function lowerSkeleton(cfg: SkeletonConfig, families: readonly L3Family[]): NftCommand[] {
  checkTapPatterns(cfg.tapPatterns);
  const out: NftCommand[] = [add(br.table)];
  out.push(add(br.baseChain(BASE_CHAINS.bridgePre, { type: 'filter', hook: 'prerouting', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })));
  out.push(add(br.baseChain(BASE_CHAINS.bridgePost, { type: 'filter', hook: 'postrouting', prio: BRIDGE_POST_PRIORITY, policy: 'accept' })));
  if (cfg.snoop) out.push(snoopBaseChain());
  for (const dir of DIRECTIONS) {
    for (const reason of COUNT_REASONS) {
      out.push(add(br.counter(nftNames.dropCounter(dir, reason))));
      out.push(add(br.set(nftNames.countMap(dir, reason), 'ifname', undefined, { counter: true })));
      out.push(...dropChain(dir, reason));
    }
  }
  // persistent objects before the ones a load replaces: a table built anew lists them in the order a reloaded one does
  appendAll(out, learnedSkeleton(cfg.snoop === true));
  if (cfg.gate) out.push(add(br.set(nftNames.gateSet(), ['ifname', 'iface_index'])));
  out.push(add(br.verdictMap(FIXED.fromVm, 'ifname')), add(br.verdictMap(FIXED.toVm, 'ifname')));
  if (cfg.gate) appendAll(out, gateObjects());
  // one pattern (the default, vnet*): the name compared with it directly (a prefix compare), which every
  // frame from or to a port that is no VM pays, instead of a lookup in an interval set; several: the set
  const single = cfg.tapPatterns.length === 1 ? (cfg.tapPatterns[0] as string) : undefined;
  const taps = nftNames.configSet('taps', cfg.tapPatterns);
  if (single === undefined) out.push(add(br.set(taps, 'ifname', cfg.tapPatterns.map(str), { flags: ['interval'] })));
  const managed = cfg.bridges.length > 0 && cfg.bridgeMeta;
  const bridges = nftNames.configSet('bridges', cfg.bridges);
  if (managed) out.push(add(br.set(bridges, 'ifname', cfg.bridges.map(str))));
  const unprotected = (dir: Direction): Statement[] => {
    const bridge = managed ? [match(meta(dir === 'out' ? 'ibrname' : 'obrname'), '==', setRef(bridges))] : [];
    const drop = goto(nftNames.dropChain(dir, 'unprotected'));
    // the cheaper test first (a conjunction: the order changes no outcome)
    if (single !== undefined) return [match(ifKey(dir), '==', str(single)), ...bridge, drop];
    return [...bridge, match(ifKey(dir), '==', setRef(taps)), drop];
  };
  if (families.length) {
    const l3 = l3BridgeSkeleton();
    out.push(...l3.objects, l3.preRule);
  }
  // after the L3 mark (a frame it accepts is still marked), before the dispatch
  const fast = fastBaseSkeleton(cfg.fastBase ?? []);
  appendAll(out, fast.sets);
  appendAll(out, fast.rules);
  out.push(
    add(br.rule(BASE_CHAINS.bridgePre, [vmap(meta('iifname'), FIXED.fromVm)], 'traffic from the VMs')),
    add(br.rule(BASE_CHAINS.bridgePre, unprotected('out'), 'a VM port without an entry: unprotected, dropped')),
    add(br.rule(BASE_CHAINS.bridgePost, [vmap(meta('oifname'), FIXED.toVm)], 'traffic to the VMs')),
    add(br.rule(BASE_CHAINS.bridgePost, unprotected('in'), 'a VM port without an entry: unprotected, dropped')),
  );
  for (const f of families) appendAll(out, l3FamilySkeleton(f));
  return out;
}
