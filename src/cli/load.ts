// nwf-fast load: check and apply a generation in one transaction.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadGeneration } from '../host/apply.js';
import { compileGeneration } from '../compile.js';
import { writeGeneration } from '../host/generation.js';
import { loadSources } from '../resolve/sources.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions } from './host-options.js';
import type { CliIo } from './io.js';

export const loadCommand: Command = {
  name: 'load',
  summary: 'check and apply a generation in one transaction',
  description:
    'Checks the generation in DIR (written by `nwf-fast compile --out DIR`) with\nnft -c, loads and verifies its eBPF programs, applies it in one transaction\nand records it as the current generation. Without DIR, compiles the live\nlibvirt host (--libvirt, nft backend) first. A failed load leaves the previous\ngeneration in force. Needs root; acts on the network namespace it runs in.',
  options: {
    ...HOST_OPTIONS,
    full: { value: false, help: 'replace the whole generation even when only set elements or eBPF values changed' },
  },
  positionals: { usage: '[DIR]', max: 1 },
  run: runLoad,
};

async function runLoad(p: ParsedArgs, io: CliIo): Promise<number> {
  const opts = { ...hostOptions(p), full: p.flags.has('full') };
  let dir = p.positionals[0];
  let tmp: string | undefined;
  if (!dir) {
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [], domainPaths: [], libvirt: true });
    tmp = mkdtempSync(join(tmpdir(), 'nwf-fast-gen-'));
    dir = tmp;
    await writeGeneration(dir, compileGeneration(src, 'nft'));
  }
  try {
    const r = await loadGeneration(dir, opts);
    io.out(
      `loaded generation ${r.generation.manifest.id} (${r.generation.manifest.interfaces.length} interface(s)) in ${r.ms.apply.toFixed(1)} ms${r.incremental ? ' (incremental: element changes only)' : ''}` +
        `${r.previous ? `; previous ${r.previous}` : ''}\n`,
    );
    if (r.missingTaps.length) io.err(`note: no such tap yet, eBPF programs not attached: ${r.missingTaps.join(', ')} (a later load attaches them)\n`);
    return 0;
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}
