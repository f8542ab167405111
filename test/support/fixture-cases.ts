// Fixture folders: one folder per case holding its input XML and the
// expected outputs (test/fixtures/golden, test/fixtures/errors).
//
// The inputs become `nwf-fast compile` arguments by their root element: a
// <filterbinding> (or <filterbindingstatus>) is a --binding, a <domain> (or
// <domstatus>) a --domain, anything else a --filters file. Paths in the
// output are written relative to the case folder.
//
// UPDATE_GOLDEN=1 writes the actual output over the expected files instead
// of comparing (review the diff, then commit it).
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { main } from '../../src/cli/main.js';

export const UPDATE = process.env.UPDATE_GOLDEN === '1';

/** The case folders under `root`, sorted by name. */
export function caseDirs(root: string): { name: string; dir: string }[] {
  return readdirSync(root)
    .filter((n) => statSync(join(root, n)).isDirectory())
    .sort()
    .map((name) => ({ name, dir: join(root, name) }));
}

/** The first element name of an XML text, after comments and declarations. */
function rootElement(xml: string): string | undefined {
  return /<([A-Za-z][\w.-]*)/.exec(xml.replace(/<!--[\s\S]*?-->/g, '').replace(/<\?[\s\S]*?\?>/g, ''))?.[1];
}

/** The `compile` source arguments for a case folder's XML files. */
export function sourceArgs(dir: string): string[] {
  const files = readdirSync(dir)
    .filter((n) => n.endsWith('.xml'))
    .sort();
  if (files.length === 0) throw new Error(`${dir}: no input XML`);
  return files.flatMap((n) => {
    const root = rootElement(readFileSync(join(dir, n), 'utf8'));
    const opt = root === 'filterbinding' || root === 'filterbindingstatus' ? '--binding' : root === 'domain' || root === 'domstatus' ? '--domain' : '--filters';
    return [opt, join(dir, n)];
  });
}

/** Runs the CLI in-process; paths under `dir` are shown relative to it. */
export async function runCli(argv: readonly string[], dir: string): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  const rel = (s: string): string => s.split(`${dir}/`).join('');
  return { code, out: rel(out), err: rel(err) };
}

/** Compares `actual` with the expected file (or writes it with UPDATE_GOLDEN=1). */
export function expectFile(path: string, actual: string): void {
  if (UPDATE) {
    if (!existsSync(path) || readFileSync(path, 'utf8') !== actual) writeFileSync(path, actual);
    return;
  }
  expect(existsSync(path), `${path} is missing: run UPDATE_GOLDEN=1 npx vitest run --project unit`).toBe(true);
  expect(actual).toBe(readFileSync(path, 'utf8'));
}
