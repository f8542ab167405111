// The errors tree (test/fixtures/errors/<case>/): input files that
// `nwf-fast compile` must refuse, and expected.txt with the exit code and the
// whole diagnostic (code, file, line, element path, message, filter,
// interface, what was expected). Nothing may be printed on stdout.
// UPDATE_GOLDEN=1 npx vitest run --project unit test/unit/error-fixtures.test.ts
// rewrites expected.txt; review the diff and commit it.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { caseDirs, expectFile, runCli, sourceArgs } from '../support/fixture-cases.js';

const ROOT = join(import.meta.dirname, '..', 'fixtures', 'errors');
const CASES = caseDirs(ROOT);

describe('errors tree', () => {
  it('has cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(20);
  });

  it.each(CASES)('$name', async ({ dir }) => {
    const r = await runCli(['compile', ...sourceArgs(dir)], dir);
    expect(r.out).toBe('');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/error NWF\d{4}: /);
    expectFile(join(dir, 'expected.txt'), `exit ${r.code}\n${r.err}`);
  });
});
