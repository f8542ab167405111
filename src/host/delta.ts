// Incremental loads: when a new generation has exactly the structure of the
// loaded one (same tables, chains, rules, sets, maps and counters) and
// differs only in set and map elements (a VM's addresses changed, an IP was
// added to a list), the change is applied as one small transaction of
// element deletions and additions instead of replacing the tables. It is
// still atomic: a frame sees the old elements or the new ones. If an element
// the delta deletes is not in the kernel (drift), nft refuses the whole
// transaction and the caller falls back to a full load.
import type { NftJsonDocument } from '../backends/nft/model.js';

type Obj = Record<string, unknown>;

interface Container {
  kind: 'set' | 'map';
  family: string;
  table: string;
  name: string;
  elems: unknown[];
}

function containers(doc: NftJsonDocument): { structure: string; sets: Map<string, Container> } {
  const sets = new Map<string, Container>();
  const structure: unknown[] = [];
  for (const cmd of doc.nftables) {
    const add = (cmd as Obj).add as Obj | undefined;
    const body = add && ((add.set as Obj | undefined) ?? (add.map as Obj | undefined));
    if (add && body) {
      const kind = add.set ? 'set' : 'map';
      const { elem, ...rest } = body as Obj & { elem?: unknown[] };
      structure.push({ add: { [kind]: rest } });
      sets.set(`${kind}:${String(rest.family)}:${String(rest.table)}:${String(rest.name)}`, {
        kind,
        family: String(rest.family),
        table: String(rest.table),
        name: String(rest.name),
        elems: elem ?? [],
      });
    } else structure.push(cmd);
  }
  return { structure: JSON.stringify(structure), sets };
}

/** The key of a set element or map entry (a map entry is [key, data]). */
function keyOf(kind: 'set' | 'map', e: unknown): unknown {
  return kind === 'map' && Array.isArray(e) ? e[0] : e;
}

/** The delta batch from `from` to `to`, or undefined when their structures differ. */
export function elementDelta(from: NftJsonDocument, to: NftJsonDocument): NftJsonDocument | undefined {
  const a = containers(from);
  const b = containers(to);
  if (a.structure !== b.structure) return undefined;
  const dels: Obj[] = [];
  const adds: Obj[] = [];
  for (const [id, nb] of b.sets) {
    const na = a.sets.get(id);
    if (!na) return undefined;
    const oldSet = new Map(na.elems.map((e) => [JSON.stringify(e), e]));
    const newSet = new Map(nb.elems.map((e) => [JSON.stringify(e), e]));
    const removed = [...oldSet].filter(([k]) => !newSet.has(k)).map(([, e]) => keyOf(na.kind, e));
    const added = [...newSet].filter(([k]) => !oldSet.has(k)).map(([, e]) => e);
    const ref = { family: nb.family, table: nb.table, name: nb.name };
    if (removed.length) dels.push({ delete: { element: { ...ref, elem: removed } } });
    if (added.length) adds.push({ add: { element: { ...ref, elem: added } } });
  }
  return { nftables: [{ metainfo: { json_schema_version: 1 } }, ...dels, ...adds] as NftJsonDocument['nftables'] };
}
