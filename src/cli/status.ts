// nwf-fast status: what is loaded, drops per interface and reason, drift,
// and the VM ports on the managed bridges with who protects them.
import { status } from '../host/apply.js';
import { liveStatus, type LiveStatus } from '../host/live/status.js';
import { DROP_REASONS } from '../ir/reasons.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const statusCommand: Command = {
  name: 'status',
  summary: 'loaded generation, drop counters, drift, unprotected VM ports',
  description:
    "Shows the loaded generation, the protected interfaces with their drop counters\nper reason, whether the kernel differs from the recorded generation (drift),\nand the ports on the managed bridges matching tap_patterns that nwf-fast does\nnot protect alone: still under libvirt's rules (takeover not done) or\nunprotected. Exits 3 when there is drift or an unprotected port.",
  options: {
    ...HOST_OPTIONS,
    json: { value: false, help: 'print the status as JSON' },
  },
  run: runStatus,
};

async function runStatus(p: ParsedArgs, io: CliIo): Promise<number> {
  const s = await status(hostOptions(p));
  let live: LiveStatus | undefined;
  let liveError: string | undefined;
  try {
    live = await liveStatus(liveHostFrom(p));
  } catch (e) {
    liveError = e instanceof Error ? e.message : String(e);
  }
  const bad = s.drift || (live?.counts.unprotected ?? 0) > 0;
  if (p.flags.has('json')) {
    io.out(JSON.stringify({ ...s, live: live ?? { error: liveError } }, null, 2) + '\n');
    return liveError ? 1 : bad ? 3 : 0;
  }
  io.out(`generation: ${s.current ?? '(none loaded)'}${s.backend ? ` (${s.backend})` : ''}${s.loadedAt ? `  loaded ${s.loadedAt}` : ''}\n`);
  io.out(`drift: ${s.drift ? `YES: ${s.driftDetail}` : 'no'}\n`);
  if (s.interfaces.length) {
    const cols = [...DROP_REASONS];
    io.out(`\n${'interface'.padEnd(12)}${'owner'.padEnd(14)}${'filter'.padEnd(24)}${cols.map((c) => c.padStart(10)).join('')}\n`);
    for (const i of s.interfaces) {
      io.out(`${i.iface.padEnd(12)}${i.owner.slice(0, 13).padEnd(14)}${i.filter.slice(0, 23).padEnd(24)}${cols.map((c) => String(i.drops[c] ?? 0).padStart(10)).join('')}\n`);
      if (i.bpfDrops || i.bpfHooks) {
        const h = i.bpfHooks;
        const where = h === undefined ? '' : h === 'no-tap' ? ', no tap' : h.out === h.in ? ` on ${h.out ?? 'NOTHING'}` : ` on ${h.out ?? 'NOTHING'}/${h.in ?? 'NOTHING'}`;
        io.out(`${''.padEnd(12)}${`  (eBPF${where})`.padEnd(38)}${cols.map((c) => String(i.bpfDrops?.[c] ?? 0).padStart(10)).join('')}\n`);
      }
    }
  }
  if (!live) {
    io.err(`VM ports: cannot tell (${liveError})\n`);
    return 1;
  }
  const c = live.counts;
  io.out(`\nVM ports (mode ${live.mode}): ${c['nwf-fast']} nwf-fast, ${c.both} nwf-fast and libvirt, ${c.libvirt} libvirt only, ${c.unprotected} UNPROTECTED\n`);
  for (const x of live.ports.filter((x) => x.protection !== 'nwf-fast')) {
    const what = x.protection === 'both' ? "nwf-fast, and still libvirt's rules (takeover not done)" : x.protection === 'libvirt' ? "libvirt's rules only (not protected by nwf-fast)" : 'UNPROTECTED (no rules of nwf-fast or libvirt)';
    io.out(`  ${x.port.padEnd(12)}${x.bridge.padEnd(10)}${(x.owner ?? '').padEnd(16)}${what}\n`);
  }
  return bad ? 3 : 0;
}
