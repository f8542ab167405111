// Where filters and bindings come from: directories of filter XML (layered,
// later names override earlier ones), the bundled library of the standard
// filters, filterbinding and domain XML files, and a live libvirt host.
import { isUtf8 } from 'node:buffer';
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODES, NwfError } from '../util/errors.js';
import { LIMITS } from '../ir/limits.js';
import type { FilterDef, InterfaceBinding } from '../xml/ast.js';
import { parseDomainXml, parseFilterBindingXml } from '../xml/parse-binding.js';
import { parseFilterXml } from '../xml/parse-filter.js';
import { appendAll } from '../util/arrays.js';

/** The project root (this file lives in src/resolve or dist/resolve). */
export const PACKAGE_ROOT = resolvePath(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUNDLED_FILTERS_DIR = join(PACKAGE_ROOT, 'filters', 'standard');

export const LIBVIRT_PATHS = {
  filters: '/etc/libvirt/nwfilter',
  domains: '/run/libvirt/qemu',
  bindings: '/run/libvirt/nwfilter-binding',
} as const;

export interface Sources {
  /** Filter directories in order; later ones override earlier names. */
  filterDirs: string[];
  /** Include the bundled standard filters as the first layer (default true). */
  bundled: boolean;
  bindingPaths: string[];
  domainPaths: string[];
  libvirt: boolean;
  /** Root prefix for --libvirt paths (tests point it at a fake host tree). */
  libvirtRoot?: string;
  /** With libvirt: accept a host without libvirt's runtime directories (an empty result) instead of failing. */
  allowEmpty?: boolean;
}

export interface LoadedSources {
  filters: Map<string, FilterDef>;
  bindings: InterfaceBinding[];
  notes: string[];
  /** Every file read, for the generation manifest's input hashes. */
  files: string[];
}

/** The first byte offset where `buf` is not valid UTF-8 (RFC 3629: shortest form, no surrogates, at most U+10FFFF). */
export function invalidUtf8Offset(buf: Uint8Array): number | undefined {
  const n = buf.length;
  for (let i = 0; i < n; ) {
    const b = buf[i] as number;
    if (b < 0x80) {
      i++;
      continue;
    }
    const len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len === 0 || i + len > n) return i;
    const b1 = buf[i + 1] as number;
    const lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
    const hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
    if (b1 < lo || b1 > hi) return i;
    for (let k = 2; k < len; k++) if (((buf[i + k] as number) & 0xc0) !== 0x80) return i;
    i += len;
  }
  return undefined;
}

function unreadable(file: string, e: unknown): NwfError {
  return new NwfError(CODES.FILE_UNREADABLE, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { location: { file }, cause: e });
}

/**
 * The text of an input XML file: a regular file of at most LIMITS.fileBytes
 * bytes of valid UTF-8 (libvirt's libxml2 refuses other bytes; nothing is
 * replaced silently).
 */
export function readText(file: string): string {
  const max = LIMITS.fileBytes.max;
  let buf: Buffer;
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (!st.isFile()) throw new NwfError(CODES.FILE_UNREADABLE, `cannot read ${file}: not a regular file`, { location: { file } });
    if (st.size > max) throw tooLarge(file, st.size);
    // Read at most max + 1 bytes: a file that grows while it is read is still bounded.
    buf = Buffer.allocUnsafe(Math.min(st.size, max) + 1);
    let got = 0;
    for (let r; got < buf.length && (r = readSync(fd, buf, got, buf.length - got, null)) > 0; ) got += r;
    if (got > max) throw tooLarge(file, got);
    buf = buf.subarray(0, got);
  } catch (e) {
    throw e instanceof NwfError ? e : unreadable(file, e);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (!isUtf8(buf)) {
    const at = invalidUtf8Offset(buf) ?? 0;
    let line = 1;
    for (let i = buf.indexOf(10); i >= 0 && i < at; i = buf.indexOf(10, i + 1)) line++;
    throw new NwfError(CODES.FILE_ENCODING, `invalid UTF-8 at byte ${at} (0x${(buf[at] ?? 0).toString(16).padStart(2, '0')})`, {
      location: { file, line },
      expected: 'a UTF-8 text file (libvirt refuses other bytes too)',
    });
  }
  return buf.toString('utf8');
}

