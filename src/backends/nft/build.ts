// Small helpers that build model.ts objects readably:
//
//   const t = nftTable('bridge', 'nwf');
//   const batch: NftBatch = [
//     add(t.table),
//     flush(t.ref),
//     add(t.chain('c0')),
//     add(t.rule('c0', [eq(payload('ether', 'type'), hex(0x88b5)), counter(), drop()])),
//   ];
import type {
  Atom,
  BinaryOp,
  BinarySelector,
  BridgeBaseChain,
  ChainObject,
  ChainRef,
  ConcatSelector,
  CounterObject,
  CounterRefObject,
  CounterRefStatement,
  CounterStatement,
  CtDirKey,
  CtKey,
  CtSelector,
  ElemValue,
  ElementObject,
  FlagList,
  InetBaseChain,
  LogStatement,
  MangleStatement,
  MapDataType,
  MapLookup,
  MapObject,
  MapRefObject,
  MatchOp,
  MatchStatement,
  MetaKey,
  MetaSelector,
  NetdevBaseChain,
  NftBatch,
  NftCommand,
  NftFamily,
  NumberValue,
  PayloadField,
  PayloadFields,
  PayloadProtocol,
  PrefixValue,
  RangeValue,
  RawPayload,
  RuleObject,
  RuleRef,
  RulesetObject,
  Selector,
  SetFlag,
  SetItem,
  SetKeyType,
  SetLiteral,
  SetObject,
  SetRefObject,
  SetReference,
  Statement,
  StringValue,
  SymbolValue,
  TableObject,
  TableRef,
  TupleValue,
  Value,
  Verdict,
  VmapStatement,
} from './model.js';

// ---------------------------------------------------------------------------
// Values

export const num = (value: number): NumberValue => ({ kind: 'number', value });
/** A number the text printer writes in hex (0x88b5). */
export const hex = (value: number): NumberValue => ({ kind: 'number', value, hex: true });
/** A quoted string: interface names. */
export const str = (value: string): StringValue => ({ kind: 'string', value });
/** A bare token: addresses, MACs, named constants. */
export const sym = (value: string): SymbolValue => ({ kind: 'symbol', value });

type AtomLike = Atom | number;
const atom = (a: AtomLike): Atom => (typeof a === 'number' ? num(a) : a);

export const prefix = (addr: string, len: number): PrefixValue => ({ kind: 'prefix', addr, len });
export const range = (from: AtomLike, to: AtomLike): RangeValue => ({ kind: 'range', from: atom(from), to: atom(to) });
export const tuple = (...items: (AtomLike | PrefixValue | RangeValue)[]): TupleValue => ({
  kind: 'tuple',
  items: items.map((i) => (typeof i === 'number' ? num(i) : i)),
});
export const elem = (value: ElemValue['value'], comment: string, timeout?: number): ElemValue => ({ kind: 'elem', value, comment, ...(timeout !== undefined ? { timeout } : {}) });
/** An element that expires after `seconds` (the set needs flags timeout). */
export const timed = (value: ElemValue['value'], seconds: number): ElemValue => ({ kind: 'elem', value, timeout: seconds });
/** Anonymous set `{ a, b }`. */
export const setOf = (...items: (SetItem | number)[]): SetLiteral => ({
  kind: 'set',
  items: items.map((i) => (typeof i === 'number' ? num(i) : i)),
});
/** Bitmask flags `a,b` (ct state, tcp flags). */
export const flags = (...names: string[]): FlagList => ({ kind: 'flags', items: names.map(sym) });
/** `@name`: a named set or map. */
export const setRef = (name: string): SetReference => ({ kind: 'setref', name });

// ---------------------------------------------------------------------------
// Selectors

export const payload = <P extends PayloadProtocol>(protocol: P, field: PayloadFields[P]): PayloadField =>
  ({ kind: 'payload', protocol, field }) as PayloadField;
