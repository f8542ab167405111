// Learned addresses in a domain's nwf-fast metadata (issue 10, design
// ip-learning.md 4.4): a child of <nwf:filters>, next to native mode's
// <nwf:interface> entries, one per MAC:
//
//   <nwf:learned mac='52:54:00:72:00:11' mode='any'>
//     <nwf:ip address='10.72.0.11' since='2026-12-03T11:28:39.657Z'/>
//   </nwf:learned>
//   <nwf:learned mac='52:54:00:72:00:12' mode='dhcp'>
//     <nwf:ip address='10.72.0.12' server='10.72.0.1' expires='2026-12-03T12:28:39Z'/>
//   </nwf:learned>
//
// `any` holds exactly one address (no expiry, no server); `dhcp` one to
// MAX_LEASES leases, each with its expiry. Unknown attributes or children are
// errors with their path. The entry is a hint for the destination's hook,
// never a policy: it seeds only a port whose policy learns in that mode.
import { CODES } from '../util/errors.js';
import { parseIPv4, parseMac } from '../ir/values.js';
import type { LearnedAddress, LearnMode } from '../ir/learning.js';
import { checkAttributes, fail } from './parse-filter.js';
import type { XmlElement } from './xml.js';

/** Leases a dhcp port holds at most (design 3). */
export const MAX_LEASES = 4;

/** One <nwf:learned> element: MAC, mode and addresses (source 'metadata'). */
export interface LearnedMetadata {
  mac: string;
  mode: LearnMode;
  addresses: LearnedAddress[];
}

/** An ISO 8601 UTC time as nwf-fast writes it (`toISOString()`, or without milliseconds). */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

function time(el: XmlElement, path: string, name: 'since' | 'expires'): string | undefined {
  const v = el.attrs[name];
  if (v === undefined) return undefined;
  if (!ISO_UTC.test(v) || Number.isNaN(Date.parse(v))) fail(CODES.VALUE_INVALID, el, `${path}@${name}`, `invalid time '${v}' in ${name}`, 'an ISO 8601 UTC time like 2026-12-03T11:28:39Z');
  return v;
}

function ipv4(el: XmlElement, path: string, name: 'address' | 'server'): string | undefined {
  const v = el.attrs[name];
  if (v === undefined) return undefined;
  if (parseIPv4(v) === undefined) fail(CODES.VALUE_INVALID, el, `${path}@${name}`, `invalid IPv4 address '${v}' in ${name}`, 'an IPv4 address like 10.0.0.5');
  return v;
}

function parseIp(el: XmlElement, path: string, mode: LearnMode): LearnedAddress {
  checkAttributes(el, path, mode === 'any' ? ['address', 'since'] : ['address', 'since', 'expires', 'server']);
  const ip = ipv4(el, path, 'address');
  if (ip === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "nwf:ip has no 'address'", "<nwf:ip address='10.0.0.5'/>");
  const child = el.children[0];
  if (child) fail(CODES.XML_UNKNOWN_ELEMENT, child, `${path}/${child.name}`, `unknown element <${child.name}> in nwf:ip`, 'no children');
  const since = time(el, path, 'since');
  const expires = time(el, path, 'expires');
  const server = ipv4(el, path, 'server');
  if (mode === 'dhcp' && expires === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "a dhcp lease (nwf:ip) has no 'expires'", "<nwf:ip address='10.0.0.5' expires='2026-12-03T12:28:39Z'/>");
  return { ip, ...(since ? { since } : {}), ...(expires ? { expires } : {}), ...(server ? { server } : {}), source: 'metadata' };
}

/** Parses one <nwf:learned> (children already named by local name). `path` names it. */
export function parseLearnedElement(el: XmlElement, path: string): LearnedMetadata {
  checkAttributes(el, path, ['mac', 'mode']);
  const raw = el.attrs.mac;
  if (raw === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, path, "nwf:learned has no 'mac'", "<nwf:learned mac='52:54:00:..' mode='any'>");
  const mac = parseMac(raw);
  if (!mac) fail(CODES.VALUE_INVALID, el, `${path}@mac`, `invalid MAC address '${raw}'`, 'a MAC address like 52:54:00:12:34:56');
  const lpath = `${path}[mac=${mac}]`;
  const mode = el.attrs.mode;
  if (mode === undefined) fail(CODES.XML_MISSING_ATTRIBUTE, el, lpath, "nwf:learned has no 'mode'", "mode='any' or mode='dhcp'");
  if (mode !== 'any' && mode !== 'dhcp') fail(CODES.VALUE_INVALID, el, `${lpath}@mode`, `invalid learning mode '${mode}'`, 'any or dhcp');
  const other = el.children.find((c) => c.name !== 'ip');
  if (other) fail(CODES.XML_UNKNOWN_ELEMENT, other, `${lpath}/${other.name}`, `unknown element <${other.name}> in nwf:learned`, '<nwf:ip>');
  const addresses = el.children.map((c, i) => parseIp(c, `${lpath}/ip[${i + 1}]`, mode));
  if (mode === 'any' && addresses.length !== 1) fail(CODES.VALUE_INVALID, el, lpath, `an 'any' entry holds exactly one nwf:ip, this one ${addresses.length}`, 'one <nwf:ip address=...>');
  if (mode === 'dhcp' && (addresses.length < 1 || addresses.length > MAX_LEASES)) {
    fail(CODES.VALUE_INVALID, el, lpath, `a 'dhcp' entry holds 1 to ${MAX_LEASES} leases, this one ${addresses.length}`, `1 to ${MAX_LEASES} <nwf:ip address=... expires=...>`);
  }
  const seen = new Set<string>();
  for (const [i, a] of addresses.entries()) {
    if (seen.has(a.ip)) fail(CODES.XML_DUPLICATE, el.children[i] as XmlElement, `${lpath}/ip[${i + 1}]`, `address ${a.ip} twice in one nwf:learned`, 'each address once');
    seen.add(a.ip);
  }
  return { mac, mode, addresses };
}

const XML_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };
const esc = (s: string): string => s.replace(/[&<>'"]/g, (c) => XML_ESC[c] as string);

/**
 * <learned> elements for `virsh metadata --set` (children in no namespace,
 * as metadataForVirsh writes them: libvirt puts them in the key's namespace),
 * or with a prefix ('nwf:') for a document. Entries without addresses are
 * left out; the order is the caller's.
 */
export function learnedElementsText(entries: readonly LearnedMetadata[], prefix = ''): string {
  return entries
    .filter((e) => e.addresses.length > 0)
    .map((e) => {
      const ips = e.addresses.map((a) => {
        const attrs = [`address='${esc(a.ip)}'`];
        if (a.since) attrs.push(`since='${esc(a.since)}'`);
        if (e.mode === 'dhcp' && a.expires) attrs.push(`expires='${esc(a.expires)}'`);
        if (e.mode === 'dhcp' && a.server) attrs.push(`server='${esc(a.server)}'`);
        return `<${prefix}ip ${attrs.join(' ')}/>`;
      });
      return `<${prefix}learned mac='${esc(e.mac)}' mode='${e.mode}'>${ips.join('')}</${prefix}learned>`;
    })
    .join('');
}
