// Putting eBPF programs on the taps, port by port, and keeping them there.
//
// One object per policy shape is loaded and pinned under
// <pinDir>/shape-<id>/ (its maps cfg, ifx, slot, stats and its programs
// prog_out, prog_in), once: it stays loaded across loads, and a later
// process (the next load, the libvirt hook) attaches it to another tap
// without loading anything. Each tap of the shape has a slot (an index in
// the shape's maps), recorded and kept while the tap stays in the shape;
// the maps have room for more taps than the shape has (capacityFor), and a
// shape that outgrows them is loaded again with more room (its taps switch
// to the new programs in place). Adding a port is then a few map updates
// and an attach; removing it a detach and a map delete.
//
// Every load verifies that each present tap of the generation carries its
// shape's programs (the program ids tc reports), that the shape's map gives
// the tap's ifindex its slot and that the slot holds the tap's values, and
// repairs what differs: a tap deleted and re-created (a new ifindex, no
// filter), a tap that was missing at the last load, a filter removed by
// hand. Objects are loaded (verified) before anything changes, so a
// verifier refusal changes nothing. The attach mechanism is bpf/hook.ts's.
//
// The nft gate (backends/nft/skeleton.ts): nftables lets a port's frames on
// only from and to the tap instance (`tap . ifindex` in gate-on) its
// programs are attached to. A commit says which instances to add to the
// gate (every tap it attached or verified, after the attach: a fresh tap's
// frames drop until both are done) and which to take out (a port that left
// eBPF or whose tap is gone, the old ifindex of a re-created tap): the host
// sends them (apply.ts) once the programs are on.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Direction } from '../ir/types.js';
import { DIRECTIONS } from '../ir/types.js';
import { MAP_NAMES, PROGRAM_NAMES, shapeOfPinDir, shapePinDir, TC_HOOKS, XDP_PROGRAM_NAME } from '../backends/bpf/names.js';
import { CODES, NwfError } from '../util/errors.js';
import { activeConfig, clearMemberIfindex, configureMember, loadShape, memberOfIfindex, readStats, setMemberIfindex, updateConfig, type DirectionStats, type LoadedShape } from './bpf-load.js';
import { DEFAULT_PIN_DIR, ensureBpffs, ifIndex, openPinnedMap, openPinnedProgram, type BpfMap, type BpfProgram } from './bpf/libbpf.js';
import { attachPorts, detachPort, hasTcx, linksPersist, pinnedTaps, planHooks, queryPort, tapPinDir, TC_HANDLE, TC_PRIORITY, type BpfHookChoice, type HookMechanism, type HookPlan, type PortPrograms } from './bpf/hook.js';
import { withNetns } from './netns.js';
import type { BpfShapeRecord, LoadedPortBpf } from './loaded.js';
import { BPF_LEARNED_MAP, BPF_LEASES_MAP, seedLearned, seedLeases } from './learn/seed.js';
import type { SeedLease } from '../backends/bpf/lower.js';

export { DEFAULT_PIN_DIR, TC_HANDLE, TC_PRIORITY, type BpfHookChoice, type HookPlan };

/** What a port wants of the eBPF backend: its shape and its nwf_cfg value (hex). */
export interface BpfWant {
  shapeId: string;
  cfg: string;
  /** A learning port's seed address: written into the learned-state map before the tap is enabled. */
  learnSeed?: string;
  /** A dhcp learning port: its seeded leases; its lease entry is created with them before the tap is enabled. */
  learnDhcp?: SeedLease[];
}

/** A shape in force with its taps' slots. */
export interface BpfShapeState extends BpfShapeRecord {
  members: Record<string, number>;
}
export type BpfState = Record<string, BpfShapeState>;

/** Slots of a shape's maps for `n` taps: at least 16, with a quarter to spare, in powers of two. */
export function capacityFor(n: number): number {
  let c = 16;
  while (c < n + Math.max(4, Math.ceil(n / 4))) c *= 2;
  return c;
}

const PINS = { cfg: 'cfg', ifxDir: 'ifx_dir', ifx: 'ifx', slot: 'slot', stats: 'stats' } as const;
const PROG_PIN: Readonly<Record<Direction, string>> = { out: 'prog_out', in: 'prog_in' };
/** The from-VM policy as an XDP program (pinned when a load asks for XDP). */
const XDP_PIN = 'prog_xdp';

const shapeDir = (pinDir: string, shapeId: string): string => join(pinDir, shapePinDir(shapeId));

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function tapIndex(iface: string): number | undefined {
  try {
    return ifIndex(iface);
  } catch {
    return undefined;
  }
}

