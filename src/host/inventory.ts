// Typed inventories of nwf-fast's nftables objects: what a generation
// declares (from its typed commands) and what the kernel holds (from a
// listing, parsed once), both keyed by identity (kind, family, table, name),
// with each object's definition and the elements of sets and maps kept
// apart, so that a load is a diff between two inventories (load-plan.ts).
//
// Drift is checked against a snapshot built from what was loaded (never
// from a listing): one canonical line per object (a chain's definition and
// rules, a set's definition and elements), computed the same way from the
// typed commands and from a listing. A rule is compared by its comment and
// the objects it refers to (a listing writes expressions differently from
// the input nft parsed: `ether type ip` for 0x800); so a foreign rule, a
// deleted or reordered rule, a rule jumping elsewhere, a missing or extra
// element, set or chain are found, and a rule rewritten in place with the
// same comment and references is not.
import { InternalError } from '../util/errors.js';
import {
  verdictWords,
  type Atom,
  type ChainObject,
  type CounterObject,
  type Json,
  type MapObject,
  type NftCommand,
  type NftFamily,
  type NftJsonDocument,
  type RuleObject,
  type SetItem,
  type SetObject,
  type Statement,
  type TableObject,
  type Verdict,
} from '../backends/nft/model.js';
import { BRIDGE_TABLE, INET_TABLE, isHostManagedState, tagFree, tagOf } from '../backends/nft/names.js';

// ---- identities ---------------------------------------------------------------------

export interface TableId {
  kind: 'table';
  family: NftFamily;
  name: string;
}
export type ObjectKind = 'chain' | 'set' | 'map' | 'counter';
export interface ObjectId<K extends ObjectKind = ObjectKind> {
  kind: K;
  family: NftFamily;
  table: string;
  name: string;
}

/** The map key of a table or an object. */
export function idKey(id: TableId | ObjectId): string {
  return id.kind === 'table' ? `table ${id.family} ${id.name}` : `${id.kind} ${id.family} ${id.table} ${id.name}`;
}
const tableKey = (family: string, table: string): string => `table ${family} ${table}`;
export const tableKeyOf = (id: ObjectId): string => tableKey(id.family, id.table);

/** nwf-fast's tables, all named nwf_fast (inet: left by older versions, removed by the next load). */
export const OUR_TABLES: readonly TableId[] = [
  { kind: 'table', family: 'bridge', name: BRIDGE_TABLE },
  { kind: 'table', family: 'ip', name: INET_TABLE },
  { kind: 'table', family: 'ip6', name: INET_TABLE },
  { kind: 'table', family: 'inet', name: INET_TABLE },
];

// ---- canonical elements -------------------------------------------------------------

/** An element of a named set (a key), or an entry of a named map (key and data). */
export type Element = SetItem | readonly [SetItem, Atom | Verdict];

const number = (n: number): string => String(n);

function itemText(i: SetItem): string {
  switch (i.kind) {
    case 'number':
      return number(i.value);
    case 'string':
    case 'symbol':
      return i.value;
    case 'prefix':
      return `${i.addr}/${i.len}`;
    case 'range':
      return `${itemText(i.from)}-${itemText(i.to)}`;
    case 'tuple':
      return i.items.map(itemText).join(' . ');
    case 'elem':
      return itemText(i.value);
  }
}

function dataText(d: Atom | Verdict): string {
  return d.kind === 'number' || d.kind === 'string' || d.kind === 'symbol' ? itemText(d) : verdictWords(d);
}

/** An element of the typed model in canonical text: `"vnet0" . 10.0.0.1` as `vnet0 . 10.0.0.1`, a map entry `key : data`. */
export function elementText(e: Element): string {
  if (Array.isArray(e)) {
    const [k, d] = e as readonly [SetItem, Atom | Verdict];
    return `${itemText(k)} : ${dataText(d)}`;
  }
  return itemText(e as SetItem);
}

type JsonObject = { [key: string]: Json };
const isObject = (v: Json | undefined): v is JsonObject => !!v && typeof v === 'object' && !Array.isArray(v);

