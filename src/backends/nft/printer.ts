// model.ts -> `nft -f` text, for humans reviewing what a batch does. One
// command per line; `nft -c -f` accepts the output for everything the model
// supports (tested). The JSON serializer stays the path that is applied.
import { assertNever, InternalError } from '../../util/errors.js';
import {
  NFT_TEXT_KEYWORDS,
  checkInteger,
  checkName as checkJsonName,
  checkString,
  checkSymbol,
  type AddObject,
  type Atom,
  type ChainObject,
  type Expr,
  type MapData,
  type NftBatch,
  type NftCommand,
  type Selector,
  type SetItem,
  type Statement,
  type Value,
  type Verdict,
} from './model.js';
import { NFT_COMMENT_MAX } from './serialize.js';

/** Names as the text parser reads them: no keywords (they cannot be quoted in nft 1.0.6). */
function checkName(name: string, what: string): string {
  checkJsonName(name, what);
  if (NFT_TEXT_KEYWORDS.has(name)) {
    throw new InternalError(`nft ${what} name ${JSON.stringify(name)} is an nft keyword: the text syntax cannot express it (JSON can)`);
  }
  return name;
}

const q = (s: string, what: string, max?: number): string => `"${checkString(s, what, max)}"`;

function atomText(a: Atom): string {
  switch (a.kind) {
    case 'number':
      checkInteger(a.value, 'number');
      return a.hex ? `0x${a.value.toString(16)}` : String(a.value);
    case 'string':
      return q(a.value, 'string');
    case 'symbol':
      return checkSymbol(a.value);
    default:
      return assertNever(a, 'atom');
  }
}

function setItemText(i: SetItem): string {
  switch (i.kind) {
    case 'number':
    case 'string':
    case 'symbol':
      return atomText(i);
    case 'prefix':
      return `${checkSymbol(i.addr)}/${checkInteger(i.len, 'prefix length')}`;
    case 'range':
      return `${atomText(i.from)}-${atomText(i.to)}`;
    case 'tuple':
      return i.items.map(setItemText).join(' . ');
    case 'elem':
      return `${setItemText(i.value)}${i.timeout !== undefined ? ` timeout ${checkInteger(i.timeout, 'element timeout')}s` : ''}${i.comment !== undefined ? ` comment ${q(i.comment, 'element comment', NFT_COMMENT_MAX)}` : ''}`;
    default:
      return assertNever(i, 'set item');
  }
}

const braces = (items: readonly string[]): string => `{ ${items.join(', ')} }`;

/** `inBinop`: a flag list inside `a & (x | y)` is written with `|`, elsewhere as `x,y`. */
function valueText(v: Value, inBinop = false): string {
  switch (v.kind) {
    case 'number':
    case 'string':
    case 'symbol':
    case 'prefix':
    case 'range':
    case 'tuple':
      return setItemText(v);
    case 'set':
      if (v.items.length === 0) throw new InternalError('empty anonymous set');
      return braces(v.items.map(setItemText));
    case 'flags':
      if (v.items.length === 0) throw new InternalError('empty flag list');
      return inBinop ? `(${v.items.map(atomText).join(' | ')})` : v.items.map(atomText).join(',');
    case 'setref':
      return `@${checkName(v.name, 'set')}`;
    default:
      return assertNever(v, 'value');
  }
}

function verdictText(v: Verdict): string {
  switch (v.kind) {
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
      return v.kind;
    case 'jump':
    case 'goto':
      return `${v.kind} ${checkName(v.target, 'chain')}`;
    default:
      return assertNever(v, 'verdict');
  }
}

function mapDataText<D>(data: MapData<D>, dataText: (d: D) => string): string {
  switch (data.kind) {
    case 'setref':
      return `@${checkName(data.name, 'map')}`;
    case 'map-literal':
      if (data.entries.length === 0) throw new InternalError('empty inline map');
      return braces(data.entries.map(([k, d]) => `${setItemText(k)} : ${dataText(d)}`));
    default:
      return assertNever(data, 'map data');
  }
}

function selectorText(s: Selector): string {
  switch (s.kind) {
    case 'payload':
      return `${s.protocol} ${s.field}`;
    case 'raw-payload':
      return `@${s.base},${checkInteger(s.offset, 'payload offset')},${checkInteger(s.len, 'payload length')}`;
    case 'meta':
      return `meta ${s.key}`;
    case 'ct':
      return 'dir' in s ? ['ct', s.dir, ...(s.family ? [s.family] : []), s.key].join(' ') : `ct ${s.key}`;
    case 'binop':
      return `${selectorText(s.left)} ${s.op} ${valueText(s.right, true)}`;
    case 'concat':
      return s.items.map(selectorText).join(' . ');
    case 'map':
      return `${selectorText(s.key)} map ${mapDataText(s.data, atomText)}`;
    default:
      return assertNever(s, 'selector');
  }
}

function exprText(e: Expr): string {
  switch (e.kind) {
    case 'payload':
    case 'raw-payload':
    case 'meta':
    case 'ct':
    case 'binop':
    case 'concat':
    case 'map':
      return selectorText(e);
    default:
      return valueText(e);
  }
}

/** Selectors of bitmask type, where `sel value` (implicit op) means "any bit", not equality. */
function isBitmask(s: Selector): boolean {
  return (s.kind === 'ct' && (s.key === 'state' || s.key === 'status')) || (s.kind === 'payload' && s.protocol === 'tcp' && s.field === 'flags');
}

