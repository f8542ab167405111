// Building eBPF objects (host/bpf-build.ts) with clang run through the
// CommandRunner: its failures are CommandErrors with the compiler's lines.
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { lowerToBpf } from '../../src/backends/bpf/lower.js';
import { buildBpf, compileBpf } from '../../src/host/bpf-build.js';
import { CommandError, RecordingRunner } from '../../src/host/runner.js';
import { CODES } from '../../src/util/errors.js';
import { policyFor, tempDir } from '../support/policy.js';

const dirs: string[] = [];
const temp = (): string => {
  const d = tempDir({});
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A clang that knows its version and fails every compile with `stderr`. */
const failingClang = (stderr: string) => new RecordingRunner((argv) => (argv[1] === '--version' ? { stdout: 'clang version 19.0.0 (fake)\n' } : { exitCode: 1, stderr }));

describe('clang through the runner', () => {
  it('a clang failure is a CommandError with the compiler lines, the command and its stderr', async () => {
    const stderr = "In file included from /x/nwf.bpf.c:3:\n/x/lib/nwf_run.h:47:6: error: unused variable 'x' [-Werror,-Wunused-variable]\n   47 |  int x;\n      |      ^\n1 error generated.\n";
    const ir = { version: 1 as const, interfaces: [policyFor('no-mac-spoofing')], notes: [] };
    const err = await compileBpf(ir, { outDir: temp(), cacheDir: temp(), runner: failingClang(stderr) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const e = err as CommandError;
    expect(e.code).toBe(CODES.CLANG_FAILED);
    expect(e.exitCode).toBe(1);
    expect(e.stderr).toBe(stderr);
    expect(e.argv[0]).toBe('clang-19');
    expect(e.message).toContain("nwf_run.h:47:6: error: unused variable 'x'");
    expect(e.message).not.toContain('1 error generated');
  });

  it('a clang that cannot run says so', async () => {
    const runner = new RecordingRunner(() => ({ exitCode: -1, failure: 'spawn clang-nope ENOENT' }));
    const err = await buildBpf(lowerToBpf({ version: 1, interfaces: [policyFor('no-mac-spoofing')], notes: [] }), { outDir: temp(), cacheDir: temp(), clang: 'clang-nope', runner }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).code).toBe(CODES.CLANG_FAILED);
    expect((err as CommandError).message).toContain('cannot run clang-nope: spawn clang-nope ENOENT');
  });
});
