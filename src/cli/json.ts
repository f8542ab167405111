// The JSON the CLI prints for operators and their tools (`--json`): every
// document has `version` (the schema version of these outputs, bumped when
// a field changes meaning or goes away) and `kind`, and directions are
// named one way everywhere: `fromVm` (traffic from the VM: libvirt's
// libvirt-I-TAP chain and FI-TAP; the IR's 'out') and `toVm` (traffic to
// the VM: libvirt-O-TAP and FO-TAP; the IR's 'in'), plus `toHost` for L3
// traffic to the host itself. Internal types keep their names; this module
// renames at the edge.
import type { EvalResult } from '../ir/eval.js';
import type { Direction, InterfacePolicy, L2Policy, PolicyIR } from '../ir/types.js';
import { jsonChunks } from '../util/json-chunks.js';
import { POLICY_DEPTH } from '../ir/print.js';
import { categoryOf, exitCodeFor, NwfError } from '../util/errors.js';
import type { Status } from '../host/status.js';
import type { OneLayerGroup } from '../backends/layers.js';
import type { CliIo } from './io.js';

/** The schema version of every JSON output of the CLI. */
export const JSON_VERSION = 1;

export type JsonKind = 'policy' | 'explain' | 'status' | 'load' | 'rollback' | 'unload' | 'error';

export type DirectionName = 'fromVm' | 'toVm';

/** The output name of an IR direction. */
export function directionName(d: Direction): DirectionName {
  return d === 'out' ? 'fromVm' : 'toVm';
}

/** An IR direction from its output name or the CLI's `out`/`in`. */
export function parseDirection(s: string | undefined): Direction | undefined {
  switch (s) {
    case 'out':
    case 'fromVm':
      return 'out';
    case 'in':
    case 'toVm':
      return 'in';
    default:
      return undefined;
  }
}

export function printJson(io: CliIo, kind: JsonKind, body: Record<string, unknown>): void {
  io.out(JSON.stringify({ version: JSON_VERSION, kind, ...body }, null, 2) + '\n');
}

/** One interface's policy with its L2 directions named fromVm / toVm (the L3 paths already are). */
function presentInterface(i: InterfacePolicy): Omit<InterfacePolicy, 'l2'> & { l2: Record<DirectionName, L2Policy> } {
  return { ...i, l2: { fromVm: i.l2.out, toVm: i.l2.in } };
}

/**
 * `compile --policy --json`, in pieces (a policy can be large); `oneLayer`:
 * under --backend both, the rules only one layer enforces (backends/layers.ts).
 */
export function* policyJson(ir: PolicyIR, oneLayer?: readonly OneLayerGroup[]): Generator<string> {
  const doc = { version: JSON_VERSION, kind: 'policy', irVersion: ir.version, interfaces: ir.interfaces.map(presentInterface), notes: ir.notes, ...(oneLayer ? { oneLayer } : {}) };
  yield* jsonChunks(doc, 2, { depth: POLICY_DEPTH });
  yield '\n';
}

export function explainJson(iface: string, direction: Direction, res: EvalResult): Record<string, unknown> {
  return { iface, direction: directionName(direction), ...res };
}

export function statusJson(s: Status, exitCode: number): Record<string, unknown> {
  return {
    ...s,
    exitCode,
    interfaces: s.interfaces.map(({ bpfDropsByDirection, bpfHooks, ...i }) => ({
      ...i,
      ...(bpfDropsByDirection ? { bpfDropsByDirection: { fromVm: bpfDropsByDirection.out, toVm: bpfDropsByDirection.in } } : {}),
      ...(bpfHooks ? { bpfHooks: bpfHooks === 'no-tap' ? bpfHooks : { fromVm: bpfHooks.out, toVm: bpfHooks.in } } : {}),
    })),
  };
}

/** An error as JSON (`--json`): code, category, the exit code, and where. */
export function errorJson(e: unknown): Record<string, unknown> {
  if (e instanceof NwfError) {
    return { error: { ...e.toJSON(), category: categoryOf(e.code), exitCode: exitCodeFor(e) } };
  }
  return { error: { code: 'internal', category: 'internal', exitCode: exitCodeFor(e), message: (e as Error)?.message ?? String(e) } };
}
