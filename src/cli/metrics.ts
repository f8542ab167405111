// nwf-fast metrics: the status as Prometheus text, for node_exporter's
// textfile collector (--out FILE: written to a temp file in the same
// directory and renamed, so the collector never reads a partial file).
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { failedStatus } from '../host/status.js';
import { hostStatus } from './status.js';
import { metricsText } from '../host/metrics.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, one, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

export const metricsCommand: Command = {
  name: 'metrics',
  summary: 'drops, health and the loaded generation as Prometheus text',
  description:
    "Writes nwf-fast's metrics in the Prometheus text format: drops per interface,\n" +
    'domain, reason and backend (nwf_fast_drops_total), unprotected ports, drift,\n' +
    'health, the last load time and the loaded generation. With --out FILE (for\n' +
    "node_exporter's textfile collector, e.g.\n" +
    '/var/lib/prometheus/node-exporter/nwf_fast.prom) the file is replaced\n' +
    'atomically. Exits 0 when written, whatever the health (the metrics say it).',
  options: {
    ...HOST_OPTIONS,
    out: { value: true, arg: 'FILE', help: 'write to FILE (atomically) instead of stdout' },
  },
  run: runMetrics,
};

async function runMetrics(p: ParsedArgs, io: CliIo): Promise<number> {
  const opts = hostOptions(p);
  let text: string;
  try {
    text = metricsText((await hostStatus(p)).s);
  } catch (e) {
    if (!(e instanceof NwfError)) throw e;
    text = metricsText(failedStatus(opts.stateDir, e));
  }
  const out = one(p, 'out');
  if (!out) {
    io.out(text);
    return 0;
  }
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new NwfError(CODES.COMMAND_FAILED, `cannot write ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { location: { file: out } });
  }
  return 0;
}
