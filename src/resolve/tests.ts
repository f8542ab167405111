// Typed attribute values of one rule instance -> the IR's tests (MAC, IP,
// range and number tests), and the ebtables-level match of an L2 rule,
// oriented for one chain (inout rules swapped for traffic from the VM).
import { CODES, InternalError, NwfError } from '../util/errors.js';
import type { TypedValue } from '../ir/typed-value.js';
import type { IpRangeTest, IpTest, L2Match, MacTest, NumTest, RangeTest } from '../ir/types.js';
import { formatIPv4, formatIPv6 } from '../ir/values.js';
import type { L2Element } from '../xml/schema.js';
import { ruleLoc, type Attrs, type RuleInstance } from './walk.js';
import { noteAddr, rec } from './shape.js';

const BGA_MAC = '01:80:c2:00:00:00';

export function num(a: Attrs, name: string): number | undefined {
  const v = a.get(name);
  return v && typeof v.value === 'number' ? v.value : undefined;
}
function str(a: Attrs, name: string): string | undefined {
  const v = a.get(name);
  return v && typeof v.value === 'string' ? v.value : undefined;
}
export function numTest(a: Attrs, name: string, neg: boolean): NumTest | undefined {
  const v = num(a, name);
  return v === undefined ? undefined : { value: v, neg };
}
export function macTest(a: Attrs, addr: string, mask: string | undefined, neg: boolean): MacTest | undefined {
  const v = str(a, addr);
  if (v === undefined) return undefined;
  const m = mask ? str(a, mask) : undefined;
  const t: MacTest = m === undefined ? { addr: v, neg } : { addr: v, mask: m, neg };
  const tv = a.get(addr);
  if (tv?.port) {
    t.port = true;
    if (rec.on) noteAddr(t, 'addr', tv);
  }
  return t;
}
function ipText(v: TypedValue): { family: 'ipv4' | 'ipv6'; text: string } {
  if (v.type === 'ipv4') return { family: 'ipv4', text: formatIPv4(v.value) };
  if (v.type === 'ipv6') return { family: 'ipv6', text: formatIPv6(v.value) };
  throw new InternalError(`not an address: ${v.type}`);
}
export function ipTest(a: Attrs, addr: string, mask: string, neg: boolean): IpTest | undefined {
  const v = a.get(addr);
  if (!v) return undefined;
  const { family, text } = ipText(v);
  const prefix = num(a, mask) ?? (family === 'ipv4' ? 32 : 128);
  if (v.learned) return { family, addr: text, prefix, neg, learned: true };
  if (!v.port) return { family, addr: text, prefix, neg };
  const t: IpTest = { family, addr: text, prefix, neg, port: true };
  if (rec.on) noteAddr(t, 'addr', v);
  return t;
}
export function ipRange(a: Attrs, from: string, to: string, neg: boolean): IpRangeTest | undefined {
  const f = a.get(from);
  if (!f) return undefined;
  const ft = ipText(f);
  const t = a.get(to);
  const r: IpRangeTest = { family: ft.family, from: ft.text, to: t ? ipText(t).text : ft.text, neg };
  if (f.learned || t?.learned) r.learned = true;
  if (rec.on) {
    noteAddr(r, 'from', f);
    noteAddr(r, 'to', t ?? f);
  }
  return r;
}

export function rangeTest(a: Attrs, lo: string, hi: string, neg: boolean, inst: RuleInstance, iface: string): RangeTest | undefined {
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

/**
 * An L2 match `{ proto, src, dst, ...fields }` without undefined tests; with
 * `reverse` (an inout rule for traffic from the VM) the MAC tests are
 * swapped and come last.
 */
function ethMatch<T extends L2Match>(proto: T['proto'], src: MacTest | undefined, dst: MacTest | undefined, reverse: boolean, fields: Record<string, unknown>): T {
  const o: Record<string, unknown> = { proto };
  if (!reverse) {
    if (src) o.src = src;
    if (dst) o.dst = dst;
  }
  for (const k in fields) if (fields[k] !== undefined) o[k] = fields[k];
  if (reverse) {
    if (dst) o.src = dst;
    if (src) o.dst = src;
  }
  return o as T;
}

/** A copy of `o` without its undefined properties (a new object: `delete` would slow every later access). */
export function compact<T extends object>(o: T): T {
  const out = {} as T;
  for (const k in o) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** The ebtables-level match of an L2 rule, oriented for one chain. */
export function buildL2Match(element: L2Element | undefined, a: Attrs, neg: boolean, reverse: boolean, inst: RuleInstance, iface: string): L2Match {
  if (!element) return { proto: 'any' };
  const src = macTest(a, 'srcmacaddr', 'srcmacmask', neg);
  const dst = macTest(a, 'dstmacaddr', 'dstmacmask', neg);
  switch (element) {
    case 'mac':
      return ethMatch('mac', src, dst, reverse, { etherType: numTest(a, 'protocolid', neg) });
    case 'vlan':
      return ethMatch('vlan', src, dst, reverse, { vlanId: numTest(a, 'vlanid', neg), encap: numTest(a, 'encap-protocol', neg) });
    case 'stp': {
      if (reverse && src) {
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
      return compact({ proto: 'stp' as const, src, dst: { addr: BGA_MAC, neg: false }, fields: Object.keys(fields).length ? fields : undefined });
    }
    case 'arp':
    case 'rarp': {
      const spa = ipTest(a, 'arpsrcipaddr', 'arpsrcipmask', neg);
      const tpa = ipTest(a, 'arpdstipaddr', 'arpdstipmask', neg);
      const sha = macTest(a, 'arpsrcmacaddr', undefined, neg);
      const tha = macTest(a, 'arpdstmacaddr', undefined, neg);
      const grat = a.get('gratuitous');
      return ethMatch(element, src, dst, reverse, {
        hwType: numTest(a, 'hwtype', neg),
        protoType: numTest(a, 'protocoltype', neg),
        opcode: numTest(a, 'opcode', neg),
        sha: reverse ? tha : sha,
        tha: reverse ? sha : tha,
        spa: reverse ? tpa : spa,
        tpa: reverse ? spa : tpa,
        gratuitous: grat && grat.value === true ? { neg } : undefined,
      });
    }
    case 'ip':
    case 'ipv6': {
      checkPortsNeedProtocol(a, inst, iface);
      const srcIp = ipTest(a, 'srcipaddr', 'srcipmask', neg);
      const dstIp = ipTest(a, 'dstipaddr', 'dstipmask', neg);
      const srcPort = rangeTest(a, 'srcportstart', 'srcportend', neg, inst, iface);
      const dstPort = rangeTest(a, 'dstportstart', 'dstportend', neg, inst, iface);
      const common = {
        srcIp: reverse ? dstIp : srcIp,
        dstIp: reverse ? srcIp : dstIp,
        protocol: numTest(a, 'protocol', neg),
        srcPort: reverse ? dstPort : srcPort,
        dstPort: reverse ? srcPort : dstPort,
      };
      if (element === 'ip') return ethMatch('ipv4', src, dst, reverse, { ...common, tos: numTest(a, 'dscp', neg) });
      let icmpType: RangeTest | undefined;
      let icmpCode: RangeTest | undefined;
      if (a.has('type') || a.has('code')) {
        icmpType = rangeTest(a, 'type', 'typeend', neg, inst, iface) ?? { lo: 0, hi: 255, neg };
        icmpCode = rangeTest(a, 'code', 'codeend', neg, inst, iface) ?? { lo: 0, hi: 255, neg };
      }
      return ethMatch('ipv6', src, dst, reverse, { ...common, icmpType, icmpCode });
    }
  }
}
