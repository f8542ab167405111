// Loading one interface's tc programs: open the shape's object, load it (the
// verifier runs here; a rejection throws the binding's BpfError with the
// verifier log), write the interface's values into nwf_cfg and select them,
// and hand back the two programs. Attaching them is the caller's business:
// `tcAttach(programs.out, { direction: hooks.out, ... })` for a new tap, and
// `tcReplace` (clsact) or a tcx link update to swap a newer load in place.
//
// Values can later be changed without reloading: updateConfig writes the
// inactive nwf_cfg slot, then flips nwf_sel, so a frame sees either the old
// or the new values, never a mix of both.
import { endianness } from 'node:os';
import type { Direction } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { CODES, NwfError } from '../../util/errors.js';
import { BpfObject, type BpfMap, type BpfObjectOpenOptions, type BpfProgram } from '../../host/bpf/libbpf.js';
import { MAP_NAMES, type BpfInterfaceBuild, type BpfMapWrite } from './compile.js';
import { STAT_NAMES, type StatName } from './emit.js';

export { STAT_NAMES, type StatName };

export type DirectionStats = Record<StatName, bigint>;

export interface LoadedInterface {
  iface: string;
  shapeId: string;
  object: BpfObject;
  programs: Record<Direction, BpfProgram>;
  /** Program fds (owned by `object`): what BPF_PROG_TEST_RUN and tc attach take. */
  fds: Record<Direction, number>;
  hooks: Readonly<Record<Direction, 'ingress' | 'egress'>>;
  maps: { cfg: BpfMap; sel: BpfMap; stats: BpfMap };
  /** Unload (attachments keep their own reference to the programs). */
  close(): void;
}

export type LoadableInterface = Pick<BpfInterfaceBuild, 'iface' | 'shapeId' | 'objectPath' | 'programs' | 'hooks' | 'maps'>;

export type LoadOptions = Pick<BpfObjectOpenOptions, 'kernelLogLevel' | 'pinRoot'>;

/** Open, load (verify) and configure one interface's object. */
export function loadInterface(b: LoadableInterface, opts: LoadOptions = {}): LoadedInterface {
  const object = BpfObject.open(b.objectPath, {
    objectName: `nwf_${b.shapeId.slice(0, 8)}`,
    ...(opts.kernelLogLevel !== undefined ? { kernelLogLevel: opts.kernelLogLevel } : {}),
    ...(opts.pinRoot !== undefined ? { pinRoot: opts.pinRoot } : {}),
  });
  try {
    object.load();
    const maps = { cfg: object.map(MAP_NAMES.cfg), sel: object.map(MAP_NAMES.sel), stats: object.map(MAP_NAMES.stats) };
    writeMaps(object, b.maps);
    const programs = { out: object.program(b.programs.out), in: object.program(b.programs.in) };
    return {
      iface: b.iface,
      shapeId: b.shapeId,
      object,
      programs,
      fds: { out: programs.out.fd, in: programs.in.fd },
      hooks: b.hooks,
      maps,
      close: () => object.close(),
    };
  } catch (e) {
    object.close();
    throw e;
  }
}

/** Write map contents in order (the config before the selector that makes it live). */
export function writeMaps(object: BpfObject, writes: readonly BpfMapWrite[]): void {
  for (const w of writes) object.map(w.map).update(w.key, w.value);
}

const LE = endianness() === 'LE';

/** A __u32 key or value in host byte order. */
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  if (LE) b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}

const readU32 = (b: Buffer): number => (LE ? b.readUInt32LE(0) : b.readUInt32BE(0));
const readU64 = (b: Buffer): bigint => (LE ? b.readBigUInt64LE(0) : b.readBigUInt64BE(0));

/** The active nwf_cfg slot (0 or 1). */
export function activeSlot(l: Pick<LoadedInterface, 'maps'>): number {
  const v = l.maps.sel.lookup(u32(0));
  return v ? readU32(v) & 1 : 0;
}

/**
 * Replace the interface's values in place: write the inactive slot, then
 * select it. `cfg` is the nwf_cfg value of a build of the same shape.
 */
export function updateConfig(l: Pick<LoadedInterface, 'maps' | 'shapeId'>, build: Pick<BpfInterfaceBuild, 'shapeId' | 'maps'>): void {
  if (build.shapeId !== l.shapeId) {
    throw new NwfError(CODES.STATE_INVALID, `values of shape ${build.shapeId} cannot go into an object of shape ${l.shapeId}`, {
      hint: 'load the new shape\'s object and replace the attached program instead',
    });
  }
  const cfg = build.maps.find((m) => m.map === MAP_NAMES.cfg);
  if (!cfg) throw new NwfError(CODES.STATE_INVALID, 'the build has no nwf_cfg value');
  const next = activeSlot(l) ^ 1;
  l.maps.cfg.update(u32(next), cfg.value);
  l.maps.sel.update(u32(0), u32(next));
}

/** Counters by direction and stat, summed over CPUs. */
export function readStats(l: Pick<LoadedInterface, 'maps'>): Record<Direction, DirectionStats> {
  const out = {} as Record<Direction, DirectionStats>;
  DIRECTIONS.forEach((d, di) => {
    const s = {} as DirectionStats;
    STAT_NAMES.forEach((name, si) => {
      const slots = l.maps.stats.lookupPerCpu(u32(di * STAT_NAMES.length + si)) ?? [];
      s[name] = slots.reduce((acc, b) => acc + readU64(b), 0n);
    });
    out[d] = s;
  });
  return out;
}

/** The drop reason (or 'accepted' / 'internal') whose counter differs between two readings. */
export function statDelta(before: DirectionStats, after: DirectionStats): StatName[] {
  return STAT_NAMES.filter((n) => after[n] !== before[n]);
}
