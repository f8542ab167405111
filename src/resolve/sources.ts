// Where filters and bindings come from: directories of filter XML (layered,
// later names override earlier ones), the bundled library of the standard
// filters, filterbinding and domain XML files, and a live libvirt host.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CODES, NwfError } from '../util/errors.js';
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

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new NwfError(CODES.FILE_UNREADABLE, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { location: { file }, cause: e });
  }
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
