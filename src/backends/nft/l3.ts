// Lowering libvirt's iptables layer (the FI/FO/HI chains) through
// br_netfilter: the bridge table marks IP frames of ports that have L3 rules
// with the port ids (prerouting: source port, forward: destination port), and
// an `ip` / `ip6` table `nwf_fast` dispatches on those marks with `ct state`
// available, exactly where libvirt's iptables and ip6tables chains ran.
//
// A port's L3 part has two pieces: its chains and rules (lowerL3Port, from
// its policy alone) and what depends on its port id, which the host
// allocates and keeps across loads (markCommands). The tables, base chains
// and dispatch maps are the skeleton's (skeleton.ts).
import { assertNever, CODES, NwfError } from '../../util/errors.js';
import { dropReason } from '../../ir/reasons.js';
import type { InterfacePolicy, IpTest, L3Path, L3Rule } from '../../ir/types.js';
import { L3_PATHS } from '../../ir/types.js';
import { l4MatchHeaderSize } from '../../ir/facts.js';
import { L4_HEADER_SIZE } from '../../ir/values.js';
import { accept, add, binop, bitAnd, ct, drop, eq, hex, jump, match, meta, nftTable, payload, range, raw, setMark, setOf, setRef, str, sym, vmap } from './build.js';
import type { NftCommand, Statement } from './model.js';
import { BASE_CHAINS, FIXED, INET_TABLE, nftNames } from './names.js';
import { cmp, ipPrefix, macMatch, portRange, ruleComment, unsupported } from './match.js';
import { br } from './l2.js';
import { learnedMatch } from './learn.js';
import { appendAll } from '../../util/arrays.js';
import { ETHERTYPES } from '../../ir/values.js';

export const BRIDGE_PRE_PRIORITY = -300;
/**
 * Mark layout for the br_netfilter route (layout MARK_LAYOUT). The high half
 * is the source port's, the low half the destination port's; each half is
 *   bit 15       set: a port id follows (0x8000)
 *   bit 14       daddr is the port's learned address (IP learning)
 *   bit 13       saddr is the port's learned address
 *   bits 12..0   the port id, 1..MAX_L3_PORTS
 * The learned bits are decided in the bridge table, which holds the learned
 * state (learn.ts lrn-addr), and tested by the ip table's rules of the port
 * (a learned `$IP`): see markCommands.
 */
export const MARK_IN_MASK = 0xffff0000;
export const MARK_OUT_MASK = 0x0000ffff;
/** The port-id part of each half (the key of the ip tables' mark dispatch maps). */
export const MARK_IN_ID_MASK = 0x9fff0000;
export const MARK_OUT_ID_MASK = 0x00009fff;
/** At most this many ports with L3 rules (13-bit port ids; the limit is NWF1402). */
export const MAX_L3_PORTS = 0x1fff;
/** The learned-address bits of each half. */
export const MARK_LEARNED = {
  in: { saddr: 0x20000000, daddr: 0x40000000 },
  out: { saddr: 0x00002000, daddr: 0x00004000 },
} as const;
/** The version of the mark layout (a host that recorded another one is reloaded whole, port ids anew). */
export const MARK_LAYOUT = 2;

const STATE_SYMBOL: Record<string, string> = { NEW: 'new', ESTABLISHED: 'established', RELATED: 'related', INVALID: 'invalid' };

/**
 * One libvirt iptables rule as nft rules: the rule itself, preceded, when it
 * has an L4 port/flags/type test, by a rule sending packets that pass its
 * address tests through a check of the protocol header's length (iptables
 * drops a packet whose header that match cannot read).
 */
