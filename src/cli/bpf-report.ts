// What load and rollback say about the eBPF programs they attached.
import type { LoadResult } from '../host/apply.js';
import type { CliIo } from './io.js';

/** One line per distinct hook placement ("eBPF: 3 tap(s) on tcx"), then the notes and the missing taps. */
export function reportBpfAttach(r: LoadResult, io: CliIo): void {
  if (r.bpfHooks) {
    const byPlan = new Map<string, number>();
    for (const h of Object.values(r.bpfHooks)) {
      const k = h.out === h.in ? h.out : `${h.out} from the VM, ${h.in} to the VM`;
      byPlan.set(k, (byPlan.get(k) ?? 0) + 1);
    }
    for (const [k, n] of byPlan) io.out(`eBPF: ${n} tap(s) on ${k}\n`);
  }
  for (const n of r.notes) io.err(`note: ${n}\n`);
  if (r.missingTaps.length) io.err(`note: no such tap yet, eBPF programs not attached: ${r.missingTaps.join(', ')} (a later load attaches them)\n`);
}
