// Rule tests as frame edits, for the generated corpus.
//
// Every test of an L2 match or an L3 rule becomes a TestOp: edits that make a
// frame spec satisfy the test (the first is the plain match value, the others
// boundary values such as the top of a port range or a bit flipped outside a
// mask) and edits that violate exactly that test (a bit flipped inside the
// prefix or mask, a port one below / above the range, another opcode, ...).
// `neg` swaps the two. A test with no satisfying edit (e.g. a negated /0
// prefix) makes the rule unmatchable; its violations are still produced.
import { STATE_NAME, type ConnInfo } from '../../ir/eval/conntrack.js';
import type { IpRangeTest, IpTest, L2Match, L3Rule, MacTest, NumTest, RangeTest } from '../../ir/types.js';
import { ETHERTYPES as E } from '../../ir/values.js';
import { type FrameSpec, firstMaskBit, flipBit, hex4, inPrefix, ipToBytes, ipToText, lastMaskBit, macText, protoName, withMask, withPrefix } from './corpus-spec.js';
import { mac } from './build.js';

/** One edit; returns the label it contributes to the frame's name. */
export interface Variant {
  apply(s: FrameSpec): string;
}

export interface TestOp {
  /** The test's name, e.g. `src-ip`, `dport`, `opcode`. */
  key: string;
  /** Lower phases are applied first (kind-changing tests before field tests). */
  phase: number;
  sat: Variant[];
  viol: Variant[];
}

/** Context of the rule: how to build a frame of a given kind with the VM's defaults. */
export interface OpContext {
  /** Reset `s` to the defaults of `kind` (keeps the VLAN tag). */
  setKind(s: FrameSpec, kind: FrameSpec['kind'], etherType?: number): void;
}

const v = (apply: (s: FrameSpec) => string): Variant => ({ apply });

// ---- generic tests ------------------------------------------------------------------

function macOp(key: string, t: MacTest, get: (s: FrameSpec) => string, set: (s: FrameSpec, m: string) => void, phase = 2): TestOp {
  const want = mac(t.addr);
  const mask = t.mask ? mac(t.mask) : new Uint8Array(6).fill(0xff);
  const exact = (s: FrameSpec): Uint8Array => withMask(mac(get(s)), want, mask);
  const inBit = lastMaskBit(mask, true);
  const outBit = lastMaskBit(mask, false);
  const put = (s: FrameSpec, b: Uint8Array, rel: string): string => {
    const m = macText(b);
    set(s, m);
    return `${key}${rel}${m}`;
  };
  const eq: Variant[] = [v((s) => put(s, exact(s), '='))];
  if (outBit !== undefined) eq.push(v((s) => put(s, flipBit(exact(s), outBit), '=')));
  // a bit flipped at the end and at the start of the mask
  const ne: Variant[] = [...new Set([inBit, firstMaskBit(mask)])].flatMap((bit) => (bit === undefined ? [] : [v((s) => put(s, flipBit(exact(s), bit), '='))]));
  return t.neg ? { key, phase, sat: ne, viol: eq } : { key, phase, sat: eq, viol: ne };
}

function ipOp(key: string, t: IpTest, get: (s: FrameSpec) => string, set: (s: FrameSpec, ip: string) => void, phase = 2): TestOp {
  const want = ipToBytes(t.family, t.addr);
  const width = t.family === 'ipv4' ? 32 : 128;
  const exact = (s: FrameSpec): Uint8Array => {
    const cur = ipToBytes(t.family, get(s));
    if (inPrefix(cur, want, t.prefix)) return cur;
    for (const b of t.family === 'ipv4' ? s.known4 : s.known6) if (inPrefix(b, want, t.prefix)) return b.slice();
    return withPrefix(cur, want, t.prefix);
  };
  const put = (s: FrameSpec, b: Uint8Array): string => {
    const ip = ipToText(t.family, b);
    set(s, ip);
    return `${key}=${ip}`;
  };
  const eq: Variant[] = [v((s) => put(s, exact(s)))];
  if (t.prefix < width) eq.push(v((s) => put(s, flipBit(exact(s), t.prefix))));
  // a bit flipped at the end and at the start of the prefix
  const ne: Variant[] = t.prefix === 0 ? [] : [...new Set([t.prefix - 1, 0])].map((bit) => v((s) => put(s, flipBit(exact(s), bit))));
  return t.neg ? { key, phase, sat: ne, viol: eq } : { key, phase, sat: eq, viol: ne };
}