function statementText(s: Statement): string {
  switch (s.kind) {
    case 'match': {
      const left = selectorText(s.left);
      const right = valueText(s.right);
      if (s.op === 'in') return `${left} ${right}`;
      if (s.op === '==' && s.left.kind !== 'binop' && !isBitmask(s.left)) return `${left} ${right}`;
      return `${left} ${s.op} ${right}`;
    }
    case 'counter':
      return s.packets === undefined && s.bytes === undefined ? 'counter' : `counter packets ${s.packets ?? 0} bytes ${s.bytes ?? 0}`;
    case 'counter-ref':
      return `counter name ${q(checkName(s.name, 'counter'), 'counter name')}`;
    case 'counter-map':
      return `counter name ${selectorText(s.key)} map @${checkName(s.map, 'map')}`;
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
    case 'jump':
    case 'goto':
      return verdictText(s);
    case 'mangle':
      return `${exprText(s.key)} set ${exprText(s.value)}`;
    case 'vmap':
      return `${selectorText(s.key)} vmap ${mapDataText(s.data, verdictText)}`;
    case 'log': {
      const parts = ['log'];
      if (s.prefix !== undefined) parts.push(`prefix ${q(s.prefix, 'log prefix', 127)}`);
      if (s.group !== undefined) {
        parts.push(`group ${checkInteger(s.group, 'log group')}`);
        if (s.snaplen !== undefined) parts.push(`snaplen ${checkInteger(s.snaplen, 'log snaplen')}`);
        if (s.queueThreshold !== undefined) parts.push(`queue-threshold ${checkInteger(s.queueThreshold, 'log queue threshold')}`);
      } else {
        if (s.level !== undefined) parts.push(`level ${s.level}`);
        if (s.flags?.length) parts.push(`flags ${s.flags.join(',')}`);
      }
      return parts.join(' ');
    }
    case 'set-update':
      return `${s.op} @${checkName(s.set, 'set')} { ${selectorText(s.key)}${s.timeout !== undefined ? ` timeout ${checkInteger(s.timeout, 'timeout')}s` : ''} }`;
    case 'ct-count':
      return `ct count ${s.inv ? 'over ' : ''}${checkInteger(s.val, 'ct count')}`;
    default:
      return assertNever(s, 'statement');
  }
}

function elementEntryText(e: SetItem | readonly [SetItem, Atom | Verdict]): string {
  if (!Array.isArray(e)) return setItemText(e as SetItem);
  const [k, d] = e as readonly [SetItem, Atom | Verdict];
  const data = d.kind === 'number' || d.kind === 'string' || d.kind === 'symbol' ? atomText(d) : verdictText(d);
  return `${setItemText(k)} : ${data}`;
}

function setBodyText(o: {
  type: string | readonly string[];
  map?: string;
  flags?: readonly string[];
  size?: number;
  counter?: boolean;
  elements?: readonly (SetItem | readonly [SetItem, Atom | Verdict])[];
}): string {
  const type = typeof o.type === 'string' ? o.type : o.type.join(' . ');
  const parts = [`type ${type}${o.map ? ` : ${o.map}` : ''};`];
  if (o.flags?.length) parts.push(`flags ${o.flags.join(',')};`);
  if (o.size !== undefined) parts.push(`size ${checkInteger(o.size, 'set size')};`);
  if (o.counter) parts.push('counter;');
  if (o.elements?.length) parts.push(`elements = ${braces(o.elements.map(elementEntryText))};`);
  return `{ ${parts.join(' ')} }`;
}

function objectText(o: AddObject | NftCommand['object']): string {
  switch (o.kind) {
    case 'table':
      return `table ${o.family} ${checkName(o.name, 'table')}`;
    case 'chain': {
      const head = `chain ${o.family} ${checkName(o.table, 'table')} ${checkName(o.name, 'chain')}`;
      const base = (o as ChainObject).base;
      if (!base) return head;
      const dev = 'dev' in base ? ` device ${q(base.dev, 'device', 15)}` : '';
      const policy = base.policy ? ` policy ${base.policy};` : '';
      return `${head} { type ${base.type} hook ${base.hook}${dev} priority ${base.prio};${policy} }`;
    }
    case 'rule': {
      const head = `rule ${o.family} ${checkName(o.table, 'table')} ${checkName(o.chain, 'chain')}`;
      if ('handle' in o) return `${head} handle ${checkInteger(o.handle, 'rule handle')}`;
      if (o.statements.length === 0) throw new InternalError(`rule in ${o.table}/${o.chain} has no statements`);
      const comment = o.comment !== undefined ? ` comment ${q(o.comment, 'rule comment', NFT_COMMENT_MAX)}` : '';
      return `${head} ${o.statements.map(statementText).join(' ')}${comment}`;
    }
    case 'set':
    case 'map': {
      const head = `${o.kind} ${o.family} ${checkName(o.table, 'table')} ${checkName(o.name, o.kind)}`;
      return 'type' in o ? `${head} ${setBodyText(o)}` : head;
    }
    case 'element':
      if (o.elements.length === 0) throw new InternalError(`element command on ${o.table}/${o.name} has no elements`);
      return `element ${o.family} ${checkName(o.table, 'table')} ${checkName(o.name, 'set')} ${braces(o.elements.map(elementEntryText))}`;
    case 'counter':
      return `counter ${o.family} ${checkName(o.table, 'table')} ${checkName(o.name, 'counter')}`;
    case 'ruleset':
      return 'ruleset';
    default:
      return assertNever(o, 'object');
  }
}

export function commandText(c: NftCommand): string {
  return `${c.op} ${objectText(c.object)}`;
}

/** The batch as `nft -f` text, one command per line. */
export function printNftText(batch: NftBatch): string {
  return batch.map(commandText).join('\n') + (batch.length ? '\n' : '');
}
