// Parsing <filter> documents (nwfilter XML) into FilterDef.
import { CODES, NwfError } from '../util/errors.js';
import { EXPECTED, parseTypedValue, type DataType } from '../ir/typed-value.js';
import { parseInt32 } from '../ir/values.js';
import type { AttrValue, FilterDef, FilterRefNode, ProtocolNode, RuleAction, RuleDirection, RuleNode, VarRef } from './ast.js';
import { CHAIN_PREFIX_PRIORITY, CHAIN_RE, ELEMENT_ATTRIBUTES, isProtocolElement, NON_VARIABLE_TYPES } from './schema.js';
import { parseXmlDocument, type XmlElement } from './xml.js';

const ACTIONS: readonly RuleAction[] = ['drop', 'reject', 'accept', 'return', 'continue'];
const DIRECTIONS: readonly RuleDirection[] = ['in', 'out', 'inout'];
export const FILTER_NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
export const PARAM_NAME_RE = /^[A-Za-z0-9_]+$/;
export const PARAM_VALUE_RE = /^[A-Za-z0-9_.:]+$/;
const VAR_RE = /^\$([A-Za-z0-9_]+)(?:\[(@?)(\d{1,4})\])?$/;
/** libvirt refuses iterator ids above 1000 (VIR_NWFILTER_MAX_ITERID). */
const MAX_ITERATOR_ID = 1000;

export function loc(el: XmlElement, path: string): { file: string; path: string; line?: number } {
  return { file: el.file, path, ...(el.line !== undefined ? { line: el.line } : {}) };
}

export function fail(code: (typeof CODES)[keyof typeof CODES], el: XmlElement, path: string, message: string, expected?: string, filter?: string): never {
  throw new NwfError(code, message, {
    location: loc(el, path),
    ...(expected ? { expected } : {}),
    ...(filter ? { filter } : {}),
  });
}

export function checkAttributes(el: XmlElement, path: string, allowed: readonly string[], filter?: string): void {
  for (const a of Object.keys(el.attrs)) {
    if (!allowed.includes(a)) {
      fail(CODES.XML_UNKNOWN_ATTRIBUTE, el, `${path}@${a}`, `unknown attribute '${a}' on <${el.name}>`, allowed.length ? `one of: ${allowed.join(', ')}` : 'no attributes', filter);
    }
  }
}

export function parseVarRef(raw: string): VarRef | undefined {
  const m = VAR_RE.exec(raw);
  if (!m) return undefined;
  const name = m[1] as string;
  if (m[3] === undefined) return { name, access: { kind: 'iterator', iterator: 0 }, text: raw, key: `${name}[@0]` };
  const n = Number(m[3]);
  if (m[2] === '@' && n > MAX_ITERATOR_ID) return undefined;
  return m[2] === '@' ? { name, access: { kind: 'iterator', iterator: n }, text: raw, key: `${name}[@${n}]` } : { name, access: { kind: 'index', index: n }, text: raw, key: `${name}[${n}]` };
}

function parseAttrValue(type: DataType, raw: string, el: XmlElement, path: string, filter: string): AttrValue {
  if (raw.startsWith('$')) {
    const ref = parseVarRef(raw);
    if (!ref) fail(CODES.VALUE_INVALID, el, path, `invalid variable reference '${raw}'`, 'a variable like $IP, $IP[1] or $IP[@1] (iterator ids 0-1000)', filter);
    if (NON_VARIABLE_TYPES.has(type)) fail(CODES.VALUE_INVALID, el, path, `a variable cannot be used here ('${raw}')`, EXPECTED[type], filter);
    return { kind: 'variable', raw, ref };
  }
  const value = parseTypedValue(type, raw);
  if (!value) fail(CODES.VALUE_INVALID, el, path, `invalid value '${raw}'`, EXPECTED[type], filter);
  return { kind: 'literal', raw, value };
}