/** A shape's pinned maps and programs, opened (close() when done). */
interface PinnedShape {
  maps: { cfg: BpfMap; ifxDir: BpfMap; ifx: BpfMap; slot: BpfMap; stats: BpfMap };
  progs: ShapePrograms;
  close(): void;
}

function pinsExist(pinDir: string, shapeId: string): boolean {
  const d = shapeDir(pinDir, shapeId);
  return [...Object.values(PINS), ...Object.values(PROG_PIN)].every((f) => existsSync(join(d, f)));
}

function openPinned(pinDir: string, shapeId: string): PinnedShape {
  const d = shapeDir(pinDir, shapeId);
  const opened: { close(): void }[] = [];
  try {
    const map = (f: string): BpfMap => {
      const m = openPinnedMap(join(d, f));
      opened.push(m);
      return m;
    };
    const prog = (f: string): BpfProgram => {
      const p = openPinnedProgram(join(d, f));
      opened.push(p);
      return p;
    };
    const maps = { cfg: map(PINS.cfg), ifxDir: map(PINS.ifxDir), ifx: map(PINS.ifx), slot: map(PINS.slot), stats: map(PINS.stats) };
    const progs: ShapePrograms = { out: prog(PROG_PIN.out), in: prog(PROG_PIN.in), ...(existsSync(join(d, XDP_PIN)) ? { xdp: prog(XDP_PIN) } : {}) };
    return { maps, progs, close: () => opened.forEach((o) => o.close()) };
  } catch (e) {
    opened.forEach((o) => o.close());
    throw e;
  }
}

/**
 * Pinned shapes kept open across commits of this process (a live host's
 * reconciler, a benchmark): opening a shape's pins is 7-8 bpf(2) calls, a
 * third of a port change. An entry serves a commit only while its programs'
 * ids are the ones the state records for the shape: a shape loaded again
 * (here or by another process, under the state lock) has new programs and
 * is opened again. Keyed by namespace, pin directory and shape.
 */
const openShapes = new Map<string, PinnedShape>();

const openKey = (netns: string | undefined, pinDir: string, shapeId: string): string => `${netns ?? ''}\0${pinDir}\0${shapeId}`;

function dropOpenShape(key: string): void {
  openShapes.get(key)?.close();
  openShapes.delete(key);
}

/** Closes every pinned shape kept open by this process (unpinAll does: nothing keeps the unpinned maps alive). */
export function closeOpenShapes(): void {
  for (const k of [...openShapes.keys()]) dropOpenShape(k);
}

/** Pins a freshly loaded shape in place of its previous pins. */
function pinShape(pinDir: string, l: LoadedShape): void {
  const d = shapeDir(pinDir, l.shapeId);
  mkdirSync(d, { recursive: true, mode: 0o700 });
  const maps: Record<keyof typeof PINS, BpfMap> = { cfg: l.maps.cfg, ifxDir: l.maps.ifxDir, ifx: l.maps.ifx, slot: l.maps.slot, stats: l.maps.stats };
  for (const [k, m] of Object.entries(maps) as [keyof typeof PINS, BpfMap][]) {
    const path = join(d, PINS[k]);
    rmSync(path, { force: true });
    m.pin(path);
  }
  for (const dir of DIRECTIONS) {
    const path = join(d, PROG_PIN[dir]);
    rmSync(path, { force: true });
    l.programs[dir].pin(path);
  }
  rmSync(join(d, XDP_PIN), { force: true });
  l.xdp?.pin(join(d, XDP_PIN));
}

/** A shape's programs: tc both ways, and the from-VM XDP program when loaded. */
interface ShapePrograms extends Record<Direction, BpfProgram> {
  xdp?: BpfProgram;
}

export interface BpfPortChange {
  /** The port's want after the change; null: it leaves the eBPF backend (removed, failed, nft only). */
  want: BpfWant | null;
  /** Its record before the change (shape, slot, values, ifindex), if it had programs. */
  before?: LoadedPortBpf;
}

/** A tap instance: the tap's name and the ifindex the programs are (or were) attached to. */
export interface TapInstance {
  iface: string;
  ifindex: number;
}

/** What a commit changes in the nft gate: instances to let on (programs attached, verified), instances to take out. */
export interface GateChanges {
  add: TapInstance[];
  remove: TapInstance[];
}

