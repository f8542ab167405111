// Lowering libvirt's ebtables layer: one rule's match, its verdict, the
// guards of jumps into sub-chains, and an interface's own chains (for a
// policy that cannot share chains: own-out-<tap>, own-out-<tap>-<sub>, ...).
//
// libvirt's ebtables user chains ACCEPT when a frame falls off their end; an
// nft `jump` returns instead, so every emitted chain ends with an explicit
// accept. Every drop is a `goto` to the drop chain of its direction and
// reason (skeleton.ts), which counts it for the port and drops it.
import { assertNever, InternalError } from '../../util/errors.js';
import { dropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, IpTest, JumpGuard, L2Match, L2Rule, MacTest, NumTest, RangeTest } from '../../ir/types.js';
import { ETHERTYPE_OF, ETHERTYPES, macToBytes, parseIPv4 } from '../../ir/values.js';
import type { DropReason } from '../../ir/reasons.js';
import { accept, add, bitAnd, eq, goto, hex, jump, match, meta, nftTable, num, payload, range, raw, sym } from './build.js';
import type { NftCommand, Selector, Statement } from './model.js';
import { BRIDGE_TABLE, nftNames } from './names.js';
import { cmp, ipPrefix as plainIpPrefix, macMatch, portRange, ruleComment, unsupported } from './match.js';
import { nftL2Gap } from './second-line.js';
import { learnedMatch } from './learn.js';
import type { LearnMode } from '../../ir/learning.js';

export const br = nftTable('bridge', BRIDGE_TABLE);

/** A raw network-header field as a number (MACs as 48-bit numbers). */
function rawMac(offsetBytes: number, t: MacTest): Statement {
  const sel = raw('nh', offsetBytes * 8, 48);
  const addr = macToBytes(t.addr);
  const mask = t.mask ? macToBytes(t.mask) : new Uint8Array(6).fill(0xff);
  const toNum = (b: Uint8Array): number => [...b].reduce((a, x) => a * 256 + x, 0);
  const full = mask.every((x) => x === 0xff);
  const want = toNum(addr.map((b, i) => b & (mask[i] as number)));
  return cmp(full ? sel : bitAnd(sel, hex(toNum(mask))), t.neg, hex(want));
}

function rawIp4Const(offsetBytes: number, t: IpTest): Statement {
  const sel = raw('nh', offsetBytes * 8, 32);
  const v = parseIPv4(t.addr) as number;
  const mask = t.prefix === 0 ? 0 : Number((0xffffffffn << BigInt(32 - t.prefix)) & 0xffffffffn);
  const want = Number(BigInt(v) & BigInt(mask));
  return cmp(t.prefix === 32 ? sel : bitAnd(sel, hex(mask)), t.neg, hex(want));
}

function rawNum(offsetBytes: number, bits: number, t: NumTest): Statement {
  return cmp(raw('nh', offsetBytes * 8, bits), t.neg, t.value);
}

function rawRange(offsetBytes: number, bits: number, t: RangeTest): Statement {
  return cmp(raw('nh', offsetBytes * 8, bits), t.neg, t.lo === t.hi ? num(t.lo) : range(t.lo, t.hi));
}

/** `meta length >= n`: the network header holds at least n bytes (ebtables' matches need the whole header). */
function atLeast(n: number): Statement {
  return match(meta('length'), '>=', n);
}

/** The typed selector of an address test that shared chains look up in sets. */
export const SLOT_SELECTORS = {
  src: payload('ether', 'saddr'),
  dst: payload('ether', 'daddr'),
  sha: payload('arp', 'saddr ether'),
  tha: payload('arp', 'daddr ether'),
  spa: payload('arp', 'saddr ip'),
  tpa: payload('arp', 'daddr ip'),
} as const;

/**
 * nft statements equivalent to one libvirt ebtables rule's match. Tests named
 * in `skip` are left out (a shared chain looks them up in a set instead), but
 * the guards they need (header lengths, ARP address sizes) stay.
 */
