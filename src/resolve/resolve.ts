// Resolution: from parsed filters and interface bindings to PolicyIR, with
// libvirt's semantics (../shared/docs/nwfilter-semantics.md, sections 3-5):
// filterref walk and variable scoping, iterator expansion, root-first then
// priority ordering, raised sub-chain priorities, jump placement, inout
// swapping, reject-as-drop at L2 and libvirt's three iptables placements
// with their connection-state defaults for L3/L4 rules.
import type { FilterDef, FilterRefNode, InterfaceBinding, RuleNode } from '../xml/ast.js';
import { CODES, InternalError, NwfError, type SourceLocation } from '../util/errors.js';
import { EXPECTED, parseTypedValue, type TypedValue } from '../ir/typed-value.js';
import { ETHERTYPE_OF, formatIPv4, formatIPv6, type ConnStateName } from '../ir/values.js';
import { isL2Element, L3_ELEMENT_INFO, type L2Element, type L3Element } from '../xml/schema.js';
import type {
  Direction,
  InterfacePolicy,
  IpRangeTest,
  IpTest,
  JumpGuard,
  L2Chain,
  L2Entry,
  L2Match,
  L2Policy,
  L2Rule,
  L3Path,
  L3Policy,
  L3Rule,
  MacTest,
  NumTest,
  PolicyIR,
  RangeTest,
  RuleOrigin,
} from '../ir/types.js';
import { expandCombinations, valueOf, type VarMap } from './vars.js';

/** A rule reached by the filterref walk, with the variables in scope. */
interface RuleInstance {
  rule: RuleNode;
  filter: FilterDef;
  vars: VarMap;
  /** Walk order, used to keep document order among equal priorities. */
  seq: number;
}

type Attrs = ReadonlyMap<string, TypedValue>;

export const BGA_MAC = '01:80:c2:00:00:00';

/** Walks the filterref tree depth first, in document order. */
export function walkFilterTree(filters: ReadonlyMap<string, FilterDef>, top: FilterRefNode, topVars: VarMap, iface: string): RuleInstance[] {
  const out: RuleInstance[] = [];
  const visit = (ref: FilterRefNode, callerVars: VarMap | undefined, stack: readonly string[]): void => {
    const f = filters.get(ref.filter);
    if (!f) {
      throw new NwfError(CODES.FILTER_UNKNOWN, `unknown filter '${ref.filter}'`, {
        location: ref.loc,
        ...(stack.length ? { filter: stack[stack.length - 1] as string } : {}),
        iface,
        hint: 'define it in a --filters directory, or check the name (the bundled library has the 24 standard filters)',
      });
    }
    if (stack.includes(f.name)) {
      const path = [...stack.slice(stack.indexOf(f.name)), f.name].join(' -> ');
      throw new NwfError(CODES.FILTER_CYCLE, `filterref cycle: ${path}`, { location: ref.loc, filter: stack[stack.length - 1] as string, iface });
    }
    // The referenced filter sees the filterref's parameters overlaid by the caller's variables.
    const vars = new Map<string, readonly string[]>(ref.params);
    if (callerVars) for (const [k, v] of callerVars) vars.set(k, v);
    for (const e of f.entries) {
      if (e.kind === 'rule') out.push({ rule: e, filter: f, vars, seq: out.length });
      else visit(e, vars, [...stack, f.name]);
    }
  };
  visit(top, topVars, []);
  return out;
}

/** libvirt's order: root-chain rules first, then by priority; ties keep walk order. */
export function sortInstances(list: readonly RuleInstance[]): RuleInstance[] {
  return [...list].sort((a, b) => {
    const ra = a.filter.chain === 'root' ? 0 : 1;
    const rb = b.filter.chain === 'root' ? 0 : 1;
    return ra - rb || a.rule.priority - b.rule.priority || a.seq - b.seq;
  });
}

function ruleLoc(inst: RuleInstance): SourceLocation {
  return inst.rule.protocol?.loc ?? inst.rule.loc;
}

