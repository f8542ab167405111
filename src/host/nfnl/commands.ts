// nwf-fast's typed nft commands (model.ts) as the encoder's changes: the
// commands of a load plan's transaction, under the load's tag, or of a
// full load's transaction. Every command of a port's part, of a new shape
// (its chains, sets and maps, rules and elements), of a cleanup and of a
// full replacement (tables, base chains, flushes) has a netlink form; the
// rules rules.ts does not cover are left to libnftables (the encoder throws
// NfnlEncodeError(unsupported) for them), and so are commands without a form
// here (this returns undefined).
import { tagName } from '../../backends/nft/names.js';
import type { ChainObject, NftCommand, RuleObject } from '../../backends/nft/model.js';
import type { SetDefinition } from '../inventory.js';
import { tagCommand, type SetIndex } from '../load-plan.js';
import type { ElementChange, SetDecl } from './encode.js';
import type { NfnlChange, ObjectChange } from './objects.js';

/** What the encoder needs of a set or map declared by the typed model (its name under `tag`). */
export function setDeclOf(d: SetDefinition, tag?: string): SetDecl {
  return {
    family: d.family as SetDecl['family'],
    table: d.table,
    name: tag === undefined ? d.name : tagName(d.name, tag),
    type: d.type,
    ...(d.flags?.length ? { flags: d.flags } : {}),
    ...(d.kind === 'map' ? { map: d.map } : {}),
  };
}

/** The creation of a set or map declared by the typed model (its name under `tag`). */
export function newSetOf(d: SetDefinition, tag?: string, dynamic = false): NfnlChange {
  return { op: 'add', kind: 'set', ...setDeclOf(d, tag), ...(d.size !== undefined ? { size: d.size } : {}), ...(d.counter ? { counter: true } : {}), ...(dynamic ? { dynamic: true } : {}) };
}

/**
 * Untagged commands as netlink changes under `tag` (undefined: the names are
 * final, as in a full load's tagged transaction), in their order (a new
 * set's elements right after it), or undefined when one has no netlink form
 * here; `index` has the definitions of the sets whose elements change.
 */
export function nfnlChangesOf(cmds: readonly NftCommand[], index: SetIndex, tag: string | undefined): NfnlChange[] | undefined {
  const out: NfnlChange[] = [];
  const fam = (f: string): ObjectChange['family'] => f as ObjectChange['family'];
  // sets the batch's rules change from the packet path: nft declares them dynamic
  const updated = new Set<string>();
  for (const c of cmds) {
    const o = c.object;
    if (c.op === 'add' && o.kind === 'rule' && 'statements' in o) for (const s of o.statements) if (s.kind === 'set-update') updated.add(`${o.family} ${o.table} ${s.set}`);
  }
  for (const c of cmds) {
    const o = c.object;
    if (o.kind === 'table' && (c.op === 'delete' || c.op === 'add')) out.push({ op: c.op, kind: 'table', family: fam(o.family), name: o.name });
    else if (o.kind === 'chain' && c.op === 'add') {
      const base = (o as ChainObject).base;
      out.push({ op: 'add', kind: 'chain', family: fam(o.family), table: o.table, name: tagName(o.name, tag), ...(base ? { base } : {}) });
    } else if (o.kind === 'chain' && (c.op === 'flush' || c.op === 'delete')) out.push({ op: c.op, kind: 'chain', family: fam(o.family), table: o.table, name: tagName(o.name, tag) });
    else if ((o.kind === 'set' || o.kind === 'map') && c.op === 'delete') out.push({ op: 'delete', kind: 'set', family: fam(o.family), table: o.table, name: tagName(o.name, tag) });
    else if ((o.kind === 'set' || o.kind === 'map') && c.op === 'add' && 'type' in o) {
      out.push(newSetOf(o, tag, updated.has(`${o.family} ${o.table} ${o.name}`)));
      if (o.elements?.length) out.push({ kind: 'elements', change: { op: 'add', set: setDeclOf(o, tag), elements: (tagCommand(c, tag).object as typeof o).elements as ElementChange['elements'] } });
    } else if (o.kind === 'counter' && (c.op === 'delete' || c.op === 'add')) out.push({ op: c.op, kind: 'counter', family: fam(o.family), table: o.table, name: tagName(o.name, tag) });
    else if (o.kind === 'rule' && c.op === 'add' && 'statements' in o) {
      const r = tagCommand(c, tag).object as RuleObject;
      out.push({ op: 'add', kind: 'rule', family: fam(o.family), table: o.table, chain: r.chain, statements: r.statements, ...(o.comment !== undefined ? { comment: o.comment } : {}) });
    } else if (o.kind === 'element' && (c.op === 'add' || c.op === 'delete')) {
      const d = index.get(o.family, o.table, o.name);
      if (!d) return undefined;
      const elements = c.op === 'add' ? (tagCommand(c, tag).object as typeof o).elements : o.elements;
      out.push({ kind: 'elements', change: { op: c.op, set: setDeclOf(d, tag), elements } });
    } else return undefined;
  }
  return out;
}
