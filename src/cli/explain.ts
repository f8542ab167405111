// nwf-fast explain: the reference evaluator's verdict for one frame.
import { evaluate, type EvalOptions } from '../ir/eval.js';
import { resolvePolicy } from '../resolve/resolve.js';
import { fromHex } from '../frames/bytes.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, one, type ParsedArgs } from './args.js';
import { SOURCE_OPTIONS, sourcesFrom } from './sources-options.js';
import type { CliIo } from './io.js';
import { explainJson, parseDirection, printJson } from './json.js';

export const explainCommand: Command = {
  name: 'explain',
  summary: "show the verdict libvirt's rules give one frame, and why",
  description: "Says what libvirt's rules would do with one frame on one interface, and which\nrules decided it.",
  options: {
    ...SOURCE_OPTIONS,
    iface: { value: true, arg: 'IF', help: 'the interface (tap) whose policy applies' },
    direction: { value: true, arg: 'out|in', help: 'out (or fromVm) = traffic from the VM, in (or toVm) = traffic to the VM' },
    frame: { value: true, arg: 'HEX', help: 'the whole Ethernet frame in hex (spaces and colons allowed)' },
    state: { value: true, arg: 'STATE', help: 'connection state for L3 rules: new (default), established, related, invalid' },
    'ct-direction': { value: true, arg: 'original|reply', help: 'conntrack direction of the packet (default original)' },
    'to-host': { value: false, help: 'the frame is addressed to the host itself (libvirt HI- chain), not forwarded' },
    json: { value: false, help: 'print {"version", "direction" (fromVm|toVm), "verdict", "reason", "decidedBy", "trace"} as JSON' },
  },
  required: ['iface', 'direction', 'frame'],
  run: runExplain,
};

async function runExplain(p: ParsedArgs, io: CliIo): Promise<number> {
  const iface = one(p, 'iface');
  const direction = parseDirection(one(p, 'direction'));
  const hex = one(p, 'frame');
  if (!iface) throw new NwfError(CODES.USAGE, 'missing --iface', { hint: 'nwf-fast explain --help' });
  if (!direction) throw new NwfError(CODES.USAGE, `--direction must be 'out' or 'in'`, { expected: 'out or fromVm (from the VM), in or toVm (to the VM)' });
  if (!hex) throw new NwfError(CODES.USAGE, 'missing --frame', { hint: 'nwf-fast explain --help' });
  let frame: Uint8Array;
  try {
    frame = fromHex(hex);
  } catch (e) {
    throw new NwfError(CODES.FRAME_INVALID, `--frame is not valid hex: ${(e as Error).message}`, { expected: 'hex digits, e.g. ffffffffffff5254000000010806...' });
  }
  const opts: EvalOptions = {};
  const state = one(p, 'state');
  const ctdir = one(p, 'ct-direction');
  if (state !== undefined || ctdir !== undefined) {
    if (state !== undefined && !['new', 'established', 'related', 'invalid'].includes(state)) throw new NwfError(CODES.USAGE, `invalid --state '${state}'`, { expected: 'new, established, related or invalid' });
    if (ctdir !== undefined && ctdir !== 'original' && ctdir !== 'reply') throw new NwfError(CODES.USAGE, `invalid --ct-direction '${ctdir}'`, { expected: 'original or reply' });
    opts.conn = { state: (state ?? 'new') as 'new', direction: (ctdir ?? 'original') as 'original' };
  }
  if (p.flags.has('to-host')) opts.path = 'host';

  const src = sourcesFrom(p);
  const binding = src.bindings.find((b) => b.iface === iface);
  if (!binding) {
    throw new NwfError(CODES.INTERFACE_UNKNOWN, `no binding for interface '${iface}'`, {
      expected: `one of: ${src.bindings.map((b) => b.iface).join(', ') || '(none: give --binding, --domain or --libvirt)'}`,
    });
  }
  const ir = resolvePolicy(src.filters, [binding]);
  const policy = ir.interfaces[0];
  if (!policy) return 1;
  const res = evaluate(policy, direction, frame, opts);
  if (p.flags.has('json')) {
    printJson(io, 'explain', explainJson(iface, direction, res));
    return 0;
  }
  io.out(`${res.verdict.toUpperCase()}${res.reason ? ` (${res.reason})` : ''}  ${iface} ${direction === 'out' ? 'from the VM' : 'to the VM'}\n`);
  for (const t of res.trace) {
    const what = t.ruleId ? `${t.ruleId}${t.verdict ? ` -> ${t.verdict}` : ''}` : (t.verdict ?? '');
    io.out(`  [${t.stage}] ${t.chain.padEnd(22)} ${t.event.padEnd(10)} ${what}${t.note ? `  (${t.note})` : ''}\n`);
  }
  return 0;
}
