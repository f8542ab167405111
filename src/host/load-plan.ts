// Every command of a load, built with the typed model's own builders from
// typed inventories (inventory.ts): a full load, an element delta, unload.
//
// How one generation replaces another in the kernel without a gap.
// nf_tables applies a transaction atomically for rules, but two things can
// still let a frame through while a generation is replaced:
//  - deleting and re-adding a base chain unregisters and re-registers its
//    hook: frames passing in between are not filtered;
//  - a frame that entered the old rules just before the commit looks up the
//    old sets and maps with the new generation mask, and the elements of a set
//    deleted in that transaction are no longer active: a verdict-map lookup
//    misses (no jump: the frame is accepted) and so does a counter-map lookup
//    (the drop rule breaks).
// So base chains are never deleted (flushed and refilled in the same
// transaction), and every other object of a generation carries a load tag in
// its name (names.ts): a load lowers the new generation under a fresh tag,
// builds its objects next to the live ones and re-points the base chains in
// one transaction, and only a second transaction, after the first commit,
// deletes the previous tag's objects. Named counters keep their plain names
// (drop_<tap>_<reason>) and their counts.
//
// When a new generation has exactly the structure of the loaded one (same
// tables, chains, rules, sets, maps and counters, both lowered under the live
// tag) and differs only in set and map elements (a VM's addresses changed, an
// IP was added to a list), the change is one small transaction of element
// deletions and additions instead: still atomic (a frame sees the old
// elements or the new ones). If an element it deletes is not in the kernel
// (drift), nft refuses the whole transaction and the caller falls back to a
// full load.
import { add, del, flush, nftTable } from '../backends/nft/build.js';
import type { NftBatch, NftCommand, SetItem } from '../backends/nft/model.js';
import { tagOf } from '../backends/nft/names.js';
import { idKey, inventoryOf, liveTag, OUR_TABLES, type Element, type GenerationInventory, type KernelInventory, type ObjectId, type SetDefinition, type TableId } from './inventory.js';

const table = (id: TableId | ObjectId) => nftTable(id.family, id.kind === 'table' ? id.name : id.table);
const tableKeyOf = (id: ObjectId): string => idKey({ kind: 'table', family: id.family, name: id.table });

/**
 * Deletions of the objects `mine` selects (chains flushed first, then maps,
 * sets and chains deleted: nothing is deleted while something refers to
 * it), in the tables `keep`.
 */
function deletions(k: KernelInventory, keep: ReadonlySet<string>, mine: (id: ObjectId) => boolean): NftCommand[] {
  const flushes: NftCommand[] = [];
  const maps: NftCommand[] = [];
  const sets: NftCommand[] = [];
  const chains: NftCommand[] = [];
  for (const ch of k.chains.values()) {
    if (ch.base || !keep.has(tableKeyOf(ch.id)) || !mine(ch.id)) continue;
    flushes.push(flush(table(ch.id).chainRef(ch.id.name)));
    chains.push(del(table(ch.id).chainRef(ch.id.name)));
  }
  for (const s of k.sets.values()) {
    if (!keep.has(tableKeyOf(s.id)) || !mine(s.id)) continue;
    if (s.id.kind === 'map') maps.push(del(table(s.id).mapRef(s.id.name)));
    else sets.push(del(table(s.id).setRef(s.id.name)));
  }
  return [...flushes, ...maps, ...sets, ...chains];
}

export interface LoadPlan {
  /** The one transaction that puts the new generation in force. */
  apply: NftBatch;
  /** Deletes the previous generation's objects; run after `apply` committed. */
  cleanup: NftBatch;
  /** The tag the new generation was lowered under. */
  tag: string;
}

/**
 * A full load over what the kernel holds: `next` (lowered under `tag`, a tag
 * no object in the kernel carries) next to the live objects; leftovers of
 * interrupted loads (other tags, untagged objects) and tables `next` does not
 * use removed; base chains flushed and refilled; the live tag's objects and
 * the counters `next` no longer declares deleted only by the cleanup.
 */
