// nwf-fast explain: the reference evaluator's verdict for one frame.
import { isIPv4 } from 'node:net';
import { evaluate, type EvalOptions, type EvalResult } from '../ir/eval.js';
import { evaluateLearning } from '../ir/eval/learning.js';
import { learnKey } from '../ir/learning.js';
import type { InterfacePolicy } from '../ir/types.js';
import type { InterfaceBinding } from '../xml/ast.js';
import { byKey, isLive, readLearned } from '../host/learn/store.js';
import { resolvePolicy } from '../resolve/resolve.js';
import { fromHex } from '../frames/bytes.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, many, one, type ParsedArgs } from './args.js';
import { configFrom } from './host-options.js';
import { SOURCE_OPTIONS, sourcesFrom } from './sources-options.js';
import type { CliIo } from './io.js';
import { explainJson, parseDirection, printJson } from './json.js';

export const explainCommand: Command = {
  name: 'explain',
  summary: "show the verdict libvirt's rules give one frame, and why",
  description: "Says what libvirt's rules would do with one frame on one interface, and which\nrules decided it. For a port that learns its IP address ($IP not given): with\nits learned address (--learned-ip, or learned.json) the policy as if $IP had\nbeen given, as the backends enforce it once the port is locked; without one,\nlibvirt's learning table.",
  options: {
    ...SOURCE_OPTIONS,
    iface: { value: true, arg: 'IF', help: 'the interface (tap) whose policy applies' },
    direction: { value: true, arg: 'out|in', help: 'out (or fromVm) = traffic from the VM, in (or toVm) = traffic to the VM' },
    frame: { value: true, arg: 'HEX', help: 'the whole Ethernet frame in hex (spaces and colons allowed)' },
    state: { value: true, arg: 'STATE', help: 'connection state for L3 rules: new (default), established, related, invalid' },
    'ct-direction': { value: true, arg: 'original|reply', help: 'conntrack direction of the packet (default original)' },
    'to-host': { value: false, help: 'the frame is addressed to the host itself (libvirt HI- chain), not forwarded' },
    'learned-ip': {
      value: true,
      repeatable: true,
      arg: 'ADDR',
      help: "for a port that learns its IP address: the address it learned (dhcp: up to 4), so the policy applies with $IP = ADDR. Default: the port's entry in learned.json of the state directory; without one the port is still learning and libvirt's learning table decides",
    },
    'state-dir': { value: true, arg: 'DIR', help: "where learned.json is read for a learning port's address (default: state_dir of the configuration, /var/lib/nwf-fast)" },
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
  const first = ir.interfaces[0];
  if (!first) return 1;
  const { policy, learning } = learnedPolicy(p, src.filters, binding, first);
  const res: EvalResult = learning?.state === 'learning' ? evaluateLearning(policy, direction, frame) : evaluate(policy, direction, frame, opts);
  if (p.flags.has('json')) {
    printJson(io, 'explain', { ...explainJson(iface, direction, res), ...(learning ? { learning } : {}) });
    return 0;
  }
  io.out(`${res.verdict.toUpperCase()}${res.reason ? ` (${res.reason})` : ''}  ${iface} ${direction === 'out' ? 'from the VM' : 'to the VM'}\n`);
  if (learning) {
    io.out(
      learning.state === 'locked'
        ? `  learning port (${learning.mode}), locked: $IP = ${learning.ips.join(', ')} (${learning.source === 'option' ? '--learned-ip' : 'learned.json'})\n`
        : `  learning port (${learning.mode}), not locked yet (no --learned-ip, nothing in learned.json): libvirt's learning table decides; the policy applies once the port has learned\n`,
    );
  }
  for (const t of res.trace) {
    const what = t.ruleId ? `${t.ruleId}${t.verdict ? ` -> ${t.verdict}` : ''}` : (t.verdict ?? '');
    io.out(`  [${t.stage}] ${t.chain.padEnd(22)} ${t.event.padEnd(10)} ${what}${t.note ? `  (${t.note})` : ''}\n`);
  }
  return 0;
}

/** What explain says about a port that learns its address. */
interface LearningView {
  mode: 'any' | 'dhcp';
  state: 'locked' | 'learning';
  ips: string[];
  source?: 'option' | 'learned.json';
}

/**
 * The policy a learning port has now: with `$IP` = its learned addresses
 * (--learned-ip, else its live entry in learned.json) as if they had been
 * given, exactly what the backends enforce once the port is locked; or, with
 * none, the port is still learning (the learning table decides).
 */
function learnedPolicy(p: ParsedArgs, filters: Parameters<typeof resolvePolicy>[0], binding: InterfaceBinding, policy: InterfacePolicy): { policy: InterfacePolicy; learning?: LearningView } {
  const given = many(p, 'learned-ip');
  const mode = policy.learning?.mode;
  if (!mode) {
    if (given.length) throw new NwfError(CODES.USAGE, `--learned-ip: interface ${policy.iface} does not learn its IP address ($IP is given, or not used)`, { hint: 'leave --learned-ip out' });
    return { policy };
  }
  let ips = given;
  let source: LearningView['source'] = 'option';
  if (!ips.length) {
    source = 'learned.json';
    const e = policy.ownerUuid ? byKey(readLearned(configFrom(p).stateDir)).get(learnKey(policy.ownerUuid, policy.mac)) : undefined;
    const now = Date.now();
    ips = e && e.mode === mode ? e.addresses.filter((a) => isLive(a, now)).map((a) => a.ip) : [];
  }
  if (!ips.length) return { policy, learning: { mode, state: 'learning', ips: [] } };
  const max = mode === 'any' ? 1 : 4;
  const bad = ips.find((ip) => !isIPv4(ip));
  if (bad !== undefined || ips.length > max) {
    throw new NwfError(CODES.USAGE, bad !== undefined ? `--learned-ip '${bad}' is not an IPv4 address` : `--learned-ip given ${ips.length} times: a ${mode} port learns at most ${max}`, { expected: `at most ${max} IPv4 address${max > 1 ? 'es' : ''}` });
  }
  const withIp: InterfaceBinding = { ...binding, filterref: { ...binding.filterref, params: new Map([...binding.filterref.params, ['IP', ips]]) } };
  const locked = resolvePolicy(filters, [withIp]).interfaces[0];
  if (!locked) throw new NwfError(CODES.USAGE, `interface ${policy.iface} does not resolve with $IP = ${ips.join(', ')}`);
  return { policy: locked, learning: { mode, state: 'locked', ips, source } };
}
