// nwf-fast takeover / handback: remove libvirt's dispatch for the ports
// nwf-fast protects, or put it back.
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const takeoverCommand: Command = {
  name: 'takeover',
  summary: "remove libvirt's dispatch for the ports nwf-fast protects",
  description:
    "For each port of the desired state whose nwf-fast rules are verified in force,\nremoves libvirt's dispatch (the ebtables -i/-o TAP jumps and the physdev jumps\ninto FI-/FO-/HI-TAP) and records it for handback. libvirt's chains stay.\nReconcile does this by itself in takeover mode; this command does it now, in\nany mode. Holds the state lock.",
  options: HOST_OPTIONS,
  run: async (p: ParsedArgs, io: CliIo): Promise<number> => {
    const host = liveHostFrom(p);
    const r = await host.locked('takeover', () => host.takeoverAll());
    for (const w of r.warnings) io.err(`warning: ${w}\n`);
    io.out(r.takeover?.taken.length ? `took over from libvirt: ${r.takeover.taken.join(', ')}\n` : 'nothing to take over\n');
    return r.warnings.length ? 1 : 0;
  },
};

export const handbackCommand: Command = {
  name: 'handback',
  summary: "put back libvirt's dispatch rules nwf-fast removed",
  description:
    "Puts every libvirt dispatch rule nwf-fast removed back where it was (a rule\nwhose libvirt chain is gone, because its port went away, is dropped), so\nlibvirt's own rules decide again next to nwf-fast's. nwf-fast's rules stay:\n`nwf-fast unload` removes them too. Holds the state lock.",
  options: HOST_OPTIONS,
  run: async (p: ParsedArgs, io: CliIo): Promise<number> => {
    const host = liveHostFrom(p);
    const r = await host.locked('handback', () => host.handbackAll());
    io.out(r.restored.size ? `handed back to libvirt: ${[...r.restored.keys()].join(', ')}\n` : 'nothing to hand back\n');
    if (r.skipped.size) io.out(`not restored (libvirt's chain is gone): ${[...r.skipped.keys()].join(', ')}\n`);
    return 0;
  },
};
