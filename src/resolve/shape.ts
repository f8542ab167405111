// Instantiation by parameter shape: the second and later interfaces of one
// (template, parameter shape) are built from the first one's policy by
// copying it and putting their own values where the first one's were.
//
// The shape of an interface's parameters is, per parameter name, the length
// of its value list and which of its values repeat earlier ones (the
// equality pattern). Given the template (walk.ts: the rules reached and the
// sources of their variables), the shape fixes everything the expansion
// decides (vars.ts: missing variables, indices, equal lengths, the
// duplicate suppression of an iterator, which compares tuples value by
// value, the combinations and their count, hence the limits and the rule
// ids), and the layout (l2-layout.ts, l3-placement.ts) reads values only
// through the attributes' typed values. So where the port's values are read
// only as addresses (ADDRESS_ATTRS: copied as text into a MAC/IP test or
// range, nowhere else compared or branched on) and as the raw values of the
// origin's bindings, two interfaces of one shape differ exactly at those
// places, and the value at each is a function of one parameter value
// (name, index of its first occurrence in the list).
//
// The first interface of a shape is resolved on the full path while the
// places are recorded (rec); a shape whose port values are read anywhere
// else (another attribute: a mask, a port number, a learned address) is
// marked unsafe and all its interfaces take the full path. An interface
// whose values do not parse as the first one's did takes the full path too
// (which reports the error). test/unit/resolve-shape.test.ts compares both
// paths on every corpus and randomized hosts.
import type { TypedValue } from '../ir/typed-value.js';
import { parseTypedValue } from '../ir/typed-value.js';
import { formatIPv4, formatIPv6 } from '../ir/values.js';
import type { InterfacePolicy } from '../ir/types.js';

/** Attributes whose typed value the layout only copies as text into a test's address (tests.ts macTest/ipTest/ipRange). */
export const ADDRESS_ATTRS: ReadonlySet<string> = new Set([
  'srcmacaddr',
  'dstmacaddr',
  'arpsrcmacaddr',
  'arpdstmacaddr',
  'srcipaddr',
  'dstipaddr',
  'arpsrcipaddr',
  'arpdstipaddr',
  'srcipfrom',
  'srcipto',
  'dstipfrom',
  'dstipto',
]);

/** A place's value: parameter `name`'s value at `idx`, as text ('raw'), or typed and formatted as the layout formats it. */
export interface Sym {
  name: string;
  idx: number;
  form: 'raw' | 'mac' | 'ipv4' | 'ipv6';
}

/** What the first interface of a shape records while it is resolved (off otherwise). */
export const rec = {
  on: false,
  /** A port value was read other than as an address or a binding. */
  unsafe: false,
  /** Typed values of port parameters, by object. */
  tv: new WeakMap<object, Sym>(),
  /** Every typed port value read (to validate a later interface's values as the full path would). */
  read: [] as Sym[],
  /** Per combination: its keys that hold port values. */
  combos: new WeakMap<object, Map<string, Sym>>(),
  /** Objects of the policy with fields to fill per interface. */
  patches: new Map<object, [string, Sym][]>(),
  /** Per value list: each value's first index. */
  firsts: new WeakMap<readonly string[], Map<string, number>>(),
};

export function recStart(): void {
  rec.on = true;
  rec.unsafe = false;
  rec.tv = new WeakMap();
  rec.read = [];
  rec.combos = new WeakMap();
  rec.patches = new Map();
  rec.firsts = new WeakMap();
}

export function recStop(): void {
  rec.on = false;
}

function patch(obj: object, field: string, s: Sym): void {
  let l = rec.patches.get(obj);
  if (!l) rec.patches.set(obj, (l = []));
  l.push([field, s]);
}

/** The index of the first occurrence of `value` in `list` (indexed once per list while recording). */
export function firstIndex(list: readonly string[], value: string): number {
  if (list.length <= 8) return list.indexOf(value);
  let m = rec.firsts.get(list);
  if (!m) {
    m = new Map();
    for (let i = list.length - 1; i >= 0; i--) m.set(list[i] as string, i);
    rec.firsts.set(list, m);
  }
  return m.get(value) ?? -1;
}

