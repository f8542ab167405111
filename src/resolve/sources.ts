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

export function loadSources(s: Sources): LoadedSources {
  const filters = new Map<string, FilterDef>();
  const files: string[] = [];
  const notes: string[] = [];
  const root = s.libvirtRoot ?? '';
  if (s.bundled) loadFilterDir(BUNDLED_FILTERS_DIR, filters, files);
  if (s.libvirt && existsSync(root + LIBVIRT_PATHS.filters)) loadFilterDir(root + LIBVIRT_PATHS.filters, filters, files);
  for (const d of s.filterDirs) loadFilterDir(d, filters, files);

  const bindings: InterfaceBinding[] = [];
  const bindingFiles = s.bindingPaths.flatMap(xmlFiles);
  if (s.libvirt && existsSync(root + LIBVIRT_PATHS.bindings)) bindingFiles.push(...xmlFiles(root + LIBVIRT_PATHS.bindings));
  for (const f of bindingFiles) {
    bindings.push(parseFilterBindingXml(readText(f), f));
    files.push(f);
  }
  const domainFiles = s.domainPaths.flatMap(xmlFiles);
  if (s.libvirt && existsSync(root + LIBVIRT_PATHS.domains)) domainFiles.push(...xmlFiles(root + LIBVIRT_PATHS.domains));
  const bound = new Set(bindings.map((b) => b.iface));
  for (const f of domainFiles) {
    const r = parseDomainXml(readText(f), f);
    files.push(f);
    notes.push(...r.notes);
    for (const b of r.bindings) {
      // A live libvirt keeps a filter binding for every running interface: it wins over the domain status.
      if (s.libvirt && bound.has(b.iface)) {
        notes.push(`${f}: interface ${b.iface}: taken from its filter binding`);
        continue;
      }
      bindings.push(b);
    }
  }
  return { filters, bindings, notes, files };
}
