// Bad input: a clear error with a stable code and the file, a non-zero
// exit, and nothing on stdout. Most cases are folders under
// test/fixtures/errors (error-fixtures.test.ts); the ones here are
// parametrised or about the command line.
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { bindingXml, tempDir } from '../support/policy.js';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const GOOD_BINDING = bindingXml('vnet0', '52:54:00:00:00:01', 'f', { IP: '10.0.0.2' });

/** Compiles one custom filter `f` (plus extra files) bound to vnet0. */
async function compileFilter(filterXml: string, extra: Record<string, string> = {}, binding = GOOD_BINDING) {
  const fdir = tempDir({ 'f.xml': filterXml, ...extra });
  const bdir = tempDir({ 'vnet0.xml': binding });
  const r = await run(['compile', '--filters', fdir, '--binding', bdir]);
  return { ...r, fdir, bdir };
}

const F = (body: string, attrs = "chain='root'") => `<filter name='f' ${attrs}>${body}</filter>`;

describe('compile: bad bindings', () => {
  it.each(['vnet0;drop', 'a"b', 'vnet 0', 'averyveryverylongname', '../x', "v'0"])('a tap name that is not a valid interface name: %s', async (name) => {
    const b = `<filterbinding><owner><name>vm</name></owner><portdev name=${JSON.stringify(name).replace(/^"|"$/g, "'").replace(/\\"/g, '&quot;')}/><mac address='52:54:00:00:00:01'/><filterref filter='f'/></filterbinding>`;
    const r = await compileFilter(F(''), {}, b.includes("name='v'0'") ? b.replace("name='v'0'", 'name="v\'0"') : b);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/error NWF1106|error NWF1001/);
  });
});

describe('CLI usage', () => {
  it('every command has --help', async () => {
    for (const c of ['compile', 'explain', 'load', 'rollback', 'status', 'unload', 'demo']) {
      const r = await run([c, '--help']);
      expect(r.code).toBe(0);
      expect(r.out).toContain(`usage: nwf-fast ${c}`);
    }
  });
  it('an unknown option is a usage error', async () => {
    const r = await run(['compile', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('NWF1301');
  });
  it('an unknown command is an error', async () => {
    expect((await run(['frobnicate'])).code).toBe(2);
  });
});
