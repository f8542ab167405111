// nwf-fast load: check and apply a generation in one transaction.
import { loadGeneration } from '../host/apply.js';
import { readGeneration } from '../host/generation.js';
import { checkNotEmptying, pruneGenerations } from '../host/live/apply.js';
import { observeRunDir } from '../host/live/observe.js';
import { readPorts } from '../host/live/ports.js';
import { type Command, type ParsedArgs } from './args.js';
import { BPF_HOOK_OPTION, bpfHookOption, configFrom, HOST_OPTIONS, hostOptions, liveHostFrom, lockedCommand } from './host-options.js';
import { reportBpfAttach } from './bpf-report.js';
import type { CliIo } from './io.js';

export const loadCommand: Command = {
  name: 'load',
  summary: 'check and apply a generation in one transaction',
  description:
    'Checks the generation in DIR (written by `nwf-fast compile --out DIR`) with\nnft -c, loads and verifies its eBPF programs, applies it in one transaction\nand records it as the current generation. Without DIR, protects what the live\nlibvirt host runs (/run/libvirt: the running domains and nwfilter bindings;\na machine without them is refused), records it as the desired state, and in\ntakeover mode removes libvirt\'s dispatch for the ports now protected. A\nfailed load leaves the previous generation in force; a generation that\nprotects no port is refused when the loaded one protects some. Needs root;\nacts on the network namespace it runs in; holds the state lock.',
  options: {
    ...HOST_OPTIONS,
    ...BPF_HOOK_OPTION,
    full: { value: false, help: 'replace the whole generation even when only set elements or eBPF values changed' },
    'allow-empty': { value: false, help: 'load even a generation that leaves every protected port unprotected (without DIR: also on a machine without libvirt)' },
  },
  positionals: { usage: '[DIR]', max: 1 },
  run: runLoad,
};

async function runLoad(p: ParsedArgs, io: CliIo): Promise<number> {
  const dir = p.positionals[0];
  const allowEmpty = p.flags.has('allow-empty');
  if (!dir) return loadLive(p, io, allowEmpty);
  const hook = bpfHookOption(p);
  const opts = { ...hostOptions(p), full: p.flags.has('full'), ...(hook ? { bpfHook: hook } : {}) };
  return lockedCommand(p, `load ${dir}`, async () => {
    checkNotEmptying(opts.stateDir, readGeneration(dir).manifest.interfaces.length, allowEmpty);
    const r = await loadGeneration(dir, opts);
    pruneGenerations(opts.stateDir, configFrom(p).keepGenerations);
    io.out(
      `loaded generation ${r.generation.manifest.id} (${r.generation.manifest.interfaces.length} interface(s)) in ${r.ms.apply.toFixed(1)} ms${r.incremental ? ' (incremental: element changes only)' : ''}` +
        `${r.previous ? `; previous ${r.previous}` : ''}\n`,
    );
    reportBpfAttach(r, io);
    const desired = readPorts(opts.stateDir).length;
    if (desired) io.err(`note: this host has a desired state (${desired} port(s), libvirt hook / reconcile): the next hook call or reconcile replaces this generation with it\n`);
    return 0;
  });
}

/** `load` without DIR: the live libvirt host's ports become the desired state and are loaded. */
async function loadLive(p: ParsedArgs, io: CliIo, allowEmpty: boolean): Promise<number> {
  const host = liveHostFrom(p);
  const obs = observeRunDir({ allowEmpty });
  for (const n of obs.notes) io.err(`note: ${n}\n`);
  for (const w of obs.problems) io.err(`warning: ${w}\n`);
  return host.locked('load (live libvirt host)', async () => {
    const r = await host.resync(obs, { strict: true, allowEmpty, force: true });
    for (const w of r.warnings) io.err(`warning: ${w}\n`);
    const g = r.apply?.load;
    if (g) {
      io.out(
        `loaded generation ${g.generation.manifest.id} (${g.generation.manifest.interfaces.length} interface(s)) in ${g.ms.apply.toFixed(1)} ms${g.incremental ? ' (incremental: element changes only)' : ''}` +
          `${g.previous ? `; previous ${g.previous}` : ''}\n`,
      );
      reportBpfAttach(g, io);
    }
    if (r.takeover?.taken.length) io.out(`took over from libvirt: ${r.takeover.taken.join(', ')}\n`);
    return 0;
  });
}