function tooLarge(file: string, size: number): NwfError {
  return new NwfError(CODES.FILE_TOO_LARGE, `the file has ${size} bytes, more than nwf-fast reads in one XML file`, {
    location: { file },
    expected: `at most ${LIMITS.fileBytes.max} ${LIMITS.fileBytes.what} (libvirt's API carries at most 4 MiB of XML)`,
  });
}

/** XML files of a directory, sorted; or the file itself. */
export function xmlFiles(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new NwfError(CODES.FILE_UNREADABLE, `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { location: { file: path }, cause: e });
  }
  if (!st.isDirectory()) return [path];
  return readdirSync(path)
    .filter((n) => n.endsWith('.xml'))
    .sort()
    .map((n) => join(path, n));
}

export function loadFilterDir(dir: string, into: Map<string, FilterDef>, files: string[]): void {
  const here = new Map<string, string>();
  for (const file of xmlFiles(dir)) {
    const def = parseFilterXml(readText(file), file);
    const prev = here.get(def.name);
    if (prev) {
      throw new NwfError(CODES.XML_DUPLICATE, `filter '${def.name}' is defined twice in ${dir} (also in ${prev})`, { location: def.loc, filter: def.name });
    }
    here.set(def.name, file);
    into.set(def.name, def);
    files.push(file);
  }
}

/** The protocol element every frame in a sub-chain has, by the chain's prefix (its jump is guarded by it). */
const CHAIN_ELEMENT: Readonly<Record<string, string>> = { mac: 'mac', vlan: 'vlan', stp: 'stp', arp: 'arp', rarp: 'rarp', ipv4: 'ip', ipv6: 'ipv6' };

/**
 * What a filter means, for comparing two definitions: chain, priority and
 * entries with typed values, so that `0x800` equals `2048`, and attribute
 * order, comments, the uuid, files and lines do not matter; and a protocol
 * element without attributes that names the chain's own protocol (`<arp/>`
 * in chain `arp-ip`, which only ARP frames reach) equals no element.
 */
export function filterSignature(def: FilterDef): string {
  const chainElement = CHAIN_ELEMENT[def.chain.split('-')[0] as string];
  const entries = def.entries.map((e) => {
    if (e.kind === 'filterref') return ['ref', e.filter, [...e.params].sort(([a], [b]) => (a < b ? -1 : 1))];
    const p = e.protocol;
    const attrs = p
      ? [...p.attrs]
          .filter(([name]) => name !== 'comment')
          .map(([name, { value: v }]) => [name, v.kind === 'variable' ? `$${v.ref.key}` : v.value.type === 'ipv6' ? Array.from(v.value.value) : v.value.value] as const)
          .sort(([a], [b]) => (a < b ? -1 : 1))
      : [];
    const any = !p || (attrs.length === 0 && p.element === chainElement);
    return ['rule', e.action, e.direction, e.priority, e.statematch, any ? null : [p.element, p.match, attrs]];
  });
  return JSON.stringify([def.chain, def.chainPriority, entries]);
}

/** Notes for bundled filters that the layers above replaced with a different definition. */
function overrideNotes(bundled: ReadonlyMap<string, FilterDef>, filters: ReadonlyMap<string, FilterDef>): string[] {
  const notes: string[] = [];
  for (const [name, b] of bundled) {
    const now = filters.get(name);
    if (!now || now === b || filterSignature(now) === filterSignature(b)) continue;
    notes.push(`filter '${name}' from ${now.loc.file} replaces the bundled standard filter (${b.loc.file}) with a different definition: check that it still protects what you expect`);
  }
  return notes;
}

/** The directories of a live libvirt host under `root`, and notes (or an error) for the missing ones. */
export function libvirtDirs(root: string, allowEmpty: boolean, notes: string[]): { filters?: string; domains?: string; bindings?: string } {
  const dir = (p: string): string | undefined => (existsSync(root + p) ? root + p : undefined);
  const found = { filters: dir(LIBVIRT_PATHS.filters), domains: dir(LIBVIRT_PATHS.domains), bindings: dir(LIBVIRT_PATHS.bindings) };
  if (!found.domains && !found.bindings) {
    const missing = [LIBVIRT_PATHS.bindings, LIBVIRT_PATHS.domains, ...(found.filters ? [] : [LIBVIRT_PATHS.filters])].map((p) => root + p);
    const what = `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing`;
    if (!allowEmpty) {
      throw new NwfError(CODES.LIBVIRT_NOT_FOUND, `--libvirt: this does not look like a libvirt host: ${what}`, {
        location: { file: root + LIBVIRT_PATHS.bindings },
        expected: 'the state of a running libvirt: filter bindings in /run/libvirt/nwfilter-binding, running domains in /run/libvirt/qemu',
        hint: 'run it on the KVM host while libvirtd (or virtqemud and virtnwfilterd) runs; `nwf-fast compile --libvirt --allow-empty` compiles an empty policy instead (it protects nothing)',
      });
    }
    notes.push(`--libvirt --allow-empty: ${what}: no libvirt host here, no interface to protect`);
    return found;
  }
  if (!found.bindings) notes.push(`--libvirt: ${root + LIBVIRT_PATHS.bindings} is missing (libvirt's nwfilter driver is not running, or libvirt is older than 4.5): interfaces are taken from the domain status in ${found.domains}`);
  if (!found.domains) notes.push(`--libvirt: ${root + LIBVIRT_PATHS.domains} is missing (the QEMU driver is not running): interfaces are taken from the filter bindings only`);
  if (!found.filters) notes.push(`--libvirt: ${root + LIBVIRT_PATHS.filters} is missing: no filters from libvirt, only the bundled library and --filters directories`);
  return found;
}

export function loadSources(s: Sources): LoadedSources {
  const filters = new Map<string, FilterDef>();
  const files: string[] = [];
  const notes: string[] = [];
  const lv = s.libvirt ? libvirtDirs(s.libvirtRoot ?? '', s.allowEmpty === true, notes) : {};
  if (s.bundled) loadFilterDir(BUNDLED_FILTERS_DIR, filters, files);
  const bundled = new Map(filters);
  if (lv.filters) loadFilterDir(lv.filters, filters, files);
  for (const d of s.filterDirs) loadFilterDir(d, filters, files);
  appendAll(notes, overrideNotes(bundled, filters));

  const bindings: InterfaceBinding[] = [];
  const bindingFiles = s.bindingPaths.flatMap(xmlFiles);
  if (lv.bindings) appendAll(bindingFiles, xmlFiles(lv.bindings));
  for (const f of bindingFiles) {
    bindings.push(parseFilterBindingXml(readText(f), f));
    files.push(f);
  }
  const domainFiles = s.domainPaths.flatMap(xmlFiles);
  if (lv.domains) appendAll(domainFiles, xmlFiles(lv.domains));
  const bound = new Set(bindings.map((b) => b.iface));
  let fromBinding = 0;
  for (const f of domainFiles) {
    const r = parseDomainXml(readText(f), f);
    files.push(f);
    appendAll(notes, r.notes);
    for (const b of r.bindings) {
      // A live libvirt keeps a filter binding for every running interface: it wins over the domain status.
      if (s.libvirt && bound.has(b.iface)) {
        fromBinding++;
        continue;
      }
      bindings.push(b);
    }
  }
  if (fromBinding) notes.push(`${fromBinding} interface(s) listed in domain status files taken from their filter bindings`);
  return { filters, bindings, notes, files };
}
