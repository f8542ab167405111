// What is loaded, recorded in the state directory (`<state>/loaded/`): the
// record every load diffs against, status verifies the kernel against, and
// a per-port change edits. It is always what nwf-fast put in the kernel
// (built from the generation), never a listing of the kernel.
//
//   head.json             backend, load tag, skeleton configuration, the
//                         nf_tables generation id after nwf-fast's last
//                         commit, the eBPF shapes in force, a pending mark
//   shapes/<hash>.json    one nft shape (backends/nft/parts.ts ShapePart)
//   ports/<tap>.json      one port: its nft part, port id, eBPF index and
//                         values, owner, and why it failed if it did
//   bpf/<shape>.bpf.o     the object of each eBPF shape in force (reloads)
//
// One file per port and per shape: a change of one port reads and writes
// only its own files (and the head), whatever the number of ports. Files
// are replaced atomically. A change marks the head `pending` before it
// touches the kernel and clears it once its records are written: a process
// killed in between leaves `pending`, and the next load replaces everything
// (the kernel is then not known to match the record) and status says so.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';
import type { Backend } from '../compile.js';
import type { Direction } from '../ir/types.js';
import { decodePart, encodePart } from '../backends/nft/names.js';
import type { PortPart, ShapePart } from '../backends/nft/parts.js';
import type { SkeletonConfig } from '../backends/nft/skeleton.js';
import type { OneLayerRule } from '../backends/layers.js';
import { writeAtomic } from './generation.js';

export const LOADED_FORMAT = 'nwf-fast-loaded/1';
export const LOADED_DIR = 'loaded';

/** An eBPF shape in force: loaded once, pinned, shared by its ports. */
export interface BpfShapeRecord {
  /** Ports its maps have room for (grown by reloading the shape). */
  capacity: number;
  /** Hash of the object file the programs were loaded from. */
  objectSha256: string;
  /** Kernel ids of its programs (what tc reports on the taps). */
  progIds: Record<Direction, number> & { xdp?: number };
}

export interface LoadedHead {
  format: typeof LOADED_FORMAT;
  backend: Backend;
  /** The load tag of the tagged objects in the kernel (names.ts). */
  tag: string;
  /** The last generation loaded whole (load, rollback), if any. */
  generation: string | null;
  /** Changes applied since the record was created (every load and port change counts one). */
  revision: number;
  /** Identity of what is loaded: changes with every change. */
  id: string;
  loadedAt: string;
  skeleton: SkeletonConfig;
  /**
   * nf_tables' generation id right after nwf-fast's last commit, when no
   * other commit came between: while it has not moved, the kernel holds
   * exactly what is recorded.
   */
  nfgen?: number;
  /** A change started and did not finish (the kernel may hold anything in between). */
  pending?: { since: string; what: string };
  bpf: Record<string, BpfShapeRecord & { members: Record<string, number> }>;
  /** L3 port ids (and the families of the port's L3 rules), by port: allocated once, kept. */
  marks: Record<string, { id: number; families: ('ipv4' | 'ipv6')[]; learn?: true | 'dhcp' }>;
  /** The L3 mark layout of `marks` (backends/nft/l3.ts MARK_LAYOUT; absent: 1, before IP learning's bits). */
  markLayout?: number;
  /** How many ports use each nft shape (a shape goes with its last port). */
  shapeRefs: Record<string, number>;
  /**
   * The ports whose nft part learns from DHCPACKs (backends/nft/learn.ts
   * portSnoops): the skeleton has the snoop base chain while there is one.
   * Absent in a record written before the chain was conditional: the
   * skeleton had it (host/apply.ts recordedSkeleton).
   */
  snoop?: string[];
}

export interface LoadedPortBpf {
  shapeId: string;
  /** The port's index in its shape's maps (kept while it stays in the shape). */
  index: number;
  /** Its nwf_cfg value (hex). */
  cfg: string;
  /** The tap's ifindex when it was last attached. */
  ifindex?: number;
}

export interface LoadedPort {
  iface: string;
  owner: string;
  mac: string;
  filter: string;
  status: 'protected' | 'failed';
  /** Why the port failed (its error code and message). */
  error?: { code: string; message: string; file?: string };
  /** Rule counts of its policy. */
  rules?: { l2Rules: number; l3Rules: number };
  /** --backend both: the rules of its policy only one layer enforces (backends/layers.ts). */
  oneLayer?: OneLayerRule[];
  /** Its nft part, without tag and without its port-id part. */
  nft: PortPart;
  /** Its L3 port id (1..MAX_L3_PORTS), kept while it has L3 rules. */
  markId?: number;
  bpf?: LoadedPortBpf;
}

export interface LoadedRecord {
  head: LoadedHead;
  shapes: Map<string, ShapePart>;
  ports: Map<string, LoadedPort>;
}

