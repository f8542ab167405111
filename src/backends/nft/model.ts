// A typed model of the libnftables JSON subset nwf-fast emits
// (man libnftables-json). Every node is tagged by a literal `kind`; the
// serializer (serialize.ts) maps it to libnftables JSON and the printer
// (printer.ts) to `nft -f` text, both with switches closed by assertNever.
//
// The split between Selector (what a rule reads from the packet: payload,
// meta, ct, ...) and Value (constants: numbers, addresses, sets, ...) keeps
// shapes like `match(10, payload(...))` or `prefix` on the left from
// compiling.
import { InternalError } from '../../util/errors.js';

export type NftFamily = 'bridge' | 'inet' | 'netdev' | 'ip' | 'ip6';

// ---------------------------------------------------------------------------
// Values (constants: right-hand sides, set elements, map data)

/** An integer; `hex` only changes how the text printer writes it. */
export interface NumberValue {
  kind: 'number';
  value: number;
  hex?: boolean;
}
/** A string the text printer quotes: interface names, bridge names. */
export interface StringValue {
  kind: 'string';
  value: string;
}
/** A bare token: addresses, MACs, named constants (ip6, established, broadcast). */
export interface SymbolValue {
  kind: 'symbol';
  value: string;
}
/** One scalar. */
export type Atom = NumberValue | StringValue | SymbolValue;

/** addr/len, e.g. 10.0.0.0/8. */
export interface PrefixValue {
  kind: 'prefix';
  addr: string;
  len: number;
}
/** from-to (inclusive). */
export interface RangeValue {
  kind: 'range';
  from: Atom;
  to: Atom;
}
/** A concatenated constant, `a . b`, matching a Concat selector or a concatenated set type. */
export interface TupleValue {
  kind: 'tuple';
  items: readonly (Atom | PrefixValue | RangeValue)[];
}
/** A set element with a comment and/or a timeout in seconds (libnftables `elem` object; a timeout needs a set with flags timeout). */
export interface ElemValue {
  kind: 'elem';
  value: Atom | PrefixValue | RangeValue | TupleValue;
  comment?: string;
  timeout?: number;
}
/** What a set may contain. */
export type SetItem = Atom | PrefixValue | RangeValue | TupleValue | ElemValue;

/** An anonymous set `{ a, b }`. */
export interface SetLiteral {
  kind: 'set';
  items: readonly SetItem[];
}
/** A list of flags for bitmask types (`ct state established,related`, `(syn | ack)`). */
export interface FlagList {
  kind: 'flags';
  items: readonly SymbolValue[];
}
/** A reference to a named set or map: `@name`. */
export interface SetReference {
  kind: 'setref';
  name: string;
}

/** A constant on the right of a match. */
export type Value = Atom | PrefixValue | RangeValue | TupleValue | SetLiteral | FlagList | SetReference;

// ---------------------------------------------------------------------------
// Selectors (what a rule reads)

/** Header fields per protocol, as libnftables names them. */
export interface PayloadFields {
  ether: 'daddr' | 'saddr' | 'type';
  vlan: 'id' | 'dei' | 'cfi' | 'pcp' | 'type';
  arp: 'htype' | 'ptype' | 'hlen' | 'plen' | 'operation' | 'saddr ether' | 'saddr ip' | 'daddr ether' | 'daddr ip';
  ip: 'version' | 'hdrlength' | 'dscp' | 'ecn' | 'length' | 'id' | 'frag-off' | 'ttl' | 'protocol' | 'checksum' | 'saddr' | 'daddr';
  ip6: 'version' | 'dscp' | 'ecn' | 'flowlabel' | 'length' | 'nexthdr' | 'hoplimit' | 'saddr' | 'daddr';
  tcp: 'sport' | 'dport' | 'sequence' | 'ackseq' | 'doff' | 'reserved' | 'flags' | 'window' | 'checksum' | 'urgptr';
  udp: 'sport' | 'dport' | 'length' | 'checksum';
  udplite: 'sport' | 'dport' | 'csumcov' | 'checksum';
  sctp: 'sport' | 'dport' | 'vtag' | 'checksum';
  dccp: 'sport' | 'dport';
  icmp: 'type' | 'code' | 'checksum' | 'id' | 'sequence' | 'gateway' | 'mtu';
  icmpv6: 'type' | 'code' | 'checksum' | 'parameter-problem' | 'packet-too-big' | 'id' | 'sequence' | 'max-delay';
}
export type PayloadProtocol = keyof PayloadFields;

/** A named header field, e.g. `ether type`. One variant per protocol, so the field must fit it. */
export type PayloadField = {
  [P in PayloadProtocol]: { kind: 'payload'; protocol: P; field: PayloadFields[P] };
}[PayloadProtocol];

