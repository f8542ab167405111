// Lowering at fleet scale: interfaces of one class are lowered by reading
// their values, not by building their shape key and walking their rules.
//
// A class (of one direction of a port's policy) is what the lowering of a
// shape reads of a port beyond the values it copies into set elements:
//  - the structure: every rule, jump and sub-chain, where a rule the
//    resolver shares between interfaces (frozen, resolve.ts) is named by its
//    identity and any other rule by its text with each address the port
//    looks up in a set (shared.ts portSlot) replaced by a token, numbered by
//    first occurrence of its text (equal texts, equal tokens);
//  - how the port's addresses compare, as the fast-accept walk compares
//    them (opt/walk.ts: masked MAC equality, IP prefix equality): each
//    token against every address test of the structure that is not a token
//    (the constants) and against every other token under every prefix a
//    token is tested with; the port's own MAC (fast-base) is a token too.
// Two ports of one class therefore build the same shape key and the same
// grouping (the key replaces the tokens by `*`), and classify every rule
// alike under every frame class a walk can bind them to (walk.ts
// classSignature reads values only through those comparisons), so their
// walks end alike, element for element. What differs is read from the
// port's own rules at the same positions: its set elements, its fast-accept
// elements (of the combinations a walk accepted for the class), its
// per-interface chains (lowered from its own rules, as before).
//
// A port whose class cannot be stated this way (a learning port, an address
// that does not parse) takes the full path. test/unit/port-memo.test.ts
// compares both paths on every corpus and a randomized host.
import type { Direction, InterfacePolicy, IpTest, L2Rule, MacTest } from '../../ir/types.js';
import { macToBytes, parseIPv4, parseIPv6 } from '../../ir/values.js';
import { portSlot, SLOT_PATHS } from './shared.js';
import { shapeStampOf } from '../../ir/shape-stamp.js';

type Kind = 'mac' | 'ipv4' | 'ipv6';

interface Token {
  kind: Kind;
  bytes: Uint8Array;
}

/** An address test of the structure that is no token: a constant every port of the class shares. */
interface Constant {
  kind: Kind;
  bytes: Uint8Array;
  /** Mask bytes (MAC) or prefix bits (IP) as a byte mask. */
  mask: Uint8Array;
}

/** The structure of a class, and the constants its ports' addresses are compared with. */
export interface ClassStructure {
  constants: Constant[];
  /** Byte masks tokens are tested with, per kind (full included). */
  masks: Record<Kind, Uint8Array[]>;
}

const SLOT_SET: ReadonlySet<string> = new Set(SLOT_PATHS);

const objIds = new WeakMap<object, number>();
let nextId = 1;
function idOf(o: object): number {
  let i = objIds.get(o);
  if (i === undefined) objIds.set(o, (i = nextId++));
  return i;
}

const FULL: Record<Kind, Uint8Array> = { mac: new Uint8Array(6).fill(0xff), ipv4: new Uint8Array(4).fill(0xff), ipv6: new Uint8Array(16).fill(0xff) };
/** The STP jump guard's destination (walk.ts guardTest): compared like a constant. */
const BGA: Constant = { kind: 'mac', bytes: Uint8Array.of(0x01, 0x80, 0xc2, 0, 0, 0), mask: FULL.mac };

function hexDigit(c: number): number {
  return c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
}

/** A MAC written xx:xx:xx:xx:xx:xx as bytes, without a regex or a split; undefined for any other text. */
function macBytes17(text: string): Uint8Array | undefined {
  if (text.length !== 17) return undefined;
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    const hi = hexDigit(text.charCodeAt(i * 3));
    const lo = hexDigit(text.charCodeAt(i * 3 + 1));
    if (hi < 0 || lo < 0 || (i < 5 && text.charCodeAt(i * 3 + 2) !== 58)) return undefined;
    b[i] = (hi << 4) | lo;
  }
  return b;
}

