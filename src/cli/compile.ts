// nwf-fast compile: resolve the policy (and, with a backend, lower it).
import { resolvePolicy } from '../resolve/resolve.js';
import { printPolicy } from '../ir/print.js';
import { formatHelp, type OptionSpec, parseArgs } from './args.js';
import { SOURCE_OPTIONS, sourcesFrom } from './sources-options.js';
import type { CliIo } from './io.js';

const SPEC: Record<string, OptionSpec> = {
  ...SOURCE_OPTIONS,
  json: { value: false, help: 'print the resolved policy (PolicyIR) as JSON' },
  help: { value: false, help: 'show this help' },
};

export const COMPILE_HELP = formatHelp(
  'nwf-fast compile [sources] [--json]',
  'Reads libvirt nwfilter XML and the interface bindings, resolves each interface\'s\npolicy with libvirt\'s semantics and prints it.',
  SPEC,
);

export async function runCompile(argv: readonly string[], io: CliIo): Promise<number> {
  const p = parseArgs(argv, SPEC);
  if (p.flags.has('help')) {
    io.out(COMPILE_HELP);
    return 0;
  }
  const src = sourcesFrom(p);
  const ir = resolvePolicy(src.filters, src.bindings, src.notes);
  for (const note of ir.notes) io.err(`note: ${note}\n`);
  if (p.flags.has('json')) io.out(JSON.stringify(ir, null, 2) + '\n');
  else io.out(ir.interfaces.length ? printPolicy(ir) : '# no interfaces to protect\n');
  return 0;
}
