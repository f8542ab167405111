// The libbpf binding refuses a platform its struct layouts were not written
// for (another CPU architecture, a libbpf that is not 1.1 or a later 1.x),
// with a stable code and what was found, and accepts this machine's.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkLibbpfArch, checkLibbpfVersion, LIBBPF_SUPPORTED, libbpfVersion } from '../../src/host/bpf/libbpf.js';
import { CODES, NwfError } from '../../src/util/errors.js';

function refusal(fn: () => void): NwfError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(NwfError);
    return e as NwfError;
  }
  throw new Error('expected a refusal');
}

describe('libbpf platform check', () => {
  it.each(['arm64', 'ia32', 'riscv64', 's390x'])('refuses the %s architecture, naming it and x64', (arch) => {
    const e = refusal(() => checkLibbpfArch(arch));
    expect(e.code).toBe(CODES.KERNEL_UNSUPPORTED);
    expect(e.message).toContain(arch);
    expect(e.details.expected).toContain('x64');
    expect(e.details.hint).toContain('--backend nft');
  });

  it('accepts x64', () => {
    expect(() => checkLibbpfArch('x64')).not.toThrow();
  });

  it.each([
    [undefined, 'older than 0.6'],
    [{ major: 0, minor: 8 }, '0.8'],
    [{ major: 1, minor: 0 }, '1.0'],
    [{ major: 2, minor: 0 }, '2.0'],
  ])('refuses libbpf %j, saying %s was found and 1.1 is needed', (v, found) => {
    const e = refusal(() => checkLibbpfVersion(v));
    expect(e.code).toBe(CODES.KERNEL_UNSUPPORTED);
    expect(e.message).toContain(`libbpf ${found} `);
    expect(e.details.expected).toContain('libbpf 1.1 or a later 1.x');
  });

  it.each([
    { major: 1, minor: 1 },
    { major: 1, minor: 5 },
  ])('accepts libbpf %j', (v) => {
    expect(() => checkLibbpfVersion(v)).not.toThrow();
  });

  const haveLibbpf = ['/usr/lib/x86_64-linux-gnu/libbpf.so.1', '/lib/x86_64-linux-gnu/libbpf.so.1'].some((p) => existsSync(p));
  it.skipIf(!haveLibbpf)(`reads this machine's libbpf version through the library${haveLibbpf ? '' : ' (skipped: libbpf.so.1 is not installed)'}`, () => {
    const v = libbpfVersion();
    expect(v.major).toBe(LIBBPF_SUPPORTED.major);
    expect(v.minor).toBeGreaterThanOrEqual(LIBBPF_SUPPORTED.minMinor);
  });
});
