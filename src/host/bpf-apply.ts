// Putting a generation's eBPF programs on the taps, and taking them off.
//
// One object is loaded per policy shape and its programs are attached to
// every tap of that shape: the programs find the tap's values by the ifindex
// the frame passes. Every object is loaded (verified) and configured before
// anything is attached, so a verifier refusal changes nothing. Attaching goes
// through src/host/bpf/hook.ts, port by port, with the mechanism the host
// asks for (tcx links where the kernel has them, else tc clsact filters; XDP
// for the frames from the VM on request): nwf-fast's programs already on a
// tap are replaced in place (link update, tc replace), so a tap is never
// unprotected between two generations. Each shape's maps are pinned under
// <pinDir>/shape-<id>/ for status and in-place updates; links under
// <pinDir>/tap-<iface>/.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MAP_NAMES, shapeOfPinDir, shapePinDir } from '../backends/bpf/names.js';
import type { StoredBpf } from '../compile.js';
import { loadShape, readStats, updateConfig, type DirectionStats, type LoadedShape, type ShapeMember } from './bpf-load.js';
import type { BpfInterfaceBuild } from './bpf-build.js';
import { DEFAULT_PIN_DIR, ensureBpffs, ifIndex, openPinnedMap, type BpfMap } from './bpf/libbpf.js';
import {
  attachPort,
  detachPort,
  hasTcx,
  linksPersist,
  pinnedTaps,
  planHooks,
  queryPort,
  tapPinDir,
  TC_HANDLE,
  TC_PRIORITY,
  type BpfHookChoice,
  type HookMechanism,
  type HookPlan,
  type PortDirection,
} from './bpf/hook.js';
import type { Direction } from '../ir/types.js';
import { InternalError } from '../util/errors.js';
import { appendAll } from '../util/arrays.js';

export { TC_HANDLE, TC_PRIORITY, type BpfHookChoice, type HookPlan };

export { DEFAULT_PIN_DIR };

export interface PreparedShape {
  shape: LoadedShape;
  /** Taps attached with this shape's programs, with their index in its maps. */
  members: { iface: string; ifindex: number; index: number }[];
}

export interface PreparedBpf {
  shapes: PreparedShape[];
  /** Taps of the generation that do not exist (yet). */
  missing: string[];
  /** The hook the programs were loaded for (xdp: the XDP programs are loaded too). */
  hook: BpfHookChoice;
  close(): void;
}

/** Each tap's index in its shape's object: its position among the shape's interfaces in bpf.json. */
export function shapeIndex(stored: StoredBpf): Map<string, { shapeId: string; index: number }> {
  const out = new Map<string, { shapeId: string; index: number }>();
  const next = new Map<string, number>();
  for (const i of stored.interfaces) {
    const k = next.get(i.shapeId) ?? 0;
    out.set(i.iface, { shapeId: i.shapeId, index: k });
    next.set(i.shapeId, k + 1);
  }
  return out;
}

function tapIndex(iface: string): number | undefined {
  try {
    return ifIndex(iface);
  } catch {
    return undefined;
  }
}

/** A tap to protect: its shape's object and programs, and its nwf_cfg value. */
export type ShapeTap = Pick<BpfInterfaceBuild, 'iface' | 'shapeId' | 'objectPath' | 'programs' | 'xdpProgram' | 'hooks'> & { cfg?: Uint8Array };

/**
 * Opens, verifies and configures one object per policy shape, with each tap
 * at its position among its shape's taps (shapeIndex); taps `ifindexOf`
 * does not find are reported missing. Attaches nothing. With hook `xdp` the
 * XDP programs are loaded (verified) too.
 */
