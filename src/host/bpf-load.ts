// Loading a policy shape's programs: open the shape's object, size its maps
// for the taps that share it, load it (the verifier runs here; a rejection
// throws the binding's BpfError with the verifier log), give each tap its
// index (ifindex -> index: nwf_ifx_dir for the usual ifindexes, nwf_ifx
// beyond), write each tap's values into nwf_cfg and select them, and hand
// back the programs: the tc programs of both directions and, when asked
// for, the XDP program of the from-VM direction. Attaching them is the
// caller's business (src/host/bpf/hook.ts: tc, tcx or XDP).
//
// Values can later be changed without reloading: updateConfig writes the
// tap's inactive nwf_cfg slot, then flips its nwf_slot entry, so a frame sees
// either the old or the new values, never a mix of both.
import { endianness } from 'node:os';
import type { Direction } from '../ir/types.js';
import { DIRECTIONS } from '../ir/types.js';
import { CODES, NwfError } from '../util/errors.js';
import { maxOf } from '../util/arrays.js';
import { STAT_NAMES, type StatName } from '../backends/bpf/emit.js';
import type { BpfInterfaceLowering } from '../backends/bpf/lower.js';
import { MAP_NAMES, objectName } from '../backends/bpf/names.js';
import { BpfObject, type BpfMap, type BpfObjectOpenOptions, type BpfProgram } from './bpf/libbpf.js';
import type { BpfInterfaceBuild } from './bpf-build.js';

export { STAT_NAMES, type StatName };

export type DirectionStats = Record<StatName, bigint>;

/** One loaded object of a policy shape, shared by every tap of that shape. */
export interface LoadedShape {
  shapeId: string;
  object: BpfObject;
  /** The tc programs (SCHED_CLS): from the VM (tc ingress) and to the VM (tc egress). */
  programs: Record<Direction, BpfProgram>;
  /** The from-VM policy as an XDP program, when loaded with `xdp`. */
  xdp?: BpfProgram;
  /** Program fds (owned by `object`): what BPF_PROG_TEST_RUN and tc attach take. */
  fds: Record<Direction, number>;
  hooks: Readonly<Record<Direction, 'ingress' | 'egress'>>;
  maps: { cfg: BpfMap; ifxDir: BpfMap; ifx: BpfMap; slot: BpfMap; stats: BpfMap };
  /** Give the tap at `index` another ifindex where its frames are seen (the array or the hash, by value). */
  addIfindex(ifindex: number, index: number): void;
  /** Unload (attachments keep their own reference to the programs). */
  close(): void;
}

/** A tap of a shape: its index in the object's maps, the ifindexes it is seen at, its values. */
export interface ShapeMember {
  index: number;
  ifindexes: readonly number[];
  /** The nwf_cfg value (undefined: no values, the programs fail closed). */
  cfg?: Uint8Array;
}

export type LoadableShape = Pick<BpfInterfaceBuild, 'shapeId' | 'objectPath' | 'programs' | 'xdpProgram' | 'hooks'>;
export type LoadOptions = Pick<BpfObjectOpenOptions, 'kernelLogLevel' | 'pinRoot'> & {
  /** Also load (verify) the XDP program of the from-VM direction (default false: it is not loaded). */
  xdp?: boolean;
};

/** Smallest and largest size of the ifindex array (nwf_ifx_dir); larger ifindexes go to the hash. */
export const IFX_DIRECT_MIN = 256;
export const IFX_DIRECT_MAX = 65536;

/** The ifindex array's size for taps at these ifindexes: room for twice the largest, within the bounds. */
export function ifxDirectSize(ifindexes: readonly number[]): number {
  const top = maxOf(ifindexes, 0) + 1;
  let n = IFX_DIRECT_MIN;
  while (n < 2 * top && n < IFX_DIRECT_MAX) n *= 2;
  return n;
}

/**
 * Open one shape's object, size its maps for `slots` taps, load it (the
 * verifier runs here; a rejection throws the binding's BpfError with the
 * verifier log) and configure the members.
 */