function ipRangeOp(key: string, t: IpRangeTest, set: (s: FrameSpec, ip: string) => void): TestOp {
  const from = ipToBytes(t.family, t.from);
  const to = ipToBytes(t.family, t.to);
  const step = (b: Uint8Array, d: 1 | -1): Uint8Array | undefined => {
    const c = b.slice();
    for (let i = c.length - 1; i >= 0; i--) {
      const x = (c[i] ?? 0) + d;
      if (x >= 0 && x <= 255) {
        c[i] = x;
        return c;
      }
      c[i] = d === 1 ? 0 : 255;
    }
    return undefined; // wrapped around
  };
  const put = (b: Uint8Array) =>
    v((s) => {
      const ip = ipToText(t.family, b);
      set(s, ip);
      return `${key}=${ip}`;
    });
  const inside = [put(from), ...(ipToText(t.family, from) !== ipToText(t.family, to) ? [put(to)] : [])];
  const below = step(from, -1);
  const above = step(to, 1);
  const outside = [...(below ? [put(below)] : []), ...(above ? [put(above)] : [])];
  return t.neg ? { key, phase: 2, sat: outside, viol: inside } : { key, phase: 2, sat: inside, viol: outside };
}

/** The source and destination port tests of an L3 rule (at most two ops). */
function portOps(r: { srcPort?: RangeTest; dstPort?: RangeTest }): TestOp[] {
  const ops: TestOp[] = [];
  if (r.srcPort) ops.push(rangeOp('sport', r.srcPort, 0xffff, (s, x) => void (s.sport = x)));
  if (r.dstPort) ops.push(rangeOp('dport', r.dstPort, 0xffff, (s, x) => void (s.dport = x)));
  return ops;
}

function rangeOp(key: string, t: RangeTest, max: number, set: (s: FrameSpec, x: number) => void): TestOp {
  const put = (x: number) =>
    v((s) => {
      set(s, x);
      return `${key}=${x}`;
    });
  const inside = [put(t.lo), ...(t.hi !== t.lo ? [put(t.hi)] : [])];
  const outside = [...(t.lo > 0 ? [put(t.lo - 1)] : []), ...(t.hi < max ? [put(t.hi + 1)] : [])];
  return t.neg ? { key, phase: 2, sat: outside, viol: inside } : { key, phase: 2, sat: inside, viol: outside };
}

function numOp(key: string, t: NumTest, other: (x: number) => number, set: (s: FrameSpec, x: number) => string, phase = 2): TestOp {
  const eq = v((s) => set(s, t.value));
  const ne = v((s) => set(s, other(t.value)));
  return t.neg ? { key, phase, sat: [ne], viol: [eq] } : { key, phase, sat: [eq], viol: [ne] };
}

// ---- value alternatives ----------------------------------------------------------------

const ETHERTYPE_ALT: Record<number, number> = {
  [E.IPV4]: E.IPV6,
  [E.IPV6]: E.IPV4,
  [E.ARP]: E.RARP,
  [E.RARP]: E.ARP,
  [E.VLAN]: E.IPV4,
  [E.QEMU_ANNOUNCE]: 0x88b5, // IEEE local experimental
};
const otherEtherType = (t: number): number => ETHERTYPE_ALT[t] ?? E.IPV4;
const otherProto = (p: number): number => (p === 17 ? 6 : 17);
/** 1<->2, 3<->4, ...: the matching reply/request. */
const otherOpcode = (op: number): number => (op === 0 ? 1 : ((op - 1) ^ 1) + 1);
const flip1 = (x: number): number => x ^ 1;

/** Spec kind for an EtherType, and the VLAN id to use when it is 0x8100. */
export function kindOfEtherType(t: number): { kind: FrameSpec['kind']; vlan?: number } {
  switch (t) {
    case E.IPV4:
      return { kind: 'ipv4' };
    case E.IPV6:
      return { kind: 'ipv6' };
    case E.ARP:
      return { kind: 'arp' };
    case E.RARP:
      return { kind: 'rarp' };
    case E.VLAN:
      return { kind: 'ipv4', vlan: 10 };
    default:
      return { kind: 'raw' };
  }
}

