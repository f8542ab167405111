// nwf-fast rollback: re-apply the previous generation atomically.
import { rollback } from '../host/apply.js';
import { type Command, type ParsedArgs } from './args.js';
import { BPF_HOOK_OPTION, bpfHookOption, HOST_OPTIONS, hostOptions, lockedCommand } from './host-options.js';
import { reportBpfAttach } from './bpf-report.js';
import type { CliIo } from './io.js';

export const rollbackCommand: Command = {
  name: 'rollback',
  summary: 're-apply the previous generation',
  description: 'Re-applies the generation loaded before the current one (ruleset and eBPF\nprograms), in one transaction. Holds the state lock.',
  options: { ...HOST_OPTIONS, ...BPF_HOOK_OPTION },
  run: runRollback,
};

async function runRollback(p: ParsedArgs, io: CliIo): Promise<number> {
  const hook = bpfHookOption(p);
  const r = await lockedCommand(p, 'rollback', () => rollback({ ...hostOptions(p), ...(hook ? { bpfHook: hook } : {}) }));
  io.out(`rolled back to generation ${r.generation.manifest.id} (was ${r.previous ?? 'none'})\n`);
  reportBpfAttach(r, io);
  return 0;
}
