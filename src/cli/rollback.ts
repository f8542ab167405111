// nwf-fast rollback: re-apply the previous generation atomically.
import { rollback } from '../host/apply.js';
import { formatHelp, type OptionSpec, parseArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

const SPEC: Record<string, OptionSpec> = { ...HOST_OPTIONS, help: { value: false, help: 'show this help' } };

export const ROLLBACK_HELP = formatHelp('nwf-fast rollback [--state-dir DIR]', 'Re-applies the generation loaded before the current one, in one transaction.', SPEC);

export async function runRollback(argv: readonly string[], io: CliIo): Promise<number> {
  const p = parseArgs(argv, SPEC);
  if (p.flags.has('help')) {
    io.out(ROLLBACK_HELP);
    return 0;
  }
  const r = await rollback(hostOptions(p));
  io.out(`rolled back to generation ${r.generation.manifest.id} (was ${r.previous ?? 'none'})\n`);
  return 0;
}