/** Attribute values of one combination, typed; variable values validated here. */
function concreteAttrs(inst: RuleInstance, combo: ReadonlyMap<string, string>, iface: string): Attrs {
  const out = new Map<string, TypedValue>();
  const p = inst.rule.protocol;
  if (!p) return out;
  for (const [name, { type, value }] of p.attrs) {
    if (value.kind === 'literal') {
      out.set(name, value.value);
      continue;
    }
    const raw = valueOf(value, combo);
    const tv = parseTypedValue(type, raw);
    if (!tv) {
      throw new NwfError(CODES.VALUE_INVALID, `variable ${value.ref.text} has value '${raw}', which is not valid for attribute '${name}'`, {
        location: { ...p.loc, path: `${p.loc.path ?? ''}@${name}` },
        filter: inst.filter.name,
        iface,
        expected: EXPECTED[type],
      });
    }
    out.set(name, tv);
  }
  return out;
}

// ---- typed attribute readers -------------------------------------------------

function num(a: Attrs, name: string): number | undefined {
  const v = a.get(name);
  return v && typeof v.value === 'number' ? v.value : undefined;
}
function str(a: Attrs, name: string): string | undefined {
  const v = a.get(name);
  return v && typeof v.value === 'string' ? v.value : undefined;
}
function numTest(a: Attrs, name: string, neg: boolean): NumTest | undefined {
  const v = num(a, name);
  return v === undefined ? undefined : { value: v, neg };
}
function macTest(a: Attrs, addr: string, mask: string | undefined, neg: boolean): MacTest | undefined {
  const v = str(a, addr);
  if (v === undefined) return undefined;
  const m = mask ? str(a, mask) : undefined;
  return m === undefined ? { addr: v, neg } : { addr: v, mask: m, neg };
}
function ipText(v: TypedValue): { family: 'ipv4' | 'ipv6'; text: string } {
  if (v.type === 'ipv4') return { family: 'ipv4', text: formatIPv4(v.value) };
  if (v.type === 'ipv6') return { family: 'ipv6', text: formatIPv6(v.value) };
  throw new InternalError(`not an address: ${v.type}`);
}
function ipTest(a: Attrs, addr: string, mask: string, neg: boolean): IpTest | undefined {
  const v = a.get(addr);
  if (!v) return undefined;
  const { family, text } = ipText(v);
  const prefix = num(a, mask) ?? (family === 'ipv4' ? 32 : 128);
  return { family, addr: text, prefix, neg };
}
function ipRange(a: Attrs, from: string, to: string, neg: boolean): IpRangeTest | undefined {
  const f = a.get(from);
  if (!f) return undefined;
  const ft = ipText(f);
  const t = a.get(to);
  return { family: ft.family, from: ft.text, to: t ? ipText(t).text : ft.text, neg };
}

function rangeTest(a: Attrs, lo: string, hi: string, neg: boolean, inst: RuleInstance, iface: string): RangeTest | undefined {
  const l = num(a, lo);
  if (l === undefined) return undefined;
  const h = num(a, hi) ?? l;
  if (h < l) {
    throw new NwfError(CODES.VALUE_OUT_OF_RANGE, `'${hi}' (${h}) is below '${lo}' (${l})`, {
      location: ruleLoc(inst),
      filter: inst.filter.name,
      iface,
      expected: `${hi} >= ${lo}`,
    });
  }
  return { lo: l, hi: h, neg };
}

const PORT_PROTOCOLS = new Set([6, 17, 132, 33]);

function checkPortsNeedProtocol(a: Attrs, inst: RuleInstance, iface: string): void {
  const hasPorts = ['srcportstart', 'srcportend', 'dstportstart', 'dstportend'].some((n) => a.has(n));
  if (!hasPorts) return;
  const proto = num(a, 'protocol');
  if (proto === undefined || !PORT_PROTOCOLS.has(proto)) {
    throw new NwfError(CODES.ATTRIBUTE_CONFLICT, 'port attributes need protocol tcp, udp, sctp or dccp', {
      location: ruleLoc(inst),
      filter: inst.filter.name,
      iface,
      expected: "protocol='tcp' (or udp, sctp, dccp=33) together with srcportstart/dstportstart",
    });
  }
}

function swapEth<T extends { src?: MacTest; dst?: MacTest }>(m: T, reverse: boolean): T {
  if (!reverse) return m;
  const { src, dst, ...rest } = m;
  return { ...rest, ...(dst ? { src: dst } : {}), ...(src ? { dst: src } : {}) } as T;
}