/** Raw bits: `@base,offset,len` (offset and len in bits). */
export interface RawPayload {
  kind: 'raw-payload';
  base: 'll' | 'nh' | 'th';
  offset: number;
  len: number;
}

export type MetaKey =
  | 'length'
  | 'protocol'
  | 'priority'
  | 'mark'
  | 'iif'
  | 'iifname'
  | 'iiftype'
  | 'oif'
  | 'oifname'
  | 'oiftype'
  | 'skuid'
  | 'skgid'
  | 'nftrace'
  | 'l4proto'
  | 'pkttype'
  | 'cpu'
  | 'iifgroup'
  | 'oifgroup'
  | 'cgroup'
  | 'nfproto'
  | 'random'
  | 'ibrname'
  | 'obrname'
  | 'ibrpvid'
  | 'ibrvproto';
export interface MetaSelector {
  kind: 'meta';
  key: MetaKey;
}

/** ct keys without a direction. */
export type CtKey = 'state' | 'direction' | 'status' | 'mark' | 'expiration' | 'helper' | 'l3proto' | 'protocol' | 'zone' | 'id' | 'label';
/** ct keys that take a direction (original/reply). */
export type CtDirKey = 'saddr' | 'daddr' | 'proto-src' | 'proto-dst' | 'packets' | 'bytes' | 'avgpkt' | 'zone';
export type CtSelector =
  | { kind: 'ct'; key: CtKey }
  | { kind: 'ct'; key: CtDirKey; dir: 'original' | 'reply'; family?: 'ip' | 'ip6' };

export type BinaryOp = '&' | '|' | '^' | '<<' | '>>';
/** `left op right`, e.g. `meta mark & 0xff`. */
export interface BinarySelector {
  kind: 'binop';
  op: BinaryOp;
  left: Selector;
  right: Atom | FlagList;
}
/** `a . b`: concatenated selectors, for concatenated set lookups. */
export interface ConcatSelector {
  kind: 'concat';
  items: readonly Selector[];
}
/** Data of a map: a named map or an inline one. */
export type MapData<D> = SetReference | { kind: 'map-literal'; entries: readonly (readonly [SetItem, D])[] };
/** `key map @m`: the value the map holds for key. */
export interface MapLookup {
  kind: 'map';
  key: Selector;
  data: MapData<Atom>;
}

export type Selector = PayloadField | RawPayload | MetaSelector | CtSelector | BinarySelector | ConcatSelector | MapLookup;

/** Anything that can stand where libnftables takes an EXPRESSION. */
export type Expr = Selector | Value;

// ---------------------------------------------------------------------------
// Statements

export type Verdict =
  | { kind: 'accept' }
  | { kind: 'drop' }
  | { kind: 'continue' }
  | { kind: 'return' }
  | { kind: 'jump'; target: string }
  | { kind: 'goto'; target: string };

/** A verdict in nft's words (`accept`, `jump name`), unchecked: for messages and canonical texts. */
export function verdictWords(v: Verdict): string {
  return v.kind === 'jump' || v.kind === 'goto' ? `${v.kind} ${v.target}` : v.kind;
}

export type MatchOp = '==' | '!=' | '<' | '>' | '<=' | '>=' | 'in';
export interface MatchStatement {
  kind: 'match';
  op: MatchOp;
  left: Selector;
  right: Value;
}
/** Anonymous counter living in the rule. */
export interface CounterStatement {
  kind: 'counter';
  packets?: number;
  bytes?: number;
}
/** Reference to a named counter object. */
export interface CounterRefStatement {
  kind: 'counter-ref';
  name: string;
}
/** `counter name KEY map @m`: the named counter the map holds for KEY (e.g. per interface). */
export interface CounterMapStatement {
  kind: 'counter-map';
  key: Selector;
  map: string;
}
/** `key set value`: meta mark/priority/pkttype or ct mark. */
export interface MangleStatement {
  kind: 'mangle';
  key: { kind: 'meta'; key: 'mark' | 'priority' | 'pkttype' | 'nftrace' } | { kind: 'ct'; key: 'mark' };
  value: Atom | Selector;
}
/** `key vmap data`: jump/goto/accept/drop by lookup. */
export interface VmapStatement {
  kind: 'vmap';
  key: Selector;
  data: MapData<Verdict>;
}
export type LogLevel = 'emerg' | 'alert' | 'crit' | 'err' | 'warn' | 'notice' | 'info' | 'debug' | 'audit';
export type LogFlag = 'tcp sequence' | 'tcp options' | 'ip options' | 'skuid' | 'ether' | 'all';
/** log to syslog (level/flags) or to nflog (group); nft refuses both at once. */
export type LogStatement =
  | { kind: 'log'; prefix?: string; level?: LogLevel; flags?: readonly LogFlag[]; group?: never }
  | { kind: 'log'; prefix?: string; group: number; snaplen?: number; queueThreshold?: number; level?: never; flags?: never };
