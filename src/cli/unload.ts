// nwf-fast unload: remove nwf-fast's tables, nothing else.
import { unload } from '../host/apply.js';
import { formatHelp, type OptionSpec, parseArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

const SPEC: Record<string, OptionSpec> = { ...HOST_OPTIONS, help: { value: false, help: 'show this help' } };

export const UNLOAD_HELP = formatHelp('nwf-fast unload [--state-dir DIR]', "Removes nwf-fast's nftables tables (bridge nwf_fast, inet nwf_fast) in one\ntransaction. Other tables and ebtables rules are not touched.", SPEC);

export async function runUnload(argv: readonly string[], io: CliIo): Promise<number> {
  const p = parseArgs(argv, SPEC);
  if (p.flags.has('help')) {
    io.out(UNLOAD_HELP);
    return 0;
  }
  await unload(hostOptions(p));
  io.out('unloaded\n');
  return 0;
}