const bytesCache: Record<Kind, Map<string, Uint8Array | null>> = { mac: new Map(), ipv4: new Map(), ipv6: new Map() };
function addrBytes(kind: Kind, text: string): Uint8Array | undefined {
  const cache = bytesCache[kind];
  const hit = cache.get(text);
  if (hit !== undefined) return hit ?? undefined;
  let b: Uint8Array | undefined;
  if (kind === 'mac') {
    b = macBytes17(text) ?? (/^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$/.test(text) ? macToBytes(text) : undefined);
  } else if (kind === 'ipv4') {
    const v = parseIPv4(text);
    b = v === undefined ? undefined : Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  } else b = parseIPv6(text);
  if (cache.size >= 1 << 16) cache.clear();
  cache.set(text, b ?? null);
  return b;
}

function prefixMask(kind: 'ipv4' | 'ipv6', prefix: number): Uint8Array {
  const m = new Uint8Array(kind === 'ipv4' ? 4 : 16);
  for (let i = 0; i < m.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    m[i] = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return m;
}

function kindOf(t: MacTest | IpTest): Kind {
  return 'family' in t ? t.family : 'mac';
}

/** A test's mask as bytes (undefined: it cannot be compared, e.g. an address that does not parse). */
function maskOf(t: MacTest | IpTest): Uint8Array | undefined {
  if ('family' in t) return prefixMask(t.family, t.prefix);
  if (t.mask === undefined) return FULL.mac;
  return addrBytes('mac', t.mask);
}

function maskedEqual(a: Uint8Array, b: Uint8Array, m: Uint8Array): boolean {
  if (a.length !== b.length || m.length !== a.length) return false;
  for (let i = 0; i < a.length; i++) if (((a[i] as number) & (m[i] as number)) !== ((b[i] as number) & (m[i] as number))) return false;
  return true;
}

const maskKey = (m: Uint8Array): string => Array.from(m).join('.');

// Scratch state of one classKey call (module-level: no closures per call on the hot path).
const tokenOf = new Map<string, number>();
const tokens: Token[] = [];
let bad = false;

function tok(kind: Kind, text: string): number {
  let i = tokenOf.get(text);
  if (i !== undefined) {
    if ((tokens[i] as Token).kind !== kind) bad = true;
    return i;
  }
  const bytes = addrBytes(kind, text);
  if (!bytes) {
    bad = true;
    return -1;
  }
  tokenOf.set(text, (i = tokens.length));
  tokens.push({ kind, bytes });
  return i;
}

/** A rule of the structure: its identity (frozen) or its text with the port's looked-up addresses as tokens. */
function ruleKey(r: L2Rule): number | string {
  if (Object.isFrozen(r)) return idOf(r);
  const m = r.match as unknown as Record<string, unknown>;
  let text = `R${JSON.stringify(r.id)},${r.verdict},${r.priority},${JSON.stringify(r.origin.filter)},${r.origin.rule},{`;
  for (const k in m) {
    const v = m[k];
    if (v === undefined) continue;
    text += `${k}:`;
    if (SLOT_SET.has(k) && portSlot(v as MacTest | IpTest)) {
      const t = v as MacTest | IpTest;
      text += `{#${tok(kindOf(t), t.addr)}`;
      for (const f in t) if (f !== 'addr') text += `,${f}:${JSON.stringify((t as unknown as Record<string, unknown>)[f])}`;
      text += '},';
    } else text += `${JSON.stringify(v)},`;
  }
  return `${text}}`;
}

/** The constants of a structure and the masks its tokens are tested with, from one port of it. */
function structureOf(p: InterfacePolicy, dir: Direction): ClassStructure | undefined {
  const constants: Constant[] = [BGA];
  const masks: Record<Kind, Map<string, Uint8Array>> = { mac: new Map(), ipv4: new Map(), ipv6: new Map() };
  for (const k of ['mac', 'ipv4', 'ipv6'] as const) masks[k].set(maskKey(FULL[k]), FULL[k]);
  const pol = p.l2[dir];
  const rules: L2Rule[] = [];
  for (const e of pol.root) if (e.kind === 'rule') rules.push(e.rule);
  for (const c of pol.chains) for (const r of c.rules) rules.push(r);
  for (const r of rules) {
    const frozen = Object.isFrozen(r);
    for (const path of SLOT_PATHS) {
      const t = (r.match as unknown as Record<string, MacTest | IpTest | undefined>)[path];
      if (!t) continue;
      const kind = kindOf(t);
      const mask = maskOf(t);
      if (!mask) return undefined;
      if (!frozen && portSlot(t)) masks[kind].set(maskKey(mask), mask);
      else {
        const bytes = addrBytes(kind, t.addr);
        if (!bytes) return undefined;
        constants.push({ kind, bytes, mask });
      }
    }
  }
  return { constants, masks: { mac: [...masks.mac.values()], ipv4: [...masks.ipv4.values()], ipv6: [...masks.ipv6.values()] } };
}

/** How the tokens compare with the constants and with each other: one character per comparison. */
function relations(st: ClassStructure): string {
  let s = '';
  for (let i = 0; i < tokens.length; i++) {
    const a = tokens[i] as Token;
    for (const c of st.constants) if (c.kind === a.kind) s += maskedEqual(a.bytes, c.bytes, c.mask) ? '1' : '0';
    for (let j = i + 1; j < tokens.length; j++) {
      const b = tokens[j] as Token;
      if (b.kind !== a.kind) continue;
      for (const m of st.masks[a.kind]) s += maskedEqual(a.bytes, b.bytes, m) ? '1' : '0';
    }
    s += ';';
  }
  return s;
}

/** A node of the structures seen: one step per rule, jump or chain. */
interface Node {
  next: Map<number | string, Node>;
  id: number;
  st?: ClassStructure | null;
}

/** Classes of ports, per lowering: a port's class key, or undefined when it has none (the full path). */
export class PortClasses {
  private readonly root: Record<Direction, Node>;
  private nodes = 0;

  constructor() {
    this.root = { out: this.node(), in: this.node() };
  }

  private node(): Node {
    return { next: new Map(), id: this.nodes++ };
  }

  private step(n: Node, k: number | string): Node {
    let x = n.next.get(k);
    if (!x) n.next.set(k, (x = this.node()));
    return x;
  }

  /**
   * Per (resolver skeleton, direction, equality pattern of the port's values):
   * the class's node and structure, and where each token's text comes from
   * (an index into the stamp's values, -1: the port's MAC); null: no cheap
   * key for these ports (the full walk).
   */
  private readonly plans = new Map<string, Plan | null>();

  /**
   * A port's class key. A port the resolver built from a skeleton (its shape
   * stamp, ir/shape-stamp.ts) differs from the skeleton's other ports only
   * in the values at the skeleton's places: in the structure walked here
   * those are the port's looked-up addresses (the tokens; checked on the
   * first port, which must have no other port value in its L2 rules), so
   * ports of one skeleton whose values (and MAC) are equal in the same
   * pattern walk to the same node with their tokens in the same order, and
   * only the comparisons of their own tokens are computed.
   */
  classKey(p: InterfacePolicy, dir: Direction): string | undefined {
    if (p.learning) return undefined;
    const stamp = shapeStampOf(p);
    if (!stamp) return this.walkKey(p, dir);
    const mac = p.mac.toLowerCase();
    const pk = `${stamp.id}${dir}${equalityPattern(mac, stamp.values)}`;
    const plan = this.plans.get(pk);
    if (plan === undefined) {
      const key = this.walkKey(p, dir);
      this.plans.set(pk, key === undefined || !this.last ? null : planOf(p, dir, this.last, mac, stamp.values));
      return key;
    }
    if (plan === null) return this.walkKey(p, dir);
    tokens.length = 0;
    for (let i = 0; i < plan.src.length; i++) {
      const src = plan.src[i] as number;
      const kind = plan.kinds[i] as Kind;
      const bytes = addrBytes(kind, src < 0 ? mac : (stamp.values[src] as string));
      if (!bytes) return this.walkKey(p, dir);
      tokens.push({ kind, bytes });
    }
    return `${plan.node.id};${relations(plan.st)}`;
  }

  /** The node and structure of the last walk that gave a key. */
  private last: { node: Node; st: ClassStructure } | undefined;

  /** The class key by walking the port's structure. */
  private walkKey(p: InterfacePolicy, dir: Direction): string | undefined {
    this.last = undefined;
    tokenOf.clear();
    tokens.length = 0;
    bad = false;
    const pol = p.l2[dir];
    let n = this.root[dir];
    for (const e of pol.root) {
      if (e.kind === 'jump') n = this.step(n, Object.isFrozen(e) ? idOf(e) : `J${JSON.stringify(e)}`);
      else n = this.step(n, ruleKey(e.rule));
    }
    for (const c of pol.chains) {
      n = this.step(n, `c${JSON.stringify(c.name)},${c.priority}`);
      for (const r of c.rules) n = this.step(n, ruleKey(r));
    }
    // fast-base fills the port's own MAC into the base sets' keys
    n = this.step(n, `M${tok('mac', p.mac.toLowerCase())}`);
    if (bad) return undefined;
    if (n.st === undefined) n.st = structureOf(p, dir) ?? null;
    if (n.st === null) return undefined;
    this.last = { node: n, st: n.st };
    return `${n.id};${relations(n.st)}`;
  }
}

interface Plan {
  node: Node;
  st: ClassStructure;
  src: number[];
  kinds: Kind[];
}

/** Which values of a list (the MAC first) are equal: the index of each one's first occurrence. */
function equalityPattern(mac: string, values: readonly string[]): string {
  let s = '';
  const first = values.length > 8 ? new Map<string, number>() : undefined;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as string;
    let f: number | undefined;
    if (v === mac) f = -1;
    else if (first) {
      f = first.get(v);
      if (f === undefined) first.set(v, (f = i));
    } else f = values.indexOf(v);
    s += `,${f}`;
  }
  return s;
}