/** `ct count [over] N` (needs conntrack: not in the bridge family on this kernel). */
export interface CtCountStatement {
  kind: 'ct-count';
  val: number;
  inv?: boolean;
}

/**
 * `add @set { key }` / `update @set { key [timeout Ns] }` from the packet
 * path (a dynset): the set needs an updatable backend (learn.ts: flags timeout). When the set is full, `add`
 * of a new element fails and the rule stops there (its later statements do
 * not run): a size-1 set lets exactly one key in (IP learning).
 */
export interface SetUpdateStatement {
  kind: 'set-update';
  op: 'add' | 'update' | 'delete';
  set: string;
  key: Selector;
  /** Seconds (the set needs flags timeout). */
  timeout?: number;
}

export type Statement =
  | MatchStatement
  | SetUpdateStatement
  | CounterStatement
  | CounterRefStatement
  | CounterMapStatement
  | Verdict
  | MangleStatement
  | VmapStatement
  | LogStatement
  | CtCountStatement;

// ---------------------------------------------------------------------------
// Ruleset objects

export interface TableObject {
  kind: 'table';
  family: NftFamily;
  name: string;
}

export type BridgeHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
export type InetHook = BridgeHook | 'ingress';
export type NetdevHook = 'ingress' | 'egress';
export type ChainPolicy = 'accept' | 'drop';
interface BaseChainCommon {
  prio: number;
  policy?: ChainPolicy;
}
export type BridgeBaseChain = BaseChainCommon & { type: 'filter'; hook: BridgeHook };
export type InetBaseChain = BaseChainCommon & { type: 'filter' | 'nat' | 'route'; hook: InetHook };
export type NetdevBaseChain = BaseChainCommon & { type: 'filter'; hook: NetdevHook; dev: string };

interface ChainCommon<F extends NftFamily> {
  kind: 'chain';
  family: F;
  table: string;
  name: string;
}
/** A chain; with `base` it is a base chain attached to a hook (hooks depend on the family). */
export type ChainObject =
  | (ChainCommon<'bridge'> & { base?: BridgeBaseChain })
  | (ChainCommon<'inet' | 'ip' | 'ip6'> & { base?: InetBaseChain })
  | (ChainCommon<'netdev'> & { base?: NetdevBaseChain });

export interface RuleObject {
  kind: 'rule';
  family: NftFamily;
  table: string;
  chain: string;
  statements: readonly Statement[];
  comment?: string;
}

export type SetKeyType =
  | 'ifname'
  | 'ether_addr'
  | 'ipv4_addr'
  | 'ipv6_addr'
  | 'ether_type'
  | 'inet_proto'
  | 'inet_service'
  | 'mark'
  | 'iface_index'
  | 'ct_state'
  | 'pkt_type'
  | 'arp_op'
  | 'icmp_type'
  | 'icmpv6_type';
export type SetFlag = 'constant' | 'interval' | 'timeout';

interface SetCommon {
  family: NftFamily;
  table: string;
  name: string;
  /** One type, or several for a concatenation (`ifname . ether_addr`). */
  type: SetKeyType | readonly SetKeyType[];
  flags?: readonly SetFlag[];
  size?: number;
  /** Every element carries a counter, updated by each lookup that finds it (`counter;` in the set). */
  counter?: boolean;
}
export interface SetObject extends SetCommon {
  kind: 'set';
  elements?: readonly SetItem[];
}
export type MapDataType = 'mark' | 'ipv4_addr' | 'ipv6_addr' | 'ether_addr' | 'ifname' | 'inet_service' | 'ether_type' | 'counter';
export type MapObject =
  | (SetCommon & { kind: 'map'; map: 'verdict'; elements?: readonly (readonly [SetItem, Verdict])[] })
  | (SetCommon & { kind: 'map'; map: MapDataType; elements?: readonly (readonly [SetItem, Atom])[] });

/** Set elements, or map entries, of a named set or map. */
export interface ElementObject {
  kind: 'element';
  family: NftFamily;
  table: string;
  /** The set or map. */
  name: string;
  elements: readonly (SetItem | readonly [SetItem, Atom | Verdict])[];
}

/** A named counter object. */
export interface CounterObject {
  kind: 'counter';
  family: NftFamily;
  table: string;
  name: string;
}

