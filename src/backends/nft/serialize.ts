// model.ts -> libnftables JSON (man libnftables-json), the input of
// `nft -j -f -` and nft_run_cmd_from_buffer().
import { assertNever, InternalError } from '../../util/errors.js';
import {
  checkInteger,
  checkName,
  checkString,
  type AddObject,
  type Atom,
  type ChainObject,
  type Expr,
  type Json,
  type MapData,
  type NftBatch,
  type NftCommand,
  type NftJsonDocument,
  type SetItem,
  type Statement,
  type Value,
  type Verdict,
} from './model.js';
import { groupElements } from './parts.js';

/** The JSON schema version this serializer writes (nft 1.0.x). */
export const NFT_JSON_SCHEMA_VERSION = 1;

/** Longest rule / element comment nft accepts. */
export const NFT_COMMENT_MAX = 128;

type JsonObject = { [key: string]: Json };

function atomJson(a: Atom): Json {
  switch (a.kind) {
    case 'number':
      return checkInteger(a.value, 'number');
    case 'string':
      return checkString(a.value, 'string');
    case 'symbol':
      return a.value;
    default:
      return assertNever(a, 'atom');
  }
}

function setItemJson(i: SetItem): Json {
  switch (i.kind) {
    case 'number':
    case 'string':
    case 'symbol':
      return atomJson(i);
    case 'prefix':
      return { prefix: { addr: i.addr, len: checkInteger(i.len, 'prefix length') } };
    case 'range':
      return { range: [atomJson(i.from), atomJson(i.to)] };
    case 'tuple':
      return { concat: i.items.map(setItemJson) };
    case 'elem':
      return {
        elem: {
          val: setItemJson(i.value),
          ...(i.timeout !== undefined ? { timeout: checkInteger(i.timeout, 'element timeout') } : {}),
          ...(i.comment !== undefined ? { comment: checkString(i.comment, 'element comment', NFT_COMMENT_MAX) } : {}),
        },
      };
    default:
      return assertNever(i, 'set item');
  }
}

function valueJson(v: Value): Json {
  switch (v.kind) {
    case 'number':
    case 'string':
    case 'symbol':
    case 'prefix':
    case 'range':
    case 'tuple':
      return setItemJson(v);
    case 'set':
      return { set: v.items.map(setItemJson) };
    case 'flags':
      return v.items.map(atomJson);
    case 'setref':
      return `@${checkName(v.name, 'set')}`;
    default:
      return assertNever(v, 'value');
  }
}

export function verdictJson(v: Verdict): JsonObject {
  switch (v.kind) {
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
      return { [v.kind]: null };
    case 'jump':
    case 'goto':
      return { [v.kind]: { target: checkName(v.target, 'chain') } };
    default:
      return assertNever(v, 'verdict');
  }
}

function mapDataJson<D>(data: MapData<D>, dataJson: (d: D) => Json): Json {
  switch (data.kind) {
    case 'setref':
      return `@${checkName(data.name, 'map')}`;
    case 'map-literal':
      return { set: data.entries.map(([k, d]) => [setItemJson(k), dataJson(d)]) };
    default:
      return assertNever(data, 'map data');
  }
}

/** Any expression (selector or value) as libnftables JSON. */
export function exprJson(e: Expr): Json {
  switch (e.kind) {
    case 'payload':
      return { payload: { protocol: e.protocol, field: e.field } };
    case 'raw-payload':
      return {
        payload: { base: e.base, offset: checkInteger(e.offset, 'payload offset'), len: checkInteger(e.len, 'payload length') },
      };
    case 'meta':
      return { meta: { key: e.key } };
    case 'ct':
      // nft 1.0.6 reads (and lists) the family as part of the key,
      // {"key": "ip saddr", "dir": "original"}, not as the documented
      // "family" property, which it rejects for saddr/daddr.
      return 'dir' in e ? { ct: { key: e.family ? `${e.family} ${e.key}` : e.key, dir: e.dir } } : { ct: { key: e.key } };
    case 'binop':
      return { [e.op]: [exprJson(e.left), valueJson(e.right)] };
    case 'concat':
      return { concat: e.items.map(exprJson) };
    case 'map':
      return { map: { key: exprJson(e.key), data: mapDataJson(e.data, atomJson) } };
    case 'number':
    case 'string':
    case 'symbol':
    case 'prefix':
    case 'range':
    case 'tuple':
    case 'set':
    case 'flags':
    case 'setref':
      return valueJson(e);
    default:
      return assertNever(e, 'expression');
  }
}