function listedValue(v: Json): string {
  if (typeof v === 'number') return number(v);
  if (typeof v === 'string') return /^0x[0-9a-f]+$/i.test(v) ? number(parseInt(v, 16)) : v;
  if (isObject(v)) {
    if (Array.isArray(v.concat)) return v.concat.map(listedValue).join(' . ');
    if (isObject(v.prefix)) return `${String(v.prefix.addr)}/${String(v.prefix.len)}`;
    if (Array.isArray(v.range)) return `${listedValue(v.range[0] ?? null)}-${listedValue(v.range[1] ?? null)}`;
    if (isObject(v.elem)) return listedValue(v.elem.val ?? null);
    for (const k of ['jump', 'goto']) if (isObject(v[k])) return `${k} ${String((v[k] as JsonObject).target)}`;
    for (const k of ['accept', 'drop', 'continue', 'return']) if (k in v) return k;
  }
  return JSON.stringify(v);
}

/** An element of a listing (`nft -j list`) in the same canonical text as elementText. */
export function listedElementText(e: Json): string {
  if (Array.isArray(e) && e.length === 2) return `${listedValue(e[0] as Json)} : ${listedValue(e[1] as Json)}`;
  return listedValue(e);
}

/** The per-element counter of a listed element, if it has one. */
export function listedElementCounter(e: Json): { packets: number; bytes: number } | undefined {
  const k = Array.isArray(e) ? e[0] : e;
  if (!isObject(k) || !isObject(k.elem) || !isObject(k.elem.counter)) return undefined;
  return { packets: Number(k.elem.counter.packets ?? 0), bytes: Number(k.elem.counter.bytes ?? 0) };
}

// ---- what a generation declares -----------------------------------------------------

export type SetDefinition = Omit<SetObject, 'elements'> | Omit<MapObject, 'elements'>;

export interface GenerationInventory {
  tables: Map<string, TableObject>;
  /** Chains with their rules in order. */
  chains: Map<string, { id: ObjectId<'chain'>; definition: ChainObject; rules: RuleObject[] }>;
  /** Named sets and maps: the definition without elements. */
  sets: Map<string, { id: ObjectId<'set' | 'map'>; definition: SetDefinition }>;
  counters: Map<string, CounterObject>;
  /** Elements by set key (idKey of the set or map), each by its canonical text; also for sets other commands declare. */
  elements: Map<string, Map<string, Element>>;
}

const objectId = <K extends ObjectKind>(kind: K, o: { family: NftFamily; table: string; name: string }): ObjectId<K> => ({ kind, family: o.family, table: o.table, name: o.name });

/** The key of the set or map `name` in a table: a set's and a map's keys differ, an element command does not say which. */
export function setKeyOf(family: NftFamily, table: string, name: string, isMap: boolean): string {
  return idKey({ kind: isMap ? 'map' : 'set', family, table, name });
}

/**
 * The inventory of add commands (as lowering writes them). Elements may
 * name sets that other commands (another part) declare: `isMap` says which
 * kind such a set is (default: declared here, else a set).
 */
export function inventoryOf(cmds: readonly NftCommand[], isMap?: (family: NftFamily, table: string, name: string) => boolean): GenerationInventory {
  const inv: GenerationInventory = { tables: new Map(), chains: new Map(), sets: new Map(), counters: new Map(), elements: new Map() };
  const addElements = (key: string, elements: readonly Element[]): void => {
    let m = inv.elements.get(key);
    if (!m) inv.elements.set(key, (m = new Map()));
    for (const e of elements) m.set(elementText(e), e);
  };
  const rules: RuleObject[] = [];
  const pendingElements: { family: NftFamily; table: string; name: string; elements: readonly Element[] }[] = [];
  for (const c of cmds) {
    if (c.op !== 'add') throw new InternalError(`a build holds add commands only, not ${c.op}`);
    const o = c.object;
    switch (o.kind) {
      case 'table':
        inv.tables.set(idKey(o), o);
        break;
      case 'chain':
        inv.chains.set(idKey(objectId('chain', o)), { id: objectId('chain', o), definition: o, rules: [] });
        break;
      case 'rule':
        rules.push(o);
        break;
      case 'set':
      case 'map': {
        const { elements, ...definition } = o;
        const id = objectId(o.kind, o);
        inv.sets.set(idKey(id), { id, definition });
        if (elements?.length) addElements(idKey(id), elements as readonly Element[]);
        break;
      }
      case 'element':
        pendingElements.push(o);
        break;
      case 'counter':
        inv.counters.set(idKey(objectId('counter', o)), o);
        break;
      default:
        throw new InternalError(`unexpected object in a build: ${JSON.stringify(o)}`);
    }
  }
  for (const r of rules) {
    const ch = inv.chains.get(idKey({ kind: 'chain', family: r.family, table: r.table, name: r.chain }));
    if (!ch) throw new InternalError(`a rule in chain ${r.chain}, which the build does not declare`);
    ch.rules.push(r);
  }
  for (const e of pendingElements) {
    const asMap = inv.sets.has(setKeyOf(e.family, e.table, e.name, true)) || (!inv.sets.has(setKeyOf(e.family, e.table, e.name, false)) && (isMap?.(e.family, e.table, e.name) ?? false));
    addElements(setKeyOf(e.family, e.table, e.name, asMap), e.elements);
  }
  return inv;
}