function etherTypeOp(key: string, t: NumTest, ctx: OpContext): TestOp {
  return numOp(
    key,
    t,
    otherEtherType,
    (s, x) => {
      const k = kindOfEtherType(x);
      ctx.setKind(s, k.kind, x);
      if (k.vlan !== undefined) s.vlan = k.vlan;
      return `${key}=${hex4(x)}`;
    },
    0,
  );
}

function protoOp(t: NumTest): TestOp {
  return numOp(
    'proto',
    t,
    otherProto,
    (s, x) => {
      s.proto = x;
      return `proto=${protoName(x)}`;
    },
    1,
  );
}

// ---- STP fields, at ebt_stp's offsets (see eval.ts) ------------------------------------------

type StpFields = NonNullable<Extract<L2Match, { proto: 'stp' }>['fields']>;

function stpOps(f: StpFields): TestOp[] {
  const ops: TestOp[] = [];
  // ebt_stp's configuration field k sits at BPDU byte 3 + k.
  const put16 = (off: number) => (s: FrameSpec, x: number) => {
    s.stp[3 + off] = x >> 8;
    s.stp[3 + off + 1] = x & 255;
  };
  const put32 = (off: number) => (s: FrameSpec, x: number) => {
    for (let i = 0; i < 4; i++) s.stp[3 + off + i] = (x >>> (24 - 8 * i)) & 255;
  };
  const macAt = (off: number) => ({
    get: (s: FrameSpec) => macText(s.stp.subarray(3 + off, 3 + off + 6)),
    set: (s: FrameSpec, m: string) => s.stp.set(mac(m), 3 + off),
  });
  if (f.type)
    ops.push(
      numOp('stp-type', f.type, flip1, (s, x) => {
        s.stp[2] = x;
        return `stp-type=${x}`;
      }),
    );
  if (f.flags)
    ops.push(
      numOp('stp-flags', f.flags, flip1, (s, x) => {
        s.stp[3] = x;
        return `stp-flags=${x}`;
      }),
    );
  const r16: [string, RangeTest | undefined, number][] = [
    ['root-prio', f.rootPriority, 1],
    ['sender-prio', f.senderPriority, 13],
    ['port', f.port, 21],
    ['age', f.age, 23],
    ['max-age', f.maxAge, 25],
    ['hello', f.helloTime, 27],
    ['fwd-delay', f.forwardDelay, 29],
  ];
  for (const [k, t, off] of r16) if (t) ops.push(rangeOp(`stp-${k}`, t, 0xffff, put16(off)));
  if (f.rootCost) ops.push(rangeOp('stp-root-cost', f.rootCost, 0xffffffff, put32(9)));
  if (f.rootAddress) {
    const a = macAt(3);
    ops.push(macOp('stp-root-addr', f.rootAddress, a.get, a.set));
  }
  if (f.senderAddress) {
    const a = macAt(15);
    ops.push(macOp('stp-sender-addr', f.senderAddress, a.get, a.set));
  }
  return ops;
}

// ---- L2 ------------------------------------------------------------------------------

const srcMacOp = (t: MacTest): TestOp =>
  macOp(
    'src',
    t,
    (s) => s.srcMac,
    (s, m) => {
      s.srcMac = m;
    },
  );
const dstMacOp = (t: MacTest): TestOp =>
  macOp(
    'dst',
    t,
    (s) => s.dstMac,
    (s, m) => {
      s.dstMac = m;
    },
  );

