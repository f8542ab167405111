// Lowering PolicyIR to one nftables transaction (libnftables JSON model).
//
// Layout (bridge table `nwf_fast`):
//   chain pre  { type filter hook prerouting priority -300; iifname vmap @from_vm }
//   chain post { type filter hook postrouting priority 300; oifname vmap @to_vm }
//   i_<tap>, i_<tap>_<sub>: libvirt-I-<tap> and its sub-chains (traffic from the VM)
//   o_<tap>, o_<tap>_<sub>: libvirt-O-<tap> and its sub-chains (traffic to the VM)
// Dispatch is one verdict-map lookup keyed by interface name: O(1) in the
// number of VMs, and names can be filled before a tap exists.
//
// libvirt's ebtables user chains ACCEPT when a frame falls off their end; an
// nft `jump` returns instead, so every emitted chain ends with an explicit
// accept. Every drop counts into a named counter drop_<tap>_<reason>.
//
// L3/L4 rules (libvirt's iptables chains FI/FO/HI) go through br_netfilter:
// the bridge table marks IP frames of ports that have L3 rules with the
// port ids (prerouting: source port, forward: destination port), and an
// inet table `nwf_fast` dispatches on those marks with `ct state` available.
import { CODES, assertNever, InternalError, NwfError } from '../../util/errors.js';
import type { DropReason } from '../../ir/reasons.js';
import { dropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, IpTest, L2Match, L2Rule, L3Path, L3Rule, MacTest, NumTest, PolicyIR, RangeTest } from '../../ir/types.js';
import { DIRECTIONS, L3_PATHS } from '../../ir/types.js';
import { ETHERTYPE_OF, ETHERTYPES, macToBytes, parseIPv4 } from '../../ir/values.js';
import { l4MatchHeaderSize, ruleCounts } from '../../ir/facts.js';
import {
  accept,
  add,
  bitAnd,
  ct,
  drop,
  eq,
  hex,
  jump,
  match,
  meta,
  ne,
  nftTable,
  num,
  payload,
  prefix,
  range,
  raw,
  setMark,
  setOf,
  setRef,
  str,
  sym,
  vmap,
} from './build.js';
import type { NftBatch, NftCommand, Selector, Statement, Verdict } from './model.js';
import { BRIDGE_TABLE, bridgeNames as BN, dropCounter, INET_TABLE, inetNames as IN, l2Chain, l3Chain, markChain } from './names.js';
import { buildTemplate, counterMapCommands, emitShared, type Template } from './shared.js';

export const BRIDGE_PRE_PRIORITY = -300;
export const BRIDGE_POST_PRIORITY = 300;
/** Mark layout for the br_netfilter route: 0x8000_0000 | in-id << 16, and 0x8000 | out-id. */
export const MARK_IN_MASK = 0xffff0000;
export const MARK_OUT_MASK = 0x0000ffff;
export const MAX_L3_PORTS = 0x7fff;

export interface NftLowering {
  batch: NftBatch;
  /** Whether the inet table (L3 rules) is part of this generation. */
  l3: boolean;
  interfaces: { iface: string; l2Rules: number; l3Rules: number; markId?: number }[];
}

const br = nftTable('bridge', BRIDGE_TABLE);

// ---- matches ------------------------------------------------------------------

function cmp(left: Selector, neg: boolean, right: Parameters<typeof eq>[1]): Statement {
  return neg ? ne(left, right) : eq(left, right);
}

function macMatch(sel: Selector, t: MacTest): Statement {
  if (!t.mask || t.mask === 'ff:ff:ff:ff:ff:ff') return cmp(sel, t.neg, sym(t.addr));
  const mask = macToBytes(t.mask);
  const want = macToBytes(t.addr).map((b, i) => b & (mask[i] as number));
  const wantMac = [...want].map((b) => b.toString(16).padStart(2, '0')).join(':');
  return cmp(bitAnd(sel, sym(t.mask)), t.neg, sym(wantMac));
}

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