// ---- references of a rule -----------------------------------------------------------

/** The objects a typed rule refers to: sets and maps, jump/goto targets, named counters. */
export function ruleRefs(statements: readonly Statement[]): string[] {
  const out: string[] = [];
  const selector = (s: unknown): void => {
    const x = s as { kind?: string; data?: { kind: string; name?: string }; left?: unknown; items?: unknown[] };
    if (!x || typeof x !== 'object') return;
    if (x.kind === 'map' && x.data?.kind === 'setref' && x.data.name) out.push(x.data.name);
    if (x.left) selector(x.left);
    if (Array.isArray(x.items)) x.items.forEach(selector);
  };
  for (const s of statements) {
    switch (s.kind) {
      case 'jump':
      case 'goto':
        out.push(s.target);
        break;
      case 'match':
        selector(s.left);
        if (s.right.kind === 'setref') out.push(s.right.name);
        break;
      case 'vmap':
        selector(s.key);
        if (s.data.kind === 'setref') out.push(s.data.name);
        break;
      case 'set-update':
        selector(s.key);
        out.push(s.set);
        break;
      case 'counter-ref':
        out.push(s.name);
        break;
      case 'counter-map':
        out.push(s.map);
        break;
      case 'mangle':
        selector(s.value);
        break;
      default:
        break;
    }
  }
  return out.sort();
}

// ---- what the kernel holds ----------------------------------------------------------

/** A rule as listed: its handle, comment and the objects it refers to (sets and maps, jump/goto targets, named counters). */
export interface ListedRule {
  handle: number;
  refs: string[];
  comment?: string;
}

export interface KernelInventory {
  tables: Map<string, TableId>;
  chains: Map<string, { id: ObjectId<'chain'>; base: boolean; baseText?: string; rules: ListedRule[] }>;
  sets: Map<string, { id: ObjectId<'set' | 'map'>; definitionText: string; elements: Json[] }>;
  counters: Map<string, { id: ObjectId<'counter'>; packets: number; bytes: number }>;
}

/** `nft -j list table` output of each of our tables that exists, by family. */
export type Listing = Partial<Record<NftFamily, NftJsonDocument>>;

function family(v: Json | undefined): NftFamily {
  if (v === 'bridge' || v === 'inet' || v === 'netdev' || v === 'ip' || v === 'ip6') return v;
  throw new InternalError(`nft listed an object of unknown family ${JSON.stringify(v)}`);
}

/** Names a listed rule expression refers to: `@set` strings, jump/goto targets and named counters. */
function references(v: Json, out: string[] = []): string[] {
  if (typeof v === 'string') {
    if (v.startsWith('@')) out.push(v.slice(1));
  } else if (Array.isArray(v)) {
    for (const x of v) references(x, out);
  } else if (isObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      if ((k === 'jump' || k === 'goto') && isObject(x) && typeof x.target === 'string') out.push(x.target);
      else if (k === 'counter' && typeof x === 'string') out.push(x);
      else if (k !== 'comment') references(x, out);
    }
  }
  return out;
}

const LISTED_KINDS: ReadonlySet<string> = new Set(['table', 'chain', 'rule', 'set', 'map', 'counter']);

function baseText(type: unknown, hook: unknown, prio: unknown, policy: unknown): string {
  return `base ${String(type)} ${String(hook)} ${String(prio)} ${String(policy ?? 'accept')}`;
}

function setDefinitionText(o: { type?: unknown; map?: unknown; flags?: unknown; counter?: boolean }): string {
  const type = Array.isArray(o.type) ? o.type.join(' . ') : String(o.type);
  // nft -j list omits `dynamic` (a set updated from the packet path): not compared
  const fl = Array.isArray(o.flags) ? o.flags.map(String).filter((f) => f !== 'dynamic') : [];
  const flags = fl.length ? ` flags ${fl.sort().join(',')}` : '';
  return `type ${type}${o.map ? ` : ${String(o.map)}` : ''}${flags}${o.counter ? ' counter' : ''}`;
}

