// What a live host needs from a libvirt domain XML (the libvirt hook's stdin,
// `virsh dumpxml`, /run/libvirt/qemu/*.xml): the domain's name and UUID, and
// each interface's tap (<target dev>), MAC, bridge, libvirt <filterref> and
// nwf-fast's own filterref from the domain metadata (native mode):
//
//   <metadata>
//     <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>
//       <nwf:interface mac='52:54:00:00:00:01'>
//         <nwf:filterref filter='clean-traffic'>
//           <nwf:parameter name='IP' value='10.0.0.1'/>
//         </nwf:filterref>
//       </nwf:interface>
//     </nwf:filters>
//   </metadata>
//
// Elements are recognised by namespace URI, whatever their prefix. The
// children of <nwf:filters> are dispatched by local name (FILTERS_CHILDREN):
// `interface` (native mode's filterrefs) and `learned` (learned addresses,
// written by reconcile for migration: learned-metadata.ts); anything else is
// an error, so a later version's elements are added there.
import { CODES } from '../util/errors.js';
import { isValidIfName, parseMac } from '../ir/values.js';
import type { FilterRefNode } from './ast.js';
import { checkAttributes, fail, parseFilterRef } from './parse-filter.js';
import { parseLearnedElement, type LearnedMetadata } from './learned-metadata.js';
import { domainOf, parseFilterBindingElement } from './parse-binding.js';
import { parseXmlDocument, type XmlElement } from './xml.js';

export const NWF_METADATA_NS = 'urn:x-nwf-fast:metadata:1';
export const NWF_METADATA_PREFIX = 'nwf';

export interface LiveInterface {
  /** The tap (<target dev>), absent when the domain is not running. */
  tap?: string;
  mac?: string;
  /** <source bridge>, when the interface has one. */
  bridge?: string;
  /** libvirt's own <filterref>. */
  filterref?: FilterRefNode;
  /** nwf-fast's filterref for this MAC from the metadata. */
  metadata?: FilterRefNode;
}

export interface LiveDomain {
  name: string;
  uuid: string;
  interfaces: LiveInterface[];
  /** Metadata entries (by MAC) that match no interface of the domain. */
  unmatchedMetadata: string[];
  /** Learned addresses from the metadata (<nwf:learned>), by MAC, for any MAC (the hook checks). */
  learned?: Map<string, LearnedMetadata>;
}

type NsMap = ReadonlyMap<string, string>;

/** The namespace declarations in scope at el (its own xmlns / xmlns:p over the inherited ones). */
function scope(el: XmlElement, inherited: NsMap): NsMap {
  let out: Map<string, string> | undefined;
  for (const [k, v] of Object.entries(el.attrs)) {
    if (k !== 'xmlns' && !k.startsWith('xmlns:')) continue;
    out ??= new Map(inherited);
    out.set(k === 'xmlns' ? '' : k.slice(6), v);
  }
  return out ?? inherited;
}

function split(el: XmlElement): { prefix: string; local: string } {
  const i = el.name.indexOf(':');
  return i < 0 ? { prefix: '', local: el.name } : { prefix: el.name.slice(0, i), local: el.name.slice(i + 1) };
}

function nsOf(el: XmlElement, ns: NsMap): string | undefined {
  return ns.get(split(el).prefix);
}

/** el without its namespace declarations, named by its local name (children too, when in our namespace). */
function localized(el: XmlElement, ns: NsMap): XmlElement {
  const s = scope(el, ns);
  const attrs = Object.fromEntries(Object.entries(el.attrs).filter(([k]) => k !== 'xmlns' && !k.startsWith('xmlns:')));
  const name = nsOf(el, s) === NWF_METADATA_NS ? split(el).local : el.name;
  return { ...el, name, attrs, children: el.children.map((c) => localized(c, s)) };
}

/** What <nwf:filters> holds: filterrefs and learned addresses, each by MAC. */
export interface NwfMetadata {
  refs: Map<string, FilterRefNode>;
  learned: Map<string, LearnedMetadata>;
}

type ChildHandler = (el: XmlElement, path: string, out: NwfMetadata) => void;

function parseLearnedEntry(el: XmlElement, path: string, out: NwfMetadata): void {
  const e = parseLearnedElement(el, path);
  if (out.learned.has(e.mac)) fail(CODES.XML_DUPLICATE, el, `${path}[mac=${e.mac}]`, `two nwf:learned entries for MAC ${e.mac}`, 'one entry per interface MAC');
  out.learned.set(e.mac, e);
}

function parseInterfaceEntry(el: XmlElement, path: string, meta: NwfMetadata): void {
  const out = meta.refs;
  checkAttributes(el, path, ['mac']);
  const raw = el.attrs.mac;
  if (raw === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "nwf:interface has no 'mac'", "<nwf:interface mac='52:54:00:..'>");
  const mac = parseMac(raw);
  if (!mac) fail(CODES.VALUE_INVALID, el, `${path}@mac`, `invalid MAC address '${raw}'`, 'a MAC address like 52:54:00:12:34:56');
  const ipath = `${path}[mac=${mac}]`;
  if (out.has(mac)) fail(CODES.XML_DUPLICATE, el, ipath, `two nwf:interface entries for MAC ${mac}`, 'one entry per interface MAC');
  const refs = el.children.filter((c) => c.name === 'filterref');
  const other = el.children.find((c) => c.name !== 'filterref');
  if (other) fail(CODES.XML_UNKNOWN_ELEMENT, other, `${ipath}/${other.name}`, `unknown element <${other.name}> in nwf:interface`, '<nwf:filterref>');
  const ref = refs[0];
  if (!ref) fail(CODES.XML_MISSING_ATTRIBUTE, el, ipath, 'nwf:interface without nwf:filterref', "<nwf:filterref filter='clean-traffic'>...</nwf:filterref>");
  if (refs.length > 1) fail(CODES.XML_DUPLICATE, refs[1] as XmlElement, `${ipath}/filterref[2]`, 'nwf:interface holds one nwf:filterref');
  out.set(mac, parseFilterRef(ref, `${ipath}/filterref`));
}

