// Every command of a load, built with the typed model's own builders from
// typed inventories (inventory.ts): an incremental diff, a full replacement,
// an element delta, unload.
//
// A load is a typed diff. The generation in force and the next one are both
// lists of parts (the skeleton, each shape, each port, each port's port-id
// part: backends/nft/parts.ts), named without a tag; parts whose commands
// are equal are left alone, and between the others:
//  - new tables, counters, chains and sets are added, and the rules of new
//    chains; a chain whose rules differ is flushed and refilled in the same
//    transaction (atomic: a frame sees the old rules or the new ones);
//  - elements of sets and maps are deleted and added (a port's set entries,
//    its dispatch entries, an address that changed), in the same
//    transaction;
//  - objects that go are deleted by a second transaction, after the first
//    one committed: nothing refers to them any more, and a frame that
//    entered the old rules before the commit never looks up a set deleted
//    in the transaction it races with.
// The diff cannot be incremental when an object keeps its name but changes
// its definition (a set's type, a base chain's hook): then the generation
// is replaced in full.
//
// A full replacement builds every object of the next generation next to the
// live ones under a fresh load tag (names.ts), flushes and refills the base
// chains (never deleted: their hooks would be unregistered for a moment) in
// one transaction, and deletes what the base chains reached before (the
// previous generation) in a second one. Persistent objects (base chains,
// named counters, the per-port counting sets) keep their names and counts.
import { add, del, flush, nftTable, str } from '../backends/nft/build.js';
import type { ChainObject, NftCommand, NftFamily, SetItem } from '../backends/nft/model.js';
import { isLearnedState, isPersistent } from '../backends/nft/names.js';
export { tagCommand, tagCommands } from '../backends/nft/tag.js';
import {
  elementText,
  idKey,
  inventoryOf,
  OUR_TABLES,
  reachable,
  tableKeyOf,
  type Element,
  type GenerationInventory,
  type KernelInventory,
  type ObjectId,
  type SetDefinition,
  type TableId,
} from './inventory.js';

const table = (id: TableId | ObjectId) => nftTable(id.family, id.kind === 'table' ? id.name : id.table);

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

const keyOf = (e: Element): SetItem => (Array.isArray(e) ? (e as readonly [SetItem, unknown])[0] : (e as SetItem));

/** One transaction applying element changes: every deletion, then every addition. */
export function elementBatch(changes: readonly SetDelta[]): NftCommand[] {
  const tables = new Map<string, ReturnType<typeof nftTable>>();
  const t = (c: SetDelta): ReturnType<typeof nftTable> => {
    const k = `${c.set.family} ${c.set.table}`;
    let x = tables.get(k);
    if (!x) tables.set(k, (x = nftTable(c.set.family, c.set.table)));
    return x;
  };
  return [
    ...changes.filter((c) => c.remove.length).map((c) => del(t(c).element(c.set.name, c.remove))),
    ...changes.filter((c) => c.add.length).map((c) => add(t(c).element(c.set.name, c.add))),
  ];
}


// ---- the typed diff ----------------------------------------------------------------------

/** A named piece of a generation: the skeleton, a shape, a port, a port's port-id part. */
export interface Part {
  id: string;
  commands: readonly NftCommand[];
}

/** Where the definition of a set or map named by element commands can be found (the parts that are not compared). */
export interface SetIndex {
  get(family: NftFamily, table: string, name: string): SetDefinition | undefined;
}

/** The sets and maps declared by commands, for a SetIndex. */
export function setIndexOf(lists: readonly (readonly NftCommand[])[]): SetIndex {
  const m = new Map<string, SetDefinition>();
  for (const cmds of lists) {
    for (const c of cmds) {
      const o = c.object;
      if (c.op !== 'add' || (o.kind !== 'set' && o.kind !== 'map')) continue;
      const { elements: _e, ...def } = o as typeof o & { elements?: unknown };
      m.set(`${o.family} ${o.table} ${o.name}`, def as SetDefinition);
    }
  }
  return { get: (f, t, n) => m.get(`${f} ${t} ${n}`) };
}

