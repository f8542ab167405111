// How one generation replaces another in the kernel without a gap.
//
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
// its name (g<hex>_...): a load builds the new tagged objects next to the live
// ones and re-points the base chains in one transaction, and only a second
// transaction, after the first commit, deletes the previous tag's objects.
// Named counters keep their plain names (drop_<tap>_<reason>) and their counts.
import { randomBytes } from 'node:crypto';
import type { NftJsonDocument } from '../backends/nft/model.js';

type Obj = Record<string, unknown>;
type Listed = Partial<Record<string, NftJsonDocument>>;

const TAG_RE = /^(g[0-9a-f]{6})_/;

export function newTag(avoid: ReadonlySet<string> = new Set()): string {
  for (;;) {
    const t = `g${randomBytes(3).toString('hex')}`;
    if (!avoid.has(t)) return t;
  }
}

const entries = (doc: NftJsonDocument): Obj[] => doc.nftables as unknown as Obj[];

/** Base chains (family:table:name) declared by a build or present in a listing. */
function baseChainNames(docs: readonly NftJsonDocument[]): Set<string> {
  const out = new Set<string>();
  for (const d of docs) {
    for (const c of entries(d)) {
      const ch = (((c.add as Obj | undefined)?.chain ?? c.chain) as Obj | undefined) ?? undefined;
      if (ch && ch.hook !== undefined) out.add(String(ch.name));
    }
  }
  return out;
}

/**
 * The build with every object name prefixed by `tag_`, except base chains and
 * named counters; references (jumps, @set, map data) follow.
 */
export function retag(build: NftJsonDocument, tag: string): NftJsonDocument {
  const base = baseChainNames([build]);
  const name = (n: unknown): unknown => (typeof n === 'string' && !base.has(n) ? `${tag}_${n}` : n);
  const walk = (v: unknown, parentKey: string): unknown => {
    if (typeof v === 'string') return parentKey !== 'comment' && v.startsWith('@') ? `@${tag}_${v.slice(1)}` : v;
    if (Array.isArray(v)) return v.map((x) => walk(x, parentKey));
    if (!v || typeof v !== 'object') return v;
    const o = v as Obj;
    const out: Obj = {};
    for (const [k, x] of Object.entries(o)) out[k] = walk(x, k);
    if ((parentKey === 'jump' || parentKey === 'goto') && 'target' in o) out.target = name(o.target);
    if (parentKey === 'chain' && 'name' in o) out.name = name(o.name);
    if (parentKey === 'rule' && 'chain' in o) out.chain = name(o.chain);
    if ((parentKey === 'set' || parentKey === 'map' || parentKey === 'element') && 'name' in o) out.name = name(o.name);
    return out;
  };
  return { nftables: entries(build).map((c) => walk(c, '')) as NftJsonDocument['nftables'] };
}

interface Inventory {
  /** Tags present in the kernel. */
  tags: Set<string>;
  /** The tag the base chains point at now. */
  live?: string;
}

export function inventory(listed: Listed): Inventory {
  const tags = new Set<string>();
  let live: string | undefined;
  const base = baseChainNames(Object.values(listed).filter((d): d is NftJsonDocument => !!d));
  for (const doc of Object.values(listed)) {
    if (!doc) continue;
    for (const o of entries(doc)) {
      for (const kind of ['chain', 'set', 'map'] as const) {
        const x = o[kind] as Obj | undefined;
        const m = x && TAG_RE.exec(String(x.name));
        if (m) tags.add(m[1] as string);
      }
      const rule = o.rule as Obj | undefined;
      if (rule && base.has(String(rule.chain))) {
        const m = /"@?(g[0-9a-f]{6})_/.exec(JSON.stringify(rule.expr));
        if (m) live = m[1];
      }
    }
  }
  return { tags, ...(live ? { live } : {}) };
}

/**
 * Deletions of the objects of the given tags (or of untagged objects when
 * `untagged`), of tables the build does not use, and flushes of base chains:
 * in dependency order (rules, then maps, sets, chains).
 */
