// nwf-fast command-line entry point: dispatch to one file per subcommand.
import { InternalError, NwfError } from '../util/errors.js';
import { COMPILE_HELP, runCompile } from './compile.js';
import { EXPLAIN_HELP, runExplain } from './explain.js';
import { type CliIo, processIo } from './io.js';
import { DEMO_HELP, runDemo } from './demo.js';
import { LOAD_HELP, runLoad } from './load.js';
import { ROLLBACK_HELP, runRollback } from './rollback.js';
import { runStatus, STATUS_HELP } from './status.js';
import { runUnload, UNLOAD_HELP } from './unload.js';

type Command = { run: (argv: readonly string[], io: CliIo) => Promise<number>; summary: string; help: string };

const COMMANDS: Record<string, Command> = {
  compile: { run: runCompile, summary: 'resolve libvirt nwfilter XML into per-interface policies', help: COMPILE_HELP },
  explain: { run: runExplain, summary: "show the verdict libvirt's rules give one frame, and why", help: EXPLAIN_HELP },
  load: { run: runLoad, summary: 'check and apply a generation in one transaction', help: LOAD_HELP },
  rollback: { run: runRollback, summary: 're-apply the previous generation', help: ROLLBACK_HELP },
  status: { run: runStatus, summary: 'loaded generation, drop counters per interface and reason, drift', help: STATUS_HELP },
  unload: { run: runUnload, summary: "remove nwf-fast's tables (nothing else)", help: UNLOAD_HELP },
  demo: { run: runDemo, summary: 'run the built-in example on a demo host made of network namespaces (root)', help: DEMO_HELP },
};

export function usage(): string {
  const w = Math.max(...Object.keys(COMMANDS).map((k) => k.length)) + 2;
  return [
    'usage: nwf-fast COMMAND [options]',
    '',
    'Compiles libvirt nwfilter policies for KVM hosts.',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(w)}${c.summary}`),
    '',
    "Run 'nwf-fast COMMAND --help' for a command's options.",
    '',
  ].join('\n');
}

/**
 * Runs the CLI. Exit codes: 0 success, 1 an operation failed at run time
 * (kernel, commands), 2 bad input or usage, 70 an internal error (a bug).
 */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    io.out(usage());
    return cmd ? 0 : 2;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    io.err(`nwf-fast: unknown command '${cmd}'\n\n${usage()}`);
    return 2;
  }
  try {
    return await c.run(rest, io);
  } catch (e) {
    if (e instanceof NwfError) {
      io.err(`nwf-fast ${cmd}: ${e.format()}\n`);
      return e.code.startsWith('NWF14') ? 1 : 2;
    }
    const err = e instanceof Error ? e : new InternalError(String(e));
    io.err(`nwf-fast ${cmd}: internal error (this is a bug in nwf-fast, please report it):\n${err.stack ?? err.message}\n`);
    return 70;
  }
}