export interface BpfCommitResult {
  /** Taps of the generation that do not exist (attached by a later load, once they exist). */
  missing: string[];
  /** Taps whose programs, slot or values were not as recorded, and were put back. */
  repaired: string[];
  /** The mechanism of each tap this commit attached. */
  hooks: Record<string, HookPlan>;
  /** What the user should know (attach fallbacks). */
  notes: string[];
}

/**
 * One load's eBPF changes: prepare() loads and verifies what must be loaded
 * (nothing attached), attachNew() puts the programs on taps that get them
 * for the first time (before nftables lets their frames through), finish()
 * does the rest once nftables is in force (values, moves, reloaded shapes,
 * removals, verification), abort() undoes attachNew() when the load fails.
 * Run it in the taps' namespace (the constructor's netns).
 */
export class BpfCommit {
  private readonly state: BpfState;
  private readonly loaded = new Map<string, LoadedShape>();
  private readonly newlyAttached: { iface: string; ifindex: number }[] = [];
  /** The gate: the instance each port's programs are on now (added), instances they are no longer on. */
  private readonly gateOn = new Map<string, number>();
  private readonly gateOff: TapInstance[] = [];
  private readonly records = new Map<string, LoadedPortBpf | null>();
  private readonly removedShapes: string[] = [];
  /** Pinned shapes opened during this commit (closed at its end). */
  private readonly pinned = new Map<string, PinnedShape>();
  private prepared = false;

  constructor(
    private readonly o: {
      pinDir: string;
      netns?: string;
      prev: BpfState;
      /** Load every shape again (a full replacement). */
      reloadAll?: boolean;
      /** Where the programs go on the taps (bpf/hook.ts; default auto). */
      hook?: BpfHookChoice;
    },
    private readonly changes: ReadonlyMap<string, BpfPortChange>,
    /** Object files the change brings (a generation's): a shape whose object differs is loaded again. */
    private readonly objects: ReadonlyMap<string, string>,
    /** The values and record of a port that is not changed (a member of a shape that must be loaded again). */
    private readonly recordOf: (iface: string) => LoadedPortBpf | undefined,
    /** The object of a shape in force, to load it again (more room, pins gone). */
    private readonly keptObject: (shapeId: string) => string | undefined = () => undefined,
  ) {
    this.state = JSON.parse(JSON.stringify(o.prev)) as BpfState;
  }

  private plan: HookPlan | undefined;
  private readonly hooks: Record<string, HookPlan> = {};
  private readonly notes: string[] = [];

  /** Puts a shape's programs on a port with the commit's hook plan (bpf/hook.ts: tc, tcx or XDP). */
  private attach(iface: string, ifindex: number, progs: ShapePrograms): void {
    this.attachAll([{ iface, ifindex, progs }]);
  }

  /** attach() for many ports at once (hook.ts attachPorts: with tc, batches of netlink requests). */
  private attachAll(list: readonly { iface: string; ifindex: number; progs: ShapePrograms }[]): void {
    const first = list[0];
    if (!first) return;
    const choice = this.o.hook ?? 'auto';
    this.plan ??= planHooks(choice, { tcx: choice === 'tcx' && hasTcx(first.progs.out), links: linksPersist() });
    const plan = this.plan;
    const items = list.map(({ iface, ifindex, progs }) => {
      if (plan.out === 'xdp' && !progs.xdp) throw new NwfError(CODES.STATE_INVALID, `the XDP program of a shape on ${iface} is not loaded`, { hint: 'load the generation again with --full' });
      const pp: PortPrograms = { out: plan.out === 'xdp' ? (progs.xdp as BpfProgram) : progs.out, in: progs.in, outTc: progs.out };
      return { port: { iface, ifindex }, programs: pp };
    });
    for (const a of attachPorts(items, plan, this.o.pinDir)) {
      this.hooks[a.iface] = a.hooks;
      for (const n of a.notes) this.notes.push(n);
    }
  }

  /** A learning port's learned state, written before its tap is enabled (the kernel's, if any, is kept). */
  private seed(want: BpfWant, ifindex: number): void {
    if (want.learnSeed !== undefined) seedLearned(this.o.pinDir, ifindex, want.learnSeed);
    if (want.learnDhcp !== undefined) seedLeases(this.o.pinDir, ifindex, want.learnDhcp);
  }

  private ns<T>(fn: () => T): T {
    return this.o.netns ? withNetns(this.o.netns, fn) : fn();
  }

  /** The shape state after the commit (for the record). */
  get nextState(): BpfState {
    return this.state;
  }

  /** The record of a changed port after the commit (null: no eBPF). */
  recordFor(iface: string): LoadedPortBpf | null | undefined {
    return this.records.get(iface);
  }

