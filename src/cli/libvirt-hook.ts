// nwf-fast libvirt-hook: libvirt's qemu hook (installed as
// /etc/libvirt/hooks/qemu.d/nwf-fast by `nwf-fast install`).
import { NwfError } from '../util/errors.js';
import { appendHookLog, hookAction, runHook } from '../host/live/hook.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const libvirtHookCommand: Command = {
  name: 'libvirt-hook',
  summary: "libvirt's qemu hook: protect starting domains, release stopped",
  description:
    "Called by libvirt as DOMAIN OPERATION SUBOP EXTRA with the domain XML on stdin.\n`start begin` protects the domain's interfaces, learning ports seeded with\ntheir learned addresses (a non-zero exit makes libvirt refuse the start);\n`stopped end` and `release end` save the learned addresses and remove its\nports; `reconnect begin` resyncs it and never fails; `migrate begin` and\n`restore begin` note the domain as incoming (its start then seeds from the\nXML's metadata) and print nothing (the XML passes unchanged). It never\ncalls libvirt. Each call waits at most lock_timeout for the state lock and is\nlogged with its timings in <state_dir>/hook.log.",
  options: {
    ...HOST_OPTIONS,
    verbose: { value: false, help: 'print what the call did and its timings on stderr' },
  },
  positionals: { usage: 'DOMAIN OPERATION SUBOP [EXTRA]', max: 4 },
  run: runLibvirtHook,
};

/** Reads stdin to its end (bounded in size and time: libvirt writes the XML and closes it). */
export async function readStdin(maxBytes = 64 << 20, timeoutMs = 10_000): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      process.stdin.removeAllListeners('data');
      resolve();
    };
    const t = setTimeout(done, timeoutMs);
    process.stdin.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBytes) chunks.push(c);
    });
    process.stdin.once('end', done);
    process.stdin.once('error', done);
  });
  process.stdin.pause();
  return Buffer.concat(chunks).toString('utf8');
}

async function runLibvirtHook(p: ParsedArgs, io: CliIo, stdin: () => Promise<string> = readStdin): Promise<number> {
  const argv = p.positionals;
  const [domain = '', op = '', subop = ''] = argv;
  const xml = await stdin();
  const action = hookAction(op, subop);
  if (argv.length < 3) {
    io.err(`nwf-fast libvirt-hook: expected DOMAIN OPERATION SUBOP [EXTRA] (as libvirt calls it), got ${argv.length} argument(s)\n`);
    return 2;
  }
  if (action === 'none') return 0;
  let host;
  try {
    host = liveHostFrom(p);
  } catch (e) {
    // no configuration, no state: a start is refused, a reconnect still succeeds
    io.err(`nwf-fast libvirt-hook: ${domain} ${op} ${subop}: ${e instanceof NwfError ? e.format() : String(e)}\n`);
    return action === 'resync' || action === 'incoming' ? 0 : 1;
  }
  // Bounded: the lock wait plus a minute for the change. A reconnect hook still exits 0.
  const bound = setTimeout(
    () => {
      const line = `${domain} ${op} ${subop}: gave up after ${host.config.lockTimeoutS + 60} s`;
      appendHookLog(host.config.stateDir, line);
      io.err(`nwf-fast libvirt-hook: ${line}\n`);
      process.exit(action === 'resync' || action === 'incoming' ? 0 : 1);
    },
    (host.config.lockTimeoutS + 60) * 1000,
  );
  bound.unref();
  try {
    const out = await runHook(host, argv, xml);
    appendHookLog(host.config.stateDir, out.logLine);
    for (const m of out.messages) io.err(`nwf-fast libvirt-hook: ${m}\n`);
    if (p.flags.has('verbose')) io.err(`nwf-fast libvirt-hook: ${out.logLine}\n`);
    io.out(out.stdout);
    return out.exitCode;
  } finally {
    clearTimeout(bound);
  }
}

export { runLibvirtHook };