export function lowerL2Match(m: L2Match, rule: L2Rule, iface: string, skip: ReadonlySet<string> = new Set(), dir?: Direction, learn?: LearnMode): Statement[] {
  const gap = nftL2Gap(m);
  if (gap) unsupported(rule, gap.what, iface, gap.why);
  const s: Statement[] = [];
  // a learned $IP: the port's learned addresses, looked up in the learned-state set
  const ipPrefix = (sel: Selector, t: IpTest): Statement => {
    if (!t.learned) return plainIpPrefix(sel, t);
    if (!dir) throw new InternalError(`a learned address test lowered without its direction (rule ${rule.id})`);
    return learnedMatch(dir, sel, t.neg, learn === 'dhcp' ? iface : undefined);
  };
  const rawIp4 = (offsetBytes: number, t: IpTest): Statement => {
    if (t.learned) unsupported(rule, 'a learned $IP in a RARP rule', iface);
    return rawIp4Const(offsetBytes, t);
  };
  const eth = (x: { src?: MacTest; dst?: MacTest }): void => {
    if (x.src && !skip.has('src')) s.push(macMatch(SLOT_SELECTORS.src, x.src));
    if (x.dst && !skip.has('dst')) s.push(macMatch(SLOT_SELECTORS.dst, x.dst));
  };
  const etype = (t: number): void => void s.push(eq(payload('ether', 'type'), hex(t)));
  switch (m.proto) {
    case 'any':
      return s;
    case 'mac':
      eth(m);
      if (m.etherType) s.push(cmp(payload('ether', 'type'), m.etherType.neg, hex(m.etherType.value)));
      return s;
    case 'vlan':
      eth(m);
      etype(ETHERTYPE_OF.vlan);
      // the receive path keeps the tag out of band: nft's vlan fields read it there (raw loads would not)
      if (m.vlanId) s.push(cmp(payload('vlan', 'id'), m.vlanId.neg, m.vlanId.value));
      if (m.encap) s.push(cmp(payload('vlan', 'type'), m.encap.neg, hex(m.encap.value)));
      return s;
    case 'stp': {
      eth(m);
      const f = m.fields;
      if (!f) return s;
      s.push(atLeast(6), eq(raw('nh', 0, 48), hex(0x424203000000)));
      if (f.type) s.push(rawNum(5, 8, f.type));
      const cfg = Object.keys(f).some((k) => k !== 'type');
      if (!cfg) return s;
      // ebt_stp reads the configuration fields from byte 6 on (see eval.ts)
      s.push(atLeast(37));
      if (f.flags) s.push(rawNum(6, 8, f.flags));
      if (f.rootPriority) s.push(rawRange(7, 16, f.rootPriority));
      if (f.rootAddress) s.push(rawMac(9, f.rootAddress));
      if (f.rootCost) s.push(rawRange(15, 32, f.rootCost));
      if (f.senderPriority) s.push(rawRange(19, 16, f.senderPriority));
      if (f.senderAddress) s.push(rawMac(21, f.senderAddress));
      if (f.port) s.push(rawRange(27, 16, f.port));
      if (f.age) s.push(rawRange(29, 16, f.age));
      if (f.maxAge) s.push(rawRange(31, 16, f.maxAge));
      if (f.helloTime) s.push(rawRange(33, 16, f.helloTime));
      if (f.forwardDelay) s.push(rawRange(35, 16, f.forwardDelay));
      return s;
    }
    case 'arp':
    case 'rarp': {
      eth(m);
      etype(ETHERTYPE_OF[m.proto]);
      const ipTests = m.spa || m.tpa || m.gratuitous;
      const macTests = m.sha || m.tha;
      if (!(m.opcode || m.hwType || m.protoType || ipTests || macTests)) return s;
      // ebt_arp reads the 8-byte ARP header; address offsets depend on the
      // address lengths, so nwf-fast requires Ethernet/IPv4 sizes (hlen 6, plen 4).
      let need = 8;
      const guards = { htype1: false, hlen6: false, plen4: false, ptypeIp: false };
      if (macTests) {
        guards.htype1 = guards.hlen6 = true;
        need = Math.max(need, m.tha ? 24 : 14);
        if (m.tha) guards.plen4 = true;
      }
      if (ipTests) {
        guards.ptypeIp = guards.plen4 = guards.hlen6 = true;
        need = Math.max(need, 28);
      }
      if (guards.htype1) s.push(eq(raw('nh', 0, 16), 1));
      if (guards.ptypeIp) s.push(eq(raw('nh', 16, 16), hex(ETHERTYPES.IPV4)));
      if (guards.hlen6) s.push(eq(raw('nh', 32, 8), 6));
      if (guards.plen4) s.push(eq(raw('nh', 40, 8), 4));
      s.push(atLeast(need));
      if (m.opcode) s.push(rawNum(6, 16, m.opcode));
      if (m.hwType) s.push(rawNum(0, 16, m.hwType));
      if (m.protoType) s.push(cmp(raw('nh', 16, 16), m.protoType.neg, hex(m.protoType.value)));
      if (m.proto === 'arp') {
        // the named arp fields read the same offsets (8, 14, 18, 24) as raw loads; nft adds an
        // implicit `ether type arp` dependency to them, which is why RARP uses raw loads
        if (m.spa && !skip.has('spa')) s.push(ipPrefix(SLOT_SELECTORS.spa, m.spa));
        if (m.tpa && !skip.has('tpa')) s.push(ipPrefix(SLOT_SELECTORS.tpa, m.tpa));
        if (m.sha && !skip.has('sha')) s.push(macMatch(SLOT_SELECTORS.sha, m.sha));
        if (m.tha && !skip.has('tha')) s.push(macMatch(SLOT_SELECTORS.tha, m.tha));
      } else {
        if (m.spa) s.push(rawIp4(14, m.spa));
        if (m.tpa) s.push(rawIp4(24, m.tpa));
        if (m.sha) s.push(rawMac(8, m.sha));
        if (m.tha) s.push(rawMac(18, m.tha));
      }
      return s;
    }
    case 'ipv4': {
      eth(m);
      etype(ETHERTYPE_OF.ipv4);
      const any = m.srcIp || m.dstIp || m.protocol || m.tos;
      if (!any) return s;
      s.push(atLeast(20));
      if (m.tos) s.push(rawNum(1, 8, m.tos));
      if (m.srcIp && !skip.has('srcIp')) s.push(ipPrefix(payload('ip', 'saddr'), m.srcIp));
      if (m.dstIp && !skip.has('dstIp')) s.push(ipPrefix(payload('ip', 'daddr'), m.dstIp));
      if (m.protocol) {
        s.push(cmp(payload('ip', 'protocol'), m.protocol.neg, m.protocol.value));
        // ebt_ip never matches ports on a fragment other than the first
        if (m.srcPort || m.dstPort) s.push(eq(bitAnd(payload('ip', 'frag-off'), hex(0x1fff)), 0));
        if (m.srcPort) s.push(portRange({ kind: 'raw-payload', base: 'th', offset: 0, len: 16 }, m.srcPort));
        if (m.dstPort) s.push(portRange({ kind: 'raw-payload', base: 'th', offset: 16, len: 16 }, m.dstPort));
      }
      return s;
    }
    case 'ipv6': {
      eth(m);
      etype(ETHERTYPE_OF.ipv6);
      const any = m.srcIp || m.dstIp || m.protocol;
      if (!any) return s;
      s.push(atLeast(40));
      if (m.srcIp && !skip.has('srcIp')) s.push(ipPrefix(payload('ip6', 'saddr'), m.srcIp));
      if (m.dstIp && !skip.has('dstIp')) s.push(ipPrefix(payload('ip6', 'daddr'), m.dstIp));
      if (m.protocol) {
        s.push(cmp(meta('l4proto'), m.protocol.neg, m.protocol.value));
        if (m.srcPort) s.push(portRange(raw('th', 0, 16), m.srcPort));
        if (m.dstPort) s.push(portRange(raw('th', 16, 16), m.dstPort));
        if (m.icmpType) {
          const code = m.icmpCode ?? { lo: 0, hi: 255, neg: m.icmpType.neg };
          const whole = code.lo === 0 && code.hi === 255;
          s.push(portRange(raw('th', 0, 8), m.icmpType));
          if (!whole) s.push(portRange(raw('th', 8, 8), code));
        }
      }
      return s;
    }
    default:
      return assertNever(m, 'L2 match');
  }
}

