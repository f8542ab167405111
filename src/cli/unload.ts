// nwf-fast unload: give libvirt its dispatch back, remove nwf-fast's tables, nothing else.
import { unload } from '../host/apply.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const unloadCommand: Command = {
  name: 'unload',
  summary: "remove nwf-fast's rules (libvirt's dispatch handed back first)",
  description:
    "Puts back libvirt's dispatch rules nwf-fast took over (as `nwf-fast handback`),\nthen removes nwf-fast's nftables tables in one transaction, its tc filters from\nthe taps and its eBPF pins. Other tables, tc filters and ebtables rules are not\ntouched. Holds the state lock.",
  options: HOST_OPTIONS,
  run: runUnload,
};

async function runUnload(p: ParsedArgs, io: CliIo): Promise<number> {
  const host = liveHostFrom(p);
  await host.locked('unload', async () => {
    // libvirt's rules first, so the ports are never without rules
    const h = await host.handbackAll();
    if (h.restored.size) io.out(`handed back to libvirt: ${[...h.restored.keys()].join(', ')}\n`);
    await unload(hostOptions(p));
  });
  io.out('unloaded\n');
  return 0;
}
