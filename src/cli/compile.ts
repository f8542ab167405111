// nwf-fast compile: resolve the policy and lower it to a backend.
import { printPolicy } from '../ir/print.js';
import { policyJson } from './json.js';
import { type Backend, compileGeneration, resolveSources } from '../compile.js';
import { writeGeneration } from '../host/generation.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, one, type ParsedArgs } from './args.js';
import { SOURCE_OPTIONS, sourcesFrom } from './sources-options.js';
import { reportFailed } from './host-options.js';
import { describeLimits } from '../ir/limits.js';
import { describeOneLayer, oneLayerReport, type OneLayerGroup } from '../backends/layers.js';
import type { CliIo } from './io.js';
import { formatOptReport } from '../backends/nft/opt/passes.js';
import { nftDhcpNote } from '../backends/nft/learn.js';

export const compileCommand: Command = {
  name: 'compile',
  summary: 'resolve nwfilter XML into an nftables ruleset or eBPF programs',
  description:
    "Reads libvirt nwfilter XML and the interface bindings, resolves each\ninterface's policy with libvirt's semantics and lowers it for the backend.\nWith --out, writes a generation for `nwf-fast load DIR`; without, prints the\nnftables ruleset.\n\nLimits (a policy beyond them is refused, exit 2):\n" +
    describeLimits()
      .map((l) => `  ${l}`)
      .join('\n'),
  options: {
    ...SOURCE_OPTIONS,
    backend: { value: true, arg: 'nft|bpf|both', help: 'nft (default): the nftables ruleset; bpf: tc/eBPF programs on the taps (L2 rules only); both: programs plus the ruleset as a second line' },
    out: { value: true, arg: 'DIR', help: 'write a generation (nft JSON, nft text, manifest, policy) to DIR' },
    policy: { value: false, help: 'print the resolved policy in libvirt chain terms instead of the ruleset' },
    json: { value: false, help: 'with --policy: print the resolved policy as JSON (directions fromVm/toVm; schema version in "version")' },
    'explain-opt': { value: false, help: "print what the nft optimizer's passes did per shape and direction (and the elements they left out) instead of the ruleset" },
    'no-opt': { value: false, help: 'lower without the nft optimizer (debugging: the ruleset rule for rule as libvirt chains it)' },
    partial: { value: false, help: 'an interface whose policy fails is left unprotected (its traffic dropped) instead of failing everything; exit 5' },
  },
  run: runCompile,
};

async function runCompile(p: ParsedArgs, io: CliIo): Promise<number> {
  const backend = (one(p, 'backend') ?? 'nft') as Backend;
  if (!['nft', 'bpf', 'both'].includes(backend)) throw new NwfError(CODES.USAGE, `unknown backend '${backend}'`, { expected: 'nft, bpf or both' });
  const src = sourcesFrom(p);
  if (p.flags.has('policy') || p.flags.has('json')) {
    const ir = resolveSources(src);
    for (const note of ir.notes) io.err(`note: ${note}\n`);
    // --backend both: which rules only one layer enforces (a field of the JSON, a section of the text)
    const oneLayer = backend === 'both' ? oneLayerReport(ir) : undefined;
    if (p.flags.has('json')) {
      for (const piece of policyJson(ir, oneLayer)) io.out(piece);
    } else {
      io.out(ir.interfaces.length ? printPolicy(ir) : '# no interfaces to protect\n');
      if (oneLayer) io.out(printOneLayer(oneLayer));
    }
    return 0;
  }
  const out = one(p, 'out');
  if (!out && backend !== 'nft') throw new NwfError(CODES.USAGE, `--backend ${backend} writes objects: give --out DIR`, { hint: 'nwf-fast compile --backend bpf --out DIR' });
  const g = compileGeneration(src, backend, { partial: p.flags.has('partial'), ...(p.flags.has('no-opt') ? { optimize: false } : {}) });
  for (const note of g.ir.notes) io.err(`note: ${note}\n`);
  for (const r of g.manifest.oneLayer ?? []) io.err(`note: ${describeOneLayer(r)} (${listIfaces(r.interfaces)})\n`);
  const dhcp = backend === 'nft' ? g.ir.interfaces.filter((i) => i.learning?.mode === 'dhcp').map((i) => i.iface) : [];
  if (dhcp.length) io.err(`note: ${nftDhcpNote(dhcp)}\n`);
  if (p.flags.has('explain-opt')) io.out(formatOptReport(g.nft.opt));
  if (!out) {
    if (!p.flags.has('explain-opt')) io.out(g.files.nftText);
    return reportFailed(g.manifest.failed, io);
  }
  const m = await writeGeneration(out, g);
  io.err(`wrote generation ${m.id} (${backend}) to ${out}: ${m.interfaces.length} interface(s)${m.l3 ? ', with L3 rules' : ''}\n`);
  return reportFailed(m.failed, io);
}

/** At most 8 interface names, and how many more. */
function listIfaces(ifaces: readonly string[]): string {
  return ifaces.length <= 8 ? ifaces.join(', ') : `${ifaces.slice(0, 8).join(', ')} and ${ifaces.length - 8} more`;
}

/** The --policy section of --backend both: the rules only one layer enforces. */
function printOneLayer(groups: readonly OneLayerGroup[]): string {
  if (!groups.length) return '\n# --backend both: every rule is enforced by both layers (no L3/L4 rules, every L2 test in nft)\n';
  return `\n# --backend both: rules only one layer enforces\n${groups.map((g) => `#   ${describeOneLayer(g)} (${listIfaces(g.interfaces)})\n`).join('')}`;
}
