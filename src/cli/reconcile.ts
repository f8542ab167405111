// nwf-fast reconcile: bring nwf-fast to what libvirt runs, once or --follow.
import { reconcileOnce, follow, virshEvents } from '../host/live/reconcile.js';
import { virshClient } from '../host/live/observe.js';
import type { ChangeResult } from '../host/live/host.js';
import { CODES, NwfError } from '../util/errors.js';
import { one, type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const reconcileCommand: Command = {
  name: 'reconcile',
  summary: 'protect what libvirt runs, take over its dispatch (--follow)',
  description:
    "Lists libvirt's running domains (live XML) and nwfilter bindings, adds and\nremoves ports of the desired state accordingly (a port whose policy does not\ncompile is skipped with a warning), loads the result, and in takeover mode\nremoves libvirt's dispatch for the ports nwf-fast's rules protect. With\n--follow (for systemd): follows libvirt's domain events (a hot-plugged NIC is\nprotected within a second), reconnects when libvirtd restarts, and resyncs\nevery --period seconds as a backstop. Holds the state lock only while it\nchanges state, never while it asks libvirt.",
  options: {
    ...HOST_OPTIONS,
    follow: { value: false, help: "keep following libvirt's events until SIGTERM/SIGINT" },
    period: { value: true, arg: 'SECONDS', help: 'with --follow: full resync period (default 10)' },
    connect: { value: true, arg: 'URI', help: 'libvirt URI (default: libvirt_uri of the configuration, qemu:///system)' },
  },
  run: runReconcile,
};

function report(r: ChangeResult, io: CliIo): void {
  for (const w of r.warnings) io.err(`warning: ${w}\n`);
  if (r.added.length) io.out(`protected: ${r.added.join(', ')}\n`);
  if (r.removed.length) io.out(`released: ${r.removed.join(', ')}\n`);
  if (r.apply) io.out(`loaded ${r.apply.load ? 'generation ' : ''}${r.apply.id} (${r.apply.taps.length} port(s)) in ${(r.apply.ms.compile + r.apply.ms.load).toFixed(0)} ms\n`);
  if (r.handback?.restored.size) io.out(`handed back to libvirt: ${[...r.handback.restored.keys()].join(', ')}\n`);
  if (r.takeover?.taken.length) io.out(`took over from libvirt: ${r.takeover.taken.join(', ')}\n`);
}

async function runReconcile(p: ParsedArgs, io: CliIo): Promise<number> {
  const host = liveHostFrom(p);
  const uri = one(p, 'connect') ?? host.config.libvirtUri;
  const virsh = virshClient(uri);
  const periodRaw = one(p, 'period');
  const period = periodRaw === undefined ? 10 : Number(periodRaw);
  if (!Number.isFinite(period) || period < 1 || period > 3600) throw new NwfError(CODES.USAGE, `invalid --period ${periodRaw}`, { expected: 'seconds from 1 to 3600' });
  if (!p.flags.has('follow')) {
    report(await reconcileOnce(host, virsh), io);
    return 0;
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
