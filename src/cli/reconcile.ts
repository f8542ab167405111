// nwf-fast reconcile: bring nwf-fast to what libvirt runs, once or --follow.
import { reconcileOnce, follow, virshEvents, type ReconcileResult } from '../host/live/reconcile.js';
import { virshClient } from '../host/live/observe.js';
import { CODES, NwfError } from '../util/errors.js';
import { many, one, type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const reconcileCommand: Command = {
  name: 'reconcile',
  summary: 'protect what libvirt runs, take over its dispatch (--follow)',
  description:
    "Lists libvirt's running domains (live XML) and nwfilter bindings, adds and\nremoves ports of the desired state accordingly (a port whose policy does not\ncompile is skipped with a warning), loads the result, and in takeover mode\nremoves libvirt's dispatch for the ports nwf-fast's rules protect. With\n--follow (for systemd): follows libvirt's domain events (a hot-plugged NIC is\nprotected within a second), reconnects when libvirtd restarts, and resyncs\nevery --period seconds as a backstop. Holds the state lock only while it\nchanges state, never while it asks libvirt.\n\nLearned addresses (IP learning): each run saves the kernel's learned\naddresses to <state_dir>/learned.json and writes them into the running\ndomains' live XML (virsh metadata --live, nwf-fast's namespace, next to the\nnative mode's entries), so that a live migration carries them; --follow does\nthis every second (rate-limited, retried while libvirt is busy). Run\n`nwf-fast reconcile --once DOMAIN` right before `virsh migrate` to be sure an\naddress learned less than a second ago travels.",
  options: {
    ...HOST_OPTIONS,
    follow: { value: false, help: "keep following libvirt's events until SIGTERM/SIGINT" },
    period: { value: true, arg: 'SECONDS', help: 'with --follow: full resync period (default 10)' },
    connect: { value: true, arg: 'URI', help: 'libvirt URI (default: libvirt_uri of the configuration, qemu:///system)' },
    once: { value: true, repeatable: true, arg: 'DOMAIN', help: 'reconcile only this domain (name or UUID) and write its learned addresses into its live metadata now' },
  },
  run: runReconcile,
};

function report(r: ReconcileResult, io: CliIo): void {
  for (const w of r.warnings) io.err(`warning: ${w}\n`);
  if (r.added.length) io.out(`protected: ${r.added.join(', ')}\n`);
  if (r.removed.length) io.out(`released: ${r.removed.join(', ')}\n`);
  if (r.apply) io.out(`loaded ${r.apply.load ? 'generation ' : ''}${r.apply.id} (${r.apply.taps.length} port(s)) in ${(r.apply.ms.compile + r.apply.ms.load).toFixed(0)} ms\n`);
  if (r.handback?.restored.size) io.out(`handed back to libvirt: ${[...r.handback.restored.keys()].join(', ')}\n`);
  if (r.takeover?.taken.length) io.out(`took over from libvirt: ${r.takeover.taken.join(', ')}\n`);
  if (r.seeded?.length) io.out(`seeded: ${r.seeded.join('; ')}\n`);
  if (r.metadata?.written.length) io.out(`learned addresses written to the live metadata of: ${r.metadata.written.join(', ')}\n`);
  for (const e of [...(r.metadata?.retry ?? []), ...(r.metadata?.errors ?? [])]) io.err(`warning: learned addresses: ${e}\n`);
}

async function runReconcile(p: ParsedArgs, io: CliIo): Promise<number> {
  const host = liveHostFrom(p);
  const uri = one(p, 'connect') ?? host.config.libvirtUri;
  const virsh = virshClient(uri);
  const periodRaw = one(p, 'period');
  const period = periodRaw === undefined ? 10 : Number(periodRaw);
  if (!Number.isFinite(period) || period < 1 || period > 3600) throw new NwfError(CODES.USAGE, `invalid --period ${periodRaw}`, { expected: 'seconds from 1 to 3600' });
  const only = many(p, 'once');
  if (only.length && p.flags.has('follow')) throw new NwfError(CODES.USAGE, '--once and --follow exclude each other', { expected: 'one of them' });
  if (!p.flags.has('follow')) {
    const r = await reconcileOnce(host, virsh, only.length ? new Set(only) : 'all');
    report(r, io);
    // --once DOMAIN is run before a migration: its metadata not written is a failure the operator must see
    return only.length && r.metadata && (r.metadata.retry.length || r.metadata.errors.length) ? 1 : 0;
  }
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  io.err(`nwf-fast reconcile: following ${uri} (mode ${host.config.mode}, state ${host.config.stateDir})\n`);
  try {
    await follow(host, virsh, { events: virshEvents(uri), periodMs: period * 1000, signal: ac.signal, log: (l) => io.err(`nwf-fast reconcile: ${l}\n`) });
  } finally {
    process.removeListener('SIGTERM', stop);
    process.removeListener('SIGINT', stop);
  }
  return 0;
}
