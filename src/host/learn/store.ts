// Learned addresses as state (issue 10 item 2; design ip-learning.md 4.1, 4.3):
// <state_dir>/learned.json, one entry per learning port keyed by owner UUID
// and MAC (learnKey), as libvirt's lease file is keyed, because tap names and
// ifindexes change across restarts and migrations. Written atomically, under
// the state lock (the callers hold it).
//
// Where a port's seed comes from (design 4.3):
//   load, rollback, restore       the kernel's learned state when it has the
//                                 port (it may be newer), else learned.json
//   hook start begin, incoming    the XML's <nwf:learned> (migrate/restore
//   (after migrate/restore begin) begin noted it), else learned.json
//   hook start begin, fresh boot  dhcp: the unexpired leases of learned.json;
//                                 any: nothing (the VM learns anew, as with
//                                 libvirt), and the old address is dropped
//   hook stopped/release end      nothing seeded: the departing ports' kernel
//                                 state is saved first
// An expired dhcp lease is never seeded. A seed is used only for a port whose
// policy learns in the same mode.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseIPv4, parseMac } from '../../ir/values.js';
import { learnKey, type LearnedAddress, type LearnedEntry, type LearnMode } from '../../ir/learning.js';
import { CODES, NwfError } from '../../util/errors.js';
import { writeAtomic } from '../generation.js';
import type { DesiredPort, PortFilterRef } from '../live/ports.js';

export const LEARNED_FILE = 'learned.json';
const FORMAT = 'nwf-fast-learned/1';

export type Seeds = ReadonlyMap<string, LearnedEntry>;

export function learnedFile(stateDir: string): string {
  return join(stateDir, LEARNED_FILE);
}

/**
 * The learning mode a port's filterref asks for: `$IP` not given and
 * CTRL_IP_LEARNING `any` (the default) or `dhcp`, read as libvirt reads it
 * (case-insensitive). `none`, an invalid value or a given IP: not learning.
 * (Whether the filter tree references $IP at all is the resolver's business:
 * a seed for a port that does not learn is ignored by the load.)
 */
export function learnModeOf(ref: PortFilterRef): LearnMode | undefined {
  const has = (name: string): string[] | undefined => Object.entries(ref.params).find(([k]) => k === name)?.[1];
  if (has('IP')?.length) return undefined;
  const v = (has('CTRL_IP_LEARNING')?.[0] ?? 'any').toLowerCase();
  return v === 'any' || v === 'dhcp' ? v : undefined;
}

/** A desired port that learns, with its key and mode. */
export interface LearningPort {
  key: string;
  port: DesiredPort;
  mode: LearnMode;
}

export function learningPorts(ports: readonly DesiredPort[]): LearningPort[] {
  return ports.flatMap((p) => {
    const mode = learnModeOf(p.filterref);
    return mode ? [{ key: learnKey(p.owner.uuid, p.mac), port: p, mode }] : [];
  });
}

const isoOk = (s: unknown): boolean => typeof s === 'string' && !Number.isNaN(Date.parse(s));

function checkEntry(e: unknown, file: string, i: number): LearnedEntry {
  const o = e as Partial<LearnedEntry> | null;
  const addrOk = (a: Partial<LearnedAddress> | null): boolean =>
    !!a &&
    typeof a.ip === 'string' &&
    parseIPv4(a.ip) !== undefined &&
    (a.since === undefined || isoOk(a.since)) &&
    (a.expires === undefined || isoOk(a.expires)) &&
    (a.server === undefined || (typeof a.server === 'string' && parseIPv4(a.server) !== undefined)) &&
    (a.source === 'kernel' || a.source === 'metadata' || a.source === 'state');
  const ok =
    !!o &&
    typeof o.owner?.name === 'string' &&
    typeof o.owner.uuid === 'string' &&
    typeof o.mac === 'string' &&
    parseMac(o.mac) === o.mac &&
    (o.mode === 'any' || o.mode === 'dhcp') &&
    Array.isArray(o.addresses) &&
    o.addresses.every((a) => addrOk(a as Partial<LearnedAddress> | null));
  if (!ok) throw new NwfError(CODES.STATE_INVALID, `${file}: entry ${i + 1} is malformed`, { location: { file }, hint: 'move the file away: the ports relearn (nwf-fast forget removes single entries)' });
  return o as LearnedEntry;
}