export interface DiffPlan {
  /** The transaction that puts the next generation in force (untagged). */
  apply: NftCommand[];
  /** Deletes what the next generation no longer has, after `apply` committed (untagged). */
  cleanup: NftCommand[];
  /** When `apply` changes elements only: the same changes as set deltas (for the netlink encoder). */
  deltas?: SetDelta[];
  /** Parts compared (changed, added or removed). */
  changedParts: string[];
}

/**
 * Whether two values have the same JSON text (keys in the same order, an
 * undefined property absent, undefined in an array null), without writing
 * either text: a port's part is compared at every load that lists it.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i] === undefined ? null : a[i], b[i] === undefined ? null : b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const kx = Object.keys(x).filter((k) => x[k] !== undefined);
  const ky = Object.keys(y).filter((k) => y[k] !== undefined);
  if (kx.length !== ky.length) return false;
  for (let i = 0; i < kx.length; i++) {
    const k = kx[i] as string;
    if (k !== ky[i] || !sameJson(x[k], y[k])) return false;
  }
  return true;
}
const same = sameJson;

function concatCommands(parts: readonly Part[]): NftCommand[] {
  const out: NftCommand[] = [];
  for (const p of parts) for (const c of p.commands) out.push(c);
  return out;
}

function isMapIn(index: SetIndex, ...invs: GenerationInventory[]): (f: NftFamily, t: string, n: string) => boolean {
  return (f, t, n) => {
    if (invs.some((i) => i.sets.has(idKey({ kind: 'map', family: f, table: t, name: n })))) return true;
    return index.get(f, t, n)?.kind === 'map';
  };
}

/**
 * The typed diff from `prev` to `next` (see the module comment), or
 * undefined when it cannot be applied incrementally. `index` holds the
 * definitions of sets that parts left out of the comparison declare.
 */