export function statementJson(s: Statement): JsonObject {
  switch (s.kind) {
    case 'match':
      return { match: { op: s.op, left: exprJson(s.left), right: valueJson(s.right) } };
    case 'counter':
      // libnftables refuses `{}`; null is an anonymous counter starting at 0.
      return {
        counter:
          s.packets === undefined && s.bytes === undefined
            ? null
            : { packets: checkInteger(s.packets ?? 0, 'counter'), bytes: checkInteger(s.bytes ?? 0, 'counter') },
      };
    case 'counter-ref':
      return { counter: checkName(s.name, 'counter') };
    case 'counter-map':
      return { counter: { map: { key: exprJson(s.key), data: `@${checkName(s.map, 'map')}` } } };
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
    case 'jump':
    case 'goto':
      return verdictJson(s);
    case 'mangle':
      return { mangle: { key: exprJson(s.key), value: exprJson(s.value) } };
    case 'vmap':
      return { vmap: { key: exprJson(s.key), data: mapDataJson(s.data, verdictJson) } };
    case 'log': {
      const o: JsonObject = {};
      if (s.prefix !== undefined) o.prefix = checkString(s.prefix, 'log prefix', 127);
      if (s.group !== undefined) {
        o.group = checkInteger(s.group, 'log group');
        if (s.snaplen !== undefined) o.snaplen = checkInteger(s.snaplen, 'log snaplen');
        if (s.queueThreshold !== undefined) o['queue-threshold'] = checkInteger(s.queueThreshold, 'log queue threshold');
      } else {
        if (s.level !== undefined) o.level = s.level;
        if (s.flags?.length) o.flags = [...s.flags];
      }
      return { log: o };
    }
    case 'set-update':
      return {
        set: {
          op: s.op,
          elem: s.timeout === undefined ? exprJson(s.key) : { elem: { val: exprJson(s.key), timeout: checkInteger(s.timeout, 'timeout') } },
          set: `@${checkName(s.set, 'set')}`,
        },
      };
    case 'ct-count':
      return { 'ct count': { val: checkInteger(s.val, 'ct count'), ...(s.inv ? { inv: true } : {}) } };
    default:
      return assertNever(s, 'statement');
  }
}

function chainJson(c: ChainObject): JsonObject {
  const o: JsonObject = { family: c.family, table: checkName(c.table, 'table'), name: checkName(c.name, 'chain') };
  if (c.base) {
    o.type = c.base.type;
    o.hook = c.base.hook;
    o.prio = c.base.prio;
    if ('dev' in c.base) o.dev = checkString(c.base.dev, 'device', 15);
    if (c.base.policy) o.policy = c.base.policy;
  }
  return o;
}

function setBody(o: {
  family: string;
  table: string;
  name: string;
  type: string | readonly string[];
  flags?: readonly string[];
  size?: number;
  counter?: boolean;
}): JsonObject {
  const j: JsonObject = {
    family: o.family,
    table: checkName(o.table, 'table'),
    name: checkName(o.name, 'set'),
    type: typeof o.type === 'string' ? o.type : [...o.type],
  };
  if (o.flags?.length) j.flags = [...o.flags];
  if (o.size !== undefined) j.size = checkInteger(o.size, 'set size');
  if (o.counter) j.stmt = [{ counter: null }];
  return j;
}