/** A typed value of a port parameter read for attribute `attr` (concreteAttrs). */
export function noteTyped(tv: TypedValue, attr: string, name: string, list: readonly string[], raw: string): void {
  if (!ADDRESS_ATTRS.has(attr) || (tv.type !== 'mac' && tv.type !== 'ipv4' && tv.type !== 'ipv6')) {
    rec.unsafe = true;
    return;
  }
  const s: Sym = { name, idx: firstIndex(list, raw), form: tv.type };
  rec.tv.set(tv, s);
  rec.read.push(s);
}

/** `obj[field]` holds the text of typed value `tv` (tests.ts). */
export function noteAddr(obj: object, field: string, tv: object | undefined): void {
  const s = tv && rec.tv.get(tv);
  if (s) patch(obj, field, s);
}

/** `bindings` was made from combination `combo` (walk.ts origin). */
export function noteBindings(bindings: object, combo: object): void {
  const m = rec.combos.get(combo);
  if (m) for (const [k, s] of m) patch(bindings, k, { ...s, form: 'raw' });
}

/** How many interfaces were built from a skeleton (for tests). */
export const shapeStats = { copied: 0 };

/** A field of a copied object: a constant (a primitive or a shared frozen object), another copied object, or a value. */
const CONST = 0;
const NODE = 1;
const TYPED = 2;
const RAW = 3;

/** An object or array of the first interface's policy that each copy makes anew. */
interface CopyNode {
  array: boolean;
  keys: string[];
  kinds: number[];
  /** The constant, the node's index, or the value's index (in `read` or `raws`). */
  args: unknown[];
}

/** The first interface's policy and the places of its values, compiled into a copy program. */
export interface Skeleton {
  /** Unique in the process (the shape stamp of its interfaces, ir/shape-stamp.ts). */
  id: number;
  /** The typed values read (validated for every copy); the stamp's values are theirs, in this order. */
  read: Sym[];
  /** The raw values copied into the origins' bindings. */
  raws: Sym[];
  /** Every object to copy, children before parents. */
  nodes: CopyNode[];
  l2: number;
  l3: number;
}

let nextSkeleton = 1;

/**
 * The copy program of a recorded policy; undefined when it holds something
 * other than plain objects and arrays (its shape then takes the full path).
 */
export function compileSkeleton(policy: InterfacePolicy, patches: Map<object, [string, Sym][]>, read: Sym[]): Skeleton | undefined {
  const nodes: CopyNode[] = [];
  const index = new Map<object, number>();
  const readIdx = new Map<Sym, number>();
  read.forEach((s, k) => readIdx.set(s, k));
  const raws: Sym[] = [];
  const rawIdx = new Map<string, number>();
  const visit = (x: object): number | undefined => {
    const known = index.get(x);
    if (known !== undefined) return known;
    const proto = Object.getPrototypeOf(x) as unknown;
    if (proto !== Object.prototype && proto !== Array.prototype) return undefined;
    const array = Array.isArray(x);
    const n: CopyNode = { array, keys: [], kinds: [], args: [] };
    const o = x as Record<string, unknown>;
    const keys = array ? Array.from({ length: (x as unknown[]).length }, (_, i) => String(i)) : Object.keys(o);
    for (const k of keys) {
      const v = o[k];
      n.keys.push(k);
      if (v === null || typeof v !== 'object' || Object.isFrozen(v)) {
        n.kinds.push(CONST);
        n.args.push(v);
      } else {
        const c = visit(v);
        if (c === undefined) return undefined;
        n.kinds.push(NODE);
        n.args.push(c);
      }
    }
    for (const [f, s] of patches.get(x) ?? []) {
      let j = n.keys.indexOf(f);
      if (j < 0) {
        j = n.keys.length;
        n.keys.push(f);
        n.kinds.push(CONST);
        n.args.push(undefined);
      }
      if (s.form === 'raw') {
        const rk = `${s.name}\0${s.idx}`;
        let r = rawIdx.get(rk);
        if (r === undefined) rawIdx.set(rk, (r = raws.push(s) - 1));
        n.kinds[j] = RAW;
        n.args[j] = r;
      } else {
        n.kinds[j] = TYPED;
        n.args[j] = readIdx.get(s);
      }
    }
    index.set(x, nodes.length);
    nodes.push(n);
    return nodes.length - 1;
  };
  const l2 = visit(policy.l2);
  const l3 = visit(policy.l3);
  if (l2 === undefined || l3 === undefined) return undefined;
  return { id: nextSkeleton++, read, raws, nodes, l2, l3 };
}