function rawIp4(offsetBytes: number, t: IpTest): Statement {
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

function ipPrefix(sel: Selector, t: IpTest): Statement {
  const full = t.family === 'ipv4' ? 32 : 128;
  return cmp(sel, t.neg, t.prefix === full ? sym(t.addr) : prefix(t.addr, t.prefix));
}

function portRange(sel: Selector, t: RangeTest): Statement {
  return cmp(sel, t.neg, t.lo === t.hi ? num(t.lo) : range(t.lo, t.hi));
}

/** `meta length >= n`: the network header holds at least n bytes (ebtables' matches need the whole header). */
function atLeast(n: number): Statement {
  return match(meta('length'), '>=', n);
}

function unsupported(rule: { id: string; origin: { file: string; filter: string } }, what: string, iface: string): never {
  throw new NwfError(CODES.POLICY_UNSUPPORTED, `${what} cannot be expressed in the nftables backend (rule ${rule.id})`, {
    location: { file: rule.origin.file },
    filter: rule.origin.filter,
    iface,
    hint: 'use --backend bpf for this policy, or rewrite the rule',
  });
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
export function lowerL2Match(m: L2Match, rule: L2Rule, iface: string, skip: ReadonlySet<string> = new Set()): Statement[] {
  const s: Statement[] = [];
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
      if (m.gratuitous) unsupported(rule, 'the ARP gratuitous test (sender IP equal to target IP)', iface);
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
          if (m.icmpType.neg && !whole) unsupported(rule, 'a negated ICMPv6 type and code range', iface);
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

// ---- L2 chains ----------------------------------------------------------------

export function l2Verdict(rule: L2Rule, iface: string, inRoot: boolean, counters: Set<string>): Statement[] {
  switch (rule.verdict) {
    case 'accept':
      return [accept()];
    case 'drop': {
      const c = dropCounter(iface, dropReason(rule.origin));
      counters.add(c);
      return [{ kind: 'counter-ref', name: c }, drop()];
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

function comment(rule: { id: string }): string {
  return rule.id.replace(/[^A-Za-z0-9_.:/#@+-]/g, '_').slice(0, 120);
}

function guardStatements(g: { kind: 'ethertype'; etherType: number } | { kind: 'stp' } | { kind: 'none' }): Statement[] {
  if (g.kind === 'none') return [];
  if (g.kind === 'stp') return [eq(payload('ether', 'daddr'), sym('01:80:c2:00:00:00'))];
  return [eq(payload('ether', 'type'), hex(g.etherType))];
}

function lowerDirection(p: InterfacePolicy, dir: Direction, counters: Set<string>): NftCommand[] {
  const pol = p.l2[dir];
  const cmds: NftCommand[] = [];
  const root = l2Chain(dir, p.iface);
  cmds.push(add(br.chain(root)));
  for (const ch of pol.chains) cmds.push(add(br.chain(l2Chain(dir, p.iface, ch.name))));
  for (const e of pol.root) {
    if (e.kind === 'rule') {
      cmds.push(add(br.rule(root, [...lowerL2Match(e.rule.match, e.rule, p.iface), ...l2Verdict(e.rule, p.iface, true, counters)], comment(e.rule))));
    } else {
      cmds.push(add(br.rule(root, [...guardStatements(e.guard), jump(l2Chain(dir, p.iface, e.chain))], `jump ${e.chain}`)));
    }
  }
  cmds.push(add(br.rule(root, [accept()], 'end of chain: libvirt accepts')));
  for (const ch of pol.chains) {
    const name = l2Chain(dir, p.iface, ch.name);
    for (const r of ch.rules) cmds.push(add(br.rule(name, [...lowerL2Match(r.match, r, p.iface), ...l2Verdict(r, p.iface, false, counters)], comment(r))));
    cmds.push(add(br.rule(name, [accept()], 'end of chain: libvirt accepts')));
  }
  return cmds;
}

// ---- L3 -------------------------------------------------------------------------

const STATE_SYMBOL: Record<string, string> = { NEW: 'new', ESTABLISHED: 'established', RELATED: 'related', INVALID: 'invalid' };

/** The check chain for a protocol header of `size` bytes: returns if complete, drops otherwise. */
export function l4CheckChain(size: number): string {
  return `l4chk_${size}`;
}

/**
 * One libvirt iptables rule as nft rules: the rule itself, preceded, when it
 * has an L4 port/flags/type test, by a rule sending packets that pass its
 * address tests through a check of the protocol header's length (iptables
 * drops a packet whose header that match cannot read).
 */
export function lowerL3Rule(r: L3Rule, path: L3Path, iface: string, counters: Set<string>, checks?: Set<number>): Statement[][] {
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
    rules.push([...s, jump(l4CheckChain(size))]);
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

// ---- the batch ------------------------------------------------------------------

export interface LowerOptions {
  /** Share chains between interfaces of the same policy shape (default true; see shared.ts). */
  share?: boolean;
}

function elemsSort(e: [{ value: string }, Verdict][]): void {
  e.sort((a, b) => (a[0].value < b[0].value ? -1 : a[0].value > b[0].value ? 1 : 0));
}

export function lowerToNft(ir: PolicyIR, opts: LowerOptions = {}): NftLowering {
  const cmds: NftCommand[] = [];
  // Replace both of our tables atomically: add (so delete cannot fail), delete, re-create.
  // Build commands only: `load` prepends the teardown of what is in the kernel now
  // (host/teardown.ts), without ever removing a base chain, so the hooks stay in place.
  cmds.push(add(br.table));
  cmds.push(add(br.baseChain(BN.preChain, { type: 'filter', hook: 'prerouting', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })));
  cmds.push(add(br.baseChain(BN.postChain, { type: 'filter', hook: 'postrouting', prio: BRIDGE_POST_PRIORITY, policy: 'accept' })));

  const l3Ifaces = ir.interfaces.filter((p) => L3_PATHS.some((k) => p.l3[k].length > 0));
  if (l3Ifaces.length > MAX_L3_PORTS) throw new NwfError(CODES.POLICY_UNSUPPORTED, `at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`);
  const markId = new Map(l3Ifaces.map((p, i) => [p.iface, i + 1]));

  const outElems: [ReturnType<typeof str>, Verdict][] = [];
  const inElems: [ReturnType<typeof str>, Verdict][] = [];
  const counters = new Set<string>();
  const perIface: NftCommand[] = [];
  const counterMaps: NftCommand[] = [];
  const summary: NftLowering['interfaces'] = [];
  const share = opts.share ?? true;
  const policies = new Map(ir.interfaces.map((p) => [p.iface, p]));
  for (const dir of DIRECTIONS) {
    const elems = dir === 'out' ? outElems : inElems;
    const shapes = new Map<string, Template[]>();
    for (const p of ir.interfaces) {
      if (p.l2[dir].root.length === 0) continue; // libvirt hooks no chain: all accepted
      if (!share) {
        perIface.push(...lowerDirection(p, dir, counters));
        elems.push([str(p.iface), jump(l2Chain(dir, p.iface))]);
        continue;
      }
      const t = buildTemplate(p, dir);
      const list = shapes.get(t.key) ?? [];
      list.push(t);
      shapes.set(t.key, list);
    }
    const cmaps = new Map<string, Set<string>>();
    let shapeId = 0;
    for (const templates of shapes.values()) {
      const em = emitShared(dir, shapeId, templates, policies);
      if (!em) {
        for (const t of templates) {
          perIface.push(...lowerDirection(policies.get(t.iface) as InterfacePolicy, dir, counters));
          elems.push([str(t.iface), jump(l2Chain(dir, t.iface))]);
        }
        continue;
      }
      shapeId++;
      perIface.push(...em.commands);
      for (const c of em.namedCounters) counters.add(c);
      for (const t of templates) elems.push([str(t.iface), jump(em.root)]);
      for (const [reason, ifaces] of em.counterMaps) {
        const set = cmaps.get(reason) ?? new Set<string>();
        for (const i of ifaces) {
          set.add(i);
          counters.add(dropCounter(i, reason as DropReason));
        }
        cmaps.set(reason, set);
      }
    }
    counterMaps.push(...counterMapCommands(dir, cmaps));
  }
  elemsSort(outElems);
  elemsSort(inElems);
  for (const p of ir.interfaces) {
    const id = markId.get(p.iface);
    summary.push({ iface: p.iface, ...ruleCounts(p), ...(id !== undefined ? { markId: id } : {}) });
  }

  // L3 preparation in the bridge table: marks carry the port ids to the inet hooks.
  const l3Bridge: NftCommand[] = [];
  const l3BridgeMaps: NftCommand[] = [];
  const l3BridgeRules: NftCommand[] = [];
  const l3Inet: NftCommand[] = [];
  if (l3Ifaces.length) {
    const ports = l3Ifaces.map((p) => str(p.iface));
    l3Bridge.push(add(br.set(BN.l3Ports, 'ifname', ports)));
    l3BridgeMaps.push(
      add(br.verdictMap(BN.markInMap, 'ifname', l3Ifaces.map((p) => [str(p.iface), jump(markChain('in', p.iface))] as const))),
      add(br.verdictMap(BN.markOutMap, 'ifname', l3Ifaces.map((p) => [str(p.iface), jump(markChain('out', p.iface))] as const))),
    );
    l3BridgeRules.push(
      add(br.baseChain(BN.markChain, { type: 'filter', hook: 'forward', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })),
      add(br.rule(BN.markChain, [match(meta('iifname'), '!=', setRef(BN.l3Ports)), match(meta('oifname'), '==', setRef(BN.l3Ports)), setMark(0)], 'clear the mark of frames to a port with L3 rules')),
      add(br.rule(BN.markChain, [vmap(meta('oifname'), BN.markOutMap)])),
    );
    for (const p of l3Ifaces) {
      const id = markId.get(p.iface) as number;
      l3Bridge.push(add(br.chain(markChain('in', p.iface))), add(br.rule(markChain('in', p.iface), [setMark((0x8000 | id) * 0x10000)])));
      l3Bridge.push(
        add(br.chain(markChain('out', p.iface))),
        add(br.rule(markChain('out', p.iface), [setMark({ kind: 'binop', op: '|', left: bitAnd(meta('mark'), hex(MARK_IN_MASK)), right: hex(0x8000 | id) })])),
      );
    }
    // ip and ip6 tables: libvirt's libvirt-in / libvirt-out / libvirt-host-in. One table per
    // family, so connection tracking (and its defragmentation) is only enabled for a family
    // whose rules use it, as with libvirt's iptables and ip6tables.
    for (const family of ['ipv4', 'ipv6'] as const) {
      const t = nftTable(family === 'ipv4' ? 'ip' : 'ip6', INET_TABLE);
      const members = l3Ifaces.filter((p) => L3_PATHS.some((k) => p.l3[k].some((r) => r.family === family)));
      if (!members.length) continue;
      const cmdsF: NftCommand[] = [];
      const countersF = new Set<string>();
      const checks = new Set<number>();
      const maps: Record<L3Path, [number, Verdict][]> = { fromVm: [], toVm: [], toHost: [] };
      for (const p of members) {
        const id = markId.get(p.iface) as number;
        for (const path of L3_PATHS) {
          const chain = l3Chain(path, p.iface);
          cmdsF.push(add(t.chain(chain)));
          for (const r of p.l3[path].filter((x) => x.family === family)) {
            for (const st of lowerL3Rule(r, path, p.iface, countersF, checks)) cmdsF.push(add(t.rule(chain, st, comment(r))));
          }
          maps[path].push([path === 'toVm' ? 0x8000 | id : (0x8000 | id) * 0x10000, jump(chain)]);
        }
      }
      const head: NftCommand[] = [add(t.table)];
      for (const c of [...countersF].sort()) head.push(add(t.counter(c)));
      head.push(add(t.baseChain(IN.forwardChain, { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' })));
      head.push(add(t.baseChain(IN.inputChain, { type: 'filter', hook: 'input', prio: 0, policy: 'accept' })));
      for (const size of [...checks].sort((a, b) => a - b)) {
        head.push(add(t.chain(l4CheckChain(size))));
        head.push(add(t.rule(l4CheckChain(size), [match(raw('th', (size - 1) * 8, 8), '>=', 0), { kind: 'return' }], `the ${size}-byte protocol header is complete`)));
        head.push(add(t.rule(l4CheckChain(size), [drop()], 'truncated protocol header: iptables drops it')));
      }
      const mapFor = (name: string, path: L3Path) => add(t.verdictMap(name, 'mark', maps[path].map(([k, v]) => [hex(k), v] as const)));
      l3Inet.push(
        ...head,
        ...cmdsF,
        mapFor(IN.fromVmMap, 'fromVm'),
        mapFor(IN.toVmMap, 'toVm'),
        mapFor(IN.toHostMap, 'toHost'),
        add(t.rule(IN.forwardChain, [vmap(bitAnd(meta('mark'), hex(MARK_IN_MASK)), IN.fromVmMap)], 'libvirt-in: FI of the source port')),
        add(t.rule(IN.forwardChain, [vmap(bitAnd(meta('mark'), hex(MARK_OUT_MASK)), IN.toVmMap)], 'libvirt-out: FO of the destination port')),
        add(t.rule(IN.inputChain, [vmap(bitAnd(meta('mark'), hex(MARK_IN_MASK)), IN.toHostMap)], 'libvirt-host-in: HI of the source port')),
      );
    }
  }

  // Counters must exist before the rules that reference them (each table has its own).
  for (const c of [...counters].sort()) cmds.push(add(br.counter(c)));
  // Counter maps after the counters, chains before the maps and rules that jump to them.
  cmds.push(...counterMaps, ...perIface, ...l3Bridge);
  cmds.push(add(br.verdictMap(BN.outMap, 'ifname', outElems)), add(br.verdictMap(BN.inMap, 'ifname', inElems)), ...l3BridgeMaps, ...l3BridgeRules);
  if (l3Ifaces.length) {
    cmds.push(add(br.rule(BN.preChain, [vmap(meta('iifname'), BN.markInMap)], 'mark frames of ports with L3 rules')));
  }
  cmds.push(add(br.rule(BN.preChain, [vmap(meta('iifname'), BN.outMap)], 'traffic from the VMs')));
  cmds.push(add(br.rule(BN.postChain, [vmap(meta('oifname'), BN.inMap)], 'traffic to the VMs')));
  cmds.push(...l3Inet);
  if (cmds.some((c) => c.op === 'add' && c.object.kind === 'rule' && c.object.statements.length === 0)) throw new InternalError('empty nft rule');
  return { batch: cmds, l3: l3Ifaces.length > 0, interfaces: summary };
}
