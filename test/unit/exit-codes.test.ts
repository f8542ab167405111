// Exit codes follow the category of an error code (util/errors.ts), never
// its number: bad input, usage and policies a backend refuses exit 2,
// runtime failures 1, bugs 70.
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { categoryOf, CODES, exitCodeFor, InternalError, NwfError } from '../../src/util/errors.js';
import { bindingXml, tempDir } from '../support/policy.js';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

describe('error categories', () => {
  it('every code has a category, and codes are unique', () => {
    const codes = Object.values(CODES);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(['input', 'usage', 'refused-policy', 'runtime']).toContain(categoryOf(c));
  });

  it('exit codes by category', () => {
    const exit = (code: (typeof CODES)[keyof typeof CODES]) => exitCodeFor(new NwfError(code, 'x'));
    expect(exit(CODES.XML_MALFORMED)).toBe(2);
    expect(exit(CODES.VALUE_INVALID)).toBe(2);
    expect(exit(CODES.USAGE)).toBe(2);
    expect(exit(CODES.POLICY_UNSUPPORTED)).toBe(2);
    expect(exit(CODES.IP_LEARNING_UNSUPPORTED)).toBe(2);
    expect(exit(CODES.IP_LEARNING_INVALID)).toBe(2);
    expect(exit(CODES.LOAD_FAILED)).toBe(1);
    expect(exit(CODES.COMMAND_FAILED)).toBe(1);
    expect(exit(CODES.KERNEL_UNSUPPORTED)).toBe(1);
    expect(exit(CODES.CLANG_FAILED)).toBe(1);
    expect(exit(CODES.STATE_INVALID)).toBe(1);
    expect(exitCodeFor(new InternalError('bug'))).toBe(70);
    expect(exitCodeFor(new TypeError('bug'))).toBe(70);
  });
});

describe('the CLI exits by category', () => {
  const compile = async (filter: string) => {
    const f = tempDir({ 'f.xml': filter });
    const b = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'f') });
    return run(['compile', '--filters', f, '--binding', b]);
  };

  it('a policy the nft backend refuses is bad input for it: NWF1402, exit 2', async () => {
    const r = await compile("<filter name='f' chain='root'><rule action='drop' direction='out'><arp gratuitous='true'/></rule></filter>");
    expect(r.err).toContain('error NWF1402');
    expect(r.err).toMatch(/gratuitous/);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
  });

  it('ipset matches, refused by nwf-fast: NWF1402, exit 2', async () => {
    const r = await compile("<filter name='f' chain='root'><rule action='drop' direction='out'><tcp ipset='x' ipsetflags='src'/></rule></filter>");
    expect(r.err).toContain('error NWF1402');
    expect(r.code).toBe(2);
  });

  it('loading something that is not a generation is a runtime failure: exit 1, before any kernel work', async () => {
    const r = await run(['load', tempDir({}), '--state-dir', tempDir({}), '--nft-binary']);
    expect(r.err).toContain('error NWF1403');
    expect(r.err).toContain('is not a generation');
    expect(r.code).toBe(1);
  });

  it('usage: exit 2', async () => {
    expect((await run(['compile', '--backend', 'ebpf'])).code).toBe(2);
  });
});