/** Parses a listing into a typed inventory. */
export function kernelInventory(listing: Listing): KernelInventory {
  const inv: KernelInventory = { tables: new Map(), chains: new Map(), sets: new Map(), counters: new Map() };
  const rules: { chain: string; rule: ListedRule }[] = [];
  for (const doc of Object.values(listing)) {
    for (const item of doc?.nftables ?? []) {
      const [kind, v] = Object.entries(item)[0] ?? [];
      // metainfo, and kinds nwf-fast does not create
      if (!isObject(v) || !LISTED_KINDS.has(kind as string)) continue;
      const o = { family: family(v.family), table: String(v.table), name: String(v.name) };
      switch (kind) {
        case 'table':
          inv.tables.set(tableKey(o.family, o.name), { kind: 'table', family: o.family, name: o.name });
          break;
        case 'chain': {
          const base = v.hook !== undefined;
          inv.chains.set(idKey(objectId('chain', o)), { id: objectId('chain', o), base, ...(base ? { baseText: baseText(v.type, v.hook, v.prio, v.policy) } : {}), rules: [] });
          break;
        }
        case 'rule':
          rules.push({
            chain: idKey({ kind: 'chain', family: o.family, table: o.table, name: String(v.chain) }),
            rule: { handle: Number(v.handle), refs: references(v.expr ?? []).sort(), ...(typeof v.comment === 'string' ? { comment: v.comment } : {}) },
          });
          break;
        case 'set':
        case 'map': {
          const id = objectId(kind, o);
          const counter = Array.isArray(v.stmt) && v.stmt.some((s) => isObject(s) && 'counter' in s);
          inv.sets.set(idKey(id), { id, definitionText: setDefinitionText({ type: v.type, map: v.map, flags: v.flags, counter }), elements: Array.isArray(v.elem) ? v.elem : [] });
          break;
        }
        case 'counter':
          inv.counters.set(idKey(objectId('counter', o)), { id: objectId('counter', o), packets: Number(v.packets ?? 0), bytes: Number(v.bytes ?? 0) });
          break;
      }
    }
  }
  for (const r of rules) inv.chains.get(r.chain)?.rules.push(r.rule);
  return inv;
}

/** Every load tag carried by an object in the kernel. */
export function tagsIn(k: KernelInventory): Set<string> {
  const out = new Set<string>();
  for (const { id } of [...k.chains.values(), ...k.sets.values()]) {
    const t = tagOf(id.name);
    if (t) out.add(t);
  }
  return out;
}

/**
 * The objects the base chains reach now (through rules and through the
 * jump targets of map elements): what frames may be traversing. A load
 * deletes them only after the new generation is in force.
 */
export function reachable(k: KernelInventory): Set<string> {
  const seen = new Set<string>();
  const byTable = (table: string): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    for (const [key, ch] of k.chains) if (tableKeyOf(ch.id) === table) m.set(ch.id.name, [key]);
    for (const [key, s] of k.sets) if (tableKeyOf(s.id) === table) m.set(s.id.name, [...(m.get(s.id.name) ?? []), key]);
    for (const [key, c] of k.counters) if (tableKeyOf(c.id) === table) m.set(c.id.name, [...(m.get(c.id.name) ?? []), key]);
    return m;
  };
  const names = new Map<string, Map<string, string[]>>();
  const visit = (table: string, ref: string): void => {
    let m = names.get(table);
    if (!m) names.set(table, (m = byTable(table)));
    for (const key of m.get(ref) ?? []) {
      if (seen.has(key)) continue;
      seen.add(key);
      const ch = k.chains.get(key);
      if (ch) for (const r of ch.rules) for (const x of r.refs) visit(table, x);
      const s = k.sets.get(key);
      if (s) for (const e of s.elements) for (const x of references(Array.isArray(e) ? (e[1] as Json) : null)) visit(table, x);
    }
  };
  for (const [key, ch] of k.chains) {
    if (!ch.base) continue;
    seen.add(key);
    for (const r of ch.rules) for (const x of r.refs) visit(tableKeyOf(ch.id), x);
  }
  return seen;
}

// ---- snapshots (drift) ----------------------------------------------------------------

/** One canonical text per object: what must not change while a generation is in force. */
export type Snapshot = Map<string, string>;

function ruleText(r: { comment?: string; refs: readonly string[] }): string {
  return `rule ${JSON.stringify(r.comment ?? '')} -> ${r.refs.join(',')}`;
}