function parseProtocol(el: XmlElement, path: string, filter: string): ProtocolNode {
  if (!isProtocolElement(el.name)) fail(CODES.XML_UNKNOWN_ELEMENT, el, path, `unknown protocol element <${el.name}>`, 'one of: ' + Object.keys(ELEMENT_ATTRIBUTES).join(', '), filter);
  const element = el.name;
  const table = ELEMENT_ATTRIBUTES[element];
  checkAttributes(el, path, [...Object.keys(table), 'match'], filter);
  if (el.children.length) fail(CODES.XML_UNKNOWN_ELEMENT, el.children[0] as XmlElement, `${path}/${el.children[0]?.name}`, `<${element}> takes no child elements`, undefined, filter);
  let match = true;
  if (el.attrs.match !== undefined) {
    if (el.attrs.match === 'no') match = false;
    else if (el.attrs.match !== 'yes') fail(CODES.VALUE_INVALID, el, `${path}@match`, `invalid value '${el.attrs.match}'`, "'yes' or 'no'", filter);
  }
  const attrs = new Map<string, { type: DataType; value: AttrValue }>();
  for (const [name, raw] of Object.entries(el.attrs)) {
    if (name === 'match') continue;
    const type = table[name] as DataType;
    attrs.set(name, { type, value: parseAttrValue(type, raw, el, `${path}@${name}`, filter) });
  }
  return { element, match, attrs, loc: loc(el, path) };
}

function parsePriority(el: XmlElement, path: string, raw: string, filter: string): number {
  const v = parseInt32(raw);
  if (v === undefined || v < -1000 || v > 1000) fail(CODES.PRIORITY_INVALID, el, `${path}@priority`, `invalid priority '${raw}'`, 'an integer from -1000 to 1000', filter);
  return v;
}

function parseRule(el: XmlElement, path: string, index: number, filter: string): RuleNode {
  checkAttributes(el, path, ['action', 'direction', 'priority', 'statematch'], filter);
  const action = el.attrs.action;
  if (action === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "rule has no 'action'", `one of: ${ACTIONS.join(', ')}`, filter);
  if (!(ACTIONS as readonly string[]).includes(action)) fail(CODES.VALUE_INVALID, el, `${path}@action`, `invalid action '${action}'`, `one of: ${ACTIONS.join(', ')}`, filter);
  const direction = el.attrs.direction;
  if (direction === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "rule has no 'direction'", `one of: ${DIRECTIONS.join(', ')}`, filter);
  if (!(DIRECTIONS as readonly string[]).includes(direction)) fail(CODES.VALUE_INVALID, el, `${path}@direction`, `invalid direction '${direction}'`, `one of: ${DIRECTIONS.join(', ')}`, filter);
  const priority = el.attrs.priority === undefined ? 500 : parsePriority(el, path, el.attrs.priority, filter);
  let statematch = true;
  const sm = el.attrs.statematch;
  if (sm !== undefined) {
    if (sm === '0' || sm.toLowerCase() === 'false') statematch = false;
    else if (sm === '1' || sm.toLowerCase() === 'true') statematch = true;
    else fail(CODES.VALUE_INVALID, el, `${path}@statematch`, `invalid statematch '${sm}'`, '0, 1, true or false', filter);
  }
  if (el.children.length > 1) {
    const second = el.children[1] as XmlElement;
    fail(CODES.XML_DUPLICATE, second, `${path}/${second.name}`, 'a rule holds at most one protocol element', undefined, filter);
  }
  const child = el.children[0];
  const protocol = child ? parseProtocol(child, `${path}/${child.name}`, filter) : undefined;
  return {
    kind: 'rule',
    action: action as RuleAction,
    direction: direction as RuleDirection,
    priority,
    statematch,
    ...(protocol ? { protocol } : {}),
    index,
    loc: loc(el, path),
  };
}