/**
 * The verdict statements of an L2 rule in a chain of direction `dir`; a drop
 * goes to its reason's drop chain (the reason is added to `reasons`: the
 * port needs an entry in that reason's counting set).
 */
export function l2Verdict(rule: L2Rule, dir: Direction, inRoot: boolean, reasons: Set<DropReason>): Statement[] {
  switch (rule.verdict) {
    case 'accept':
      return [accept()];
    case 'drop': {
      const reason = dropReason(rule.origin);
      reasons.add(reason);
      return [goto(nftNames.dropChain(dir, reason))];
    }
    case 'return':
      // RETURN from the root chain leaves nwf-fast's processing: accept at this hook.
      return [inRoot ? accept() : { kind: 'return' }];
    case 'continue':
      return [{ kind: 'continue' }];
    default:
      return assertNever(rule.verdict, 'L2 verdict');
  }
}

/** The match guarding a jump into a sub-chain (`-p 0x800`, the STP address, or none). */
export function guardStatements(g: JumpGuard): Statement[] {
  if (g.kind === 'none') return [];
  if (g.kind === 'stp') return [eq(payload('ether', 'daddr'), sym('01:80:c2:00:00:00'))];
  return [eq(payload('ether', 'type'), hex(g.etherType))];
}

/** The last rule of every chain: libvirt accepts a frame that falls off a user chain. */
export function endOfChain(chain: string): NftCommand {
  return add(br.rule(chain, [accept()], 'end of chain: libvirt accepts'));
}

