// nwf-fast rollback: re-apply the previous generation atomically.
import { rollback } from '../host/apply.js';
import { type Command, type ParsedArgs } from './args.js';
import { BPF_HOOK_OPTION, bpfHookOption, configFrom, HOST_OPTIONS, hostOptions, lockedCommand, reportFailed, SKELETON_OPTIONS } from './host-options.js';
import type { CliIo } from './io.js';
import { loadResultJson, printLoadNotes } from './load.js';
import { printJson } from './json.js';
import { EXIT } from '../util/errors.js';

export const rollbackCommand: Command = {
  name: 'rollback',
  summary: 're-apply the previous generation',
  description: 'Re-applies the generation loaded before the current one (ruleset and eBPF\nprograms), in one transaction. Holds the state lock.',
  options: {
    ...HOST_OPTIONS,
    ...BPF_HOOK_OPTION,
    ...SKELETON_OPTIONS,
    'allow-empty': { value: false, help: 'roll back even to a generation that protects no interface' },
    json: { value: false, help: 'print the result as JSON' },
  },
  run: runRollback,
};

async function runRollback(p: ParsedArgs, io: CliIo): Promise<number> {
  const hook = bpfHookOption(p);
  const opts = { ...hostOptions(p), allowEmpty: p.flags.has('allow-empty'), keepGenerations: configFrom(p).keepGenerations, ...(hook ? { bpfHook: hook } : {}) };
  const r = await lockedCommand(p, 'rollback', () => rollback(opts));
  if (p.flags.has('json')) {
    printJson(io, 'rollback', loadResultJson(r));
    return r.commit.failed.length ? EXIT.partial : 0;
  }
  io.out(`rolled back to generation ${r.generation.manifest.id} (was ${r.previous ?? 'none'})\n`);
  printLoadNotes(r, io);
  return reportFailed(r.commit.failed, io);
}
