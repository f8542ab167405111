// The skeleton of the bridge table: what every generation has whatever its
// ports (and, while some port has L3 rules of a family, that family's table).
//
//   chain pre  { type filter hook prerouting priority -300; policy accept;
//     [iifname vmap @mark_in]                  ports with L3 rules: mark
//     iifname vmap @from_vm                     a protected port: its chains
//     [ibrname @bridges-H] iifname @taps-H goto drop-out-unprotected
//   }
//   chain post { type filter hook postrouting priority 300; policy accept;
//     oifname vmap @to_vm
//     [obrname @bridges-H] oifname @taps-H goto drop-in-unprotected
//   }
//
// Fail closed: a frame from or to a bridge port whose name matches the tap
// patterns and that has no entry in the dispatch maps is dropped and counted
// as `unprotected`. Every port nwf-fast knows has an entry in both maps: a
// jump to its chains, `accept` for a direction without rules (or whose rules
// the eBPF programs enforce alone), or a goto to the unprotected drop chain
// for a port whose policy failed to compile.
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
import { add, counterRef, drop, goto, match, meta, setRef, str, vmap } from './build.js';
import type { NftCommand, Statement } from './model.js';
import { BASE_CHAINS, COUNT_REASONS, FIXED, nftNames, type CountReason } from './names.js';
import { br } from './l2.js';
import { learnedSkeleton } from './learn.js';
import { appendAll } from '../../util/arrays.js';
import { BRIDGE_PRE_PRIORITY, l3BridgeSkeleton, l3FamilySkeleton, type L3Family } from './l3.js';

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
}

export const DEFAULT_SKELETON_CONFIG: SkeletonConfig = { tapPatterns: ['vnet*'], bridges: [], bridgeMeta: true };

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
  for (const dir of DIRECTIONS) {
    for (const reason of COUNT_REASONS) {
      out.push(add(br.counter(nftNames.dropCounter(dir, reason))));
      out.push(add(br.set(nftNames.countMap(dir, reason), 'ifname', undefined, { counter: true })));
      out.push(...dropChain(dir, reason));
    }
  }
  // persistent objects before the ones a load replaces: a table built anew lists them in the order a reloaded one does
  appendAll(out, learnedSkeleton());
  out.push(add(br.verdictMap(FIXED.fromVm, 'ifname')), add(br.verdictMap(FIXED.toVm, 'ifname')));
  const taps = nftNames.configSet('taps', cfg.tapPatterns);
  out.push(add(br.set(taps, 'ifname', cfg.tapPatterns.map(str), { flags: ['interval'] })));
  const managed = cfg.bridges.length > 0 && cfg.bridgeMeta;
  const bridges = nftNames.configSet('bridges', cfg.bridges);
  if (managed) out.push(add(br.set(bridges, 'ifname', cfg.bridges.map(str))));
  const unprotected = (dir: Direction): Statement[] => [
    ...(managed ? [match(meta(dir === 'out' ? 'ibrname' : 'obrname'), '==', setRef(bridges))] : []),
    match(ifKey(dir), '==', setRef(taps)),
    goto(nftNames.dropChain(dir, 'unprotected')),
  ];
  if (families.length) {
    const l3 = l3BridgeSkeleton();
    out.push(...l3.objects, l3.preRule);
  }
  out.push(
    add(br.rule(BASE_CHAINS.bridgePre, [vmap(meta('iifname'), FIXED.fromVm)], 'traffic from the VMs')),
    add(br.rule(BASE_CHAINS.bridgePre, unprotected('out'), 'a VM port without an entry: unprotected, dropped')),
    add(br.rule(BASE_CHAINS.bridgePost, [vmap(meta('oifname'), FIXED.toVm)], 'traffic to the VMs')),
    add(br.rule(BASE_CHAINS.bridgePost, unprotected('in'), 'a VM port without an entry: unprotected, dropped')),
  );
  for (const f of families) appendAll(out, l3FamilySkeleton(f));
  return out;
}