/** The snapshot of typed add commands (the generation as it was loaded, tagged). */
export function expectedSnapshot(cmds: readonly NftCommand[]): Snapshot {
  const inv = inventoryOf(cmds);
  const out: Snapshot = new Map();
  for (const key of inv.tables.keys()) out.set(key, 'table');
  for (const key of inv.counters.keys()) out.set(key, 'counter');
  for (const [key, ch] of inv.chains) {
    const b = ch.definition.base;
    const head = b ? baseText(b.type, b.hook, b.prio, b.policy) : 'chain';
    out.set(key, [head, ...ch.rules.map((r) => ruleText({ ...(r.comment !== undefined ? { comment: r.comment } : {}), refs: ruleRefs(r.statements) }))].join('\n'));
  }
  for (const [key, s] of inv.sets) {
    const d = s.definition;
    const elements = isHostManagedState(s.id.name) ? [] : [...(inv.elements.get(key)?.keys() ?? [])].sort();
    out.set(key, [setDefinitionText({ type: d.type, ...(d.kind === 'map' ? { map: d.map } : {}), ...(d.flags ? { flags: d.flags } : {}), ...(d.counter ? { counter: true } : {}) }), ...elements].join('\n'));
  }
  for (const key of inv.elements.keys()) if (!inv.sets.has(key)) out.set(key, `elements of an undeclared set`);
  return out;
}

/** The snapshot of a listing of our tables. */
export function listingSnapshot(k: KernelInventory): Snapshot {
  const out: Snapshot = new Map();
  for (const key of k.tables.keys()) out.set(key, 'table');
  for (const key of k.counters.keys()) out.set(key, 'counter');
  for (const [key, ch] of k.chains) out.set(key, [ch.baseText ?? 'chain', ...ch.rules.map(ruleText)].join('\n'));
  // learned state (IP learning, from the packet path) and the eBPF gate (the host's, checked by status): their elements are not drift
  for (const [key, s] of k.sets) out.set(key, [s.definitionText, ...(isHostManagedState(s.id.name) ? [] : s.elements.map(listedElementText).sort())].join('\n'));
  return out;
}

/** What differs between the expected and the actual snapshot, in words (at most `max` lines). */
export function snapshotDiff(expected: Snapshot, actual: Snapshot, max = 8): string[] {
  const out: string[] = [];
  for (const [key, want] of expected) {
    const got = actual.get(key);
    if (got === undefined) out.push(`${key} is missing`);
    else if (got !== want) {
      const w = want.split('\n');
      const g = new Set(got.split('\n'));
      const missing = w.filter((l) => !g.has(l));
      const extra = [...g].filter((l) => !w.includes(l));
      const detail = [...missing.slice(0, 2).map((l) => `missing ${l}`), ...extra.slice(0, 2).map((l) => `unexpected ${l}`)];
      out.push(`${key} differs${detail.length ? `: ${detail.join('; ')}` : ' (order)'}`);
    }
  }
  for (const key of actual.keys()) if (!expected.has(key)) out.push(`${key} is not nwf-fast's (foreign or left over)`);
  return out.length > max ? [...out.slice(0, max), `... and ${out.length - max} more`] : out;
}

/**
 * A listing without handles and counter values, elements as sets and load
 * tags masked: what two loads of one generation have in common (tests).
 */
export function normalizeListing(doc: NftJsonDocument | undefined): unknown {
  if (!doc) return null;
  const strip = (v: unknown): unknown => {
    if (typeof v === 'string') return v.startsWith('@') ? `@${tagFree(v.slice(1))}` : tagFree(v);
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === 'handle' || k === 'packets' || k === 'bytes') continue;
        // element order in a listing depends on insertion history: compare as sets
        if (k === 'comment') o[k] = x;
        else o[k] = k === 'elem' && Array.isArray(x) ? (x.map(strip) as unknown[]).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) : strip(x);
      }
      return o;
    }
    return v;
  };
  // object order in a listing is creation order, which depends on history too (a set kept across a
  // full replacement lists before the objects created anew): objects in a canonical order, but rules
  // in their order within their chain (a stable sort, keyed by the chain), which is their meaning
  const key = (o: unknown): string => {
    const rule = (o as { rule?: { family?: string; table?: string; chain?: string } }).rule;
    return rule ? `rule ${rule.family} ${rule.table} ${rule.chain}` : `${Object.keys(o as object)[0]} ${JSON.stringify(o)}`;
  };
  const objects = (strip(doc.nftables.filter((o) => !('metainfo' in o))) as unknown[]).map((o) => [key(o), o] as const);
  return objects.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, o]) => o);
}