export function loadShapes(taps: readonly ShapeTap[], ifindexOf: (iface: string) => number | undefined, hook: BpfHookChoice = 'auto'): PreparedBpf {
  const byShape = new Map<string, ShapeTap[]>();
  for (const t of taps) byShape.set(t.shapeId, [...(byShape.get(t.shapeId) ?? []), t]);
  const shapes: PreparedShape[] = [];
  const missing: string[] = [];
  try {
    for (const ifaces of byShape.values()) {
      const members: ShapeMember[] = [];
      const attached: PreparedShape['members'] = [];
      ifaces.forEach((t, index) => {
        const ifindex = ifindexOf(t.iface);
        if (ifindex === undefined) return void missing.push(t.iface);
        members.push({ index, ifindexes: [ifindex], ...(t.cfg ? { cfg: t.cfg } : {}) });
        attached.push({ iface: t.iface, ifindex, index });
      });
      if (!members.length) continue;
      shapes.push({ shape: loadShape(ifaces[0] as ShapeTap, ifaces.length, members, { xdp: hook === 'xdp' }), members: attached });
    }
  } catch (e) {
    for (const p of shapes) p.shape.close();
    throw e;
  }
  return { shapes, missing, hook, close: () => shapes.forEach((p) => p.shape.close()) };
}

/** loadShapes for a stored generation (call it in the taps' network namespace). */
export function prepareBpf(genDir: string, stored: StoredBpf, hook: BpfHookChoice = 'auto'): PreparedBpf {
  const objects = new Map(stored.shapes.map((sh) => [sh.shapeId, join(genDir, sh.object)]));
  const taps = stored.interfaces.map((i): ShapeTap => {
    const cfg = i.maps.find((m) => m.map === MAP_NAMES.cfg);
    return { ...i, objectPath: objects.get(i.shapeId) ?? join(genDir, i.object), ...(cfg ? { cfg: Buffer.from(cfg.value, 'hex') } : {}) };
  });
  return loadShapes(taps, tapIndex, hook);
}

export interface AttachResult {
  attached: string[];
  /** Taps that do not exist (yet): attached by a later load. */
  missing: string[];
  /** The mechanism of each attached tap's directions. */
  hooks: Record<string, HookPlan>;
  /** What the user should know (fallbacks). */
  notes: string[];
}

const shapeDir = (pinDir: string, shapeId: string): string => join(pinDir, shapePinDir(shapeId));

/**
 * Attaches (or replaces in place) the prepared programs with the mechanisms
 * of the hook they were loaded for, and pins each shape's maps.
 */
export function attachBpf(p: PreparedBpf, pinDir = DEFAULT_PIN_DIR): AttachResult {
  const res: AttachResult = { attached: [], missing: [...p.missing], hooks: {}, notes: [] };
  const first = p.shapes[0];
  if (first) {
    ensureBpffs(pinDir);
    const plan = planHooks(p.hook, { tcx: p.hook === 'tcx' && hasTcx(first.shape.programs.out), links: linksPersist() });
    for (const { shape, members } of p.shapes) {
      const xdp = shape.xdp;
      if (plan.out === 'xdp' && !xdp) throw new InternalError(`the XDP program of shape ${shape.shapeId} was not loaded`);
      const programs = { out: plan.out === 'xdp' ? (xdp as LoadedShape['programs']['out']) : shape.programs.out, in: shape.programs.in, outTc: shape.programs.out };
      for (const m of members) {
        const a = attachPort({ iface: m.iface, ifindex: m.ifindex }, programs, plan, pinDir);
        res.attached.push(m.iface);
        res.hooks[m.iface] = a.hooks;
        appendAll(res.notes, a.notes);
      }
      const dir = shapeDir(pinDir, shape.shapeId);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      for (const [what, map] of Object.entries(shape.maps) as [string, BpfMap][]) {
        const path = join(dir, what);
        rmSync(path, { force: true });
        map.pin(path);
      }
    }
  }
  // pins of shapes no longer loaded
  const keep = new Set(p.shapes.map((x) => x.shape.shapeId));
  if (existsSync(pinDir)) for (const d of readdirSync(pinDir)) if (shapeOfPinDir(d) !== undefined && !keep.has(shapeOfPinDir(d) as string)) rmSync(join(pinDir, d), { recursive: true, force: true });
  return res;
}

/** Removes nwf-fast's programs (links, tc filters) from these taps; the pins of taps that are gone go too. */
export function detachBpf(ifaces: readonly string[], pinDir = DEFAULT_PIN_DIR): void {
  for (const iface of ifaces) {
    const ifindex = tapIndex(iface);
    detachPort(ifindex === undefined ? { iface } : { iface, ifindex }, pinDir);
  }
}

/** What runs on each tap of the generation: per direction the mechanism of nwf-fast's program, or null; 'no-tap' when the tap does not exist. */
export type TapHooks = Record<PortDirection, HookMechanism | null> | 'no-tap';