function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** The ebtables-level match of an L2 rule, oriented for one chain. */
export function buildL2Match(element: L2Element | undefined, a: Attrs, neg: boolean, reverse: boolean, inst: RuleInstance, iface: string): L2Match {
  if (!element) return { proto: 'any' };
  const eth = compact({ src: macTest(a, 'srcmacaddr', 'srcmacmask', neg), dst: macTest(a, 'dstmacaddr', 'dstmacmask', neg) });
  switch (element) {
    case 'mac':
      return swapEth(compact({ proto: 'mac' as const, ...eth, etherType: numTest(a, 'protocolid', neg) }), reverse);
    case 'vlan':
      return swapEth(compact({ proto: 'vlan' as const, ...eth, vlanId: numTest(a, 'vlanid', neg), encap: numTest(a, 'encap-protocol', neg) }), reverse);
    case 'stp': {
      if (reverse && eth.src) {
        throw new NwfError(CODES.ATTRIBUTE_CONFLICT, 'STP rules with direction inout cannot test the source MAC address (libvirt refuses this too)', {
          location: ruleLoc(inst),
          filter: inst.filter.name,
          iface,
          expected: "direction 'in' or 'out', or no srcmacaddr",
        });
      }
      const fields = compact({
        type: numTest(a, 'type', neg),
        flags: numTest(a, 'flags', neg),
        rootPriority: rangeTest(a, 'root-priority', 'root-priority-hi', neg, inst, iface),
        rootAddress: macTest(a, 'root-address', 'root-address-mask', neg),
        rootCost: rangeTest(a, 'root-cost', 'root-cost-hi', neg, inst, iface),
        senderPriority: rangeTest(a, 'sender-priority', 'sender-priority-hi', neg, inst, iface),
        senderAddress: macTest(a, 'sender-address', 'sender-address-mask', neg),
        port: rangeTest(a, 'port', 'port-hi', neg, inst, iface),
        age: rangeTest(a, 'age', 'age-hi', neg, inst, iface),
        maxAge: rangeTest(a, 'max-age', 'max-age-hi', neg, inst, iface),
        helloTime: rangeTest(a, 'hello-time', 'hello-time-hi', neg, inst, iface),
        forwardDelay: rangeTest(a, 'forward-delay', 'forward-delay-hi', neg, inst, iface),
      });
      // The destination is always the bridge group address (never negated).
      return compact({ proto: 'stp' as const, src: eth.src, dst: { addr: BGA_MAC, neg: false }, fields: Object.keys(fields).length ? fields : undefined });
    }
    case 'arp':
    case 'rarp': {
      const spa = ipTest(a, 'arpsrcipaddr', 'arpsrcipmask', neg);
      const tpa = ipTest(a, 'arpdstipaddr', 'arpdstipmask', neg);
      const sha = macTest(a, 'arpsrcmacaddr', undefined, neg);
      const tha = macTest(a, 'arpdstmacaddr', undefined, neg);
      const grat = a.get('gratuitous');
      return swapEth(
        compact({
          proto: element,
          ...eth,
          hwType: numTest(a, 'hwtype', neg),
          protoType: numTest(a, 'protocoltype', neg),
          opcode: numTest(a, 'opcode', neg),
          sha: reverse ? tha : sha,
          tha: reverse ? sha : tha,
          spa: reverse ? tpa : spa,
          tpa: reverse ? spa : tpa,
          gratuitous: grat && grat.value === true ? { neg } : undefined,
        }),
        reverse,
      );
    }
    case 'ip':
    case 'ipv6': {
      checkPortsNeedProtocol(a, inst, iface);
      const srcIp = ipTest(a, 'srcipaddr', 'srcipmask', neg);
      const dstIp = ipTest(a, 'dstipaddr', 'dstipmask', neg);
      const srcPort = rangeTest(a, 'srcportstart', 'srcportend', neg, inst, iface);
      const dstPort = rangeTest(a, 'dstportstart', 'dstportend', neg, inst, iface);
      const common = {
        ...eth,
        srcIp: reverse ? dstIp : srcIp,
        dstIp: reverse ? srcIp : dstIp,
        protocol: numTest(a, 'protocol', neg),
        srcPort: reverse ? dstPort : srcPort,
        dstPort: reverse ? srcPort : dstPort,
      };
      if (element === 'ip') return swapEth(compact({ proto: 'ipv4' as const, ...common, tos: numTest(a, 'dscp', neg) }), reverse);
      let icmpType: RangeTest | undefined;
      let icmpCode: RangeTest | undefined;
      if (a.has('type') || a.has('code')) {
        icmpType = rangeTest(a, 'type', 'typeend', neg, inst, iface) ?? { lo: 0, hi: 255, neg };
        icmpCode = rangeTest(a, 'code', 'codeend', neg, inst, iface) ?? { lo: 0, hi: 255, neg };
      }
      return swapEth(compact({ proto: 'ipv6' as const, ...common, icmpType, icmpCode }), reverse);
    }
  }
}

