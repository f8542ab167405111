// nwf-fast command-line entry point: dispatch to one file per subcommand.
// `--help`/`-h` and `--version` work on every command and are handled here;
// each command's help is generated from its declared options.
import { CODES, EXIT, exitCodeFor, InternalError, NwfError } from '../util/errors.js';
import { type Command, formatHelp, parseArgs } from './args.js';
import { adoptCommand } from './adopt.js';
import { compileCommand } from './compile.js';
import { demoCommand } from './demo.js';
import { explainCommand } from './explain.js';
import { forgetCommand } from './forget.js';
import { installCommand } from './install.js';
import { libvirtHookCommand } from './libvirt-hook.js';
import { type CliIo, processIo } from './io.js';
import { errorJson, printJson } from './json.js';
import { loadCommand } from './load.js';
import { metricsCommand } from './metrics.js';
import { reconcileCommand } from './reconcile.js';
import { restoreCommand } from './restore.js';
import { rollbackCommand } from './rollback.js';
import { statusCommand } from './status.js';
import { handbackCommand, takeoverCommand } from './takeover.js';
import { unloadCommand } from './unload.js';
import { packageVersion } from './version.js';

const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [
    compileCommand,
    explainCommand,
    loadCommand,
    rollbackCommand,
    statusCommand,
    unloadCommand,
    metricsCommand,
    libvirtHookCommand,
    reconcileCommand,
    takeoverCommand,
    handbackCommand,
    restoreCommand,
    installCommand,
    adoptCommand,
    forgetCommand,
    demoCommand,
  ].map((c) => [c.name, c]),
);

/** The options of `nwf-fast` itself, before a command. */
const TOP_LEVEL: Command = {
  name: '',
  summary: '',
  description: '',
  options: {},
  run: () => Promise.resolve(0),
};

export function usage(): string {
  const w = Math.max(...[...COMMANDS.keys(), 'help'].map((k) => k.length)) + 2;
  return [
    'usage: nwf-fast COMMAND [options]',
    '       nwf-fast help [COMMAND]',
    '       nwf-fast -h|--help | --version',
    '',
    'Compiles libvirt nwfilter policies for KVM hosts to an nftables bridge ruleset',
    'and tc/eBPF programs, and loads them atomically.',
    '',
    'commands:',
    ...[...COMMANDS.values()].map((c) => `  ${c.name.padEnd(w)}${c.summary}`),
    `  ${'help'.padEnd(w)}show the help of a command (same as nwf-fast COMMAND --help)`,
    '',
    'Every command takes -h|--help and --version. Exit codes: 0 success, 1 an',
    'operation failed on this host, 2 bad input or usage, 3 drift or not verified',
    '(status), 4 nothing loaded (status), 70 a bug in nwf-fast.',
    '',
  ].join('\n');
}

/** Help for `nwf-fast help COMMAND`. */
export function commandHelp(name: string): string {
  const c = COMMANDS.get(name);
  if (!c) throw unknownCommand(name);
  return formatHelp(c);
}

function unknownCommand(name: string): NwfError {
  return new NwfError(CODES.USAGE, `unknown command '${name}'`, { expected: `one of ${[...COMMANDS.keys(), 'help'].join(', ')}`, hint: 'nwf-fast --help' });
}

/** Runs `nwf-fast` without a command: help, version, or a usage error. */
function runTopLevel(argv: readonly string[], io: CliIo): number {
  const [first, ...rest] = argv;
  if (first === 'help') {
    if (rest.length > 1) throw new NwfError(CODES.USAGE, `unexpected argument '${rest[1]}' (nwf-fast help takes one COMMAND)`, { hint: 'nwf-fast --help' });
    io.out(rest[0] === undefined ? usage() : commandHelp(rest[0]));
    return 0;
  }
  const p = parseArgs(argv, TOP_LEVEL);
  if (p.flags.has('version')) io.out(`nwf-fast ${packageVersion()}\n`);
  else io.out(usage());
  return 0;
}

/**
 * Runs the CLI. Exit codes: 0 success, 1 an operation failed at run time
 * (kernel, commands), 2 bad input, usage or a policy the backend refuses,
 * 3 drift or not verified (status), 4 nothing loaded (status), 70 an
 * internal error (a bug): util/errors.ts exitCodeFor, host/status.ts.
 */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    io.err(usage());
    return 2;
  }
  const c = COMMANDS.get(cmd);
  // `--json` asks for the error as JSON on stdout too (also when the command line itself is wrong)
  const json = c !== undefined && Object.hasOwn(c.options, 'json') && rest.includes('--json');
  try {
    if (!c) {
      if (cmd === 'help' || cmd.startsWith('-')) return runTopLevel(argv, io);
      throw unknownCommand(cmd);
    }
    const p = parseArgs(rest, c);
    if (p.flags.has('help')) {
      io.out(formatHelp(c));
      return 0;
    }
    if (p.flags.has('version')) {
      io.out(`nwf-fast ${packageVersion()}\n`);
      return 0;
    }
    return await c.run(p, io);
  } catch (e) {
    if (json) printJson(io, 'error', errorJson(e));
    if (e instanceof NwfError) {
      io.err(`nwf-fast${c ? ` ${cmd}` : ''}: ${e.format()}\n`);
      return exitCodeFor(e);
    }
    const err = e instanceof Error ? e : new InternalError(String(e));
    io.err(`nwf-fast ${cmd}: internal error (this is a bug in nwf-fast, please report it):\n${err.stack ?? err.message}\n`);
    return EXIT.internal;
  }
}
