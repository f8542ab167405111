// Load tags applied to typed commands: every object name (and every
// reference to one) under a tag, persistent names as they are (names.ts).
// Lowering names nothing under a tag; the host tags what it sends.
import { assertNever } from '../../util/errors.js';
import type { Atom, MapData, NftCommand, Selector, SetItem, Statement, Value, Verdict } from './model.js';
import { tagName } from './names.js';
type Element = SetItem | readonly [SetItem, Atom | Verdict];

function tagVerdict(v: Verdict, tag: string | undefined): Verdict {
  return v.kind === 'jump' || v.kind === 'goto' ? { kind: v.kind, target: tagName(v.target, tag) } : v;
}

function tagMapData<D>(d: MapData<D>, tag: string | undefined, data: (x: D) => D): MapData<D> {
  return d.kind === 'setref' ? { kind: 'setref', name: tagName(d.name, tag) } : { kind: 'map-literal', entries: d.entries.map(([k, x]) => [k, data(x)] as const) };
}

function tagSelector(s: Selector, tag: string | undefined): Selector {
  switch (s.kind) {
    case 'binop':
      return { ...s, left: tagSelector(s.left, tag) };
    case 'concat':
      return { ...s, items: s.items.map((i) => tagSelector(i, tag)) };
    case 'map':
      return { ...s, key: tagSelector(s.key, tag), data: tagMapData(s.data, tag, (x) => x) };
    case 'payload':
    case 'raw-payload':
    case 'meta':
    case 'ct':
      return s;
    default:
      return assertNever(s, 'selector');
  }
}

function tagValue(v: Value, tag: string | undefined): Value {
  return v.kind === 'setref' ? { kind: 'setref', name: tagName(v.name, tag) } : v;
}

function tagStatement(s: Statement, tag: string | undefined): Statement {
  switch (s.kind) {
    case 'match':
      return { ...s, left: tagSelector(s.left, tag), right: tagValue(s.right, tag) };
    case 'jump':
    case 'goto':
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
      return tagVerdict(s, tag);
    case 'vmap':
      return { ...s, key: tagSelector(s.key, tag), data: tagMapData(s.data, tag, (v) => tagVerdict(v, tag)) };
    case 'counter-ref':
      return { ...s, name: tagName(s.name, tag) };
    case 'counter-map':
      return { ...s, key: tagSelector(s.key, tag), map: tagName(s.map, tag) };
    case 'mangle':
      return { ...s, value: 'kind' in s.value && (s.value.kind === 'number' || s.value.kind === 'string' || s.value.kind === 'symbol') ? s.value : tagSelector(s.value as Selector, tag) };
    case 'set-update':
      return { ...s, set: tagName(s.set, tag), key: tagSelector(s.key, tag) };
    case 'counter':
    case 'log':
    case 'ct-count':
      return s;
    default:
      return assertNever(s, 'statement');
  }
}

export function tagElement(e: SetItem | readonly [SetItem, Atom | Verdict], tag: string | undefined): SetItem | readonly [SetItem, Atom | Verdict] {
  if (!Array.isArray(e)) return e as SetItem;
  const [k, d] = e as readonly [SetItem, Atom | Verdict];
  return [k, d.kind === 'number' || d.kind === 'string' || d.kind === 'symbol' ? d : tagVerdict(d, tag)];
}

/** One command with every name (objects and references) under load tag `tag` (persistent names stay). */
export function tagCommand(c: NftCommand, tag: string | undefined): NftCommand {
  if (tag === undefined) return c;
  const o = c.object;
  switch (o.kind) {
    case 'table':
    case 'ruleset':
      return c;
    case 'chain':
    case 'counter':
      return { ...c, object: { ...o, name: tagName(o.name, tag) } } as NftCommand;
    case 'set':
    case 'map': {
      const tagged = { ...o, name: tagName(o.name, tag) } as typeof o;
      if ('elements' in o && o.elements) (tagged as { elements?: unknown }).elements = (o.elements as readonly Element[]).map((e) => tagElement(e, tag));
      return { ...c, object: tagged } as NftCommand;
    }
    case 'element':
      return { ...c, object: { ...o, name: tagName(o.name, tag), elements: o.elements.map((e) => tagElement(e, tag)) } } as NftCommand;
    case 'rule':
      if ('handle' in o) return { ...c, object: { ...o, chain: tagName(o.chain, tag) } } as NftCommand;
      return { ...c, object: { ...o, chain: tagName(o.chain, tag), statements: o.statements.map((s) => tagStatement(s, tag)) } } as NftCommand;
    default:
      return assertNever(o, 'object');
  }
}

export function tagCommands(cmds: readonly NftCommand[], tag: string | undefined): NftCommand[] {
  return tag === undefined ? [...cmds] : cmds.map((c) => tagCommand(c, tag));
}