/** `<filterref filter='X'>` with `<parameter name value/>` children (in filters, domains and bindings). */
export function parseFilterRef(el: XmlElement, path: string, filter?: string): FilterRefNode {
  checkAttributes(el, path, ['filter'], filter);
  const name = el.attrs.filter;
  if (!name) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "filterref has no 'filter'", 'the name of a filter', filter);
  if (!FILTER_NAME_RE.test(name)) fail(CODES.VALUE_INVALID, el, `${path}@filter`, `invalid filter name '${name}'`, 'letters, digits, _ . : -', filter);
  const params = new Map<string, string[]>();
  el.children.forEach((p, i) => {
    const ppath = `${path}/parameter[${i + 1}]`;
    if (p.name !== 'parameter') fail(CODES.XML_UNKNOWN_ELEMENT, p, `${path}/${p.name}`, `unknown element <${p.name}> in <filterref>`, '<parameter name=... value=.../>', filter);
    checkAttributes(p, ppath, ['name', 'value'], filter);
    const pname = p.attrs.name;
    const pvalue = p.attrs.value;
    if (pname === undefined || !PARAM_NAME_RE.test(pname)) fail(CODES.VALUE_INVALID, p, `${ppath}@name`, `invalid parameter name '${pname ?? ''}'`, 'letters, digits and _', filter);
    if (pvalue === undefined || !PARAM_VALUE_RE.test(pvalue)) fail(CODES.VALUE_INVALID, p, `${ppath}@value`, `invalid value '${pvalue ?? ''}' for parameter ${pname}`, 'letters, digits, _ . :', filter);
    const list = params.get(pname) ?? [];
    list.push(pvalue);
    params.set(pname, list);
  });
  return { kind: 'filterref', filter: name, params, loc: loc(el, path) };
}

export function parseFilterElement(root: XmlElement): FilterDef {
  if (root.name !== 'filter') {
    fail(CODES.XML_BAD_ROOT, root, root.name, `expected a <filter> document, found <${root.name}>`, '<filter name=... chain=...>');
  }
  checkAttributes(root, 'filter', ['name', 'chain', 'priority']);
  const name = root.attrs.name;
  if (!name) fail(CODES.XML_MISSING_ATTRIBUTE, root, 'filter', "filter has no 'name'", 'a filter name');
  if (!FILTER_NAME_RE.test(name)) fail(CODES.VALUE_INVALID, root, 'filter@name', `invalid filter name '${name}'`, 'letters, digits, _ . : -');
  const path = `filter[name=${name}]`;
  const chain = root.attrs.chain ?? 'root';
  if (!CHAIN_RE.test(chain)) fail(CODES.CHAIN_INVALID, root, `${path}@chain`, `invalid chain '${chain}'`, 'root, or mac|vlan|stp|arp|rarp|ipv4|ipv6 optionally followed by -SUFFIX (at most 12 of letters, digits, _ . : -)', name);
  const prefix = chain.split('-')[0] as string;
  const chainPriority = root.attrs.priority === undefined ? (CHAIN_PREFIX_PRIORITY[prefix] ?? 0) : parsePriority(root, path, root.attrs.priority, name);
  const entries: (RuleNode | FilterRefNode)[] = [];
  let uuid: string | undefined;
  let rules = 0;
  let refs = 0;
  for (const child of root.children) {
    if (child.name === 'rule') {
      rules++;
      entries.push(parseRule(child, `${path}/rule[${rules}]`, rules, name));
    } else if (child.name === 'filterref') {
      refs++;
      entries.push(parseFilterRef(child, `${path}/filterref[${refs}]`, name));
    } else if (child.name === 'uuid') {
      uuid = child.text;
    } else {
      fail(CODES.XML_UNKNOWN_ELEMENT, child, `${path}/${child.name}`, `unknown element <${child.name}> in <filter>`, '<rule>, <filterref> or <uuid>', name);
    }
  }
  return { name, chain, chainPriority, entries, ...(uuid ? { uuid } : {}), loc: loc(root, path) };
}

export function parseFilterXml(text: string, file: string): FilterDef {
  return parseFilterElement(parseXmlDocument(text, file));
}