function elementEntryJson(e: SetItem | readonly [SetItem, Atom | Verdict]): Json {
  if (!Array.isArray(e)) return setItemJson(e as SetItem);
  const [k, d] = e as readonly [SetItem, Atom | Verdict];
  const data =
    d.kind === 'number' || d.kind === 'string' || d.kind === 'symbol' ? atomJson(d) : verdictJson(d);
  return [setItemJson(k), data];
}

/** The `{ <kind>: {...} }` object of an add/create/delete/flush command. */
function objectJson(o: AddObject | NftCommand['object']): JsonObject {
  switch (o.kind) {
    case 'table':
      return { table: { family: o.family, name: checkName(o.name, 'table') } };
    case 'chain':
      return { chain: chainJson(o as ChainObject) };
    case 'rule': {
      const r: JsonObject = { family: o.family, table: checkName(o.table, 'table'), chain: checkName(o.chain, 'chain') };
      if ('handle' in o) {
        r.handle = checkInteger(o.handle, 'rule handle');
        return { rule: r };
      }
      if (o.statements.length === 0) throw new InternalError(`rule in ${o.table}/${o.chain} has no statements`);
      r.expr = o.statements.map(statementJson);
      if (o.comment !== undefined) r.comment = checkString(o.comment, 'rule comment', NFT_COMMENT_MAX);
      return { rule: r };
    }
    case 'set': {
      if (!('type' in o)) return { set: { family: o.family, table: checkName(o.table, 'table'), name: checkName(o.name, 'set') } };
      const j = setBody(o);
      if (o.elements?.length) j.elem = o.elements.map(setItemJson);
      return { set: j };
    }
    case 'map': {
      if (!('type' in o)) return { map: { family: o.family, table: checkName(o.table, 'table'), name: checkName(o.name, 'map') } };
      const j = setBody(o);
      j.map = o.map;
      if (o.elements?.length) j.elem = (o.elements as readonly (readonly [SetItem, Atom | Verdict])[]).map(elementEntryJson);
      return { map: j };
    }
    case 'element':
      if (o.elements.length === 0) throw new InternalError(`element command on ${o.table}/${o.name} has no elements`);
      return {
        element: {
          family: o.family,
          table: checkName(o.table, 'table'),
          name: checkName(o.name, 'set'),
          elem: o.elements.map(elementEntryJson),
        },
      };
    case 'counter':
      return { counter: { family: o.family, table: checkName(o.table, 'table'), name: checkName(o.name, 'counter') } };
    case 'ruleset':
      return { ruleset: null };
    default:
      return assertNever(o, 'object');
  }
}

export function commandJson(c: NftCommand): JsonObject {
  return { [c.op]: objectJson(c.object) };
}

/** A batch as a libnftables JSON document, metainfo first. */
export function toNftJson(batch: NftBatch): NftJsonDocument {
  return {
    nftables: [{ metainfo: { json_schema_version: NFT_JSON_SCHEMA_VERSION } }, ...batch.map(commandJson)],
  };
}

/**
 * The libnftables JSON text of a batch as a generation stores it (nft.json):
 * toNftJson(groupElements(batch)) byte for byte, one `add element` command
 * per set (parts.ts groupElements), written command by command, never the
 * whole document as one object tree (a 10 000-port batch would be tens of
 * MB of objects alive at once).
 */
export function nftJsonText(batch: NftBatch): string {
  let s = `{"nftables":[{"metainfo":{"json_schema_version":${NFT_JSON_SCHEMA_VERSION}}}`;
  const chunks: string[] = [];
  for (const c of groupElements(batch)) {
    s += `,${JSON.stringify(commandJson(c))}`;
    if (s.length > 1 << 20) {
      chunks.push(s);
      s = '';
    }
  }
  chunks.push(`${s}]}`);
  return chunks.join('');
}