/**
 * Longest value list an interface may have to be copied by shape: a long
 * list makes one large policy, which the full path builds about as fast as a
 * copy, without the recording (and such interfaces are few).
 */
export const MAX_SHAPE_LIST = 64;

/**
 * The shape of one interface's values, its parameter names being `names`
 * (sorted, as the template key has them); undefined with a list longer than
 * MAX_SHAPE_LIST (the full path).
 */
export function shapeKey(names: readonly string[], vars: ReadonlyMap<string, readonly string[]>): string | undefined {
  let key = '';
  for (const n of names) {
    const v = vars.get(n) as readonly string[];
    if (v.length > MAX_SHAPE_LIST) return undefined;
    if (v.length === 1) {
      key += '1;';
      continue;
    }
    key += `${v.length}:`;
    const first = new Map<string, number>();
    for (let i = 0; i < v.length; i++) {
      const x = v[i] as string;
      let f = first.get(x);
      if (f === undefined) first.set(x, (f = i));
      key += `${f},`;
    }
    key += ';';
  }
  return key;
}

/** The value of a place for an interface with parameters `vars`; undefined when it does not parse. */
function valueAt(s: Sym, vars: ReadonlyMap<string, readonly string[]>): string | undefined {
  const raw = (vars.get(s.name) as readonly string[])[s.idx] as string;
  if (s.form === 'raw') return raw;
  const tv = parseTypedValue(s.form, raw);
  if (!tv) return undefined;
  if (tv.type === 'ipv4') return formatIPv4(tv.value);
  if (tv.type === 'ipv6') return formatIPv6(tv.value);
  return tv.value as string;
}

/** An interface's value at each of a skeleton's places (sk.read); undefined when one does not parse. */
export function valuesOf(sk: Pick<Skeleton, 'read'>, vars: ReadonlyMap<string, readonly string[]>): string[] | undefined {
  const values: string[] = new Array(sk.read.length);
  for (let k = 0; k < sk.read.length; k++) {
    const v = valueAt(sk.read[k] as Sym, vars);
    if (v === undefined) return undefined;
    values[k] = v;
  }
  return values;
}

/**
 * The L2 and L3 parts of an interface's policy from a skeleton, with its own
 * values, and those values (the stamp's); undefined when one of them does not
 * parse (the full path reports it).
 */
export function fromSkeleton(sk: Skeleton, vars: ReadonlyMap<string, readonly string[]>): (Pick<InterfacePolicy, 'l2' | 'l3'> & { values: string[] }) | undefined {
  const values = valuesOf(sk, vars);
  if (!values) return undefined;
  const raws: string[] = new Array(sk.raws.length);
  for (let k = 0; k < raws.length; k++) {
    const s = sk.raws[k] as Sym;
    raws[k] = (vars.get(s.name) as readonly string[])[s.idx] as string;
  }
  const made: unknown[] = new Array(sk.nodes.length);
  for (let i = 0; i < sk.nodes.length; i++) {
    const n = sk.nodes[i] as CopyNode;
    const { kinds, args } = n;
    const len = kinds.length;
    let out: unknown[] | Record<string, unknown>;
    if (n.array) {
      const a: unknown[] = new Array(len);
      for (let j = 0; j < len; j++) {
        const k = kinds[j];
        const x = args[j];
        a[j] = k === CONST ? x : k === NODE ? made[x as number] : k === TYPED ? values[x as number] : raws[x as number];
      }
      out = a;
    } else {
      const o: Record<string, unknown> = {};
      const keys = n.keys;
      for (let j = 0; j < len; j++) {
        const k = kinds[j];
        const x = args[j];
        o[keys[j] as string] = k === CONST ? x : k === NODE ? made[x as number] : k === TYPED ? values[x as number] : raws[x as number];
      }
      out = o;
    }
    made[i] = out;
  }
  shapeStats.copied++;
  return { l2: made[sk.l2] as InterfacePolicy['l2'], l3: made[sk.l3] as InterfacePolicy['l3'], values };
}