export function loadShape(b: LoadableShape, slots: number, members: readonly ShapeMember[], opts: LoadOptions = {}): LoadedShape {
  const object = BpfObject.open(b.objectPath, {
    objectName: objectName(b.shapeId),
    ...(opts.kernelLogLevel !== undefined ? { kernelLogLevel: opts.kernelLogLevel } : {}),
    ...(opts.pinRoot !== undefined ? { pinRoot: opts.pinRoot } : {}),
  });
  try {
    const n = Math.max(1, slots);
    const all = members.flatMap((m) => m.ifindexes);
    const direct = ifxDirectSize(all);
    object.map(MAP_NAMES.ifxDir).setMaxEntries(direct);
    // room for every slot's tap, and for stale entries of taps re-created under a new ifindex
    object.map(MAP_NAMES.ifx).setMaxEntries(Math.max(2 * n, all.length) + 64);
    object.map(MAP_NAMES.slot).setMaxEntries(n);
    object.map(MAP_NAMES.cfg).setMaxEntries(2 * n);
    object.map(MAP_NAMES.stats).setMaxEntries(2 * n * STAT_NAMES.length);
    const xdp = object.program(b.xdpProgram);
    xdp.setAutoload(opts.xdp === true);
    object.load();
    const maps = { cfg: object.map(MAP_NAMES.cfg), ifxDir: object.map(MAP_NAMES.ifxDir), ifx: object.map(MAP_NAMES.ifx), slot: object.map(MAP_NAMES.slot), stats: object.map(MAP_NAMES.stats) };
    const addIfindex = (ifindex: number, index: number): void => {
      if (ifindex < direct) maps.ifxDir.update(u32(ifindex), u32(index + 1));
      else maps.ifx.update(u32(ifindex), u32(index));
    };
    fillMembers(maps, members, direct);
    const programs = { out: object.program(b.programs.out), in: object.program(b.programs.in) };
    return {
      shapeId: b.shapeId,
      object,
      programs,
      ...(opts.xdp ? { xdp } : {}),
      fds: { out: programs.out.fd, in: programs.in.fd },
      hooks: b.hooks,
      maps,
      addIfindex,
      close: () => object.close(),
    };
  } catch (e) {
    object.close();
    throw e;
  }
}

/**
 * The members' values (nwf_cfg slot 0, selected in nwf_slot) and ifindexes
 * (the array below `direct`, the hash above) in a freshly loaded object: one
 * BPF_MAP_UPDATE_BATCH per array map instead of an update per entry.
 */
function fillMembers(maps: Pick<LoadedShape['maps'], 'cfg' | 'slot' | 'ifxDir' | 'ifx'>, members: readonly ShapeMember[], direct: number): void {
  const withCfg = members.filter((m) => m.cfg);
  if (withCfg.length) {
    const size = maps.cfg.valueSize;
    const cfgKeys = Buffer.alloc(4 * withCfg.length);
    const cfgValues = Buffer.alloc(size * withCfg.length);
    const slotKeys = Buffer.alloc(4 * withCfg.length);
    withCfg.forEach((m, i) => {
      const cfg = m.cfg as Uint8Array;
      if (cfg.byteLength !== size) throw new NwfError(CODES.STATE_INVALID, `a ${cfg.byteLength}-byte nwf_cfg value for an object whose values have ${size} bytes`);
      cfgKeys.set(u32(2 * m.index), 4 * i);
      cfgValues.set(cfg, size * i);
      slotKeys.set(u32(m.index), 4 * i);
    });
    maps.cfg.updateBatch(cfgKeys, cfgValues, withCfg.length);
    maps.slot.updateBatch(slotKeys, Buffer.alloc(4 * withCfg.length), withCfg.length);
  }
  const low = members.flatMap((m) => m.ifindexes.filter((i) => i < direct).map((i) => [i, m.index + 1] as const));
  if (low.length) {
    const keys = Buffer.alloc(4 * low.length);
    const values = Buffer.alloc(4 * low.length);
    low.forEach(([ifindex, v], i) => {
      keys.set(u32(ifindex), 4 * i);
      values.set(u32(v), 4 * i);
    });
    maps.ifxDir.updateBatch(keys, values, low.length);
  }
  for (const m of members) for (const i of m.ifindexes) if (i >= direct) maps.ifx.update(u32(i), u32(m.index));
}

/** One interface's own object (tests, tools): a shape object with the interface at index 0. */
export interface LoadedInterface extends Omit<LoadedShape, 'addIfindex'> {
  iface: string;
  /** Also enforce this interface's policy for frames passing `ifindex` (tc attaches). */
  addIfindex(ifindex: number): void;
}

export type LoadableInterface = Pick<BpfInterfaceBuild, 'iface' | 'shapeId' | 'objectPath' | 'programs' | 'xdpProgram' | 'hooks' | 'maps'>;

/**
 * Open, load (verify) and configure one interface's object. `ifindexes`
 * (default [1]: BPF_PROG_TEST_RUN runs programs on the loopback device) are
 * where its frames are seen.
 */