/** Raw bits `@base,offset,len` (bits). */
export const raw = (base: RawPayload['base'], offset: number, len: number): RawPayload => ({ kind: 'raw-payload', base, offset, len });
export const meta = (key: MetaKey): MetaSelector => ({ kind: 'meta', key });
export function ct(key: CtKey): CtSelector;
export function ct(key: CtDirKey, dir: 'original' | 'reply', family?: 'ip' | 'ip6'): CtSelector;
export function ct(key: CtKey | CtDirKey, dir?: 'original' | 'reply', family?: 'ip' | 'ip6'): CtSelector {
  if (dir === undefined) return { kind: 'ct', key: key as CtKey };
  return family === undefined ? { kind: 'ct', key: key as CtDirKey, dir } : { kind: 'ct', key: key as CtDirKey, dir, family };
}
export const binop = (op: BinaryOp, left: Selector, right: AtomLike | FlagList): BinarySelector => ({
  kind: 'binop',
  op,
  left,
  right: typeof right === 'number' ? num(right) : right,
});
/** `left & mask`. */
export const bitAnd = (left: Selector, mask: AtomLike | FlagList): BinarySelector => binop('&', left, mask);
export const concat = (...items: Selector[]): ConcatSelector => ({ kind: 'concat', items });
/** `key map @name` or `key map { k : v, ... }`. */
export const mapLookup = (key: Selector, data: string | readonly (readonly [SetItem, Atom])[]): MapLookup => ({
  kind: 'map',
  key,
  data: typeof data === 'string' ? setRef(data) : { kind: 'map-literal', entries: data },
});

// ---------------------------------------------------------------------------
// Statements

export const match = (left: Selector, op: MatchOp, right: Value | number): MatchStatement => ({
  kind: 'match',
  op,
  left,
  right: typeof right === 'number' ? num(right) : right,
});
export const eq = (left: Selector, right: Value | number): MatchStatement => match(left, '==', right);
export const ne = (left: Selector, right: Value | number): MatchStatement => match(left, '!=', right);
/** Bitmask test (`ct state established,related`). */
export const anyOf = (left: Selector, right: FlagList | SymbolValue): MatchStatement => match(left, 'in', right);

export const counter = (): CounterStatement => ({ kind: 'counter' });
export const counterRef = (name: string): CounterRefStatement => ({ kind: 'counter-ref', name });

export const accept = (): Verdict => ({ kind: 'accept' });
export const drop = (): Verdict => ({ kind: 'drop' });
export const jump = (target: string): Verdict => ({ kind: 'jump', target });
export const goto = (target: string): Verdict => ({ kind: 'goto', target });
/** `continue` and `return` are reserved words, hence this object. */
export const verdict = {
  accept,
  drop,
  continue: (): Verdict => ({ kind: 'continue' }),
  return: (): Verdict => ({ kind: 'return' }),
  jump,
  goto,
} as const;

export const mangle = (key: MangleStatement['key'], value: AtomLike | Selector): MangleStatement => ({
  kind: 'mangle',
  key,
  value: typeof value === 'number' ? num(value) : value,
});
/** `meta mark set value`. */
export const setMark = (value: AtomLike | Selector): MangleStatement =>
  mangle({ kind: 'meta', key: 'mark' }, typeof value === 'number' ? hex(value) : value);
/** `key vmap @name` or `key vmap { k : verdict, ... }`. */
export const vmap = (key: Selector, data: string | readonly (readonly [SetItem, Verdict])[]): VmapStatement => ({
  kind: 'vmap',
  key,
  data: typeof data === 'string' ? setRef(data) : { kind: 'map-literal', entries: data },
});
type LogOptions = LogStatement extends infer L ? (L extends LogStatement ? Omit<L, 'kind'> : never) : never;
/** `log ...`: syslog (prefix, level, flags) or nflog (prefix, group, snaplen, queueThreshold). */
export const log = (opts: LogOptions = {}): LogStatement => ({ kind: 'log', ...opts }) as LogStatement;

// ---------------------------------------------------------------------------
// Objects, scoped to one table

type BaseFor<F extends NftFamily> = F extends 'bridge'
  ? BridgeBaseChain
  : F extends 'netdev'
    ? NetdevBaseChain
    : InetBaseChain;

export interface SetOptions {
  flags?: readonly SetFlag[];
  size?: number;
  /** A counter in every element (see SetCommon.counter). */
  counter?: boolean;
}

