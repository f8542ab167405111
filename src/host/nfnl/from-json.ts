// Element changes from libnftables JSON: the `add element` / `delete element`
// commands of an element delta, with each set's key and data types taken from
// the generation that declares the set. Returns undefined for anything that
// is not a plain element delta (the caller then uses libnftables).
import type { Atom, MapDataType, NftFamily, NftJsonDocument, SetFlag, SetItem, SetKeyType, Verdict } from '../../backends/nft/model.js';
import type { ElementChange, ElementEntry, SetDecl } from './encode.js';
import { NFPROTO, type NfFamily } from './uapi.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const declKey = (family: unknown, table: unknown, name: unknown): string => `${String(family)}\0${String(table)}\0${String(name)}`;

/** Declarations already read from a build (a build is read once, however many deltas lead to it). */
const declCache = new WeakMap<NftJsonDocument, Map<string, SetDecl>>();

/** The set and map declarations (`add set` / `add map`) of a build, by family, table and name. */
export function setDeclsFromJson(build: NftJsonDocument): Map<string, SetDecl> {
  const cached = declCache.get(build);
  if (cached) return cached;
  const out = new Map<string, SetDecl>();
  declCache.set(build, out);
  for (const cmd of build.nftables as unknown as Obj[]) {
    const add = cmd.add;
    if (!isObj(add)) continue;
    const body = isObj(add.set) ? add.set : isObj(add.map) ? add.map : undefined;
    if (!body) continue;
    const family = String(body.family);
    if (!Object.hasOwn(NFPROTO, family)) continue;
    const decl: SetDecl = {
      family: family as NfFamily & NftFamily,
      table: String(body.table),
      name: String(body.name),
      type: (Array.isArray(body.type) ? body.type : String(body.type)) as SetKeyType | SetKeyType[],
    };
    if (Array.isArray(body.flags)) decl.flags = body.flags as SetFlag[];
    if (isObj(add.map) && typeof body.map === 'string') decl.map = body.map as 'verdict' | MapDataType;
    out.set(declKey(family, decl.table, decl.name), decl);
  }
  return out;
}

function atom(v: unknown): Atom | undefined {
  if (typeof v === 'string') return { kind: 'string', value: v };
  if (typeof v === 'number' && Number.isInteger(v)) return { kind: 'number', value: v };
  return undefined;
}

function setItem(v: unknown): SetItem | undefined {
  const a = atom(v);
  if (a) return a;
  if (!isObj(v)) return undefined;
  if (isObj(v.prefix) && typeof v.prefix.addr === 'string' && typeof v.prefix.len === 'number') return { kind: 'prefix', addr: v.prefix.addr, len: v.prefix.len };
  if (Array.isArray(v.range) && v.range.length === 2) {
    const from = atom(v.range[0]);
    const to = atom(v.range[1]);
    return from && to ? { kind: 'range', from, to } : undefined;
  }
  if (Array.isArray(v.concat)) {
    const items = v.concat.map(setItem);
    if (items.some((i) => !i || i.kind === 'tuple' || i.kind === 'elem')) return undefined;
    return { kind: 'tuple', items: items as ((typeof items)[number] & { kind: 'number' | 'string' | 'symbol' | 'prefix' | 'range' })[] };
  }
  if (isObj(v.elem) && typeof v.elem.comment === 'string') {
    const val = setItem(v.elem.val);
    return val && val.kind !== 'elem' ? { kind: 'elem', value: val, comment: v.elem.comment } : undefined;
  }
  return undefined;
}

function verdict(v: unknown): Verdict | undefined {
  if (!isObj(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 1) return undefined;
  const k = keys[0] as string;
  if (k === 'accept' || k === 'drop' || k === 'continue' || k === 'return') return { kind: k };
  if ((k === 'jump' || k === 'goto') && isObj(v[k]) && typeof (v[k] as Obj).target === 'string') return { kind: k, target: (v[k] as Obj).target as string };
  return undefined;
}

function entry(v: unknown, isMap: boolean): ElementEntry | undefined {
  if (isMap && Array.isArray(v)) {
    if (v.length !== 2) return undefined;
    const k = setItem(v[0]);
    const d = atom(v[1]) ?? verdict(v[1]);
    return k && d ? ([k, d] as const) : undefined;
  }
  return setItem(v);
}

/**
 * The element changes of `live` (an element delta with the kernel's object
 * names), with set types from `build`. `plain` is the same delta before its
 * names were given the load tag (command for command), so that the sets are
 * found in `build` under their own names.
 */
export function elementChangesFromJson(live: NftJsonDocument, plain: NftJsonDocument, build: NftJsonDocument): ElementChange[] | undefined {
  const liveCmds = (live.nftables as unknown as Obj[]).filter((c) => !('metainfo' in c));
  const plainCmds = (plain.nftables as unknown as Obj[]).filter((c) => !('metainfo' in c));
  if (liveCmds.length !== plainCmds.length) return undefined;
  const decls = setDeclsFromJson(build);
  const out: ElementChange[] = [];
  for (let i = 0; i < liveCmds.length; i++) {
    const c = liveCmds[i] as Obj;
    const p = plainCmds[i] as Obj;
    const op = isObj(c.add) ? 'add' : isObj(c.delete) ? 'delete' : undefined;
    if (!op || Object.keys(c).length !== 1) return undefined;
    const el = (c[op] as Obj).element;
    const pel = isObj(p[op]) ? (p[op] as Obj).element : undefined;
    if (!isObj(el) || !isObj(pel) || Object.keys(c[op] as Obj).length !== 1 || !Array.isArray(el.elem)) return undefined;
    const decl = decls.get(declKey(pel.family, pel.table, pel.name));
    if (!decl || el.family !== decl.family || el.table !== decl.table) return undefined;
    const isMap = decl.map !== undefined;
    const elements: ElementEntry[] = [];
    for (const e of el.elem) {
      // a deletion names keys only
      const x = op === 'delete' ? setItem(e) : entry(e, isMap);
      if (!x) return undefined;
      elements.push(x);
    }
    out.push({ op, set: { ...decl, name: String(el.name) }, elements });
  }
  return out;
}