export function loadInterface(b: LoadableInterface, opts: LoadOptions & { ifindexes?: readonly number[] } = {}): LoadedInterface {
  const cfg = b.maps.find((m) => m.map === MAP_NAMES.cfg)?.value;
  const shape = loadShape(b, 1, [{ index: 0, ifindexes: opts.ifindexes ?? [1], ...(cfg ? { cfg } : {}) }], opts);
  return { ...shape, iface: b.iface, addIfindex: (ifindex) => shape.addIfindex(ifindex, 0) };
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

type MemberMaps = Pick<LoadedShape['maps'], 'cfg' | 'slot' | 'stats'>;

/**
 * Gives the slot `index` of a loaded shape to a new tap: its values in
 * nwf_cfg slot 0 (selected), and its counters zeroed (a slot a previous tap
 * used keeps nothing of it).
 */
export function configureMember(maps: MemberMaps, index: number, cfg: Uint8Array): void {
  maps.cfg.update(u32(2 * index), cfg);
  maps.slot.update(u32(index), u32(0));
  // every CPU's slot at once (the raw per-CPU value)
  const zero = Buffer.alloc(maps.stats.valueBufferSize);
  for (let k = 0; k < 2 * STAT_NAMES.length; k++) maps.stats.update(u32(index * 2 * STAT_NAMES.length + k), zero);
}

type IfxMaps = Pick<LoadedShape['maps'], 'ifxDir' | 'ifx'>;

/** The tap at `ifindex` is slot `index` of the shape (the programs look it up by the ifindex a frame passes: the array, else the hash). */
export function setMemberIfindex(maps: IfxMaps, ifindex: number, index: number): void {
  if (ifindex < maps.ifxDir.maxEntries) maps.ifxDir.update(u32(ifindex), u32(index + 1));
  else maps.ifx.update(u32(ifindex), u32(index));
}

/** The slot the shape gives `ifindex`, if any. */
export function memberOfIfindex(maps: IfxMaps, ifindex: number): number | undefined {
  if (ifindex < maps.ifxDir.maxEntries) {
    const v = maps.ifxDir.lookup(u32(ifindex));
    const n = v ? readU32(v) : 0;
    return n > 0 ? n - 1 : undefined;
  }
  const v = maps.ifx.lookup(u32(ifindex));
  return v ? readU32(v) : undefined;
}

/** Forgets `ifindex` (a tap that left the shape, or an old ifindex of a re-created tap). */
export function clearMemberIfindex(maps: IfxMaps, ifindex: number): void {
  if (ifindex < maps.ifxDir.maxEntries) maps.ifxDir.update(u32(ifindex), u32(0));
  else maps.ifx.delete(u32(ifindex));
}

/** The values the programs use now for slot `index` (its active nwf_cfg slot). */
export function activeConfig(maps: Pick<LoadedShape['maps'], 'cfg' | 'slot'>, index: number): Buffer | undefined {
  return maps.cfg.lookup(u32(2 * index + activeSlot({ maps }, index)));
}
const readU64 = (b: Buffer): bigint => (LE ? b.readBigUInt64LE(0) : b.readBigUInt64BE(0));

/** The active nwf_cfg slot (0 or 1) of the tap at `index`. */
export function activeSlot(l: { maps: Pick<LoadedShape['maps'], 'slot'> }, index = 0): number {
  const v = l.maps.slot.lookup(u32(index));
  return v ? readU32(v) & 1 : 0;
}

/**
 * Replace the interface's values in place: write the inactive slot, then
 * select it. `cfg` is the nwf_cfg value of a build of the same shape.
 */
export function updateConfig(l: { shapeId: string; maps: Pick<LoadedShape['maps'], 'cfg' | 'slot'> }, build: Pick<BpfInterfaceLowering, 'shapeId' | 'maps'>, index = 0): void {
  if (build.shapeId !== l.shapeId) {
    throw new NwfError(CODES.STATE_INVALID, `values of shape ${build.shapeId} cannot go into an object of shape ${l.shapeId}`, {
      hint: 'load the new shape\'s object and replace the attached program instead',
    });
  }
  const cfg = build.maps.find((m) => m.map === MAP_NAMES.cfg);
  if (!cfg) throw new NwfError(CODES.STATE_INVALID, 'the build has no nwf_cfg value');
  const next = activeSlot(l, index) ^ 1;
  l.maps.cfg.update(u32(2 * index + next), cfg.value);
  l.maps.slot.update(u32(index), u32(next));
}

/** Drop counters by direction and reason, summed over CPUs. */
export function readStats(l: { maps: Pick<LoadedShape['maps'], 'stats'> }, index = 0): Record<Direction, DirectionStats> {
  const out = {} as Record<Direction, DirectionStats>;
  DIRECTIONS.forEach((d, di) => {
    const s = {} as DirectionStats;
    STAT_NAMES.forEach((name, si) => {
      const slots = l.maps.stats.lookupPerCpu(u32((index * 2 + di) * STAT_NAMES.length + si)) ?? [];
      s[name] = slots.reduce((acc, b) => acc + readU64(b), 0n);
    });
    out[d] = s;
  });
  return out;
}