/** An interface's own chains for one direction (root and sub-chains), rule for rule; returns the commands and its root chain. */
export function lowerOwnChains(p: InterfacePolicy, dir: Direction, reasons: Set<DropReason>): { commands: NftCommand[]; root: string } {
  const pol = p.l2[dir];
  const cmds: NftCommand[] = [];
  const chain = (sub?: string): string => nftNames.ownChain(dir, p.iface, sub);
  const root = chain();
  cmds.push(add(br.chain(root)));
  for (const ch of pol.chains) cmds.push(add(br.chain(chain(ch.name))));
  for (const e of pol.root) {
    if (e.kind === 'rule') {
      cmds.push(add(br.rule(root, [...lowerL2Match(e.rule.match, e.rule, p.iface, undefined, dir, p.learning?.mode), ...l2Verdict(e.rule, dir, true, reasons)], ruleComment(e.rule))));
    } else {
      cmds.push(add(br.rule(root, [...guardStatements(e.guard), jump(chain(e.chain))], `jump ${e.chain}`)));
    }
  }
  cmds.push(endOfChain(root));
  for (const ch of pol.chains) {
    const name = chain(ch.name);
    for (const r of ch.rules) cmds.push(add(br.rule(name, [...lowerL2Match(r.match, r, p.iface, undefined, dir, p.learning?.mode), ...l2Verdict(r, dir, false, reasons)], ruleComment(r))));
    cmds.push(endOfChain(name));
  }
  return { commands: cmds, root };
}
