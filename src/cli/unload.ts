// nwf-fast unload: give libvirt its dispatch back, remove nwf-fast's tables, nothing else.
import { unload, type UnloadResult } from '../host/apply.js';
import { StateDir } from '../host/generation.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';
import { printJson } from './json.js';

export const unloadCommand: Command = {
  name: 'unload',
  summary: "remove nwf-fast's rules (libvirt's dispatch handed back first)",
  description:
    "Puts back libvirt's dispatch rules nwf-fast took over (as `nwf-fast handback`),\n" +
    "then removes nwf-fast's nftables tables (those with this state directory's\n" +
    'owner mark) in one transaction, its tc filters from the taps and its eBPF\n' +
    'pins, after checking that the state directory can record it. Other tables,\n' +
    'tc filters and ebtables rules are not touched. Holds the state lock. With\n' +
    "--force it works from the kernel alone, without the state or its lock: every\n" +
    "table with nwf-fast's mark (any owner), nwf-fast's tc filters on every\n" +
    'interface, its pins (libvirt\'s dispatch is handed back only when the state\n' +
    'directory can still say what was taken).',
  options: {
    ...HOST_OPTIONS,
    force: { value: false, help: "from the kernel alone: every nwf-fast-marked table, nwf-fast's tc filters on every interface, its pins" },
    json: { value: false, help: 'print the result as JSON' },
  },
  run: runUnload,
};

async function runUnload(p: ParsedArgs, io: CliIo): Promise<number> {
  const opts = hostOptions(p);
  const force = p.flags.has('force');
  const handedBack: string[] = [];
  let r: UnloadResult;
  if (force) {
    // best effort: what the state directory says was taken from libvirt goes back first
    try {
      const h = await liveHostFrom(p).handbackAll();
      for (const tap of h.restored.keys()) handedBack.push(tap);
    } catch (e) {
      io.err(`note: libvirt's dispatch not handed back (${(e as Error).message})\n`);
    }
    r = await unload({ ...opts, force: true });
  } else {
    const host = liveHostFrom(p);
    r = await host.locked('unload', async () => {
      // the state directory must be able to record the unload before anything changes
      new StateDir(opts.stateDir).checkWritable(0);
      // libvirt's rules first, so the ports are never without rules
      const h = await host.handbackAll();
      for (const tap of h.restored.keys()) handedBack.push(tap);
      return unload(opts);
    });
  }
  if (p.flags.has('json')) {
    printJson(io, 'unload', { ...r, handedBack });
    return 0;
  }
  if (handedBack.length) io.out(`handed back to libvirt: ${handedBack.join(', ')}\n`);
  for (const n of r.notes) io.err(`note: ${n}\n`);
  io.out(`unloaded${r.forced ? ' (forced, from the kernel alone)' : ''}${r.previous ? ` generation ${r.previous}` : ''}${r.tables.length ? `: removed ${r.tables.map((t) => `table ${t}`).join(', ')}` : ''}\n`);
  return 0;
}
