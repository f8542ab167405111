// The shape of src/, checked on every run (issue 12):
//  - no import cycles, between modules or between folders;
//  - src/backends never imports src/host, and never touches the file system;
//  - src/lab (the test rig) is imported only by the demo, tests and bench;
//  - src/host builds nft commands only through the typed model.
// Imports are read with TypeScript's own pre-processor (static, type-only,
// re-exports and dynamic import() alike), so nothing hides from the check.
//
// KNOWN lists what main still does wrong in the area being restructured
// (src/backends and the load path in src/host). The checks fail on anything
// new, and on an entry that no longer occurs: delete it when it is fixed.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..');

const KNOWN = {
  moduleCycles: [],
  folderCycles: [],
  backendsImportHost: [],
  backendsUseFs: [],
  hostRawCommands: [],
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

const rel = (p: string): string => relative(REPO, p).split('\\').join('/');

/** Every file under src/ and the repo-relative files it imports (local imports only). */
function importGraph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const file of tsFiles(join(REPO, 'src'))) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const local = importedFiles.map((f) => f.fileName).filter((n) => n.startsWith('.'));
    g.set(
      rel(file),
      local.map((n) => rel(resolve(dirname(file), n.replace(/\.js$/, '.ts')))),
    );
  }
  return g;
}

/** Strongly connected components with more than one member (or a self-import): the cycles. */
function cycles(g: ReadonlyMap<string, readonly string[]>): string[] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || (g.get(v) ?? []).includes(v)) out.push(scc.sort().join(' <-> '));
  };
  for (const v of [...g.keys()].sort()) if (!index.has(v)) visit(v);
  return out.sort();
}

/** src/<folder> (src/backends/nft counts as src/backends), or the file itself for src/*.ts. */
function folderOf(file: string): string {
  const parts = file.split('/');
  return parts.length > 2 ? parts.slice(0, 2).join('/') : file;
}

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

/** Checks found against known: nothing new, nothing fixed but still listed. */
function expectOnlyKnown(found: readonly string[], known: readonly string[]): void {
  expect(found.filter((f) => !known.includes(f)), 'new violations').toEqual([]);
  expect(
    known.filter((k) => !found.includes(k)),
    'fixed: remove these from KNOWN in test/unit/architecture.test.ts',
  ).toEqual([]);
}

const graph = importGraph();
const edges = [...graph].flatMap(([from, tos]) => tos.map((to) => ({ from, to })));

describe('src/ architecture', () => {
  it('reads a real import graph', () => {
    // guards the checks below against an empty or broken graph
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get('src/ir/eval.ts')).toContain('src/ir/eval/chains.ts');
    for (const { from, to } of edges) expect(graph.has(to), `${from} imports ${to}, which is not a file`).toBe(true);
  });

  it('has no import cycles between modules', () => {
    expectOnlyKnown(cycles(graph), KNOWN.moduleCycles);
  });

  it('has no import cycles between folders', () => {
    const folders = new Map<string, string[]>();
    for (const { from, to } of edges) {
      const a = folderOf(from);
      const b = folderOf(to);
      if (a === b) continue;
      folders.set(a, [...new Set([...(folders.get(a) ?? []), b])]);
    }
    expectOnlyKnown(cycles(folders), KNOWN.folderCycles);
  });

  it('src/backends never imports src/host', () => {
    const found = edges.filter((e) => e.from.startsWith('src/backends/') && e.to.startsWith('src/host/')).map((e) => `${e.from} -> ${e.to}`);
    expectOnlyKnown(found.sort(), KNOWN.backendsImportHost);
  });

  it('src/backends never touches the file system', () => {
    const found = [...graph.keys()].filter((f) => {
      if (!f.startsWith('src/backends/')) return false;
      const { importedFiles } = ts.preProcessFile(readFileSync(join(REPO, f), 'utf8'), true, true);
      return importedFiles.some((i) => /^(node:)?fs(\/promises)?$/.test(i.fileName));
    });
    expectOnlyKnown(found.sort(), KNOWN.backendsUseFs);
  });

  it('src/lab is imported only by the demo (and by tests and bench)', () => {
    const found = edges
      .filter((e) => e.to.startsWith('src/lab/') && !e.from.startsWith('src/lab/') && !/^src\/cli\/demo[^/]*\.ts$/.test(e.from))
      .map((e) => `${e.from} -> ${e.to}`);
    expect(found).toEqual([]);
  });

  it('src/host builds nft commands only through the typed model', () => {
    const found = [...graph.keys()]
      .filter((f) => f.startsWith('src/host/'))
      .flatMap((f) => rawCommands(readFileSync(join(REPO, f), 'utf8')).map((c) => `${f}: ${c}`));
    expectOnlyKnown(found, KNOWN.hostRawCommands);
  });

  it('the command check finds raw commands and passes typed ones', () => {
    const text = "const c = [{ add: { rule: { family: 'bridge', table: 't', chain: 'c', expr: [] } } }, { 'flush': {chain: ref} }, add(rule(x))];";
    expect(rawCommands(text)).toEqual(["{ add: { rule: { family: 'bridge', table: 't', chain: 'c', expr: [] } } }", "{ 'flush': {chain: ref} }"]);
    expect(rawCommands('// { delete: { table } } in a comment\nconst cmd = del(table(t));')).toEqual([]);
  });
});

/** libnftables commands written as object literals ({ add: { ... } }, { delete: { ... } }, ...), each on one line. */
function rawCommands(source: string): string[] {
  const text = stripComments(source);
  const command = /\{\s*['"]?(add|create|insert|replace|delete|destroy|flush|reset|rename)['"]?\s*:\s*\{/g;
  return [...text.matchAll(command)].map((m) => balanced(text, m.index));
}

/** The brace-balanced text starting at `start` (an object literal), on one line. */
function balanced(text: string, start: number): string {
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) return text.slice(start, i + 1).replace(/\s+/g, ' ');
  }
  return text.slice(start).replace(/\s+/g, ' ');
}
