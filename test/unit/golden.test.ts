// Golden folders (test/fixtures/golden/<case>/): a case's input XML and
// what nwf-fast makes of it, so that a change to the resolver or a backend
// shows up as a readable diff:
//   expected.policy  the resolved policy in libvirt's chain terms (`compile --policy`)
//   expected.nft     the nftables ruleset (`compile`)
//   expected.h       the generated eBPF policy header of each shape
//   expected.opt     what the nft optimizer's passes did (`compile --explain-opt`)
// UPDATE_GOLDEN=1 npx vitest run --project unit test/unit/golden.test.ts
// rewrites the expected files; review the diff and commit it.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { emitPolicyHeader } from '../../src/backends/bpf/emit.js';
import { planInterface } from '../../src/backends/bpf/plan.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { caseDirs, expectFile, runCli, sourceArgs } from '../support/fixture-cases.js';

const ROOT = join(import.meta.dirname, '..', 'fixtures', 'golden');
const CASES = caseDirs(ROOT);

/** The header of every distinct shape, in the order of the first interface using it. */
function bpfHeaders(ir: PolicyIR): string {
  const shapes = new Map<string, { header: string; ifaces: string[] }>();
  for (const p of ir.interfaces) {
    const plan = planInterface(p);
    let s = shapes.get(plan.shapeId);
    if (!s) shapes.set(plan.shapeId, (s = { header: emitPolicyHeader(plan.shape, plan.shapeId), ifaces: [] }));
    s.ifaces.push(p.iface);
  }
  return [...shapes].map(([id, s]) => `/* ==== shape ${id}: ${s.ifaces.join(', ')} ==== */\n${s.header}`).join('\n');
}

describe('golden folders', () => {
  it('has cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(7);
  });

  describe.each(CASES)('$name', ({ dir }) => {
    const args = sourceArgs(dir);

    it('policy', async () => {
      const r = await runCli(['compile', ...args, '--policy'], dir);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expectFile(join(dir, 'expected.policy'), r.out);
    });

    it('nft ruleset', async () => {
      const r = await runCli(['compile', ...args], dir);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expectFile(join(dir, 'expected.nft'), r.out);
    });

    it('nft optimizer report', async () => {
      const r = await runCli(['compile', ...args, '--explain-opt'], dir);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expectFile(join(dir, 'expected.opt'), r.out);
    });

    it('eBPF policy header', async () => {
      const r = await runCli(['compile', ...args, '--policy', '--json'], dir);
      expect(r.code).toBe(0);
      // the JSON output names directions fromVm / toVm; the IR's are out / in
      const doc = JSON.parse(r.out) as { version: number; interfaces: (Omit<PolicyIR['interfaces'][number], 'l2'> & { l2: { fromVm: unknown; toVm: unknown } })[] };
      expect(doc.version).toBe(1);
      const ir = { interfaces: doc.interfaces.map((i) => ({ ...i, l2: { out: i.l2.fromVm, in: i.l2.toVm } })) } as PolicyIR;
      expect(ir.interfaces.length).toBeGreaterThan(0);
      expectFile(join(dir, 'expected.h'), bpfHeaders(ir));
    });
  });
});