/** The tests of an L2 match as frame edits. */
export function l2Ops(m: L2Match, ctx: OpContext): TestOp[] {
  const ops: TestOp[] = [];
  if (m.proto === 'any') return ops;
  if (m.src) ops.push(srcMacOp(m.src));
  if (m.dst) ops.push(dstMacOp(m.dst));
  switch (m.proto) {
    case 'mac':
      if (m.etherType) ops.push(etherTypeOp('type', m.etherType, ctx));
      break;
    case 'vlan':
      if (m.vlanId)
        ops.push(
          numOp(
            'vlan-id',
            m.vlanId,
            flip1,
            (s, x) => {
              s.vlan = x;
              return `vlan-id=${x}`;
            },
            1,
          ),
        );
      if (m.encap) ops.push(etherTypeOp('encap', m.encap, ctx));
      break;
    case 'stp':
      if (m.fields) ops.push(...stpOps(m.fields));
      break;
    case 'arp':
    case 'rarp': {
      const a = (f: 'sha' | 'tha' | 'spa' | 'tpa') => ({
        get: (s: FrameSpec) => s.arp[f],
        set: (s: FrameSpec, x: string) => {
          s.arp[f] = x;
        },
      });
      if (m.opcode)
        ops.push(
          numOp('opcode', m.opcode, otherOpcode, (s, x) => {
            s.arp.op = x;
            return `opcode=${x}`;
          }),
        );
      // ebt_arp compares sha/tha only for Ethernet (htype 1) and spa/tpa only for
      // IPv4 (ptype 0x0800): with such tests, another htype/ptype can never match.
      const needs = (t: NumTest, other: (x: number) => number, want: number, op: TestOp): TestOp =>
        (t.neg ? other(t.value) : t.value) === want ? op : { ...op, sat: [] };
      if (m.hwType) {
        const other = (x: number): number => (x === 1 ? 6 : 1);
        const op = numOp('htype', m.hwType, other, (s, x) => {
          s.arp.htype = x;
          return `htype=${x}`;
        });
        ops.push(m.sha || m.tha ? needs(m.hwType, other, 1, op) : op);
      }
      if (m.protoType) {
        const other = (x: number): number => (x === E.IPV4 ? E.IPV6 : E.IPV4);
        const op = numOp('ptype', m.protoType, other, (s, x) => {
          s.arp.ptype = x;
          return `ptype=${hex4(x)}`;
        });
        ops.push(m.spa || m.tpa || m.gratuitous ? needs(m.protoType, other, E.IPV4, op) : op);
      }
      for (const f of ['sha', 'tha'] as const) {
        const t = m[f];
        if (t) ops.push(macOp(f, t, a(f).get, a(f).set));
      }
      for (const f of ['spa', 'tpa'] as const) {
        const t = m[f];
        if (t) ops.push(ipOp(f, t, a(f).get, a(f).set));
      }
      if (m.gratuitous) {
        const same = v((s) => {
          s.arp.tpa = s.arp.spa;
          return `tpa=spa=${s.arp.spa}`;
        });
        const differ = v((s) => {
          s.arp.tpa = ipToText('ipv4', flipBit(ipToBytes('ipv4', s.arp.spa), 31));
          return `tpa=${s.arp.tpa}!=spa`;
        });
        ops.push(m.gratuitous.neg ? { key: 'gratuitous', phase: 3, sat: [differ], viol: [same] } : { key: 'gratuitous', phase: 3, sat: [same], viol: [differ] });
      }
      break;
    }
    case 'ipv4':
    case 'ipv6': {
      const fam = m.proto;
      const srcIp = (s: FrameSpec) => (fam === 'ipv4' ? s.src4 : s.src6);
      const dstIp = (s: FrameSpec) => (fam === 'ipv4' ? s.dst4 : s.dst6);
      const setSrc = (s: FrameSpec, x: string) => {
        if (fam === 'ipv4') s.src4 = x;
        else s.src6 = x;
      };
      const setDst = (s: FrameSpec, x: string) => {
        if (fam === 'ipv4') s.dst4 = x;
        else s.dst6 = x;
      };
      if (m.protocol) ops.push(protoOp(m.protocol));
      if (m.srcIp) ops.push(ipOp('src-ip', m.srcIp, srcIp, setSrc));
      if (m.dstIp) ops.push(ipOp('dst-ip', m.dstIp, dstIp, setDst));
      for (const op of portOps(m)) ops.push(op);
      if (m.proto === 'ipv4' && m.tos)
        ops.push(
          numOp('tos', m.tos, (x) => x ^ 4, (s, x) => {
            s.tos = x;
            return `tos=${x}`;
          }),
        );
      if (m.proto === 'ipv6' && m.icmpType) {
        const type = m.icmpType;
        ops.push(
          rangeOp('icmp-type', { ...type }, 255, (s, x) => {
            s.icmpType = x;
          }),
        );
        // ebt_ip6 tests "type in range AND code in range" and negates the pair as a whole.
        if (m.icmpCode) {
          const code = m.icmpCode;
          const op = rangeOp('icmp-code', { ...code, neg: false }, 255, (s, x) => {
            s.icmpCode = x;
          });
          ops.push(type.neg ? { ...op, viol: [] } : op);
        }
      }
      break;
    }
  }
  return ops;
}

// ---- L3 ------------------------------------------------------------------------------

