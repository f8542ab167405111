// L3/L4 rules in libvirt's three iptables chains (forwarded from the VM,
// forwarded to the VM, from the VM to the host), each placement with its
// connection-state defaults, src/dst swapped where libvirt swaps them.
import { CODES, NwfError } from '../util/errors.js';
import { L3_PATHS, type L3Path, type L3Policy, type L3Rule } from '../ir/types.js';
import { appendAll, deepFreeze } from '../util/arrays.js';
import type { ConnStateName } from '../ir/values.js';
import type { RuleNode } from '../xml/ast.js';
import { L3_ELEMENT_INFO, type L3Element } from '../xml/schema.js';
import { compact, ipRange, ipTest, macTest, num, numTest, rangeTest } from './tests.js';
import type { Combo, Expansion } from './expansion.js';
import { origin, ruleLoc, type RuleInstance } from './walk.js';

interface Placement {
  path: L3Path;
  /** libvirt's `directionIn` argument for this placement: swap src/dst, skip srcmacaddr. */
  swapped: boolean;
  state?: ConnStateName[];
  ctDir?: 'original' | 'reply';
  maySkipIcmp: boolean;
  /** State match added for accept rules only (default placement) or for all (explicit state). */
  stateForAll: boolean;
}

function placements(rule: RuleNode, explicit: ConnStateName[] | undefined): Placement[] {
  const t = rule.direction;
  const dirIn = t === 'in' || t === 'inout';
  const inout = t === 'inout';
  const out: Placement[] = [];
  if (rule.statematch && explicit) {
    // An explicit state places the rule in its own direction only.
    const st = explicit.filter((s) => s !== 'NONE');
    const state = st.length ? st : undefined;
    if (!dirIn || inout) out.push({ path: 'fromVm', swapped: dirIn, ...(state ? { state } : {}), maySkipIcmp: dirIn || inout, stateForAll: true });
    if (dirIn) out.push({ path: 'toVm', swapped: !dirIn, ...(state ? { state } : {}), maySkipIcmp: !dirIn || inout, stateForAll: true });
    if (!dirIn || inout) out.push({ path: 'toHost', swapped: dirIn, ...(state ? { state } : {}), maySkipIcmp: dirIn, stateForAll: true });
    return out;
  }
  const needState = rule.statematch && !inout;
  // --ctdir as libvirt writes it on kernels >= 2.6.39: argument false -> ORIGINAL.
  const ctdir = (swapped: boolean): 'original' | 'reply' => (swapped ? 'reply' : 'original');
  const st = (s: ConnStateName[]): { state?: ConnStateName[]; ctDir?: 'original' | 'reply' } => (needState ? { state: s } : {});
  out.push({ path: 'fromVm', swapped: dirIn, ...st(dirIn ? ['ESTABLISHED'] : ['NEW', 'ESTABLISHED']), ...(needState ? { ctDir: ctdir(dirIn) } : {}), maySkipIcmp: dirIn || inout, stateForAll: false });
  out.push({ path: 'toVm', swapped: !dirIn, ...st(dirIn ? ['NEW', 'ESTABLISHED'] : ['ESTABLISHED']), ...(needState ? { ctDir: ctdir(!dirIn) } : {}), maySkipIcmp: !dirIn || inout, stateForAll: false });
  out.push({ path: 'toHost', swapped: dirIn, ...st(dirIn ? ['ESTABLISHED'] : ['NEW', 'ESTABLISHED']), ...(needState ? { ctDir: ctdir(dirIn) } : {}), maySkipIcmp: dirIn, stateForAll: false });
  return out;
}

