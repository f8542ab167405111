// nwf-fast load: check and apply a generation as a verified typed diff.
import { loadGeneration, type LoadResult } from '../host/apply.js';
import { observeRunDir } from '../host/live/observe.js';
import { readPorts } from '../host/live/ports.js';
import { type Command, type ParsedArgs } from './args.js';
import { BPF_HOOK_OPTION, bpfHookOption, configFrom, HOST_OPTIONS, hostOptions, liveHostFrom, lockedCommand, reportFailed, SKELETON_OPTIONS } from './host-options.js';
import { reportBpfAttach } from './bpf-report.js';
import type { CliIo } from './io.js';
import { printJson } from './json.js';
import { EXIT } from '../util/errors.js';

export const loadCommand: Command = {
  name: 'load',
  summary: 'check and apply a generation (a verified diff, or in full)',
  description:
    'Checks the generation in DIR (written by `nwf-fast compile --out DIR`), loads\n' +
    'and verifies its eBPF programs and applies it: as a typed diff against what\n' +
    'is loaded when the kernel holds exactly that, else as a full replacement in\n' +
    'one transaction; every present tap gets its programs. A port whose policy\n' +
    'failed is dropped (fail closed) and the exit code is 5. Without DIR,\n' +
    'protects what the live libvirt host runs (/run/libvirt: the running\n' +
    'domains and nwfilter bindings; a machine without them is refused), records\n' +
    'it as the desired state, and in takeover mode removes libvirt\'s dispatch for\n' +
    'the ports now protected.\n' +
    '\n' +
    'Everything that can be checked is checked before the kernel is touched; a\n' +
    'failed load leaves the previous generation in force, and one that fails after\n' +
    'the kernel changed says so (exit 1) and leaves a record that `status` reports.\n' +
    'A generation that protects no port is refused (exit 2) when the loaded one\n' +
    'protects some, unless --allow-empty. Needs root; acts on the network\n' +
    'namespace it runs in; holds the state lock.',
  options: {
    ...HOST_OPTIONS,
    ...BPF_HOOK_OPTION,
    ...SKELETON_OPTIONS,
    full: { value: false, help: 'replace the whole generation even when a diff would do' },
    'allow-empty': { value: false, help: 'load even a generation that leaves every protected port unprotected (without DIR: also on a machine without libvirt)' },
    json: { value: false, help: 'print the result as JSON' },
  },
  positionals: { usage: '[DIR]', max: 1 },
  run: runLoad,
};

/** A load's result as the JSON outputs carry it. */
export function loadResultJson(r: LoadResult): Record<string, unknown> {
  const m = r.generation.manifest;
  return {
    generation: m.id,
    backend: m.backend,
    previous: r.previous,
    interfaces: m.interfaces.map((i) => i.iface),
    incremental: r.incremental === true,
    path: r.commit.path,
    ...(r.commit.via ? { via: r.commit.via } : {}),
    ...(r.commit.viaFallback !== undefined ? { viaFallback: r.commit.viaFallback } : {}),
    ...(r.commit.fullReason ? { fullReason: r.commit.fullReason } : {}),
    failed: r.commit.failed.map((f) => ({ iface: f.iface, code: f.code, message: f.message })),
    ...(r.bpfHooks ? { bpfHooks: Object.fromEntries(Object.entries(r.bpfHooks).map(([tap, h]) => [tap, { fromVm: h.out, toVm: h.in }])) } : {}),
    ms: r.ms,
    missingTaps: r.missingTaps,
    repaired: r.repaired,
    pruned: r.pruned,
    notes: r.notes,
  };
}

/** What a load (or rollback) has to say besides its result: what it repaired, then the eBPF attachment and the notes. */
export function printLoadNotes(r: LoadResult, io: CliIo): void {
  for (const x of r.repaired) io.err(`repaired: ${x}\n`);
  if (r.commit.drift.length) io.err(`note: the kernel did not hold what was loaded (repaired): ${r.commit.drift.join('; ')}\n`);
  if (r.commit.repairedTaps.length) io.err(`note: eBPF programs put back on ${r.commit.repairedTaps.join(', ')}\n`);
  reportBpfAttach(r, io);
}

function loadedLine(r: LoadResult): string {
  const c = r.commit;
  const how = c.path === 'full' ? `full replacement${c.fullReason ? `: ${c.fullReason}` : ''}` : c.path === 'elements' ? 'incremental: element changes only' : c.path === 'diff' ? 'incremental: typed diff' : 'no nftables change';
  return `loaded generation ${r.generation.manifest.id} (${r.generation.manifest.interfaces.length} interface(s)) in ${r.ms.apply.toFixed(1)} ms (${how})${r.previous ? `; previous ${r.previous}` : ''}\n`;
}

async function runLoad(p: ParsedArgs, io: CliIo): Promise<number> {
  const dir = p.positionals[0];
  const allowEmpty = p.flags.has('allow-empty');
  if (!dir) return loadLive(p, io, allowEmpty);
  const hook = bpfHookOption(p);
  const opts = { ...hostOptions(p), full: p.flags.has('full'), allowEmpty, keepGenerations: configFrom(p).keepGenerations, ...(hook ? { bpfHook: hook } : {}) };
  return lockedCommand(p, `load ${dir}`, async () => {
    const r = await loadGeneration(dir, opts);
    if (p.flags.has('json')) {
      printJson(io, 'load', loadResultJson(r));
      return r.commit.failed.length ? EXIT.partial : 0;
    }
    io.out(loadedLine(r));
    printLoadNotes(r, io);
    const desired = readPorts(opts.stateDir).length;
    if (desired) io.err(`note: this host has a desired state (${desired} port(s), libvirt hook / reconcile): the next hook call or reconcile replaces this generation with it\n`);
    return reportFailed(r.commit.failed, io);
  });
}

/** `load` without DIR: the live libvirt host's ports become the desired state and are loaded. */
async function loadLive(p: ParsedArgs, io: CliIo, allowEmpty: boolean): Promise<number> {
  const host = liveHostFrom(p);
  const obs = observeRunDir({ allowEmpty });
  for (const n of obs.notes) io.err(`note: ${n}\n`);
  for (const w of obs.problems) io.err(`warning: ${w}\n`);
  return host.locked('load (live libvirt host)', async () => {
    // one bad VM never unprotects another: a port whose policy fails is loaded failing closed (exit 5)
    const r = await host.resync(obs, { partial: true, allowEmpty, force: true });
    for (const w of r.warnings) io.err(`warning: ${w}\n`);
    const g = r.apply?.load;
    const failed = r.apply?.failed ?? [];
    if (p.flags.has('json')) {
      printJson(io, 'load', { ...(g ? loadResultJson(g) : { generation: null }), takenOver: r.takeover?.taken ?? [] });
      return failed.length ? EXIT.partial : 0;
    }
    if (g) {
      io.out(loadedLine(g));
      printLoadNotes(g, io);
    }
    if (r.takeover?.taken.length) io.out(`took over from libvirt: ${r.takeover.taken.join(', ')}\n`);
    return reportFailed(failed, io);
  });
}