function l2Verdict(action: RuleNode['action']): L2Rule['verdict'] {
  return action === 'reject' ? 'drop' : action;
}

/** The guard of a jump to a sub-chain, by the chain name's protocol prefix. */
const GUARDS: Readonly<Record<string, JumpGuard>> = {
  mac: { kind: 'none' },
  stp: { kind: 'stp' },
  ...Object.fromEntries(Object.entries(ETHERTYPE_OF).map(([name, etherType]) => [name, { kind: 'ethertype', etherType }])),
};

export function chainGuard(chain: string): JumpGuard {
  const g = GUARDS[chain.split('-')[0] as string];
  if (!g) throw new InternalError(`chain without protocol prefix: ${chain}`);
  return g;
}

function origin(inst: RuleInstance, combo: ReadonlyMap<string, string>): RuleOrigin {
  const o: RuleOrigin = {
    filter: inst.filter.name,
    rule: inst.rule.index,
    file: inst.rule.loc.file,
    action: inst.rule.action,
    direction: inst.rule.direction,
  };
  if (inst.rule.loc.line !== undefined) o.line = inst.rule.loc.line;
  if (combo.size) o.bindings = Object.fromEntries(combo);
  return o;
}

interface Expanded {
  inst: RuleInstance;
  combos: { attrs: Attrs; combo: ReadonlyMap<string, string>; id: string }[];
}

function expand(inst: RuleInstance, binding: InterfaceBinding, ipLearning: string | undefined): Expanded {
  const values = inst.rule.protocol ? [...inst.rule.protocol.attrs.values()].map((x) => x.value) : [];
  const combos = expandCombinations(values, inst.vars, {
    filter: inst.filter.name,
    iface: binding.iface,
    loc: ruleLoc(inst),
    ...(ipLearning !== undefined ? { ipLearning } : {}),
  });
  const base = `${inst.filter.name}/${inst.rule.index}`;
  return {
    inst,
    combos: combos.map((combo, k) => ({ attrs: concreteAttrs(inst, combo, binding.iface), combo, id: combos.length > 1 ? `${base}#${k}` : base })),
  };
}

// ---- L2 layout ----------------------------------------------------------------

