// Lowering libvirt's iptables layer (the FI/FO/HI chains) through
// br_netfilter: the bridge table marks IP frames of ports that have L3 rules
// with the port ids (prerouting: source port, forward: destination port), and
// an `ip` / `ip6` table `nwf_fast` dispatches on those marks with `ct state`
// available, exactly where libvirt's iptables and ip6tables chains ran.
import { assertNever } from '../../util/errors.js';
import { dropReason } from '../../ir/reasons.js';
import type { InterfacePolicy, L3Path, L3Rule } from '../../ir/types.js';
import { L3_PATHS } from '../../ir/types.js';
import { l4MatchHeaderSize } from '../../ir/facts.js';
import { accept, add, bitAnd, ct, drop, eq, hex, jump, match, meta, nftTable, payload, range, raw, setMark, setOf, setRef, str, sym, vmap } from './build.js';
import type { NftCommand, Statement, Verdict } from './model.js';
import { BASE_CHAINS, dropCounter, INET_TABLE, type NftNames } from './names.js';
import { cmp, ipPrefix, macMatch, portRange, ruleComment, unsupported } from './match.js';
import { br } from './l2.js';
import { appendAll } from '../../util/arrays.js';

export const BRIDGE_PRE_PRIORITY = -300;
/** Mark layout for the br_netfilter route: 0x8000_0000 | in-id << 16, and 0x8000 | out-id. */
export const MARK_IN_MASK = 0xffff0000;
export const MARK_OUT_MASK = 0x0000ffff;
export const MAX_L3_PORTS = 0x7fff;

const STATE_SYMBOL: Record<string, string> = { NEW: 'new', ESTABLISHED: 'established', RELATED: 'related', INVALID: 'invalid' };

/**
 * One libvirt iptables rule as nft rules: the rule itself, preceded, when it
 * has an L4 port/flags/type test, by a rule sending packets that pass its
 * address tests through a check of the protocol header's length (iptables
 * drops a packet whose header that match cannot read).
 */
export function lowerL3Rule(r: L3Rule, path: L3Path, iface: string, names: NftNames, counters: Set<string>, checks?: Set<number>): Statement[][] {
  const s: Statement[] = [];
  const v4 = r.family === 'ipv4';
  if (r.protocol !== 'all') s.push(eq(meta('l4proto'), r.protocol));
  if (r.srcMac) s.push(macMatch(payload('ether', 'saddr'), r.srcMac));
  const ipp = v4 ? 'ip' : 'ip6';
  if (r.srcIp) s.push(ipPrefix(payload(ipp, 'saddr'), r.srcIp));
  if (r.dstIp) s.push(ipPrefix(payload(ipp, 'daddr'), r.dstIp));
  if (r.srcRange) s.push(cmp(payload(ipp, 'saddr'), r.srcRange.neg, range(sym(r.srcRange.from), sym(r.srcRange.to))));
  if (r.dstRange) s.push(cmp(payload(ipp, 'daddr'), r.dstRange.neg, range(sym(r.dstRange.from), sym(r.dstRange.to))));
  if (r.dscp) s.push(cmp(payload(ipp, 'dscp'), r.dscp.neg, r.dscp.value));
  const rules: Statement[][] = [];
  const size = l4MatchHeaderSize(r);
  if (size !== undefined) {
    checks?.add(size);
    rules.push([...s, jump(names.l4Check(size))]);
  }
  if (r.srcPort) s.push(portRange(raw('th', 0, 16), r.srcPort));
  if (r.dstPort) s.push(portRange(raw('th', 16, 16), r.dstPort));
  if (r.tcpFlags) s.push(cmp(bitAnd(raw('th', 104, 8), hex(r.tcpFlags.mask)), r.tcpFlags.neg, hex(r.tcpFlags.set)));
  if (r.tcpOption) unsupported(r, 'a TCP option match', iface);
  if (r.icmp) {
    if (r.icmp.neg && r.icmp.code !== undefined) unsupported(r, 'a negated ICMP type/code match', iface);
    s.push(cmp(raw('th', 0, 8), r.icmp.neg, r.icmp.type));
    if (r.icmp.code !== undefined) s.push(eq(raw('th', 8, 8), r.icmp.code));
  }
  if (r.state) s.push(eq(ct('state'), setOf(...r.state.map((x) => sym(STATE_SYMBOL[x] as string)))));
  if (r.ctDir) s.push(eq(ct('direction'), sym(r.ctDir)));
  if (r.connlimitAbove) s.push({ kind: 'ct-count', val: r.connlimitAbove.value, ...(r.connlimitAbove.neg ? {} : { inv: true }) });
  switch (r.verdict) {
    case 'accept':
      // FI/HI: libvirt's accept is RETURN (the destination's FO chain still runs); FO: ACCEPT.
      s.push(path === 'toVm' ? accept() : { kind: 'return' });
      break;
    case 'return':
      s.push({ kind: 'return' });
      break;
    case 'drop':
    case 'reject': {
      const c = dropCounter(iface, dropReason(r.origin));
      counters.add(c);
      s.push({ kind: 'counter-ref', name: c }, drop());
      break;
    }
    case 'continue':
      s.push({ kind: 'continue' });
      break;
    default:
      return assertNever(r.verdict, 'L3 verdict');
  }
  rules.push(s);
  return rules;
}

/** The L3 part of a generation, in the places the table layout puts it (lower.ts). */
export interface L3Lowering {
  /** Bridge table: the set of L3 ports and each port's mark chains. */
  bridgeObjects: NftCommand[];
  /** Bridge table: the mark dispatch maps (after the mark chains). */
  bridgeMaps: NftCommand[];
  /** Bridge table: the forward base chain that marks frames to L3 ports. */
  bridgeRules: NftCommand[];
  /** Bridge table: the prerouting rule that marks frames from L3 ports (before the L2 dispatch). */
  preRule: NftCommand[];
  /** The ip and ip6 tables, complete. */
  tables: NftCommand[];
}