function unreadable(file: string, e: unknown): NwfError {
  return new NwfError(CODES.STATE_INVALID, `${file} is unreadable: ${(e as Error).message}`, {
    location: { file },
    cause: e,
    hint: 'nwf-fast load DIR (or --full) replaces the record from a generation',
  });
}

function readJson<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw unreadable(file, e);
  }
}

/** A directory of JSON records, one file per name (names encoded as nft name parts: any string is a safe file name). */
class RecordDir<T> {
  constructor(private readonly dir: string) {}

  private file(name: string): string {
    return join(this.dir, `${encodePart(name)}.json`);
  }

  read(name: string): T | undefined {
    const f = this.file(name);
    return existsSync(f) ? readJson<T>(f) : undefined;
  }

  write(name: string, v: T): void {
    mkdirSync(this.dir, { recursive: true });
    writeAtomic(this.file(name), JSON.stringify(v) + '\n');
  }

  remove(name: string): void {
    rmSync(this.file(name), { force: true });
  }

  names(): string[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => decodePart(f.slice(0, -'.json'.length)))
      .filter((x): x is string => x !== undefined)
      .sort();
  }
}

/** The record of what is loaded, in `<stateDir>/loaded/`. */
export class LoadedStore {
  readonly dir: string;
  private readonly ports: RecordDir<LoadedPort>;
  private readonly shapes: RecordDir<ShapePart>;
  constructor(stateDir: string) {
    this.dir = join(stateDir, LOADED_DIR);
    this.ports = new RecordDir(join(this.dir, 'ports'));
    this.shapes = new RecordDir(join(this.dir, 'shapes'));
  }

  private get headFile(): string {
    return join(this.dir, 'head.json');
  }
  /** Where the object of an eBPF shape in force is kept. */
  bpfObject(shapeId: string): string {
    return join(this.dir, 'bpf', `${encodePart(shapeId)}.bpf.o`);
  }

  exists(): boolean {
    return existsSync(this.headFile);
  }

  readHead(): LoadedHead | undefined {
    if (!existsSync(this.headFile)) return undefined;
    const h = readJson<LoadedHead>(this.headFile);
    if (h.format !== LOADED_FORMAT) throw new NwfError(CODES.STATE_INVALID, `${this.headFile} has an unknown format`, { location: { file: this.headFile }, expected: LOADED_FORMAT });
    return h;
  }

  writeHead(h: LoadedHead): void {
    mkdirSync(this.dir, { recursive: true });
    writeAtomic(this.headFile, JSON.stringify(h, null, 1) + '\n');
  }

  readPort(iface: string): LoadedPort | undefined {
    return this.ports.read(iface);
  }
  writePort(p: LoadedPort): void {
    this.ports.write(p.iface, p);
  }
  removePort(iface: string): void {
    this.ports.remove(iface);
  }
  /** The taps of every recorded port. */
  portNames(): string[] {
    return this.ports.names();
  }

  readShape(name: string): ShapePart | undefined {
    return this.shapes.read(name);
  }
  writeShape(s: ShapePart): void {
    this.shapes.write(s.name, s);
  }
  removeShape(name: string): void {
    this.shapes.remove(name);
  }
  shapeNames(): string[] {
    return this.shapes.names();
  }

  /** Keeps a copy of an eBPF shape's object (a later change may need to load it again). */
  keepBpfObject(shapeId: string, from: string): void {
    mkdirSync(join(this.dir, 'bpf'), { recursive: true });
    const to = this.bpfObject(shapeId);
    if (from !== to) copyFileSync(from, to);
  }

  removeBpfObject(shapeId: string): void {
    rmSync(this.bpfObject(shapeId), { force: true });
  }

  /** The whole record (every port and shape), or undefined when nothing is recorded. */
  read(): LoadedRecord | undefined {
    const head = this.readHead();
    if (!head) return undefined;
    const shapes = new Map<string, ShapePart>();
    // (only the shapes the head counts: a change killed before its head was written may have left others)
    for (const n of this.shapeNames()) if (!head.shapeRefs || n in head.shapeRefs) shapes.set(n, this.readShape(n) as ShapePart);
    const ports = new Map<string, LoadedPort>();
    for (const n of this.portNames()) ports.set(n, this.readPort(n) as LoadedPort);
    return { head, shapes, ports };
  }

  /** Replaces the whole record (ports and shapes not in it are removed). */
  write(r: LoadedRecord): void {
    for (const n of this.portNames()) if (!r.ports.has(n)) this.removePort(n);
    for (const n of this.shapeNames()) if (!r.shapes.has(n)) this.removeShape(n);
    for (const s of r.shapes.values()) this.writeShape(s);
    for (const p of r.ports.values()) this.writePort(p);
    this.writeHead(r.head);
  }

  /** Forgets everything (unload). */
  clear(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