export interface TableBuilder<F extends NftFamily> {
  family: F;
  name: string;
  table: TableObject;
  ref: TableRef;
  chain(name: string): ChainObject;
  baseChain(name: string, base: BaseFor<F>): ChainObject;
  chainRef(name: string): ChainRef;
  rule(chain: string, statements: readonly Statement[], comment?: string): RuleObject;
  ruleRef(chain: string, handle: number): RuleRef;
  set(name: string, type: SetKeyType | readonly SetKeyType[], elements?: readonly SetItem[], opts?: SetOptions): SetObject;
  setRef(name: string): SetRefObject;
  verdictMap(
    name: string,
    type: SetKeyType | readonly SetKeyType[],
    elements?: readonly (readonly [SetItem, Verdict])[],
    opts?: SetOptions,
  ): MapObject;
  dataMap(
    name: string,
    type: SetKeyType | readonly SetKeyType[],
    data: MapDataType,
    elements?: readonly (readonly [SetItem, Atom])[],
    opts?: SetOptions,
  ): MapObject;
  mapRef(name: string): MapRefObject;
  element(setOrMap: string, elements: ElementObject['elements']): ElementObject;
  counter(name: string): CounterObject;
  counterRef(name: string): CounterRefObject;
}

export function nftTable<F extends NftFamily>(family: F, name: string): TableBuilder<F> {
  const ids = { family, table: name };
  const setCommon = (n: string, type: SetKeyType | readonly SetKeyType[], opts: SetOptions = {}) => ({
    ...ids,
    name: n,
    type,
    ...(opts.flags?.length ? { flags: opts.flags } : {}),
    ...(opts.size !== undefined ? { size: opts.size } : {}),
    ...(opts.counter ? { counter: true } : {}),
  });
  return {
    family,
    name,
    table: { kind: 'table', family, name },
    ref: { kind: 'table', family, name },
    chain: (n) => ({ kind: 'chain', ...ids, name: n }) as ChainObject,
    baseChain: (n, base) => ({ kind: 'chain', ...ids, name: n, base }) as ChainObject,
    chainRef: (n) => ({ kind: 'chain', ...ids, name: n }),
    rule: (chain, statements, comment) => ({
      kind: 'rule',
      ...ids,
      chain,
      statements,
      ...(comment !== undefined ? { comment } : {}),
    }),
    ruleRef: (chain, handle) => ({ kind: 'rule', ...ids, chain, handle }),
    set: (n, type, elements, opts) => ({
      kind: 'set',
      ...setCommon(n, type, opts),
      ...(elements !== undefined ? { elements } : {}),
    }),
    setRef: (n) => ({ kind: 'set', ...ids, name: n }),
    verdictMap: (n, type, elements, opts) => ({
      kind: 'map',
      ...setCommon(n, type, opts),
      map: 'verdict',
      ...(elements !== undefined ? { elements } : {}),
    }),
    dataMap: (n, type, data, elements, opts) => ({
      kind: 'map',
      ...setCommon(n, type, opts),
      map: data,
      ...(elements !== undefined ? { elements } : {}),
    }),
    mapRef: (n) => ({ kind: 'map', ...ids, name: n }),
    element: (n, elements) => ({ kind: 'element', ...ids, name: n, elements }),
    counter: (n) => ({ kind: 'counter', ...ids, name: n }),
    counterRef: (n) => ({ kind: 'counter', ...ids, name: n }),
  };
}

// ---------------------------------------------------------------------------
// Commands

export const add = (object: Extract<NftCommand, { op: 'add' }>['object']): NftCommand => ({ op: 'add', object });
export const create = (object: Extract<NftCommand, { op: 'create' }>['object']): NftCommand => ({ op: 'create', object });
export const flush = (object: Extract<NftCommand, { op: 'flush' }>['object']): NftCommand => ({ op: 'flush', object });
/** `delete` (a reserved word, hence the name). */
export const del = (object: Extract<NftCommand, { op: 'delete' }>['object']): NftCommand => ({ op: 'delete', object });
export const ruleset = (): RulesetObject => ({ kind: 'ruleset' });

/** Concatenates command lists into one batch. */
export const batch = (...parts: (NftCommand | readonly NftCommand[])[]): NftBatch =>
  parts.flatMap((p) => (Array.isArray(p) ? (p as readonly NftCommand[]) : [p as NftCommand]));
