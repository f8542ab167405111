// Test helpers: run the CLI in-process, catch the NwfError a call throws.
import { main } from '../../src/cli/main.js';
import { NwfError } from '../../src/util/errors.js';

/** Runs `nwf-fast argv` in-process: its exit code, stdout and stderr. */
export async function run(argv: readonly string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

/** The NwfError `fn` throws (anything else, or nothing, fails the test). */
export function nwfErrorOf(fn: () => unknown): NwfError {
  try {
    fn();
  } catch (e) {
    if (e instanceof NwfError) return e;
    throw e;
  }
  throw new Error('expected an NwfError');
}