/** The children <nwf:filters> may hold, by local name. */
const FILTERS_CHILDREN: Readonly<Record<string, ChildHandler>> = {
  interface: parseInterfaceEntry,
  learned: parseLearnedEntry,
};

/** nwf-fast's entries in a <metadata> element: filterrefs and learned addresses by MAC (none when it has no nwf:filters). */
export function parseNwfMetadata(metadata: XmlElement, inherited: NsMap = new Map()): NwfMetadata {
  const out: NwfMetadata = { refs: new Map(), learned: new Map() };
  const ns = scope(metadata, inherited);
  const ours = metadata.children.filter((c) => nsOf(c, scope(c, ns)) === NWF_METADATA_NS);
  for (const [i, raw] of ours.entries()) {
    const el = localized(raw, ns);
    const path = `metadata/${NWF_METADATA_PREFIX}:${el.name}`;
    if (el.name !== 'filters') fail(CODES.XML_UNKNOWN_ELEMENT, el, path, `unknown element <${raw.name}> in nwf-fast's metadata namespace`, '<nwf:filters>');
    if (i > 0) fail(CODES.XML_DUPLICATE, el, path, 'two nwf:filters elements in <metadata>', 'one <nwf:filters>');
    checkAttributes(el, path, []);
    for (const c of el.children) {
      const handler = Object.hasOwn(FILTERS_CHILDREN, c.name) ? FILTERS_CHILDREN[c.name] : undefined;
      if (!handler) fail(CODES.XML_UNKNOWN_ELEMENT, c, `${path}/${c.name}`, `unknown element <${c.name}> in nwf:filters`, Object.keys(FILTERS_CHILDREN).map((k) => `<nwf:${k}>`).join(', '));
      handler(c, `${path}/${c.name}`, out);
    }
  }
  return out;
}

function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** Parses a domain XML (also <domstatus>) into what the live host needs. */
export function parseLiveDomain(xml: string, file: string): LiveDomain {
  const root = parseXmlDocument(xml, file);
  const dom = domainOf(root);
  const name = child(dom, 'name')?.text ?? '';
  const uuid = (child(dom, 'uuid')?.text ?? '').toLowerCase();
  if (!name) fail(CODES.BINDING_INVALID, dom, 'domain/name', 'the domain has no <name>', '<name>vm1</name>');
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uuid)) fail(CODES.BINDING_INVALID, dom, `domain[name=${name}]/uuid`, `the domain has no valid <uuid> ('${uuid}')`, 'a UUID');
  const dpath = `domain[name=${name}]`;
  const meta = child(dom, 'metadata');
  const nwf = meta ? parseNwfMetadata(meta, scope(dom, scope(root, new Map()))) : undefined;
  const byMac = nwf?.refs ?? new Map<string, FilterRefNode>();
  const interfaces: LiveInterface[] = [];
  let n = 0;
  for (const itf of child(dom, 'devices')?.children ?? []) {
    if (itf.name !== 'interface') continue;
    n++;
    const path = `${dpath}/devices/interface[${n}]`;
    const out: LiveInterface = {};
    const tap = child(itf, 'target')?.attrs.dev;
    if (tap !== undefined) {
      if (!isValidIfName(tap)) fail(CODES.IFNAME_INVALID, itf, `${path}/target@dev`, `invalid interface name '${tap}'`, '1-15 characters of letters, digits, _ . @ + -');
      out.tap = tap;
    }
    const macRaw = child(itf, 'mac')?.attrs.address;
    if (macRaw !== undefined) {
      const mac = parseMac(macRaw);
      if (!mac) fail(CODES.VALUE_INVALID, itf, `${path}/mac@address`, `invalid MAC address '${macRaw}'`, 'a MAC address like 52:54:00:12:34:56');
      out.mac = mac;
    }
    const bridge = child(itf, 'source')?.attrs.bridge;
    if (bridge) out.bridge = bridge;
    const fref = child(itf, 'filterref');
    if (fref) out.filterref = parseFilterRef(fref, `${path}/filterref`);
    const m = out.mac ? byMac.get(out.mac) : undefined;
    if (m) out.metadata = m;
    interfaces.push(out);
  }
  const macs = new Set(interfaces.map((i) => i.mac));
  return { name, uuid, interfaces, unmatchedMetadata: [...byMac.keys()].filter((m) => !macs.has(m)), ...(nwf?.learned.size ? { learned: nwf.learned } : {}) };
}

/** A libvirt <filterbinding> (also <filterbindingstatus>), with its owner's UUID. */
export interface LiveBinding {
  tap: string;
  mac: string;
  owner: { name: string; uuid: string };
  filterref: FilterRefNode;
}

export function parseLiveBinding(xml: string, file: string): LiveBinding {
  const root = parseXmlDocument(xml, file);
  const b = parseFilterBindingElement(root);
  const fb = root.name === 'filterbindingstatus' ? (child(root, 'filterbinding') as XmlElement) : root;
  const uuid = (child(child(fb, 'owner') ?? fb, 'uuid')?.text ?? '').toLowerCase();
  return { tap: b.iface, mac: b.mac, owner: { name: b.owner, uuid }, filterref: b.filterref };
}