export function diffParts(prev: readonly Part[], next: readonly Part[], index: SetIndex): DiffPlan | undefined {
  const prevById = new Map(prev.map((p) => [p.id, p]));
  const nextById = new Map(next.map((p) => [p.id, p]));
  const changed = [...new Set([...prevById.keys(), ...nextById.keys()])].filter((id) => {
    const a = prevById.get(id);
    const b = nextById.get(id);
    return !a || !b || !sameJson(a.commands, b.commands);
  });
  if (!changed.length) return { apply: [], cleanup: [], deltas: [], changedParts: [] };
  const prevCmds = concatCommands(changed.flatMap((id) => (prevById.has(id) ? [prevById.get(id) as Part] : [])));
  const nextCmds = concatCommands(changed.flatMap((id) => (nextById.has(id) ? [nextById.get(id) as Part] : [])));
  // declarations first, so elements know whether they go into a set or a map
  const decl = (cmds: NftCommand[]) => inventoryOf(cmds.filter((c) => c.object.kind !== 'element'));
  const pd = decl(prevCmds);
  const nd = decl(nextCmds);
  const a = inventoryOf(prevCmds, isMapIn(index, pd, nd));
  const b = inventoryOf(nextCmds, isMapIn(index, pd, nd));

  const apply: NftCommand[] = [];
  const cleanup: NftCommand[] = [];
  const removedTables = new Set([...a.tables.keys()].filter((k) => !b.tables.has(k)));
  const inRemovedTable = (id: ObjectId): boolean => removedTables.has(tableKeyOf(id));
  for (const [k, t] of b.tables) if (!a.tables.has(k)) apply.push(add(t));
  for (const [k, c] of b.counters) if (!a.counters.has(k)) apply.push(add(c));

  const flushes: NftCommand[] = [];
  const rules: NftCommand[] = [];
  const cleanFlush: NftCommand[] = [];
  const cleanChains: NftCommand[] = [];
  for (const [k, ch] of b.chains) {
    const old = a.chains.get(k);
    if (!old) {
      apply.push(add(ch.definition));
      for (const r of ch.rules) rules.push(add(r));
      continue;
    }
    if (!same(normalChain(old.definition), normalChain(ch.definition))) return undefined;
    if (!same(old.rules, ch.rules)) {
      flushes.push(flush(table(ch.id).chainRef(ch.id.name)));
      for (const r of ch.rules) rules.push(add(r));
    }
  }
  for (const [k, ch] of a.chains) {
    if (b.chains.has(k) || inRemovedTable(ch.id)) continue;
    cleanFlush.push(flush(table(ch.id).chainRef(ch.id.name)));
    cleanChains.push(del(table(ch.id).chainRef(ch.id.name)));
  }
  const removedSets = new Set<string>();
  const cleanMaps: NftCommand[] = [];
  const cleanSets: NftCommand[] = [];
  for (const [k, s] of b.sets) {
    const old = a.sets.get(k);
    if (!old) apply.push(add(s.definition as Parameters<typeof add>[0]));
    else if (!same(old.definition, s.definition)) return undefined;
  }
  for (const [k, s] of a.sets) {
    if (b.sets.has(k)) continue;
    removedSets.add(k);
    if (inRemovedTable(s.id)) continue;
    if (s.id.kind === 'map') cleanMaps.push(del(table(s.id).mapRef(s.id.name)));
    else cleanSets.push(del(table(s.id).setRef(s.id.name)));
  }
  // elements
  const deltas: SetDelta[] = [];
  const setDef = (key: string): SetDefinition | undefined => {
    const d = b.sets.get(key)?.definition ?? a.sets.get(key)?.definition;
    if (d) return d;
    const [kind, family, tbl, name] = key.split(' ') as [string, NftFamily, string, string];
    const x = index.get(family, tbl, name);
    return x && x.kind === kind ? x : undefined;
  };
  for (const key of new Set([...a.elements.keys(), ...b.elements.keys()])) {
    if (removedSets.has(key)) continue;
    const before = a.elements.get(key) ?? new Map<string, Element>();
    const after = b.elements.get(key) ?? new Map<string, Element>();
    // learned state (seeds) is the kernel's: a lease that expired or was released is gone already, and deleting it would fail the load
    const learned = isLearnedState(key.split(' ')[3] ?? '');
    const remove = learned ? [] : [...before].filter(([t]) => !after.has(t)).map(([, e]) => keyOf(e));
    const added = [...after].filter(([t]) => !before.has(t)).map(([, e]) => e);
    if (!remove.length && !added.length) continue;
    const def = setDef(key);
    if (!def) return undefined;
    deltas.push({ set: def, remove, add: added });
  }
  for (const c of counterDeletes(a, b, removedTables)) cleanup.push(c);
  const elementOnly = apply.length === 0 && flushes.length === 0 && rules.length === 0;
  const plan: DiffPlan = {
    apply: [...apply, ...flushes, ...elementBatch(deltas), ...rules],
    cleanup: [...cleanFlush, ...cleanMaps, ...cleanSets, ...cleanChains, ...cleanup, ...[...removedTables].map((k) => del(a.tables.get(k) as TableId))],
    changedParts: changed,
  };
  if (elementOnly) plan.deltas = deltas;
  return plan;
}

function normalChain(c: ChainObject): unknown {
  return c.base ?? null;
}

function counterDeletes(a: GenerationInventory, b: GenerationInventory, removedTables: ReadonlySet<string>): NftCommand[] {
  const out: NftCommand[] = [];
  for (const [k, c] of a.counters) {
    if (b.counters.has(k) || removedTables.has(idKey({ kind: 'table', family: c.family, name: c.table }))) continue;
    out.push(del(nftTable(c.family, c.table).counterRef(c.name)));
  }
  return out;
}

// ---- a full replacement ---------------------------------------------------------------

export interface LoadPlan {
  /** The one transaction that puts the new generation in force. */
  apply: NftCommand[];
  /** Deletes the previous generation's objects; run after `apply` committed. */
  cleanup: NftCommand[];
  /** The tag the new generation is under. */
  tag: string;
}

/**
 * A full load over what the kernel holds: `next` (under `tag`, a tag no
 * object in the kernel carries) next to the live objects. Tables `next`
 * does not use are removed; objects no base chain reaches (leftovers of
 * interrupted loads) are deleted in the same transaction; base chains are
 * flushed and refilled; what the base chains reached before, and counters
 * and elements of persistent maps `next` no longer has, go in the cleanup.
 */