  /**
   * The gate's changes of this commit (after finish()): every instance it
   * attached or verified goes in, the instances programs are no longer on go
   * out (never one that goes in).
   */
  gateChanges(): GateChanges {
    const add = [...this.gateOn].map(([iface, ifindex]) => ({ iface, ifindex }));
    const seen = new Set(add.map((x) => `${x.iface}\0${x.ifindex}`));
    const remove: TapInstance[] = [];
    for (const x of this.gateOff) {
      const k = `${x.iface}\0${x.ifindex}`;
      if (!seen.has(k)) remove.push(x);
      seen.add(k);
    }
    return { add, remove };
  }

  private gateOut(iface: string, ifindex: number | undefined): void {
    if (ifindex !== undefined) this.gateOff.push({ iface, ifindex });
  }

  /** Whether attachNew() put programs on a tap. */
  get attachedAny(): boolean {
    return this.newlyAttached.length > 0;
  }

  /** Shapes no port uses any more (their pins go in finish()). */
  get shapesRemoved(): readonly string[] {
    return this.removedShapes;
  }

  /** Computes the next slots and loads (verifies) every shape that must be loaded. Changes nothing in the kernel. */
  prepare(): void {
    if (this.prepared) return;
    this.prepared = true;
    const joined = new Map<string, string[]>();
    for (const [iface, c] of this.changes) {
      const old = c.before;
      const stays = old && c.want && old.shapeId === c.want.shapeId && this.state[old.shapeId]?.members[iface] !== undefined;
      if (old && !stays) {
        const s = this.state[old.shapeId];
        if (s) delete s.members[iface];
      }
      if (c.want && !stays) joined.set(c.want.shapeId, [...(joined.get(c.want.shapeId) ?? []), iface]);
    }
    for (const [shapeId, ifaces] of joined) {
      const prev = this.state[shapeId];
      const members = prev?.members ?? {};
      const count = Object.keys(members).length + ifaces.length;
      const object = this.objects.get(shapeId);
      const objectSha = object ? sha256File(object) : prev?.objectSha256;
      const reload = !prev || !pinsExist(this.o.pinDir, shapeId) || (objectSha !== undefined && objectSha !== prev.objectSha256) || count > prev.capacity;
      const capacity = reload ? Math.max(prev && count <= prev.capacity ? prev.capacity : 0, capacityFor(count)) : (prev as BpfShapeState).capacity;
      const used = new Set(Object.values(members));
      let free = 0;
      for (const iface of ifaces) {
        while (used.has(free)) free++;
        members[iface] = free;
        used.add(free);
      }
      this.state[shapeId] = { capacity, objectSha256: objectSha ?? '', progIds: prev?.progIds ?? { out: 0, in: 0 }, members };
      if (reload) this.loadShapeNow(shapeId, capacity);
    }
    // shapes whose object changed or whose pins vanished, without a port joining them
    for (const [shapeId, s] of Object.entries(this.state)) {
      if (this.loaded.has(shapeId) || !Object.keys(s.members).length) continue;
      const object = this.objects.get(shapeId);
      const changed = object !== undefined && sha256File(object) !== s.objectSha256;
      if (changed || this.o.reloadAll || !pinsExist(this.o.pinDir, shapeId)) {
        if (object) s.objectSha256 = sha256File(object);
        this.loadShapeNow(shapeId, s.capacity);
      }
    }
    for (const [shapeId, s] of Object.entries(this.state)) {
      if (Object.keys(s.members).length) continue;
      this.removedShapes.push(shapeId);
      delete this.state[shapeId];
    }
  }

  private cfgOf(iface: string): string | undefined {
    const c = this.changes.get(iface);
    return c ? (c.want?.cfg ?? undefined) : this.recordOf(iface)?.cfg;
  }