const CONN_COMBOS: readonly ConnInfo[] = [
  { state: 'new', direction: 'original' },
  { state: 'established', direction: 'original' },
  { state: 'established', direction: 'reply' },
  { state: 'related', direction: 'original' },
  { state: 'new', direction: 'reply' },
  { state: 'invalid', direction: 'original' },
];

/** The L3 rule's tests as frame edits; `withState` adds the conntrack state/direction test. */
export function l3Ops(r: L3Rule, withState: boolean): TestOp[] {
  const ops: TestOp[] = [];
  const fam = r.family;
  if (r.protocol !== 'all') ops.push(protoOp({ value: r.protocol, neg: false }));
  if (r.srcMac) ops.push(srcMacOp(r.srcMac));
  const srcIp = (s: FrameSpec) => (fam === 'ipv4' ? s.src4 : s.src6);
  const dstIp = (s: FrameSpec) => (fam === 'ipv4' ? s.dst4 : s.dst6);
  const setSrc = (s: FrameSpec, x: string) => {
    if (fam === 'ipv4') s.src4 = x;
    else s.src6 = x;
  };
  const setDst = (s: FrameSpec, x: string) => {
    if (fam === 'ipv4') s.dst4 = x;
    else s.dst6 = x;
  };
  if (r.srcIp) ops.push(ipOp('src-ip', r.srcIp, srcIp, setSrc));
  if (r.dstIp) ops.push(ipOp('dst-ip', r.dstIp, dstIp, setDst));
  if (r.srcRange) ops.push(ipRangeOp('src-ip', r.srcRange, setSrc));
  if (r.dstRange) ops.push(ipRangeOp('dst-ip', r.dstRange, setDst));
  if (r.dscp)
    ops.push(
      numOp('dscp', r.dscp, flip1, (s, x) => {
        s.tos = (x << 2) | (s.tos & 3);
        return `dscp=${x}`;
      }),
    );
  for (const op of portOps(r)) ops.push(op);
  if (r.tcpFlags) {
    const { mask, set, neg } = r.tcpFlags;
    const put = (flags: (s: FrameSpec) => number) =>
      v((s) => {
        s.tcpFlags = flags(s);
        s.tcpFlagsFixed = true;
        return `flags=0x${s.tcpFlags.toString(16).padStart(2, '0')}`;
      });
    const exact = (s: FrameSpec) => (s.tcpFlags & ~mask) | set;
    const low = mask & -mask;
    const eq = put(exact);
    const ne = mask === 0 ? [] : [put((s) => exact(s) ^ low)];
    ops.push(neg ? { key: 'tcp-flags', phase: 2, sat: ne, viol: [eq] } : { key: 'tcp-flags', phase: 2, sat: [eq], viol: ne });
  }
  if (r.tcpOption) {
    const { value, neg } = r.tcpOption;
    const has = v((s) => {
      s.tcpOpt = value;
      return `tcp-option=${value}`;
    });
    const hasNot = v((s) => {
      delete s.tcpOpt;
      return 'no-tcp-option';
    });
    ops.push(neg ? { key: 'tcp-option', phase: 2, sat: [hasNot], viol: [has] } : { key: 'tcp-option', phase: 2, sat: [has], viol: [hasNot] });
  }
  if (r.icmp) {
    const { type, code, neg } = r.icmp;
    const put = (t: number, c: number) =>
      v((s) => {
        s.icmpType = t;
        s.icmpCode = c;
        return `icmp=${t}/${c}`;
      });
    const eq = put(type, code ?? 0);
    const ne = [put(type ^ 1, code ?? 0), ...(code !== undefined ? [put(type, code ^ 1)] : [])];
    ops.push(neg ? { key: 'icmp', phase: 2, sat: ne, viol: [eq] } : { key: 'icmp', phase: 2, sat: [eq], viol: ne });
  }
  if (withState && (r.state || r.ctDir)) {
    const ok = (c: ConnInfo) => c.state !== 'untracked' && (!r.state || r.state.includes(STATE_NAME[c.state])) && (!r.ctDir || (c.state !== 'invalid' && r.ctDir === c.direction));
    const put = (c: ConnInfo) =>
      v((s) => {
        s.conn = { ...c };
        return `ct=${c.state}/${c.direction}`;
      });
    ops.push({ key: 'state', phase: 2, sat: CONN_COMBOS.filter(ok).map(put), viol: CONN_COMBOS.filter((c) => !ok(c)).map(put) });
  }
  return ops;
}