export function planFullLoad(k: KernelInventory, next: readonly NftCommand[], tag: string): LoadPlan {
  const n = inventoryOf(next);
  const keep = new Set(n.tables.keys());
  const live = reachable(k);
  const dropTables = [...k.tables.values()].filter((t) => !keep.has(idKey(t))).map((t) => del(table(t).ref));
  const flushBase = [...k.chains.values()].filter((ch) => ch.base && keep.has(tableKeyOf(ch.id))).map((ch) => flush(table(ch.id).chainRef(ch.id.name)));
  const kept = (id: ObjectId): boolean => keep.has(tableKeyOf(id));
  const inNext = (key: string): boolean => n.chains.has(key) || n.sets.has(key) || n.counters.has(key);
  // what next keeps under its own (persistent) name is not deleted; everything else of ours is
  const stale = (key: string, id: ObjectId): boolean => kept(id) && !inNext(key) && !live.has(key);
  const old = (key: string, id: ObjectId): boolean => kept(id) && !inNext(key) && live.has(key);
  const deletions = (which: (key: string, id: ObjectId) => boolean): NftCommand[] => {
    const flushes: NftCommand[] = [];
    const maps: NftCommand[] = [];
    const sets: NftCommand[] = [];
    const chains: NftCommand[] = [];
    const counters: NftCommand[] = [];
    for (const [key, ch] of k.chains) {
      if (!which(key, ch.id)) continue;
      flushes.push(flush(table(ch.id).chainRef(ch.id.name)));
      chains.push(del(table(ch.id).chainRef(ch.id.name)));
    }
    for (const [key, s] of k.sets) {
      if (!which(key, s.id)) continue;
      if (s.id.kind === 'map') maps.push(del(table(s.id).mapRef(s.id.name)));
      else sets.push(del(table(s.id).setRef(s.id.name)));
    }
    for (const [key, c] of k.counters) if (which(key, c.id)) counters.push(del(table(c.id).counterRef(c.id.name)));
    return [...flushes, ...maps, ...sets, ...chains, ...counters];
  };
  // elements of persistent maps (the counting sets, keyed by port) that next no longer has; not learned
  // state, which is the kernel's (a port that leaves forgets it: host/learn/kernel.ts forgetLearned)
  const staleElements: NftCommand[] = [];
  for (const [key, s] of k.sets) {
    const ns = n.sets.get(key);
    if (!ns || !isPersistent(s.id.name) || isLearnedState(s.id.name) || !kept(s.id)) continue;
    const want = n.elements.get(key) ?? new Map();
    const gone: SetItem[] = [];
    for (const e of s.elements) {
      const keyJson = Array.isArray(e) ? e[0] : e;
      const name = typeof keyJson === 'string' ? keyJson : typeof keyJson === 'object' && keyJson && !Array.isArray(keyJson) && typeof (keyJson as { elem?: { val?: unknown } }).elem?.val === 'string' ? String((keyJson as { elem: { val: string } }).elem.val) : undefined;
      if (name === undefined) continue;
      if (![...want.values()].some((x) => elementText(keyOf(x)) === name)) gone.push(str(name));
    }
    if (gone.length) staleElements.push(del(table(s.id).element(s.id.name, gone)));
  }
  // a learned-state set the packet path has updated carries the `dynamic` flag, which nft 1.0.6's JSON
  // cannot declare: declaring it again fails (EEXIST). It is the kernel's, and kept as it is.
  const redeclared = (c: NftCommand): boolean => c.op === 'add' && c.object.kind === 'set' && isLearnedState(c.object.name) && k.sets.has(idKey({ kind: 'set', family: c.object.family, table: c.object.table, name: c.object.name }));
  return {
    tag,
    apply: [...dropTables, ...flushBase, ...deletions(stale), ...next.filter((c) => !redeclared(c))],
    cleanup: [...deletions(old), ...staleElements],
  };
}

// ---- unload ---------------------------------------------------------------------------

/**
 * Removes nwf-fast's tables, and nothing else: `tables` (those that carry
 * its owner mark, table-owner.ts), or every table named like its own (each
 * added first, so that deleting it cannot fail).
 */
export function unloadBatch(tables?: readonly Pick<TableId, 'family' | 'name'>[]): NftCommand[] {
  if (tables) return tables.map((t) => del(nftTable(t.family, t.name).ref));
  return OUR_TABLES.flatMap((t) => [add(nftTable(t.family, t.name).table), del(nftTable(t.family, t.name).ref)]);
}
