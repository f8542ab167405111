// The eBPF part of a generation: one object per policy shape and the map
// contents of every interface, stored next to the nft files.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Direction, PolicyIR } from '../../ir/types.js';
import { writeAtomic } from '../../host/generation.js';
import { CODES, NwfError } from '../../util/errors.js';
import { compileBpf, defaultCacheDir, type BpfInterfaceBuild } from '../../host/bpf-build.js';

export const BPF_DIR = 'bpf';
export const BPF_INDEX = 'bpf.json';

export interface StoredBpfInterface {
  iface: string;
  shapeId: string;
  /** Object file, relative to the generation directory. */
  object: string;
  programs: Record<Direction, string>;
  hooks: Record<Direction, 'ingress' | 'egress'>;
  maps: { map: string; key: string; value: string }[];
}

export interface StoredBpf {
  format: 'nwf-fast-bpf/1';
  interfaces: StoredBpfInterface[];
  shapes: { shapeId: string; object: string; interfaces: string[] }[];
}

/** Compiles the eBPF programs of `ir` into `genDir/bpf/` and returns the index to store. */
export async function writeBpfGeneration(genDir: string, ir: PolicyIR, backend: 'bpf' | 'both', cacheDir = defaultCacheDir()): Promise<StoredBpf> {
  const build = join(genDir, '.bpf-build');
  const dir = join(genDir, BPF_DIR);
  try {
    const r = await compileBpf(ir, { outDir: build, cacheDir: join(cacheDir, 'bpf'), backend });
    mkdirSync(dir, { recursive: true });
    const objectOf = new Map<string, string>();
    for (const s of r.shapes) {
      const rel = join(BPF_DIR, `${s.shapeId}.bpf.o`);
      copyFileSync(s.objectPath, join(genDir, rel));
      objectOf.set(s.shapeId, rel);
    }
    const stored: StoredBpf = {
      format: 'nwf-fast-bpf/1',
      interfaces: r.interfaces.map((i: BpfInterfaceBuild) => ({
        iface: i.iface,
        shapeId: i.shapeId,
        object: objectOf.get(i.shapeId) as string,
        programs: { ...i.programs },
        hooks: { ...i.hooks },
        maps: i.maps.map((m) => ({ map: m.map, key: Buffer.from(m.key).toString('hex'), value: Buffer.from(m.value).toString('hex') })),
      })),
      shapes: r.shapes.map((s) => ({ shapeId: s.shapeId, object: objectOf.get(s.shapeId) as string, interfaces: s.interfaces })),
    };
    writeAtomic(join(genDir, BPF_INDEX), JSON.stringify(stored, null, 1) + '\n');
    return stored;
  } finally {
    rmSync(build, { recursive: true, force: true });
  }
}

export function readBpfGeneration(genDir: string): StoredBpf {
  try {
    const s = JSON.parse(readFileSync(join(genDir, BPF_INDEX), 'utf8')) as StoredBpf;
    if (s.format !== 'nwf-fast-bpf/1') throw new Error(`unknown format ${String(s.format)}`);
    return s;
  } catch (e) {
    throw new NwfError(CODES.STATE_INVALID, `the eBPF part of generation ${genDir} is unreadable: ${(e as Error).message}`, { location: { file: join(genDir, BPF_INDEX) }, cause: e });
  }
}
