// The syntax tree of nwfilter documents and of the documents that bind
// filters to interfaces (domain XML, filterbinding XML). Values stay as
// written (literals already validated); variables are resolved later.
import type { SourceLocation } from '../util/errors.js';
import type { DataType, TypedValue } from '../ir/typed-value.js';
import type { ProtocolElement } from './schema.js';

export type RuleAction = 'drop' | 'reject' | 'accept' | 'return' | 'continue';
export type RuleDirection = 'in' | 'out' | 'inout';

/** `$V` (= `$V[@0]`), `$V[@K]` (iterate with iterator K), `$V[N]` (element N). */
export type VarAccess = { kind: 'iterator'; iterator: number } | { kind: 'index'; index: number };

export interface VarRef {
  name: string;
  access: VarAccess;
  /** As written, for messages. */
  text: string;
  /** Canonical form (`$V` and `$V[@0]` are the same): `V[@0]`, `V[2]`. */
  key: string;
}

export type AttrValue =
  | { kind: 'literal'; raw: string; value: TypedValue }
  | { kind: 'variable'; raw: string; ref: VarRef };

export interface ProtocolNode {
  element: ProtocolElement;
  /** false for match='no': every attribute is negated separately. */
  match: boolean;
  attrs: ReadonlyMap<string, { type: DataType; value: AttrValue }>;
  loc: SourceLocation;
}

export interface RuleNode {
  kind: 'rule';
  action: RuleAction;
  direction: RuleDirection;
  priority: number;
  statematch: boolean;
  protocol?: ProtocolNode;
  /** 1-based position among the filter's rules, for messages and traces. */
  index: number;
  loc: SourceLocation;
}

export interface FilterRefNode {
  kind: 'filterref';
  filter: string;
  /** Parameter values in document order; a repeated name makes a list. */
  params: ReadonlyMap<string, readonly string[]>;
  loc: SourceLocation;
}

export interface FilterDef {
  name: string;
  chain: string;
  chainPriority: number;
  entries: readonly (RuleNode | FilterRefNode)[];
  uuid?: string;
  loc: SourceLocation;
}

/** One interface to protect: from a domain's <interface> or a <filterbinding>. */
export interface InterfaceBinding {
  source: 'domain' | 'binding';
  owner: string;
  /** The owner's UUID (domain <uuid>, filterbinding <owner><uuid>), lower case, when given. */
  ownerUuid?: string;
  /** The tap / port device name. */
  iface: string;
  mac: string;
  linkdev?: string;
  filterref: FilterRefNode;
  loc: SourceLocation;
}