  /** Loads one shape with every member configured (verifier here: throws, nothing attached). */
  private loadShapeNow(shapeId: string, capacity: number): void {
    const object = this.objects.get(shapeId) ?? this.keptObject(shapeId);
    if (!object || !existsSync(object)) {
      throw new NwfError(CODES.STATE_INVALID, `the eBPF object of shape ${shapeId} is not available (${object ?? 'no path'})`, { hint: 'load the generation again (nwf-fast load DIR) to bring the object' });
    }
    const s = this.state[shapeId] as BpfShapeState;
    // (one switch into the taps' namespace for all of them)
    const members = this.ns(() =>
      Object.entries(s.members).map(([iface, index]) => {
        const cfg = this.cfgOf(iface);
        const ifindex = tapIndex(iface);
        return { index, ifindexes: ifindex === undefined ? [] : [ifindex], ...(cfg ? { cfg: Buffer.from(cfg, 'hex') } : {}) };
      }),
    );
    // maps pinned by name (the learned state, bpf/lib/nwf_learn.h) live in the pin directory, shared by every shape
    const l = this.ns(() => loadShape({ shapeId, objectPath: object, programs: PROGRAM_NAMES, xdpProgram: XDP_PROGRAM_NAME, hooks: TC_HOOKS }, capacity, members, { xdp: this.o.hook === 'xdp', pinRoot: this.o.pinDir }));
    this.loaded.set(shapeId, l);
    s.progIds = { out: l.programs.out.id, in: l.programs.in.id, ...(l.xdp ? { xdp: l.xdp.id } : {}) };
    s.objectSha256 = sha256File(object);
  }

  /** A shape's pins: kept open from an earlier commit while its programs are the recorded ones, else opened. */
  private pins(shapeId: string): PinnedShape {
    let p = this.pinned.get(shapeId);
    if (p) return p;
    const key = openKey(this.o.netns, this.o.pinDir, shapeId);
    const ids = this.state[shapeId]?.progIds;
    const kept = openShapes.get(key);
    if (kept && ids && kept.progs.out.id === ids.out && kept.progs.in.id === ids.in && (kept.progs.xdp?.id ?? 0) === (ids.xdp ?? 0)) p = kept;
    else {
      dropOpenShape(key);
      p = openPinned(this.o.pinDir, shapeId);
      openShapes.set(key, p);
    }
    this.pinned.set(shapeId, p);
    return p;
  }

  /** Ends this commit's use of the pins; those of shapes loaded again or removed are closed. */
  private closePins(): void {
    for (const shapeId of [...this.loaded.keys(), ...this.removedShapes]) dropOpenShape(openKey(this.o.netns, this.o.pinDir, shapeId));
    this.pinned.clear();
  }

  /** Programs of a shape: the ones loaded now, or the pinned ones. */
  private withPrograms<T>(shapeId: string, fn: (progs: ShapePrograms, maps: PinnedShape['maps'] | LoadedShape['maps']) => T): T {
    const l = this.loaded.get(shapeId);
    if (l) return fn({ ...l.programs, ...(l.xdp ? { xdp: l.xdp } : {}) }, l.maps);
    const p = this.pins(shapeId);
    return fn(p.progs, p.maps);
  }

  /** Attaches the ports that had no programs before (their slot configured first). Before nftables lets them through. */
  attachNew(): string[] {
    this.prepare();
    const missing: string[] = [];
    this.ns(() => {
      // every port's slot, learned state and ifindex first, then the programs on all of them at once
      const attach: { iface: string; ifindex: number; progs: ShapePrograms }[] = [];
      for (const [iface, c] of this.changes) {
        if (!c.want || c.before) continue;
        const index = this.state[c.want.shapeId]?.members[iface] as number;
        const ifindex = tapIndex(iface);
        const want = c.want;
        this.withPrograms(want.shapeId, (progs, maps) => {
          if (!this.loaded.has(want.shapeId)) configureMember(maps, index, Buffer.from(want.cfg, 'hex'));
          if (ifindex === undefined) return void missing.push(iface);
          this.seed(want, ifindex);
          setMemberIfindex(maps, ifindex, index);
          attach.push({ iface, ifindex, progs });
          // (before the attach: abort() takes off whatever of them got on)
          this.newlyAttached.push({ iface, ifindex });
        });
        this.records.set(iface, { shapeId: want.shapeId, index, cfg: want.cfg, ...(ifindex !== undefined ? { ifindex } : {}) });
      }
      this.attachAll(attach);
      for (const { iface, ifindex } of attach) this.gateOn.set(iface, ifindex);
    });
    return missing;
  }

  /** Undoes attachNew (the load failed before nftables changed): those ports go back to having no programs. */
  abort(): void {
    this.ns(() => {
      for (const p of this.newlyAttached) {
        try {
          detachPort(p, this.o.pinDir);
        } catch {
          // best effort: nftables still fails these ports closed
        }
      }
    });
    for (const l of this.loaded.values()) l.close();
    this.loaded.clear();
    this.closePins();
  }