/** The attachments of every tap of the generation (call it in the taps' network namespace). */
export function bpfAttachments(stored: StoredBpf, pinDir = DEFAULT_PIN_DIR): Map<string, TapHooks> {
  const out = new Map<string, TapHooks>();
  for (const i of stored.interfaces) {
    const ifindex = tapIndex(i.iface);
    if (ifindex === undefined) {
      out.set(i.iface, 'no-tap');
      continue;
    }
    const q = queryPort({ iface: i.iface, ifindex }, pinDir);
    out.set(i.iface, { out: q.out?.mechanism ?? null, in: q.in?.mechanism ?? null });
  }
  return out;
}

/**
 * Removes every pin of nwf-fast under `pinDir`: the shapes' maps and the
 * taps' links (a link whose last pin goes is released: detach first, with
 * detachBpf, where the programs must come off at once).
 */
export function unpinAll(pinDir = DEFAULT_PIN_DIR): void {
  if (!existsSync(pinDir)) return;
  for (const d of readdirSync(pinDir)) if (shapeOfPinDir(d) !== undefined) rmSync(join(pinDir, d), { recursive: true, force: true });
  for (const t of pinnedTaps(pinDir)) rmSync(tapPinDir(pinDir, t), { recursive: true, force: true });
}

/** Per-interface eBPF counters from the pinned stats maps (absent pins: no entry). */
export function bpfStats(stored: StoredBpf, pinDir = DEFAULT_PIN_DIR): Map<string, Record<Direction, DirectionStats>> {
  const out = new Map<string, Record<Direction, DirectionStats>>();
  const idx = shapeIndex(stored);
  for (const i of stored.interfaces) {
    const path = join(shapeDir(pinDir, i.shapeId), 'stats');
    if (!existsSync(path)) continue;
    const stats = openPinnedMap(path);
    try {
      out.set(i.iface, readStats({ maps: { stats } }, (idx.get(i.iface) as { index: number }).index));
    } finally {
      stats.close();
    }
  }
  return out;
}

/**
 * Changes the values of already attached programs in place (same interfaces,
 * same shapes): writes the inactive config slot of each changed interface
 * through its shape's pinned maps, then selects it. Returns false (and
 * changes nothing) when that is not possible: different interfaces, shapes
 * or indexes within a shape, or missing pins.
 */
export function updateBpfInPlace(prev: StoredBpf, next: StoredBpf, pinDir = DEFAULT_PIN_DIR): boolean {
  if (prev.interfaces.length !== next.interfaces.length) return false;
  const byIface = new Map(prev.interfaces.map((i) => [i.iface, i]));
  const idx = shapeIndex(next);
  const prevIdx = shapeIndex(prev);
  const changes: { shapeId: string; index: number; value: Buffer }[] = [];
  for (const n of next.interfaces) {
    const o = byIface.get(n.iface);
    if (!o || o.shapeId !== n.shapeId) return false;
    // the loaded object's nwf_ifx holds the previous generation's indexes
    if (prevIdx.get(n.iface)?.index !== idx.get(n.iface)?.index) return false;
    const cfg = n.maps.find((m) => m.map === MAP_NAMES.cfg);
    const oldCfg = o.maps.find((m) => m.map === MAP_NAMES.cfg);
    if (!cfg || !oldCfg) return false;
    if (cfg.value === oldCfg.value) continue;
    for (const what of ['cfg', 'slot']) if (!existsSync(join(shapeDir(pinDir, n.shapeId), what))) return false;
    changes.push({ shapeId: n.shapeId, index: (idx.get(n.iface) as { index: number }).index, value: Buffer.from(cfg.value, 'hex') });
  }
  for (const c of changes) {
    const cfg = openPinnedMap(join(shapeDir(pinDir, c.shapeId), 'cfg'));
    const slot = openPinnedMap(join(shapeDir(pinDir, c.shapeId), 'slot'));
    try {
      updateConfig({ shapeId: c.shapeId, maps: { cfg, slot } }, { shapeId: c.shapeId, maps: [{ map: MAP_NAMES.cfg, key: new Uint8Array(4), value: c.value }] }, c.index);
    } finally {
      cfg.close();
      slot.close();
    }
  }
  return true;
}
