// A generation's nft part, compositional: the skeleton (skeleton.ts, from
// the host's configuration), shapes (each lowered once, named by the hash of
// its key: shared.ts) and ports (what one interface adds: elements of its
// shapes' sets and maps, dispatch and counting entries, and the chains it
// cannot share). What depends on a port's L3 port id, which the host
// allocates and keeps, is built from the id (l3.ts markCommands). Every name
// is untagged: the host applies the load tag (names.ts tagName).
import type { Direction, FailedInterface } from '../../ir/types.js';
import type { L3Family } from './l3.js';
import type { LearnMode } from '../../ir/learning.js';
import type { ElementObject, NftBatch, NftCommand } from './model.js';

/** A shape: chains, rules and empty sets and maps, the same for every port that has it. */
export interface ShapePart {
  /** Its hash (names.ts shapeHash): every object name of the shape carries it. */
  name: string;
  dir: Direction;
  commands: NftCommand[];
}

export type PortStatus = 'protected' | 'failed';

/** A port whose policy did not resolve or compile: its traffic is dropped, counted as unprotected. */
export type PortFailure = FailedInterface;

/** What one port adds to the skeleton and its shapes. */
export interface PortPart {
  iface: string;
  status: PortStatus;
  /** Its elements (dispatch, counting, shape sets and maps), own chains and L3 chains; not its port-id part. */
  commands: NftCommand[];
  /** The shapes it uses. */
  shapes: string[];
  /** Families of its L3 rules: the port needs a port id (markCommands). */
  l3?: L3Family[];
  /** The port learns its address (IP learning): whose it is, for reading the learned state back. */
  learn?: PortLearnInfo;
}

/** A learning port's identity, as the learned state is keyed (ir/learning.ts). */
export interface PortLearnInfo {
  mode: LearnMode;
  owner: string;
  /** The owner's UUID, when the input gave it (without it the state cannot be carried). */
  uuid?: string;
  mac: string;
}

export interface NftParts {
  shapes: ShapePart[];
  ports: PortPart[];
}

/**
 * The order objects must be created in within one transaction: tables,
 * counters, chains (empty), sets and maps, elements (vmap entries name
 * chains, counter references counters), rules (rules name chains, sets and
 * counters). Stable: rules of one chain keep their order.
 */
function phase(c: NftCommand): number {
  if (c.op !== 'add' && c.op !== 'create') return 6;
  switch (c.object.kind) {
    case 'table':
      return 0;
    case 'counter':
      return 1;
    case 'chain':
      return 2;
    case 'set':
    case 'map':
      return 3;
    case 'element':
      return 4;
    case 'rule':
      return 5;
    default:
      return 6;
  }
}

/** Commands of several parts as one batch nft accepts: creation order (see phase). */
export function orderBatch(cmds: readonly NftCommand[]): NftCommand[] {
  const buckets: NftCommand[][] = [[], [], [], [], [], [], []];
  for (const c of cmds) (buckets[phase(c)] as NftCommand[]).push(c);
  return buckets.flat();
}

/**
 * One `add element` command per set or map, holding the elements of every
 * command that added to it, in their order, where the first of them was:
 * the same elements in one transaction (every element command is in the
 * element phase, after the sets and before the rules, orderBatch), in a
 * batch a tenth of the size at fleet scale (one command per set instead of
 * one per port and set).
 */
export function groupElements(cmds: readonly NftCommand[]): NftCommand[] {
  const out: NftCommand[] = [];
  const at = new Map<string, { elements: ElementObject['elements'][number][]; index: number; obj: ElementObject }>();
  for (const c of cmds) {
    if (c.op !== 'add' || c.object.kind !== 'element') {
      out.push(c);
      continue;
    }
    const o = c.object;
    const key = `${o.family}\0${o.table}\0${o.name}`;
    const g = at.get(key);
    if (g) {
      for (const e of o.elements) g.elements.push(e);
      continue;
    }
    at.set(key, { elements: [...o.elements], index: out.length, obj: o });
    out.push(c);
  }
  for (const g of at.values()) if (g.elements.length !== g.obj.elements.length) out[g.index] = { op: 'add', object: { ...g.obj, elements: g.elements } };
  return out;
}

/** The L3 families of a set of ports (the tables the skeleton needs). */
export function familiesOf(ports: Iterable<Pick<PortPart, 'l3'>>): L3Family[] {
  const f = new Set<L3Family>();
  for (const p of ports) for (const x of p.l3 ?? []) f.add(x);
  return (['ipv4', 'ipv6'] as const).filter((x) => f.has(x));
}

export type { NftBatch };