  /**
   * After nftables is in force: every other change, then verification of
   * `verify` (every port of every shape, or the changed ports only).
   */
  finish(verify: 'all' | 'changed'): BpfCommitResult {
    this.prepare();
    const res: BpfCommitResult = { missing: [], repaired: [], hooks: this.hooks, notes: this.notes };
    try {
      this.ns(() => this.finishInNs(verify, res));
    } finally {
      for (const l of this.loaded.values()) l.close();
      this.loaded.clear();
      this.closePins();
    }
    return res;
  }

  private finishInNs(verify: 'all' | 'changed', res: BpfCommitResult): void {
    if (this.loaded.size) ensureBpffs(this.o.pinDir);
    // shapes loaded now: every present member switches to the new programs in place, then the pins move
    for (const [shapeId, l] of this.loaded) {
      const s = this.state[shapeId] as BpfShapeState;
      const progs: ShapePrograms = { ...l.programs, ...(l.xdp ? { xdp: l.xdp } : {}) };
      const attach: { iface: string; ifindex: number; progs: ShapePrograms }[] = [];
      for (const [iface, index] of Object.entries(s.members)) {
        const ifindex = tapIndex(iface);
        if (ifindex === undefined) continue;
        setMemberIfindex(l.maps, ifindex, index);
        attach.push({ iface, ifindex, progs });
      }
      this.attachAll(attach);
      for (const { iface, ifindex } of attach) {
        this.gateOn.set(iface, ifindex);
        const was = (this.records.get(iface) ?? this.recordOf(iface))?.ifindex;
        if (was !== ifindex) this.gateOut(iface, was);
      }
      pinShape(this.o.pinDir, l);
    }
    // changed ports in shapes that stay loaded
    for (const [iface, c] of this.changes) {
      const old = c.before;
      if (c.want) {
        const want = c.want;
        const index = this.state[want.shapeId]?.members[iface] as number;
        const ifindex = tapIndex(iface);
        const moved = !old || old.shapeId !== want.shapeId;
        if (!this.loaded.has(want.shapeId) && old) {
          this.withPrograms(want.shapeId, (progs, maps) => {
            if (moved) {
              configureMember(maps, index, Buffer.from(want.cfg, 'hex'));
              if (ifindex !== undefined) {
                this.seed(want, ifindex);
                setMemberIfindex(maps, ifindex, index);
                this.attach(iface, ifindex, progs);
                this.gateOn.set(iface, ifindex);
              }
            } else if (want.cfg !== old.cfg) {
              updateConfig({ shapeId: want.shapeId, maps }, { shapeId: want.shapeId, maps: [{ map: MAP_NAMES.cfg, key: new Uint8Array(4), value: Buffer.from(want.cfg, 'hex') }] }, index);
            }
          });
        }
        // a port that left its shape: the old shape forgets its ifindex
        if (old && moved && !this.removedShapes.includes(old.shapeId) && old.ifindex !== undefined && pinsExist(this.o.pinDir, old.shapeId)) {
          const p = this.pins(old.shapeId);
          if (memberOfIfindex(p.maps, old.ifindex) === old.index) clearMemberIfindex(p.maps, old.ifindex);
        }
        if (ifindex === undefined) res.missing.push(iface);
        // the instance it was on (a tap re-created or gone) leaves the gate
        if (old?.ifindex !== undefined && old.ifindex !== ifindex) this.gateOut(iface, old.ifindex);
        this.records.set(iface, { shapeId: want.shapeId, index, cfg: want.cfg, ...(ifindex !== undefined ? { ifindex } : {}) });
      } else if (old) {
        // leaves eBPF: nftables no longer lets its frames through (or the port is gone): off the tap
        const ifindex = tapIndex(iface);
        if (ifindex !== undefined) detachPort({ iface, ifindex }, this.o.pinDir);
        this.gateOut(iface, old.ifindex);
        if (ifindex !== old.ifindex) this.gateOut(iface, ifindex);
        if (!this.removedShapes.includes(old.shapeId) && old.ifindex !== undefined && pinsExist(this.o.pinDir, old.shapeId)) {
          const p = this.pins(old.shapeId);
          if (memberOfIfindex(p.maps, old.ifindex) === old.index) clearMemberIfindex(p.maps, old.ifindex);
        }
        this.records.set(iface, null);
      }
    }
    // verification: every port in scope carries its shape's programs, slot and values
    const justAttached = new Set(this.newlyAttached.map((x) => x.iface));
    for (const [shapeId, s] of Object.entries(this.state)) {
      // (a port attached by attachNew in this commit was set up just now)
      // (the changed ports alone: looked up, not found among the shape's members, which may be thousands)
      const scope: [string, number][] = verify === 'all' ? Object.entries(s.members) : [...this.changes.keys()].flatMap((iface) => (s.members[iface] !== undefined ? [[iface, s.members[iface] as number] as [string, number]] : []));
      const targets = scope.filter(([iface]) => !justAttached.has(iface));
      if (!targets.length) continue;
      const p = this.pins(shapeId);
      {
        for (const [iface, index] of targets) {
          const rec = this.records.get(iface) ?? this.recordOf(iface);
          // the ifindex it had before this commit (a changed port's record above already has the current one)
          const was = (this.changes.get(iface)?.before ?? this.recordOf(iface))?.ifindex;
          const cfg = this.cfgOf(iface);
          const ifindex = tapIndex(iface);
          if (ifindex === undefined) {
            if (!res.missing.includes(iface)) res.missing.push(iface);
            this.gateOut(iface, was);
            continue;
          }
          let repaired = false;
          if (memberOfIfindex(p.maps, ifindex) !== index) {
            setMemberIfindex(p.maps, ifindex, index);
            repaired = true;
          }
          if (was !== undefined && was !== ifindex) {
            if (memberOfIfindex(p.maps, was) === index) clearMemberIfindex(p.maps, was);
            this.gateOut(iface, was);
          }
          if (cfg) {
            const active = activeConfig(p.maps, index);
            if (!active || active.toString('hex') !== cfg) {
              updateConfig({ shapeId, maps: p.maps }, { shapeId, maps: [{ map: MAP_NAMES.cfg, key: new Uint8Array(4), value: Buffer.from(cfg, 'hex') }] }, index);
              repaired = true;
            }
          }
          const on = queryPort({ iface, ifindex }, this.o.pinDir);
          if (!expectedIds(s.progIds, 'out').includes(on.out?.progId ?? -1) || on.in?.progId !== s.progIds.in) {
            this.attach(iface, ifindex, p.progs);
            repaired = true;
          }
          // programs, slot and values verified (or put back): the instance goes through the gate
          this.gateOn.set(iface, ifindex);
          if (repaired && !this.loaded.has(shapeId)) res.repaired.push(iface);
          if (this.changes.has(iface) || rec?.ifindex !== ifindex) this.records.set(iface, { shapeId, index, cfg: cfg ?? rec?.cfg ?? '', ifindex });
        }
      }
    }
    for (const shapeId of this.removedShapes) rmSync(shapeDir(this.o.pinDir, shapeId), { recursive: true, force: true });
  }
}