export function lowerL3Rule(r: L3Rule, path: L3Path, iface: string, counters: Set<string>): Statement[][] {
  const s: Statement[] = [];
  const v4 = r.family === 'ipv4';
  if (r.protocol !== 'all') s.push(eq(meta('l4proto'), r.protocol));
  if (r.srcMac) s.push(macMatch(payload('ether', 'saddr'), r.srcMac));
  const ipp = v4 ? 'ip' : 'ip6';
  const ip = (field: 'saddr' | 'daddr', t: IpTest): Statement => (t.learned ? learnedMarkTest(path, field, t) : ipPrefix(payload(ipp, field), t));
  if (r.srcIp) s.push(ip('saddr', r.srcIp));
  if (r.dstIp) s.push(ip('daddr', r.dstIp));
  if (r.srcRange) s.push(cmp(payload(ipp, 'saddr'), r.srcRange.neg, range(sym(r.srcRange.from), sym(r.srcRange.to))));
  if (r.dstRange) s.push(cmp(payload(ipp, 'daddr'), r.dstRange.neg, range(sym(r.dstRange.from), sym(r.dstRange.to))));
  if (r.dscp) s.push(cmp(payload(ipp, 'dscp'), r.dscp.neg, r.dscp.value));
  const rules: Statement[][] = [];
  const size = l4MatchHeaderSize(r);
  if (size !== undefined) rules.push([...s, jump(nftNames.l4Check(size))]);
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
      const c = nftNames.l3Counter(iface, dropReason(r.origin));
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

/**
 * A learned `$IP` test of an L3 rule: the bit the bridge table set when the
 * field is the port's learned address (the source port's for FI and HI, the
 * destination port's for FO). A port still learning has no mark at all, so
 * its L3 chains are not reached. A mask other than /32 is refused before
 * (learn.ts checkLearnedL3).
 */
export function learnedMarkTest(path: L3Path, field: 'saddr' | 'daddr', t: IpTest): Statement {
  const bit = MARK_LEARNED[path === 'toVm' ? 'out' : 'in'][field];
  return eq(bitAnd(meta('mark'), hex(bit)), hex(t.neg ? 0 : bit));
}

export type L3Family = 'ipv4' | 'ipv6';
export const L3_FAMILIES: readonly L3Family[] = ['ipv4', 'ipv6'];

export const inetTable = (family: L3Family) => nftTable(family === 'ipv4' ? 'ip' : 'ip6', INET_TABLE);

/** Whether a port has L3 rules (it then needs a port id and the mark chains). */
export function hasL3(p: InterfacePolicy): boolean {
  return L3_PATHS.some((k) => p.l3[k].length > 0);
}

/** A port's L3 chains, rules and drop counters (named by port, not by port id), and the families they are in. */
export function lowerL3Port(p: InterfacePolicy): { commands: NftCommand[]; families: L3Family[] } {
  const commands: NftCommand[] = [];
  const families: L3Family[] = [];
  for (const family of L3_FAMILIES) {
    if (!L3_PATHS.some((k) => p.l3[k].some((r) => r.family === family))) continue;
    families.push(family);
    const t = inetTable(family);
    const counters = new Set<string>();
    const chains: NftCommand[] = [];
    for (const path of L3_PATHS) {
      const chain = nftNames.l3Chain(path, p.iface);
      chains.push(add(t.chain(chain)));
      for (const r of p.l3[path].filter((x) => x.family === family)) {
        for (const st of lowerL3Rule(r, path, p.iface, counters)) chains.push(add(t.rule(chain, st, ruleComment(r))));
      }
    }
    for (const c of [...counters].sort()) commands.push(add(t.counter(c)));
    appendAll(commands, chains);
  }
  return { commands, families };
}

/** Mark values of port id `id`: the source port in the high half, the destination port in the low half. */
export const markOf = {
  from: (id: number): number => (0x8000 | id) * 0x10000,
  to: (id: number): number => 0x8000 | id,
};

const orMark = (bit: number): Statement => setMark(binop('|', meta('mark'), hex(bit)));
const ipv4Frame = (): Statement => eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4));

/**
 * The mark rules of a learning port (IP learning), side `in` (prerouting:
 * the frame's source port, iifname) or `out` (forward: its destination
 * port, oifname). Until the port is locked it sets no mark of its own (its
 * L3 rules do not apply while it learns, as libvirt tears its iptables
 * rules down); once locked, its id, then a bit for each of ip saddr and ip
 * daddr that is the port's learned address (lrn-addr, which the packet path
 * or nwf-fast's copy from the eBPF programs fills with lrn-locked, in one
 * step; a dhcp port's leases are its own lease set, `leasesOf` the port).
 */
function learningMarkRules(side: 'in' | 'out', idMark: Statement, leasesOf?: string): { rule: Statement[]; comment: string }[] {
  const dir = side === 'in' ? 'out' : 'in'; // the bridge table's direction of the port (from / to the VM)
  const port = meta(side === 'in' ? 'iifname' : 'oifname');
  const bits = MARK_LEARNED[side];
  const none = side === 'in' ? setMark(0) : setMark(bitAnd(meta('mark'), hex(MARK_IN_MASK)));
  return [
    { rule: [match(port, '!=', setRef(nftNames.learnedLocked())), none, { kind: 'return' }], comment: 'learning: no L3 rules until the port is locked' },
    { rule: [idMark], comment: 'locked: the port id' },
    { rule: [ipv4Frame(), learnedMatch(dir, payload('ip', 'saddr'), false, leasesOf), orMark(bits.saddr)], comment: 'ip saddr is the learned address' },
    { rule: [ipv4Frame(), learnedMatch(dir, payload('ip', 'daddr'), false, leasesOf), orMark(bits.daddr)], comment: 'ip daddr is the learned address' },
  ];
}

/**
 * What a port with L3 rules has under its port id: its entry in the set of L3
 * ports, its mark chains and their dispatch entries in the bridge table, and
 * its entries in the mark dispatch maps of each family's table. A learning
 * port's mark chains mark only once it is locked, with its learned-address
 * bits (learningMarkRules).
 */
