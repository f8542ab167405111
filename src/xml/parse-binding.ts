// Parsing the documents that say which filter protects which interface:
// libvirt domain XML (also wrapped in <domstatus> in /run/libvirt/qemu) and
// <filterbinding> (also wrapped in <filterbindingstatus> in
// /run/libvirt/nwfilter-binding).
import { CODES } from '../util/errors.js';
import { isValidIfName, parseMac } from '../ir/values.js';
import type { InterfaceBinding } from './ast.js';
import { checkAttributes, fail, loc, parseFilterRef } from './parse-filter.js';
import { parseXmlDocument, type XmlElement } from './xml.js';

export interface BindingParseResult {
  bindings: InterfaceBinding[];
  /** Things skipped on purpose, for the operator (e.g. no target dev). */
  notes: string[];
}

function single(parent: XmlElement, name: string): XmlElement | undefined {
  return parent.children.find((c) => c.name === name);
}

function checkIfName(el: XmlElement, path: string, name: string): void {
  if (!isValidIfName(name)) {
    fail(CODES.IFNAME_INVALID, el, path, `invalid interface name '${name}'`, '1-15 characters of letters, digits, _ . @ + -');
  }
}

function checkMac(el: XmlElement, path: string, raw: string | undefined): string {
  if (raw === undefined) fail(CODES.BINDING_INVALID, el, path, 'no MAC address', "<mac address='52:54:00:..'/>");
  const mac = parseMac(raw);
  if (!mac) fail(CODES.VALUE_INVALID, el, path, `invalid MAC address '${raw}'`, 'a MAC address like 52:54:00:12:34:56');
  return mac;
}

/** The <domain> element of a domain document (<domain>, or <domstatus> around it). */
export function domainOf(root: XmlElement): XmlElement {
  if (root.name === 'domain') return root;
  if (root.name !== 'domstatus') fail(CODES.XML_BAD_ROOT, root, root.name, `expected a <domain> document, found <${root.name}>`, '<domain> or <domstatus>');
  const inner = single(root, 'domain');
  if (!inner) fail(CODES.XML_BAD_ROOT, root, 'domstatus', '<domstatus> without <domain>', '<domstatus><domain>...</domain></domstatus>');
  return inner;
}

export function parseDomainElement(root: XmlElement): BindingParseResult {
  const dom = domainOf(root);
  const name = single(dom, 'name')?.text || '(unnamed domain)';
  const uuid = uuidOf(single(dom, 'uuid')?.text);
  const dpath = `domain[name=${name}]`;
  const devices = single(dom, 'devices');
  const out: BindingParseResult = { bindings: [], notes: [] };
  if (!devices) return out;
  let n = 0;
  for (const itf of devices.children) {
    if (itf.name !== 'interface') continue;
    n++;
    const path = `${dpath}/devices/interface[${n}]`;
    const fref = single(itf, 'filterref');
    if (!fref) continue; // not protected by nwfilter
    const target = single(itf, 'target')?.attrs.dev;
    if (!target) {
      out.notes.push(`${itf.file}: ${path}: skipped: no <target dev> (the domain is not running)`);
      continue;
    }
    checkIfName(itf, `${path}/target@dev`, target);
    const macEl = single(itf, 'mac');
    const mac = checkMac(macEl ?? itf, `${path}/mac@address`, macEl?.attrs.address);
    out.bindings.push({
      source: 'domain',
      owner: name,
      ...(uuid ? { ownerUuid: uuid } : {}),
      iface: target,
      mac,
      filterref: parseFilterRef(fref, `${path}/filterref`),
      loc: loc(itf, path),
    });
  }
  return out;
}

export function parseFilterBindingElement(root: XmlElement): InterfaceBinding {
  let fb = root;
  if (root.name === 'filterbindingstatus') {
    const inner = single(root, 'filterbinding');
    if (!inner) fail(CODES.XML_BAD_ROOT, root, 'filterbindingstatus', '<filterbindingstatus> without <filterbinding>', '<filterbindingstatus><filterbinding>...');
    fb = inner;
  } else if (root.name !== 'filterbinding') {
    fail(CODES.XML_BAD_ROOT, root, root.name, `expected a <filterbinding> document, found <${root.name}>`, '<filterbinding> or <filterbindingstatus>');
  }
  checkAttributes(fb, 'filterbinding', []);
  const allowed = ['owner', 'portdev', 'linkdev', 'mac', 'filterref'];
  for (const c of fb.children) {
    if (!allowed.includes(c.name)) fail(CODES.XML_UNKNOWN_ELEMENT, c, `filterbinding/${c.name}`, `unknown element <${c.name}> in <filterbinding>`, `one of: ${allowed.join(', ')}`);
  }
  const owner = single(single(fb, 'owner') ?? fb, 'name')?.text || '(no owner)';
  const ownerUuid = uuidOf(single(single(fb, 'owner') ?? fb, 'uuid')?.text);
  const portdev = single(fb, 'portdev');
  const iface = portdev?.attrs.name;
  if (!portdev || !iface) fail(CODES.BINDING_INVALID, fb, 'filterbinding/portdev', 'filter binding has no port device', "<portdev name='vnet0'/>");
  const path = `filterbinding[portdev=${iface}]`;
  checkIfName(portdev, `${path}/portdev@name`, iface);
  const linkdev = single(fb, 'linkdev')?.attrs.name;
  if (linkdev !== undefined) checkIfName(fb, `${path}/linkdev@name`, linkdev);
  const macEl = single(fb, 'mac');
  if (!macEl) fail(CODES.BINDING_INVALID, fb, `${path}/mac`, 'filter binding has no MAC address', "<mac address='52:54:00:..'/>");
  const mac = checkMac(macEl, `${path}/mac@address`, macEl.attrs.address);
  const fref = single(fb, 'filterref');
  if (!fref) fail(CODES.BINDING_INVALID, fb, `${path}/filterref`, 'filter binding has no filterref', "<filterref filter='clean-traffic'>");
  return {
    source: 'binding',
    owner,
    ...(ownerUuid ? { ownerUuid } : {}),
    iface,
    mac,
    ...(linkdev !== undefined ? { linkdev } : {}),
    filterref: parseFilterRef(fref, `${path}/filterref`),
    loc: loc(fb, path),
  };
}

/** A UUID as libvirt prints it (lower case), or undefined for anything else. */
function uuidOf(text: string | undefined): string | undefined {
  const t = text?.trim().toLowerCase();
  return t && /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/.test(t) ? t : undefined;
}

export function parseDomainXml(text: string, file: string): BindingParseResult {
  return parseDomainElement(parseXmlDocument(text, file));
}

export function parseFilterBindingXml(text: string, file: string): InterfaceBinding {
  return parseFilterBindingElement(parseXmlDocument(text, file));
}
