// nwf-fast compile: resolve the policy and lower it to a backend.
import { resolvePolicy } from '../resolve/resolve.js';
import { printPolicy } from '../ir/print.js';
import { compileNft, nftText, writeNftGeneration } from '../backends/nft/generate.js';
import { CODES, NwfError } from '../util/errors.js';
import { formatHelp, one, type OptionSpec, parseArgs } from './args.js';
import { SOURCE_OPTIONS, sourcesFrom } from './sources-options.js';
import type { CliIo } from './io.js';

const SPEC: Record<string, OptionSpec> = {
  ...SOURCE_OPTIONS,
  backend: { value: true, arg: 'nft', help: 'the backend to compile for (default nft)' },
  out: { value: true, arg: 'DIR', help: 'write a generation (nft JSON, nft text, manifest, policy) to DIR' },
  policy: { value: false, help: 'print the resolved policy in libvirt chain terms instead of the ruleset' },
  json: { value: false, help: 'with --policy: print the resolved policy (PolicyIR) as JSON' },
  help: { value: false, help: 'show this help' },
};

export const COMPILE_HELP = formatHelp(
  'nwf-fast compile [sources] [--backend nft] [--out DIR] [--policy [--json]]',
  "Reads libvirt nwfilter XML and the interface bindings, resolves each interface's\npolicy with libvirt's semantics and lowers it to an nftables ruleset. With --out,\nwrites a generation for `nwf-fast load DIR`; without, prints the ruleset.",
  SPEC,
);

export async function runCompile(argv: readonly string[], io: CliIo): Promise<number> {
  const p = parseArgs(argv, SPEC);
  if (p.flags.has('help')) {
    io.out(COMPILE_HELP);
    return 0;
  }
  const backend = one(p, 'backend') ?? 'nft';
  if (backend !== 'nft') throw new NwfError(CODES.USAGE, `unknown backend '${backend}'`, { expected: 'nft' });
  const src = sourcesFrom(p);
  if (p.flags.has('policy') || p.flags.has('json')) {
    const ir = resolvePolicy(src.filters, src.bindings, src.notes);
    for (const note of ir.notes) io.err(`note: ${note}\n`);
    if (p.flags.has('json')) io.out(JSON.stringify(ir, null, 2) + '\n');
    else io.out(ir.interfaces.length ? printPolicy(ir) : '# no interfaces to protect\n');
    return 0;
  }
  const c = compileNft(src);
  for (const note of c.ir.notes) io.err(`note: ${note}\n`);
  const out = one(p, 'out');
  if (!out) {
    io.out(nftText(c));
    return 0;
  }
  const m = writeNftGeneration(out, src, c);
  io.err(`wrote generation ${m.id} to ${out}: ${m.interfaces.length} interface(s)${m.l3 ? ', with L3 rules' : ''}\n`);
  return 0;
}