export function markCommands(iface: string, id: number, families: readonly L3Family[], learning: boolean | 'dhcp' = false): NftCommand[] {
  if (id < 1 || id > MAX_L3_PORTS || !Number.isInteger(id)) throw new NwfError(CODES.POLICY_UNSUPPORTED, `L3 port id ${id} of ${iface} is outside 1..${MAX_L3_PORTS}: at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`, { iface });
  const out: NftCommand[] = [];
  const mkIn = nftNames.markChain('in', iface);
  const mkOut = nftNames.markChain('out', iface);
  const inMark = setMark(markOf.from(id));
  const outMark = setMark(binop('|', bitAnd(meta('mark'), hex(MARK_IN_MASK)), hex(markOf.to(id))));
  out.push(add(br.chain(mkIn)), add(br.chain(mkOut)));
  if (learning) {
    const leasesOf = learning === 'dhcp' ? iface : undefined;
    for (const r of learningMarkRules('in', inMark, leasesOf)) out.push(add(br.rule(mkIn, r.rule, r.comment)));
    for (const r of learningMarkRules('out', outMark, leasesOf)) out.push(add(br.rule(mkOut, r.rule, r.comment)));
  } else {
    out.push(add(br.rule(mkIn, [inMark])), add(br.rule(mkOut, [outMark])));
  }
  out.push(add(br.element(FIXED.l3Ports, [str(iface)])));
  out.push(add(br.element(FIXED.markIn, [[str(iface), jump(mkIn)]])), add(br.element(FIXED.markOut, [[str(iface), jump(mkOut)]])));
  for (const family of families) {
    const t = inetTable(family);
    out.push(
      add(t.element(FIXED.fiMap, [[hex(markOf.from(id)), jump(nftNames.l3Chain('fromVm', iface))]])),
      add(t.element(FIXED.foMap, [[hex(markOf.to(id)), jump(nftNames.l3Chain('toVm', iface))]])),
      add(t.element(FIXED.hiMap, [[hex(markOf.from(id)), jump(nftNames.l3Chain('toHost', iface))]])),
    );
  }
  return out;
}

/** The bridge table's L3 preparation (when any port has L3 rules): the mark dispatch maps and the forward chain that marks. */
export function l3BridgeSkeleton(): { objects: NftCommand[]; preRule: NftCommand } {
  return {
    objects: [
      add(br.set(FIXED.l3Ports, 'ifname')),
      add(br.verdictMap(FIXED.markIn, 'ifname')),
      add(br.verdictMap(FIXED.markOut, 'ifname')),
      add(br.baseChain(BASE_CHAINS.bridgeMark, { type: 'filter', hook: 'forward', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })),
      add(br.rule(BASE_CHAINS.bridgeMark, [match(meta('iifname'), '!=', setRef(FIXED.l3Ports)), match(meta('oifname'), '==', setRef(FIXED.l3Ports)), setMark(0)], 'clear the mark of frames to a port with L3 rules')),
      add(br.rule(BASE_CHAINS.bridgeMark, [vmap(meta('oifname'), FIXED.markOut)], 'mark frames to ports with L3 rules')),
    ],
    preRule: add(br.rule(BASE_CHAINS.bridgePre, [vmap(meta('iifname'), FIXED.markIn)], 'mark frames of ports with L3 rules')),
  };
}

/**
 * One family's table: libvirt's libvirt-in / libvirt-out / libvirt-host-in.
 * One table per family, present only while a port has rules of that family,
 * so connection tracking (and its defragmentation) is only enabled for a
 * family whose rules use it, as with libvirt's iptables and ip6tables.
 */
export function l3FamilySkeleton(family: L3Family): NftCommand[] {
  const t = inetTable(family);
  const out: NftCommand[] = [add(t.table)];
  out.push(add(t.baseChain(BASE_CHAINS.l3Forward, { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' })));
  out.push(add(t.baseChain(BASE_CHAINS.l3Input, { type: 'filter', hook: 'input', prio: 0, policy: 'accept' })));
  for (const size of [...new Set(Object.values(L4_HEADER_SIZE))].sort((a, b) => a - b)) {
    const chain = nftNames.l4Check(size);
    out.push(add(t.chain(chain)));
    out.push(add(t.rule(chain, [match(raw('th', (size - 1) * 8, 8), '>=', 0), { kind: 'return' }], `the ${size}-byte protocol header is complete`)));
    out.push(add(t.rule(chain, [drop()], 'truncated protocol header: iptables drops it')));
  }
  out.push(add(t.verdictMap(FIXED.fiMap, 'mark')), add(t.verdictMap(FIXED.foMap, 'mark')), add(t.verdictMap(FIXED.hiMap, 'mark')));
  out.push(
    add(t.rule(BASE_CHAINS.l3Forward, [vmap(bitAnd(meta('mark'), hex(MARK_IN_ID_MASK)), FIXED.fiMap)], 'libvirt-in: FI of the source port')),
    add(t.rule(BASE_CHAINS.l3Forward, [vmap(bitAnd(meta('mark'), hex(MARK_OUT_ID_MASK)), FIXED.foMap)], 'libvirt-out: FO of the destination port')),
    add(t.rule(BASE_CHAINS.l3Input, [vmap(bitAnd(meta('mark'), hex(MARK_IN_ID_MASK)), FIXED.hiMap)], 'libvirt-host-in: HI of the source port')),
  );
  return out;
}
