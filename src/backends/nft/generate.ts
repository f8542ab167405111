// From sources to an nft generation (files on disk) or ruleset text.
import { readFileSync } from 'node:fs';
import { resolvePolicy } from '../../resolve/resolve.js';
import type { LoadedSources } from '../../resolve/sources.js';
import type { PolicyIR } from '../../ir/types.js';
import { ruleCounts } from '../../ir/facts.js';
import { type Manifest, sha256, writeGeneration } from '../../host/generation.js';
import { lowerToNft, type NftLowering } from './lower.js';
import type { NftBatch } from './model.js';
import { writeBpfGeneration } from '../bpf/generation.js';
import { printNftText } from './printer.js';
import { toNftJson } from './serialize.js';

export interface Compiled {
  ir: PolicyIR;
  lowering: NftLowering;
}

export function compileNft(src: LoadedSources): Compiled {
  const ir = resolvePolicy(src.filters, src.bindings, src.notes);
  return { ir, lowering: lowerToNft(ir) };
}

export type Backend = 'nft' | 'bpf' | 'both';

/** Resolves the sources and lowers them for a backend (bpf alone needs no nft lowering). */
export function compileFor(backend: Backend, src: LoadedSources): Compiled {
  if (backend !== 'bpf') return compileNft(src);
  const ir = resolvePolicy(src.filters, src.bindings, src.notes);
  return { ir, lowering: { batch: emptyNftBatch(), l3: false, interfaces: ir.interfaces.map((p) => ({ iface: p.iface, ...ruleCounts(p) })) } };
}

export function nftText(c: Compiled): string {
  return printNftText(c.lowering.batch);
}

/** The batch of a generation without nft rules (backend bpf): removes nwf-fast's tables. */
export function emptyNftBatch(): NftBatch {
  return [];
}

export async function writeGenerationFor(backend: Backend, dir: string, src: LoadedSources, c: Compiled): Promise<Manifest> {
  if (backend !== 'nft') await writeBpfGeneration(dir, c.ir, backend);
  return writeNftGeneration(dir, src, c, backend);
}

export function writeNftGeneration(dir: string, src: LoadedSources, c: Compiled, backend: 'nft' | 'bpf' | 'both' = 'nft'): Manifest {
  const inputs = [...new Set(src.files)].map((file) => ({ file, sha256: sha256(readFileSync(file)) }));
  return writeGeneration(dir, {
    nft: toNftJson(c.lowering.batch),
    text: printNftText(c.lowering.batch),
    policy: c.ir,
    manifest: {
      format: 'nwf-fast-generation/1',
      createdAt: new Date().toISOString(),
      backend,
      l3: c.lowering.l3,
      inputs,
      interfaces: c.ir.interfaces.map((p) => {
        const s = c.lowering.interfaces.find((x) => x.iface === p.iface);
        return { iface: p.iface, mac: p.mac, owner: p.owner, filter: p.filter, l2Rules: s?.l2Rules ?? 0, l3Rules: s?.l3Rules ?? 0 };
      }),
      notes: c.ir.notes,
    },
  });
}