/** The learned state on disk (none when the file does not exist). Addresses read from it have source 'state'. */
export function readLearned(stateDir: string): LearnedEntry[] {
  const file = learnedFile(stateDir);
  if (!existsSync(file)) return [];
  let doc: { format?: unknown; entries?: unknown };
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as typeof doc;
  } catch (e) {
    throw new NwfError(CODES.STATE_INVALID, `${file} is unreadable: ${(e as Error).message}`, { location: { file }, cause: e, hint: 'move the file away: the ports relearn' });
  }
  if (doc.format !== FORMAT || !Array.isArray(doc.entries)) throw new NwfError(CODES.STATE_INVALID, `${file} has an unknown format`, { location: { file }, expected: FORMAT });
  return doc.entries.map((e, i) => {
    const x = checkEntry(e, file, i);
    return { ...x, addresses: x.addresses.map((a) => ({ ...a, source: 'state' as const })) };
  });
}

/** Writes the learned state atomically (sorted by key; entries without addresses left out). */
export function writeLearned(stateDir: string, entries: readonly LearnedEntry[]): void {
  mkdirSync(stateDir, { recursive: true });
  const kept = entries.filter((e) => e.addresses.length > 0).sort((a, b) => cmp(learnKey(a.owner.uuid, a.mac), learnKey(b.owner.uuid, b.mac)));
  writeAtomic(learnedFile(stateDir), JSON.stringify({ format: FORMAT, entries: kept }, null, 1) + '\n');
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Whether a lease is still live at `now` (an `any` address, without expiry, always is). */
export function isLive(a: LearnedAddress, now: number): boolean {
  return a.expires === undefined || Date.parse(a.expires) > now;
}

/** The entry with its expired leases removed; undefined when nothing is left. */
export function liveEntry(e: LearnedEntry, now: number): LearnedEntry | undefined {
  const addresses = e.addresses.filter((a) => isLive(a, now));
  return addresses.length ? { ...e, addresses } : undefined;
}

export function byKey(entries: readonly LearnedEntry[]): Map<string, LearnedEntry> {
  return new Map(entries.map((e) => [learnKey(e.owner.uuid, e.mac), e]));
}

/** A seed for `lp` from `e`: only in the port's mode, with the port's owner, live leases only. */
function seedFor(lp: LearningPort, e: LearnedEntry | undefined, now: number): LearnedEntry | undefined {
  if (!e || e.mode !== lp.mode) return undefined;
  const live = liveEntry(e, now);
  return live && { ...live, owner: { ...lp.port.owner }, mac: lp.port.mac };
}

/**
 * Seeds for a load, rollback or restore of `ports`: the kernel's learned
 * state for a port when it has one (it wins: it may be newer), else
 * learned.json's.
 */
export function seedsForLoad(ports: readonly DesiredPort[], kernel: readonly LearnedEntry[], state: readonly LearnedEntry[], now = Date.now()): Map<string, LearnedEntry> {
  const k = byKey(kernel);
  const s = byKey(state);
  const out = new Map<string, LearnedEntry>();
  for (const lp of learningPorts(ports)) {
    const seed = seedFor(lp, k.get(lp.key), now) ?? seedFor(lp, s.get(lp.key), now);
    if (seed) out.set(lp.key, seed);
  }
  return out;
}

/**
 * Seeds for a change of the desired state to `next`: seedsForLoad for every
 * port, except the starting domain's (`start`), whose start seeds replace
 * them (its kernel entries, if any, are leftovers of a previous run).
 */
export function seedsForChange(next: readonly DesiredPort[], kernel: readonly LearnedEntry[], state: readonly LearnedEntry[], start?: { uuid: string; seeds: StartSeeds }, now = Date.now()): Map<string, LearnedEntry> {
  const out = seedsForLoad(start ? next.filter((p) => p.owner.uuid !== start.uuid) : next, kernel, state, now);
  for (const [k, v] of start?.seeds.seeds ?? []) out.set(k, v);
  return out;
}

export interface StartSeeds {
  seeds: Map<string, LearnedEntry>;
  /** learned.json after the start: the seeds recorded, and a fresh boot's `any` addresses dropped. */
  state: LearnedEntry[];
  /** One line per seeded port, for the hook's log. */
  notes: string[];
}

/**
 * Seeds for a domain's `start begin`: `ports` are its ports, `metadata` the
 * <nwf:learned> entries of the XML on stdin (owner filled in), `incoming`
 * whether migrate begin or restore begin noted it just before.
 */
export function seedsForStart(ports: readonly DesiredPort[], metadata: readonly LearnedEntry[], state: readonly LearnedEntry[], incoming: boolean, now = Date.now()): StartSeeds {
  const m = byKey(metadata);
  const s = byKey(state);
  const seeds = new Map<string, LearnedEntry>();
  const notes: string[] = [];
  const drop = new Set<string>();
  for (const lp of learningPorts(ports)) {
    let seed: LearnedEntry | undefined;
    let from = '';
    if (incoming) {
      seed = seedFor(lp, m.get(lp.key), now);
      from = 'metadata';
      if (!seed) {
        seed = seedFor(lp, s.get(lp.key), now);
        from = 'state';
      }
    } else if (lp.mode === 'dhcp') {
      seed = seedFor(lp, s.get(lp.key), now);
      from = 'state (unexpired leases)';
    } else if (s.has(lp.key)) drop.add(lp.key);
    if (seed) {
      seeds.set(lp.key, seed);
      notes.push(`${lp.port.tap} (${lp.port.mac}, ${lp.mode}) seeded from ${from}: ${seed.addresses.map((a) => a.ip).join(', ')}`);
    }
  }
  // the seeds are recorded at once (an incoming VM's addresses survive a reboot of this host before reconcile reads the kernel)
  const kept = state.filter((e) => !drop.has(learnKey(e.owner.uuid, e.mac)) && !seeds.has(learnKey(e.owner.uuid, e.mac)));
  return { seeds, state: [...kept, ...seeds.values()], notes };
}

/**
 * learned.json updated with what the kernel holds now: a kernel entry
 * replaces the state's for its key (the owner name too); the other entries
 * (ports not running here: stopped, migrated away, not yet restored) stay
 * with their expired leases dropped.
 */
export function recordKernel(state: readonly LearnedEntry[], kernel: readonly LearnedEntry[], now = Date.now()): LearnedEntry[] {
  const out = byKey(state.flatMap((e) => liveEntry(e, now) ?? []));
  for (const e of kernel) {
    const live = liveEntry(e, now);
    const key = learnKey(e.owner.uuid, e.mac);
    if (live) out.set(key, { ...live, owner: { ...e.owner, uuid: e.owner.uuid.toLowerCase() }, mac: e.mac.toLowerCase() });
  }
  return [...out.values()];
}

/** Whether two entry lists say the same (addresses, modes, expiries; not the sources). */
export function sameLearned(a: readonly LearnedEntry[], b: readonly LearnedEntry[]): boolean {
  const norm = (l: readonly LearnedEntry[]): string =>
    JSON.stringify(
      [...l]
        .map((e) => [learnKey(e.owner.uuid, e.mac), e.owner.name, e.mode, e.addresses.map((x) => [x.ip, x.since ?? '', x.expires ?? '', x.server ?? '']).sort()] as const)
        .sort((x, y) => cmp(x[0], y[0])),
    );
  return norm(a) === norm(b);
}

/**
 * The entries of `domain` (its name or UUID), of one MAC when given,
 * removed: `nwf-fast forget DOMAIN [MAC]`, for an operator who changed a
 * VM's address by hand.
 */
export function forgetEntries(state: readonly LearnedEntry[], domain: string, mac?: string): { state: LearnedEntry[]; removed: LearnedEntry[] } {
  const d = domain.toLowerCase();
  const m = mac?.toLowerCase();
  const hit = (e: LearnedEntry): boolean => (e.owner.name === domain || e.owner.uuid.toLowerCase() === d) && (m === undefined || e.mac === m);
  return { state: state.filter((e) => !hit(e)), removed: state.filter(hit) };
}
