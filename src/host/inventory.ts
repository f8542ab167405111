// Typed inventories of nwf-fast's nftables objects: what a generation
// declares (from its typed batch) and what the kernel holds (from a listing,
// parsed once). Both are keyed by identity (kind, family, table, name), with
// each object's definition and a set's or map's elements kept apart, so that
// a load is a diff between two inventories (load-plan.ts).
import { InternalError } from '../util/errors.js';
import type {
  Atom,
  ChainObject,
  CounterObject,
  Json,
  MapObject,
  NftBatch,
  NftFamily,
  NftJsonDocument,
  RuleObject,
  SetItem,
  SetObject,
  TableObject,
  Verdict,
} from '../backends/nft/model.js';
import { BRIDGE_TABLE, INET_TABLE, tagFree, tagOf } from '../backends/nft/names.js';
import { appendAll } from '../util/arrays.js';

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

/** nwf-fast's tables, all named nwf_fast (inet: left by older versions, removed by the next load). */
export const OUR_TABLES: readonly TableId[] = [
  { kind: 'table', family: 'bridge', name: BRIDGE_TABLE },
  { kind: 'table', family: 'ip', name: INET_TABLE },
  { kind: 'table', family: 'ip6', name: INET_TABLE },
  { kind: 'table', family: 'inet', name: INET_TABLE },
];

// ---- what a generation declares -----------------------------------------------------

/** An element of a named set (a key), or an entry of a named map (key and data). */
export type Element = SetItem | readonly [SetItem, Atom | Verdict];

export type SetDefinition = Omit<SetObject, 'elements'> | Omit<MapObject, 'elements'>;

export interface GenerationInventory {
  tables: Map<string, TableObject>;
  /** Chains with their rules in order. */
  chains: Map<string, { id: ObjectId<'chain'>; definition: ChainObject; rules: RuleObject[] }>;
  /** Named sets and maps: the definition without elements, and the elements. */
  sets: Map<string, { id: ObjectId<'set' | 'map'>; definition: SetDefinition; elements: Element[] }>;
  counters: Map<string, CounterObject>;
}

const objectId = <K extends ObjectKind>(kind: K, o: { family: NftFamily; table: string; name: string }): ObjectId<K> => ({ kind, family: o.family, table: o.table, name: o.name });

/** The inventory of a build batch (add commands only, as lowering writes them). */
export function inventoryOf(batch: NftBatch): GenerationInventory {
  const inv: GenerationInventory = { tables: new Map(), chains: new Map(), sets: new Map(), counters: new Map() };
  const setOf = (o: { family: NftFamily; table: string; name: string }) => {
    const s = inv.sets.get(idKey(objectId('set', o))) ?? inv.sets.get(idKey(objectId('map', o)));
    if (!s) throw new InternalError(`elements for ${o.family} ${o.table} ${o.name}, which the batch does not declare before`);
    return s;
  };
  for (const c of batch) {
    if (c.op !== 'add') throw new InternalError(`a build batch holds add commands only, not ${c.op}`);
    const o = c.object;
    switch (o.kind) {
      case 'table':
        inv.tables.set(idKey(o), o);
        break;
      case 'chain':
        inv.chains.set(idKey(objectId('chain', o)), { id: objectId('chain', o), definition: o, rules: [] });
        break;
      case 'rule': {
        const ch = inv.chains.get(idKey({ kind: 'chain', family: o.family, table: o.table, name: o.chain }));
        if (!ch) throw new InternalError(`a rule in chain ${o.chain}, which the batch does not declare before`);
        ch.rules.push(o);
        break;
      }
      case 'set':
      case 'map': {
        const { elements, ...definition } = o;
        const id = objectId(o.kind, o);
        inv.sets.set(idKey(id), { id, definition, elements: [...((elements ?? []) as readonly Element[])] });
        break;
      }
      case 'element':
        appendAll(setOf(o).elements, o.elements);
        break;
      case 'counter':
        inv.counters.set(idKey(objectId('counter', o)), o);
        break;
      default:
        throw new InternalError(`unexpected object in a build batch: ${JSON.stringify(o)}`);
    }
  }
  return inv;
}

// ---- what the kernel holds ----------------------------------------------------------

/** A rule as listed: its handle and the objects it refers to (sets and maps by @name, jump and goto targets). */
export interface ListedRule {
  handle: number;
  refs: string[];
}

export interface KernelInventory {
  tables: Map<string, TableId>;
  chains: Map<string, { id: ObjectId<'chain'>; base: boolean; rules: ListedRule[] }>;
  sets: Map<string, { id: ObjectId<'set' | 'map'>; elements: Json[] }>;
  counters: Map<string, { id: ObjectId<'counter'>; packets: number; bytes: number }>;
}

/** `nft -j list table` output of each of our tables that exists, by family. */
export type Listing = Partial<Record<NftFamily, NftJsonDocument>>;

type JsonObject = { [key: string]: Json };
const isObject = (v: Json | undefined): v is JsonObject => !!v && typeof v === 'object' && !Array.isArray(v);

function family(v: Json | undefined): NftFamily {
  if (v === 'bridge' || v === 'inet' || v === 'netdev' || v === 'ip' || v === 'ip6') return v;
  throw new InternalError(`nft listed an object of unknown family ${JSON.stringify(v)}`);
}

/** Names a listed rule expression refers to: `@set` strings and jump/goto targets. */
function references(v: Json, out: string[] = []): string[] {
  if (typeof v === 'string') {
    if (v.startsWith('@')) out.push(v.slice(1));
  } else if (Array.isArray(v)) {
    for (const x of v) references(x, out);
  } else if (isObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      if ((k === 'jump' || k === 'goto') && isObject(x) && typeof x.target === 'string') out.push(x.target);
      else if (k !== 'comment') references(x, out);
    }
  }
  return out;
}

const LISTED_KINDS: ReadonlySet<string> = new Set(['table', 'chain', 'rule', 'set', 'map', 'counter']);

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
        case 'chain':
          inv.chains.set(idKey(objectId('chain', o)), { id: objectId('chain', o), base: v.hook !== undefined, rules: [] });
          break;
        case 'rule':
          rules.push({ chain: idKey({ kind: 'chain', family: o.family, table: o.table, name: String(v.chain) }), rule: { handle: Number(v.handle), refs: references(v.expr ?? []) } });
          break;
        case 'set':
        case 'map': {
          const id = objectId(kind, o);
          inv.sets.set(idKey(id), { id, elements: Array.isArray(v.elem) ? v.elem : [] });
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

/** The tag the base chains point at now (the live generation's), if any. */
export function liveTag(k: KernelInventory): string | undefined {
  for (const ch of k.chains.values()) {
    if (!ch.base) continue;
    for (const r of ch.rules) {
      for (const ref of r.refs) {
        const t = tagOf(ref);
        if (t) return t;
      }
    }
  }
  return undefined;
}

/**
 * A listing without handles and counter values, elements as sets and load
 * tags masked: what must not change while a generation is in force (drift),
 * and what two loads of one generation have in common.
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
  return strip(doc.nftables.filter((o) => !('metainfo' in o)));
}
