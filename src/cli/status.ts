// nwf-fast status: what is loaded, drops per interface and reason, drift.
import { status } from '../host/apply.js';
import { DROP_REASONS } from '../ir/reasons.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

export const statusCommand: Command = {
  name: 'status',
  summary: 'loaded generation, drop counters per interface and reason, drift',
  description:
    'Shows the loaded generation, the protected interfaces with their drop counters\nper reason, and whether the kernel differs from the recorded generation (drift).\nExits 3 when there is drift.',
  options: {
    ...HOST_OPTIONS,
    json: { value: false, help: 'print the status as JSON' },
  },
  run: runStatus,
};

async function runStatus(p: ParsedArgs, io: CliIo): Promise<number> {
  const s = await status(hostOptions(p));
  if (p.flags.has('json')) {
    io.out(JSON.stringify(s, null, 2) + '\n');
    return s.drift ? 3 : 0;
  }
  io.out(`generation: ${s.current ?? '(none loaded)'}${s.backend ? ` (${s.backend})` : ''}${s.loadedAt ? `  loaded ${s.loadedAt}` : ''}\n`);
  io.out(`drift: ${s.drift ? `YES: ${s.driftDetail}` : 'no'}\n`);
  if (s.interfaces.length) {
    const cols = [...DROP_REASONS];
    io.out(`\n${'interface'.padEnd(12)}${'owner'.padEnd(14)}${'filter'.padEnd(24)}${cols.map((c) => c.padStart(10)).join('')}\n`);
    for (const i of s.interfaces) {
      io.out(`${i.iface.padEnd(12)}${i.owner.slice(0, 13).padEnd(14)}${i.filter.slice(0, 23).padEnd(24)}${cols.map((c) => String(i.drops[c] ?? 0).padStart(10)).join('')}\n`);
      if (i.bpfDrops) io.out(`${''.padEnd(12)}${'  (eBPF)'.padEnd(38)}${cols.map((c) => String(i.bpfDrops?.[c] ?? 0).padStart(10)).join('')}\n`);
    }
  }
  return s.drift ? 3 : 0;
}