export interface RulesetObject {
  kind: 'ruleset';
}

// Objects identified without their body (flush/delete).
export type TableRef = { kind: 'table'; family: NftFamily; name: string };
export type ChainRef = { kind: 'chain'; family: NftFamily; table: string; name: string };
export type SetRefObject = { kind: 'set'; family: NftFamily; table: string; name: string };
export type MapRefObject = { kind: 'map'; family: NftFamily; table: string; name: string };
export type CounterRefObject = { kind: 'counter'; family: NftFamily; table: string; name: string };
/** A rule by handle (from `nft -a` / `-j list` output). */
export interface RuleRef {
  kind: 'rule';
  family: NftFamily;
  table: string;
  chain: string;
  handle: number;
}

// ---------------------------------------------------------------------------
// Commands and batches

export type AddObject = TableObject | ChainObject | RuleObject | SetObject | MapObject | ElementObject | CounterObject;

export type NftCommand =
  | { op: 'add'; object: AddObject }
  /** Like add, but fails when the object exists. Rules cannot be created. */
  | { op: 'create'; object: Exclude<AddObject, RuleObject | ElementObject> }
  | { op: 'flush'; object: TableRef | ChainRef | SetRefObject | MapRefObject | RulesetObject }
  | { op: 'delete'; object: TableRef | ChainRef | SetRefObject | MapRefObject | CounterRefObject | RuleRef | ElementObject };

/** One transaction: libnftables applies a batch atomically. */
export type NftBatch = readonly NftCommand[];

// ---------------------------------------------------------------------------
// libnftables JSON (output of serialize.ts, input of `nft -j -f`)

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export interface NftJsonDocument {
  nftables: { [key: string]: Json }[];
}

// ---------------------------------------------------------------------------
// Checks shared by the serializer and the printer

/** Names the nft text syntax accepts unquoted (1.0.6 does not accept quoted chain names), at most NFT_NAME_MAXLEN - 1 bytes. */
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_-]{0,254}$/;

/**
 * Words nft 1.0.6's text parser takes as keywords, so they cannot name a
 * table, chain, set or counter in `nft -f` text (JSON has no such limit).
 * Found by trying `add chain bridge t WORD` for every word of nft's scanner.
 */
export const NFT_TEXT_KEYWORDS: ReadonlySet<string> = new Set(
  (
    'eq ne le lt ge gt lshift rshift xor and or not vmap include define redefine undefine describe hook device ' +
    'devices table chain rule set element map flowtable handle ruleset socket tproxy accept drop continue jump ' +
    'goto return inet netdev add replace update create insert delete get list reset flush rename import export ' +
    'monitor position index comment constant interval dynamic auto-merge timeout gc-interval elements expires ' +
    'policy size flow offload meter counter log queue limit quota hour day reject snat dnat masquerade redirect ' +
    'random th bridge ether type typeof vlan arp ip ecn time icmp icmpv6 igmp ip6 priority ah esp comp flags udp ' +
    'udplite tcp dccp sctp rt rt0 rt2 srh hbh frag dst mh meta mark iif iifname iiftype oif oifname oiftype skuid ' +
    'skgid nftrace rtclassid ibriport ibrname obriport obrname pkttype cpu iifgroup oifgroup cgroup ct numgen ' +
    'jhash symhash dup fwd fib osf synproxy notrack all exists missing exthdr ipsec secmark xt'
  ).split(' '),
);

export function checkName(name: string, what: string): string {
  if (!NAME_RE.test(name)) {
    throw new InternalError(`invalid nft ${what} name ${JSON.stringify(name)}: want [A-Za-z_][A-Za-z0-9_-]{0,254}`);
  }
  return name;
}

/** nft strings (comments, interface names, log prefixes) cannot hold `"` or control characters. */
export function checkString(s: string, what: string, maxBytes = 255): string {
  if (/["\\\u0000-\u001f\u007f]/.test(s) || Buffer.byteLength(s) > maxBytes) {
    throw new InternalError(`invalid nft ${what} ${JSON.stringify(s)}: no quotes, backslashes or control characters, at most ${maxBytes} bytes`);
  }
  return s;
}

/** Bare tokens the printer may write unquoted. */
const SYMBOL_RE = /^[A-Za-z0-9_][A-Za-z0-9_.:/-]*$/;

export function checkSymbol(s: string): string {
  if (!SYMBOL_RE.test(s)) throw new InternalError(`invalid nft symbol ${JSON.stringify(s)}`);
  return s;
}

export function checkInteger(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new InternalError(`invalid nft ${what} ${n}: want a non-negative safe integer`);
  return n;
}