function buildL3(inst: RuleInstance, c: Combo, p: Placement, iface: string): L3Rule | undefined {
  const a = c.attrs;
  const element = inst.rule.protocol?.element as L3Element;
  const info = L3_ELEMENT_INFO[element];
  const neg = !(inst.rule.protocol?.match ?? true);
  const sw = p.swapped;
  const action = inst.rule.action;
  const hasIcmpType = a.has('type') && (element === 'icmp' || element === 'icmpv6');
  if (hasIcmpType && p.maySkipIcmp) return undefined;
  const connlimit = numTest(a, 'connlimit-above', neg);
  if (connlimit && sw) return undefined; // libvirt: connection limits only in the VM's sending direction
  if (a.has('ipset') && a.has('ipsetflags')) {
    throw new NwfError(CODES.POLICY_UNSUPPORTED, 'ipset matches are not supported by nwf-fast (they depend on ipsets created outside the filter)', {
      location: ruleLoc(inst),
      filter: inst.filter.name,
      iface,
    });
  }
  const srcIp = ipTest(a, 'srcipaddr', 'srcipmask', neg);
  const dstIp = ipTest(a, 'dstipaddr', 'dstipmask', neg);
  const srcRange = srcIp ? undefined : ipRange(a, 'srcipfrom', 'srcipto', neg);
  const dstRange = dstIp ? undefined : ipRange(a, 'dstipfrom', 'dstipto', neg);
  const srcPort = rangeTest(a, 'srcportstart', 'srcportend', neg, inst, iface);
  const dstPort = rangeTest(a, 'dstportstart', 'dstportend', neg, inst, iface);
  const flags = a.get('flags');
  const tcpFlags = flags && flags.type === 'tcpflags' ? { ...flags.value, neg } : undefined;
  const icmp = hasIcmpType ? compact({ type: num(a, 'type') as number, code: num(a, 'code'), neg }) : undefined;
  const srcMacRaw = macTest(a, 'srcmacaddr', undefined, neg);
  const srcMac = sw ? undefined : srcMacRaw;
  const tests = compact({
    srcIp: sw ? dstIp : srcIp,
    dstIp: sw ? srcIp : dstIp,
    srcRange: sw ? dstRange : srcRange,
    dstRange: sw ? srcRange : dstRange,
    dscp: numTest(a, 'dscp', neg),
    srcPort: sw ? dstPort : srcPort,
    dstPort: sw ? srcPort : dstPort,
    tcpFlags,
    tcpOption: numTest(a, 'option', neg),
    icmp,
  });
  // libvirt drops a placement whose only test was a skipped source MAC.
  if (sw && srcMacRaw && Object.keys(tests).length === 0) return undefined;
  const withState = p.state && (p.stateForAll || action === 'accept') && !(connlimit && action === 'accept');
  const rule: L3Rule = compact({
    id: c.id,
    verdict: action,
    family: info.family,
    protocol: info.proto,
    srcMac,
    ...tests,
    state: withState ? p.state : undefined,
    ctDir: withState && p.ctDir && !hasIcmpType && inst.rule.direction !== 'inout' ? p.ctDir : undefined,
    connlimitAbove: sw ? undefined : connlimit,
    priority: inst.rule.priority,
    origin: origin(inst, c.combo),
  });
  return rule;
}

/** The L3 rules of one expanded rule on each path (cached on the expansion; frozen when shared). */
function l3Rules(e: Expansion, iface: string): Record<L3Path, L3Rule[]> {
  if (e.l3) return e.l3;
  const out: Record<L3Path, L3Rule[]> = { fromVm: [], toVm: [], toHost: [] };
  const s = e.inst.rule.protocol?.attrs.get('state');
  const states = s && s.value.kind === 'literal' && s.value.value.type === 'states' ? s.value.value.value : undefined;
  const ps = placements(e.inst.rule, states);
  for (const c of e.combos) {
    for (const p of ps) {
      const r = buildL3(e.inst, c, p, iface);
      if (r) out[p.path].push(r);
    }
  }
  if (e.shared) deepFreeze(out);
  return (e.l3 = out);
}

export function layoutL3(sorted: readonly Expansion[], iface: string): L3Policy {
  const l3: L3Policy = { fromVm: [], toVm: [], toHost: [] };
  for (const e of sorted) {
    const r = l3Rules(e, iface);
    for (const path of L3_PATHS) appendAll(l3[path], r[path]);
  }
  return l3;
}
