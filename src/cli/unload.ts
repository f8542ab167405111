// nwf-fast unload: remove nwf-fast's tables, nothing else.
import { unload } from '../host/apply.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

export const unloadCommand: Command = {
  name: 'unload',
  summary: "remove nwf-fast's tables, tc filters and pins (nothing else)",
  description:
    "Removes nwf-fast's nftables tables in one transaction, its tc filters from the\ntaps and its eBPF pins. Other tables, tc filters and ebtables rules are not\ntouched.",
  options: HOST_OPTIONS,
  run: runUnload,
};

async function runUnload(p: ParsedArgs, io: CliIo): Promise<number> {
  await unload(hostOptions(p));
  io.out('unloaded\n');
  return 0;
}