/** Lowers the L3 rules of `ports` (the interfaces that have any), port ids from `markId`. */
export function lowerL3(ports: readonly InterfacePolicy[], markId: ReadonlyMap<string, number>, names: NftNames): L3Lowering {
  const out: L3Lowering = { bridgeObjects: [], bridgeMaps: [], bridgeRules: [], preRule: [], tables: [] };
  if (!ports.length) return out;
  const idOf = (p: InterfacePolicy): number => markId.get(p.iface) as number;
  const N = names.bridge;
  out.bridgeObjects.push(add(br.set(N.l3Ports, 'ifname', ports.map((p) => str(p.iface)))));
  out.bridgeMaps.push(
    add(br.verdictMap(N.markInMap, 'ifname', ports.map((p) => [str(p.iface), jump(names.markChain('in', p.iface))] as const))),
    add(br.verdictMap(N.markOutMap, 'ifname', ports.map((p) => [str(p.iface), jump(names.markChain('out', p.iface))] as const))),
  );
  out.bridgeRules.push(
    add(br.baseChain(BASE_CHAINS.bridgeMark, { type: 'filter', hook: 'forward', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })),
    add(br.rule(BASE_CHAINS.bridgeMark, [match(meta('iifname'), '!=', setRef(N.l3Ports)), match(meta('oifname'), '==', setRef(N.l3Ports)), setMark(0)], 'clear the mark of frames to a port with L3 rules')),
    add(br.rule(BASE_CHAINS.bridgeMark, [vmap(meta('oifname'), N.markOutMap)])),
  );
  out.preRule.push(add(br.rule(BASE_CHAINS.bridgePre, [vmap(meta('iifname'), N.markInMap)], 'mark frames of ports with L3 rules')));
  for (const p of ports) {
    const id = idOf(p);
    out.bridgeObjects.push(add(br.chain(names.markChain('in', p.iface))), add(br.rule(names.markChain('in', p.iface), [setMark((0x8000 | id) * 0x10000)])));
    out.bridgeObjects.push(
      add(br.chain(names.markChain('out', p.iface))),
      add(br.rule(names.markChain('out', p.iface), [setMark({ kind: 'binop', op: '|', left: bitAnd(meta('mark'), hex(MARK_IN_MASK)), right: hex(0x8000 | id) })])),
    );
  }
  // ip and ip6 tables: libvirt's libvirt-in / libvirt-out / libvirt-host-in. One table per
  // family, so connection tracking (and its defragmentation) is only enabled for a family
  // whose rules use it, as with libvirt's iptables and ip6tables.
  for (const family of ['ipv4', 'ipv6'] as const) {
    const t = nftTable(family === 'ipv4' ? 'ip' : 'ip6', INET_TABLE);
    const members = ports.filter((p) => L3_PATHS.some((k) => p.l3[k].some((r) => r.family === family)));
    if (!members.length) continue;
    const chains: NftCommand[] = [];
    const counters = new Set<string>();
    const checks = new Set<number>();
    const maps: Record<L3Path, [number, Verdict][]> = { fromVm: [], toVm: [], toHost: [] };
    for (const p of members) {
      const id = idOf(p);
      for (const path of L3_PATHS) {
        const chain = names.l3Chain(path, p.iface);
        chains.push(add(t.chain(chain)));
        for (const r of p.l3[path].filter((x) => x.family === family)) {
          for (const st of lowerL3Rule(r, path, p.iface, names, counters, checks)) chains.push(add(t.rule(chain, st, ruleComment(r))));
        }
        maps[path].push([path === 'toVm' ? 0x8000 | id : (0x8000 | id) * 0x10000, jump(chain)]);
      }
    }
    const head: NftCommand[] = [add(t.table)];
    for (const c of [...counters].sort()) head.push(add(t.counter(c)));
    head.push(add(t.baseChain(BASE_CHAINS.l3Forward, { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' })));
    head.push(add(t.baseChain(BASE_CHAINS.l3Input, { type: 'filter', hook: 'input', prio: 0, policy: 'accept' })));
    for (const size of [...checks].sort((a, b) => a - b)) {
      const chain = names.l4Check(size);
      head.push(add(t.chain(chain)));
      head.push(add(t.rule(chain, [match(raw('th', (size - 1) * 8, 8), '>=', 0), { kind: 'return' }], `the ${size}-byte protocol header is complete`)));
      head.push(add(t.rule(chain, [drop()], 'truncated protocol header: iptables drops it')));
    }
    const mapFor = (name: string, path: L3Path) => add(t.verdictMap(name, 'mark', maps[path].map(([k, v]) => [hex(k), v] as const)));
    const I = names.inet;
    appendAll(appendAll(out.tables, head), chains);
    out.tables.push(
      mapFor(I.fromVmMap, 'fromVm'),
      mapFor(I.toVmMap, 'toVm'),
      mapFor(I.toHostMap, 'toHost'),
      add(t.rule(BASE_CHAINS.l3Forward, [vmap(bitAnd(meta('mark'), hex(MARK_IN_MASK)), I.fromVmMap)], 'libvirt-in: FI of the source port')),
      add(t.rule(BASE_CHAINS.l3Forward, [vmap(bitAnd(meta('mark'), hex(MARK_OUT_MASK)), I.toVmMap)], 'libvirt-out: FO of the destination port')),
      add(t.rule(BASE_CHAINS.l3Input, [vmap(bitAnd(meta('mark'), hex(MARK_IN_MASK)), I.toHostMap)], 'libvirt-host-in: HI of the source port')),
    );
  }
  return out;
}