/** The program ids that may protect a direction of a shape's port (from the VM: tc, or XDP). */
function expectedIds(ids: BpfShapeRecord['progIds'], d: Direction): number[] {
  return d === 'out' && ids.xdp !== undefined ? [ids.out, ids.xdp] : [ids[d]];
}

/** Removes nwf-fast's programs (links, tc filters) from these taps; the pins of taps that are gone go too. */
export function detachTaps(ifaces: readonly string[], pinDir = DEFAULT_PIN_DIR): void {
  for (const iface of ifaces) {
    const ifindex = tapIndex(iface);
    detachPort(ifindex === undefined ? { iface } : { iface, ifindex }, pinDir);
  }
}

/**
 * Removes every pin of nwf-fast under `pinDir`: the shapes' maps and
 * programs and the taps' links (a link whose last pin goes is released:
 * detach first, with detachTaps, where the programs must come off at once).
 */
export function unpinAll(pinDir = DEFAULT_PIN_DIR): void {
  closeOpenShapes();
  if (!existsSync(pinDir)) return;
  for (const d of readdirSync(pinDir)) if (shapeOfPinDir(d) !== undefined) rmSync(join(pinDir, d), { recursive: true, force: true });
  for (const t of pinnedTaps(pinDir)) rmSync(tapPinDir(pinDir, t), { recursive: true, force: true });
  rmSync(join(pinDir, BPF_LEARNED_MAP), { force: true });
  rmSync(join(pinDir, BPF_LEASES_MAP), { force: true });
}

/** Per-port eBPF counters from a shape's pinned stats map (absent pins: undefined). */
export function bpfPortStats(pinDir: string, shapeId: string, index: number): Record<Direction, DirectionStats> | undefined {
  const path = join(shapeDir(pinDir, shapeId), PINS.stats);
  if (!existsSync(path)) return undefined;
  const stats = openPinnedMap(path);
  try {
    return readStats({ maps: { stats } }, index);
  } finally {
    stats.close();
  }
}