/**
 * The plan of a walked port (tokens as the walk left them): undefined when
 * a port value of its L2 rules is not a token (a masked MAC, a value
 * elsewhere in a match), or a token's text is none of its values.
 */
function planOf(p: InterfacePolicy, dir: Direction, last: { node: Node; st: ClassStructure }, mac: string, values: readonly string[]): Plan | null {
  const pol = p.l2[dir];
  const rules: L2Rule[] = [];
  for (const e of pol.root) if (e.kind === 'rule') rules.push(e.rule);
  for (const c of pol.chains) for (const r of c.rules) rules.push(r);
  for (const r of rules) {
    if (Object.isFrozen(r)) continue;
    const m = r.match as unknown as Record<string, unknown>;
    for (const k in m) {
      const v = m[k];
      if (SLOT_SET.has(k) && (v as MacTest | undefined)?.port) {
        if (!portSlot(v as MacTest | IpTest)) return null;
      } else if (v !== undefined && JSON.stringify(v).includes('"port"')) return null;
    }
  }
  const src: number[] = new Array(tokens.length);
  const kinds: Kind[] = new Array(tokens.length);
  const first = new Map<string, number>();
  for (let i = values.length - 1; i >= 0; i--) first.set(values[i] as string, i);
  for (const [text, i] of tokenOf) {
    const j = text === mac ? -1 : first.get(text);
    if (j === undefined) return null;
    src[i] = j;
    kinds[i] = (tokens[i] as Token).kind;
  }
  return { node: last.node, st: last.st, src, kinds };
}