function layoutL2(sorted: readonly Expanded[], iface: string): Record<Direction, L2Policy> {
  const result = {} as Record<Direction, L2Policy>;
  for (const dir of ['out', 'in'] as const) {
    const rootRules: L2Rule[] = [];
    const chains = new Map<string, L2Chain>();
    // seen occurrences (per the same walk over all rules, as libvirt's hash update)
    for (const { inst, combos } of sorted) {
      const t = inst.rule.direction;
      const inDir = dir === 'out' ? t === 'out' || t === 'inout' : t === 'in' || t === 'inout';
      if (!inDir) continue;
      const isRoot = inst.filter.chain === 'root';
      const priority = !isRoot && inst.filter.chainPriority > inst.rule.priority ? inst.filter.chainPriority : inst.rule.priority;
      const reverse = dir === 'out' && t === 'inout';
      const element = inst.rule.protocol?.element as L2Element | undefined;
      const neg = inst.rule.protocol ? !inst.rule.protocol.match : false;
      const rules = combos.map(
        (c): L2Rule => ({
          id: c.id,
          verdict: l2Verdict(inst.rule.action),
          match: buildL2Match(element, c.attrs, neg, reverse, inst, iface),
          priority,
          origin: origin(inst, c.combo),
        }),
      );
      if (isRoot) rootRules.push(...rules);
      else {
        let ch = chains.get(inst.filter.chain);
        if (!ch) chains.set(inst.filter.chain, (ch = { name: inst.filter.chain, priority: inst.filter.chainPriority, rules: [] }));
        // libvirt records the chain priority of every rule it sees: the last one wins.
        ch.priority = inst.filter.chainPriority;
        ch.rules.push(...rules);
      }
    }
    const chainList = [...chains.values()].sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const root: L2Entry[] = [];
    let j = 0;
    for (const r of rootRules) {
      while (j < chainList.length && (chainList[j] as L2Chain).priority <= r.priority) {
        const ch = chainList[j++] as L2Chain;
        root.push({ kind: 'jump', chain: ch.name, guard: chainGuard(ch.name), priority: ch.priority });
      }
      root.push({ kind: 'rule', rule: r });
    }
    for (; j < chainList.length; j++) {
      const ch = chainList[j] as L2Chain;
      root.push({ kind: 'jump', chain: ch.name, guard: chainGuard(ch.name), priority: ch.priority });
    }
    result[dir] = { root, chains: chainList };
  }
  return result;
}

// ---- L3 placement ---------------------------------------------------------------

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

function buildL3(inst: RuleInstance, c: Expanded['combos'][number], p: Placement, iface: string): L3Rule | undefined {
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
    throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'ipset matches are not supported by nwf-fast (they depend on ipsets created outside the filter)', {
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

function layoutL3(sorted: readonly Expanded[], iface: string): L3Policy {
  const l3: L3Policy = { fromVm: [], toVm: [], toHost: [] };
  for (const e of sorted) {
    const states = (() => {
      const s = e.inst.rule.protocol?.attrs.get('state');
      return s && s.value.kind === 'literal' && s.value.value.type === 'states' ? s.value.value.value : undefined;
    })();
    const ps = placements(e.inst.rule, states);
    for (const c of e.combos) {
      for (const p of ps) {
        const r = buildL3(e.inst, c, p, iface);
        if (r) l3[p.path].push(r);
      }
    }
  }
  return l3;
}

// ---- interfaces -------------------------------------------------------------------

export function resolveInterface(filters: ReadonlyMap<string, FilterDef>, binding: InterfaceBinding): InterfacePolicy {
  const topVars = new Map<string, readonly string[]>(binding.filterref.params);
  topVars.set('MAC', [binding.mac]);
  const ipLearning = topVars.get('CTRL_IP_LEARNING')?.[0];
  const instances = walkFilterTree(filters, binding.filterref, topVars, binding.iface);
  const sorted = sortInstances(instances).map((inst) => expand(inst, binding, ipLearning));
  const l2 = sorted.filter((e) => !e.inst.rule.protocol || isL2Element(e.inst.rule.protocol.element));
  const l3 = sorted.filter((e) => e.inst.rule.protocol && !isL2Element(e.inst.rule.protocol.element));
  return {
    iface: binding.iface,
    mac: binding.mac,
    owner: binding.owner,
    source: binding.source,
    filter: binding.filterref.filter,
    vars: Object.fromEntries([...topVars].map(([k, v]) => [k, [...v]])),
    l2: layoutL2(l2, binding.iface),
    l3: layoutL3(l3, binding.iface),
    file: binding.loc.file,
  };
}

export function resolvePolicy(filters: ReadonlyMap<string, FilterDef>, bindings: readonly InterfaceBinding[], notes: readonly string[] = []): PolicyIR {
  const seen = new Map<string, InterfaceBinding>();
  for (const b of bindings) {
    const prev = seen.get(b.iface);
    if (prev) {
      throw new NwfError(CODES.INTERFACE_DUPLICATE, `interface '${b.iface}' is bound twice (also in ${prev.loc.file})`, {
        location: b.loc,
        iface: b.iface,
        hint: 'each tap device can carry one filterref; remove one of the bindings',
      });
    }
    seen.set(b.iface, b);
  }
  const interfaces = [...bindings].sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0)).map((b) => resolveInterface(filters, b));
  return { version: 1, interfaces, notes: [...notes] };
}