export interface BpfPortCheck {
  iface: string;
  /** The tap does not exist (nothing to attach to: not drift). */
  absent?: true;
  /** What differs from the record: missing programs, other program ids, the ifindex not mapped to its slot, other values. */
  problems: string[];
  /** Where nwf-fast's programs run on the tap, per direction (null: none). */
  hooks?: Record<Direction, HookMechanism | null>;
  /**
   * A gated port (its dispatch goes through the nft gate): `open` when the
   * gate lets the tap's current ifindex on, `closed` when not (the port's
   * frames are dropped as unprotected: a re-created tap, an attach that did
   * not finish).
   */
  gate?: 'open' | 'closed';
}

/**
 * The gate's elements as listed (`{"concat": [tap, ifindex]}`), as tap ->
 * ifindexes. nft prints an ifindex that names a device of the namespace as
 * that device's name: such a name is resolved back here, so call this in the
 * taps' namespace (a name that no longer resolves is left out).
 */
export function gateInstances(elements: readonly unknown[]): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const e of elements) {
    const parts = (e as { concat?: unknown })?.concat;
    if (!Array.isArray(parts) || parts.length !== 2 || typeof parts[0] !== 'string') continue;
    const v: unknown = parts[1];
    const ifindex = typeof v === 'number' ? v : typeof v === 'string' ? (/^[0-9]+$/.test(v) ? Number(v) : tapIndex(v)) : undefined;
    if (ifindex === undefined) continue;
    let set = out.get(parts[0]);
    if (!set) out.set(parts[0], (set = new Set()));
    set.add(ifindex);
  }
  return out;
}

/**
 * Checks ports against the record (status): programs attached with the
 * expected ids, slot, values, and, for a gated port when the skeleton has
 * the gate (`gate`: its elements, gateInstances), that the gate lets the
 * tap's current ifindex on. Call in the taps' namespace.
 */
export function checkBpfPorts(pinDir: string, state: BpfState, ports: readonly { iface: string; bpf: LoadedPortBpf; gated?: boolean }[], gate?: ReadonlyMap<string, ReadonlySet<number>>): BpfPortCheck[] {
  const out: BpfPortCheck[] = [];
  const byShape = new Map<string, { iface: string; bpf: LoadedPortBpf; gated?: boolean }[]>();
  for (const p of ports) byShape.set(p.bpf.shapeId, [...(byShape.get(p.bpf.shapeId) ?? []), p]);
  for (const [shapeId, list] of byShape) {
    const s = state[shapeId];
    const pinned = pinsExist(pinDir, shapeId) ? openPinned(pinDir, shapeId) : undefined;
    try {
      for (const { iface, bpf, gated } of list) {
        const problems: string[] = [];
        const ifindex = tapIndex(iface);
        if (ifindex === undefined) {
          out.push({ iface, absent: true, problems });
          continue;
        }
        if (!s) problems.push(`shape ${shapeId} is not recorded as loaded`);
        if (!pinned) problems.push(`the pins of shape ${shapeId} are missing under ${pinDir}`);
        const on = queryPort({ iface, ifindex }, pinDir);
        for (const d of DIRECTIONS) {
          const got = on[d];
          if (got === undefined) problems.push(`no nwf-fast program ${d === 'out' ? 'from' : 'to'} the VM`);
          else if (s && !expectedIds(s.progIds, d).includes(got.progId)) problems.push(`program ${got.progId} (${got.mechanism}) ${d === 'out' ? 'from' : 'to'} the VM, expected ${expectedIds(s.progIds, d).join(' or ')}`);
        }
        if (pinned) {
          if (memberOfIfindex(pinned.maps, ifindex) !== bpf.index) problems.push(`the shape does not map ifindex ${ifindex} to slot ${bpf.index}`);
          const active = activeConfig(pinned.maps, bpf.index);
          if (!active || active.toString('hex') !== bpf.cfg) problems.push(`slot ${bpf.index} does not hold the port's values`);
        }
        let gateState: BpfPortCheck['gate'];
        if (gate && gated) {
          gateState = gate.get(iface)?.has(ifindex) ? 'open' : 'closed';
          if (gateState === 'closed') problems.push(`the nft gate does not let its tap (ifindex ${ifindex}) on: not the tap instance its programs were attached to (re-created?), its frames are dropped as unprotected`);
        }
        out.push({ iface, problems, hooks: { out: on.out?.mechanism ?? null, in: on.in?.mechanism ?? null }, ...(gateState ? { gate: gateState } : {}) });
      }
    } finally {
      pinned?.close();
    }
  }
  return out;
}