export function planFullLoad(k: KernelInventory, next: NftBatch, tag: string): LoadPlan {
  const n = inventoryOf(next);
  const live = liveTag(k);
  const keep = new Set(n.tables.keys());
  const dropTables = [...k.tables.values()].filter((t) => !keep.has(idKey(t))).map((t) => del(table(t).ref));
  const flushBase = [...k.chains.values()].filter((ch) => ch.base && keep.has(tableKeyOf(ch.id))).map((ch) => flush(table(ch.id).chainRef(ch.id.name)));
  const stale = deletions(k, keep, (id) => {
    const t = tagOf(id.name);
    return t === undefined || t !== live;
  });
  const counters = [...k.counters.values()].filter((c) => keep.has(tableKeyOf(c.id)) && !n.counters.has(idKey(c.id))).map((c) => del(table(c.id).counterRef(c.id.name)));
  return {
    tag,
    apply: [...dropTables, ...flushBase, ...stale, ...next],
    cleanup: live === undefined ? counters : [...deletions(k, keep, (id) => tagOf(id.name) === live), ...counters],
  };
}

// ---- element deltas ------------------------------------------------------------------

/** The element changes of one named set or map. */
export interface SetDelta {
  /** The set or map (its identity, key type and, for a map, data type). */
  set: SetDefinition;
  /** Keys to delete (a map entry is deleted by its key). */
  remove: SetItem[];
  /** Elements (map entries) to add. */
  add: Element[];
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
const keyOf = (e: Element): SetItem => (Array.isArray(e) ? (e as readonly [SetItem, unknown])[0] : (e as SetItem));

/** True when two inventories declare the same objects with the same definitions (elements aside). */
function sameStructure(a: GenerationInventory, b: GenerationInventory): boolean {
  const sameKeys = (x: ReadonlyMap<string, unknown>, y: ReadonlyMap<string, unknown>): boolean => x.size === y.size && [...x.keys()].every((key) => y.has(key));
  if (!sameKeys(a.tables, b.tables) || !sameKeys(a.counters, b.counters) || !sameKeys(a.chains, b.chains) || !sameKeys(a.sets, b.sets)) return false;
  for (const [key, ch] of a.chains) {
    const o = b.chains.get(key);
    if (!o || !same(ch.definition, o.definition) || !same(ch.rules, o.rules)) return false;
  }
  for (const [key, s] of a.sets) if (!same(s.definition, b.sets.get(key)?.definition)) return false;
  return true;
}

/**
 * The element changes from `from` to `to` (both lowered under the same tag),
 * or undefined when their structures differ. No change: an empty list.
 */
export function elementDelta(from: GenerationInventory, to: GenerationInventory): SetDelta[] | undefined {
  if (!sameStructure(from, to)) return undefined;
  const out: SetDelta[] = [];
  for (const [key, s] of to.sets) {
    const before = new Map((from.sets.get(key)?.elements ?? []).map((e) => [JSON.stringify(e), e]));
    const after = new Map(s.elements.map((e) => [JSON.stringify(e), e]));
    const remove = [...before].filter(([k]) => !after.has(k)).map(([, e]) => keyOf(e));
    const added = [...after].filter(([k]) => !before.has(k)).map(([, e]) => e);
    if (remove.length || added.length) out.push({ set: s.definition, remove, add: added });
  }
  return out;
}

/** One transaction applying element changes: every deletion, then every addition. */
export function elementBatch(changes: readonly SetDelta[]): NftBatch {
  const t = (c: SetDelta) => nftTable(c.set.family, c.set.table);
  return [
    ...changes.filter((c) => c.remove.length).map((c) => del(t(c).element(c.set.name, c.remove))),
    ...changes.filter((c) => c.add.length).map((c) => add(t(c).element(c.set.name, c.add))),
  ];
}

// ---- unload ---------------------------------------------------------------------------

/**
 * Removes nwf-fast's tables, and nothing else: `tables` (those that carry
 * its owner mark, table-owner.ts), or every table named like its own (each
 * added first, so that deleting it cannot fail).
 */
export function unloadBatch(tables?: readonly Pick<TableId, 'family' | 'name'>[]): NftBatch {
  if (tables) return tables.map((t) => del(nftTable(t.family, t.name).ref));
  return OUR_TABLES.flatMap((t) => [add(nftTable(t.family, t.name).table), del(nftTable(t.family, t.name).ref)]);
}