function deletions(listed: Listed, opts: { tags: ReadonlySet<string>; untagged: boolean; keepTables?: ReadonlySet<string>; flushBase: boolean }): Obj[] {
  const flushes: Obj[] = [];
  const maps: Obj[] = [];
  const sets: Obj[] = [];
  const chains: Obj[] = [];
  const tables: Obj[] = [];
  for (const doc of Object.values(listed)) {
    if (!doc) continue;
    for (const o of entries(doc)) {
      const table = o.table as Obj | undefined;
      if (table) {
        if (opts.keepTables && !opts.keepTables.has(`${String(table.family)}:${String(table.name)}`)) tables.push({ delete: { table: { family: table.family, name: table.name } } });
        continue;
      }
      const kind = (['chain', 'set', 'map'] as const).find((k) => k in o);
      if (!kind) continue;
      const x = o[kind] as Obj;
      if (opts.keepTables && !opts.keepTables.has(`${String(x.family)}:${String(x.table)}`)) continue;
      const ref = { family: x.family, table: x.table, name: x.name };
      if (kind === 'chain' && x.hook !== undefined) {
        if (opts.flushBase) flushes.push({ flush: { chain: ref } });
        continue;
      }
      const m = TAG_RE.exec(String(x.name));
      const mine = m ? opts.tags.has(m[1] as string) : opts.untagged;
      if (!mine) continue;
      if (kind === 'chain') {
        flushes.push({ flush: { chain: ref } });
        chains.push({ delete: { chain: ref } });
      } else if (kind === 'map') maps.push({ delete: { map: ref } });
      else sets.push({ delete: { set: ref } });
    }
  }
  return [...tables, ...flushes, ...maps, ...sets, ...chains];
}

/** Counters of the kept tables that the build no longer declares (free once the old rules are gone). */
function unusedCounters(listed: Listed, build: NftJsonDocument, keepTables: ReadonlySet<string>): Obj[] {
  const declared = new Set<string>();
  for (const c of entries(build)) {
    const x = (c.add as Obj | undefined)?.counter as Obj | undefined;
    if (x) declared.add(`${String(x.family)}:${String(x.table)}:${String(x.name)}`);
  }
  const out: Obj[] = [];
  for (const doc of Object.values(listed)) {
    for (const o of doc ? entries(doc) : []) {
      const x = o.counter as Obj | undefined;
      if (!x || !keepTables.has(`${String(x.family)}:${String(x.table)}`)) continue;
      if (!declared.has(`${String(x.family)}:${String(x.table)}:${String(x.name)}`)) out.push({ delete: { counter: { family: x.family, table: x.table, name: x.name } } });
    }
  }
  return out;
}

/** The tables (family:name) a build adds. */
function builtTables(build: NftJsonDocument): Set<string> {
  const out = new Set<string>();
  for (const c of entries(build)) {
    const t = (c.add as Obj | undefined)?.table as Obj | undefined;
    if (t) out.add(`${String(t.family)}:${String(t.name)}`);
  }
  return out;
}

export interface LoadPlan {
  /** The one transaction that puts the new generation in force. */
  apply: NftJsonDocument;
  /** Deletes the previous generation's objects; run after `apply` committed. */
  cleanup: NftJsonDocument;
  tag: string;
}

const META = { metainfo: { json_schema_version: 1 } };
const body = (d: NftJsonDocument): Obj[] => entries(d).filter((c) => !('metainfo' in c));

/**
 * Plans a load over what the kernel holds: the new objects under a fresh tag
 * next to the live ones; leftovers of interrupted loads and tables the build
 * does not use removed; base chains flushed and refilled; the live tag's
 * objects deleted only by the cleanup transaction.
 */
export function planLoad(listed: Listed, build: NftJsonDocument): LoadPlan {
  const inv = inventory(listed);
  const tag = newTag(inv.tags);
  const keepTables = builtTables(build);
  const stale = new Set([...inv.tags].filter((t) => t !== inv.live));
  const apply = [META, ...deletions(listed, { tags: stale, untagged: true, keepTables, flushBase: true }), ...body(retag(build, tag))];
  const cleanup = [META, ...deletions(listed, { tags: new Set(inv.live ? [inv.live] : []), untagged: false, keepTables, flushBase: false }), ...unusedCounters(listed, build, keepTables)];
  return { apply: { nftables: apply } as NftJsonDocument, cleanup: { nftables: cleanup } as NftJsonDocument, tag };
}

/** An element delta (delta.ts) aimed at the live objects (the live tag given, or found in a listing). */
export function liveDelta(live: Listed | string, delta: NftJsonDocument): NftJsonDocument | undefined {
  if (body(delta).length === 0) return delta;
  const tag = typeof live === 'string' ? live : inventory(live).live;
  if (!tag) return undefined;
  return retag(delta, tag);
}
