// The desired state of a live host: the ports it must protect, persisted in
// <state_dir>/ports.json (written atomically). The libvirt hook and the
// reconciler edit it under the state lock and then apply it
// (applyDesiredPorts). Each port: its tap, MAC, owner domain {name, uuid},
// bridge when known, the filterref (filter and parameters, as the parser
// reads them), where it came from and when. An interface with no filterref
// at all (neither libvirt's nor nwf-fast's metadata) is an unfiltered port
// (origin 'none'): libvirt does not filter it either, so it gets an explicit
// accept entry in both directions (the reserved empty filter UNFILTERED)
// instead of the fail-closed skeleton's drop.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CODES, NwfError } from '../../util/errors.js';
import type { FilterDef, FilterRefNode, InterfaceBinding } from '../../xml/ast.js';
import { writeAtomic } from '../generation.js';

export const PORTS_FILE = 'ports.json';
const FORMAT = 'nwf-fast-ports/1';

export interface PortFilterRef {
  filter: string;
  /** Parameter values in document order; several values make a list. */
  params: Record<string, string[]>;
}

export type PortSource = 'hook' | 'reconcile' | 'load';

/**
 * The filter of an unfiltered port: no rules, so both directions accept. Its
 * name cannot be a user filter's (filter names are letters, digits, _ . : -).
 */
export const UNFILTERED = '(no filterref)';

/** The empty filter UNFILTERED names (added to every live host's filter library). */
export const UNFILTERED_FILTER: FilterDef = Object.freeze({ name: UNFILTERED, chain: 'root', chainPriority: 0, entries: [], loc: { file: '(nwf-fast)', path: 'filter[unfiltered]' } });

/** How status shows an unfiltered port. */
export const UNFILTERED_TEXT = 'no filterref: not filtered (as libvirt)';

export interface DesiredPort {
  tap: string;
  mac: string;
  owner: { name: string; uuid: string };
  bridge?: string;
  filterref: PortFilterRef;
  /**
   * Where the filterref was read: libvirt's <filterref> (takeover) or
   * nwf-fast's metadata (native); 'none': the interface has neither (an
   * unfiltered port, filterref UNFILTERED).
   */
  origin: 'filterref' | 'metadata' | 'none';
  source: PortSource;
  /** ISO time of the last change. */
  at: string;
}

interface PortsFile {
  format: typeof FORMAT;
  ports: DesiredPort[];
}

export function portsFile(stateDir: string): string {
  return join(stateDir, PORTS_FILE);
}

/**
 * A port's filterref from a parsed one. `MAC` is left out: it is always the
 * port's MAC (libvirt sets it, and so does the resolver, over any value
 * given), and libvirt's binding XML lists it where the domain XML does not.
 */
export function filterRefOf(node: FilterRefNode): PortFilterRef {
  return { filter: node.filter, params: Object.fromEntries([...node.params].filter(([k]) => k !== 'MAC').map(([k, v]) => [k, [...v]])) };
}

function checkPort(p: unknown, file: string, i: number): DesiredPort {
  const o = p as Partial<DesiredPort> | null;
  const ok =
    !!o &&
    typeof o.tap === 'string' &&
    typeof o.mac === 'string' &&
    typeof o.owner?.name === 'string' &&
    typeof o.owner.uuid === 'string' &&
    typeof o.filterref?.filter === 'string' &&
    !!o.filterref.params &&
    typeof o.filterref.params === 'object' &&
    Object.values(o.filterref.params).every((v) => Array.isArray(v) && v.every((x) => typeof x === 'string')) &&
    (o.origin === 'filterref' || o.origin === 'metadata' || (o.origin === 'none' && o.filterref.filter === UNFILTERED)) &&
    (o.source === 'hook' || o.source === 'reconcile' || o.source === 'load') &&
    typeof o.at === 'string';
  if (!ok) throw new NwfError(CODES.STATE_INVALID, `${file}: port ${i + 1} is malformed`, { location: { file }, hint: 'nwf-fast reconcile rebuilds the desired state from libvirt (move the file away first)' });
  return o as DesiredPort;
}

/** Whether a port is one libvirt would not filter (its interface has no filterref). */
export function isUnfiltered(p: Pick<DesiredPort, 'origin'>): boolean {
  return p.origin === 'none';
}

/** The desired ports (none when the file does not exist). */
export function readPorts(stateDir: string): DesiredPort[] {
  const file = portsFile(stateDir);
  if (!existsSync(file)) return [];
  let doc: Partial<PortsFile>;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as Partial<PortsFile>;
  } catch (e) {
    throw new NwfError(CODES.STATE_INVALID, `${file} is unreadable: ${(e as Error).message}`, { location: { file }, cause: e, hint: 'nwf-fast reconcile rebuilds the desired state from libvirt (move the file away first)' });
  }
  if (doc.format !== FORMAT || !Array.isArray(doc.ports)) throw new NwfError(CODES.STATE_INVALID, `${file} has an unknown format`, { location: { file }, expected: FORMAT });
  return doc.ports.map((p, i) => checkPort(p, file, i));
}

/** Writes the desired ports atomically, sorted by tap. */
export function writePorts(stateDir: string, ports: readonly DesiredPort[]): void {
  mkdirSync(stateDir, { recursive: true });
  const doc: PortsFile = { format: FORMAT, ports: [...ports].sort((a, b) => (a.tap < b.tap ? -1 : a.tap > b.tap ? 1 : 0)) };
  writeAtomic(portsFile(stateDir), JSON.stringify(doc, null, 1) + '\n');
}

/** A port as the compiler's interface binding. */
export function bindingOfPort(p: DesiredPort, file: string): InterfaceBinding {
  const path = `ports[tap=${p.tap}]`;
  const loc = { file, path };
  return {
    source: 'binding',
    owner: p.owner.name,
    // the owner's UUID keys the port's learned state (seeds, the kernel read back): learnKey(uuid, mac)
    ...(p.owner.uuid ? { ownerUuid: p.owner.uuid } : {}),
    iface: p.tap,
    mac: p.mac,
    filterref: { kind: 'filterref', filter: p.filterref.filter, params: new Map(Object.entries(p.filterref.params)), loc: { file, path: `${path}/filterref` } },
    loc,
  };
}

/** Whether two ports ask for the same protection (same tap, MAC, owner, filter and parameters). */
export function samePort(a: DesiredPort, b: DesiredPort): boolean {
  return a.tap === b.tap && a.mac === b.mac && a.owner.uuid === b.owner.uuid && a.owner.name === b.owner.name && a.origin === b.origin && JSON.stringify(a.filterref) === JSON.stringify(b.filterref);
}

export interface PortChange {
  ports: DesiredPort[];
  added: DesiredPort[];
  removed: DesiredPort[];
}

/**
 * The desired state after replacing a domain's ports: every port owned by
 * `uuid` and every port on one of `taps` (a tap name libvirt handed to
 * another domain) goes, then `next` comes in. Ports that stay the same keep
 * their record (source, time).
 */
export function replaceDomainPorts(current: readonly DesiredPort[], uuid: string, taps: readonly string[], next: readonly DesiredPort[]): PortChange {
  const tapSet = new Set([...taps, ...next.map((p) => p.tap)]);
  const kept = current.filter((p) => p.owner.uuid !== uuid && !tapSet.has(p.tap));
  const old = current.filter((p) => !kept.includes(p));
  const out = [...kept];
  const added: DesiredPort[] = [];
  for (const n of next) {
    const same = old.find((o) => samePort(o, n));
    out.push(same ?? n);
    if (!same) added.push(n);
  }
  const removed = old.filter((o) => !out.includes(o));
  return { ports: out, added, removed };
}

/** What a resync compares: an observation of libvirt (observe.ts) as far as the desired state needs it. */
export interface ObservedPorts {
  /** Epoch ms when the observation started. */
  startedAt: number;
  /** 'all', or the domain names it covers. */
  scope: 'all' | ReadonlySet<string>;
  ports: readonly DesiredPort[];
}

/** The observed ports, one per tap (the first wins). */
function observedByTap(obs: ObservedPorts): Map<string, DesiredPort> {
  const seen = new Map<string, DesiredPort>();
  for (const o of obs.ports) if (!seen.has(o.tap)) seen.set(o.tap, o);
  return seen;
}

const changedSince = (p: DesiredPort, t: number): boolean => Date.parse(p.at) > t;
const inScope = (p: DesiredPort, obs: ObservedPorts): boolean => obs.scope === 'all' || obs.scope.has(p.owner.name);

/** The observed ports a resync would add or change (to be checked before: their policies must compile). */
export function resyncCandidates(current: readonly DesiredPort[], obs: ObservedPorts): DesiredPort[] {
  return [...observedByTap(obs).values()].filter((o) => !current.some((p) => p.tap === o.tap && (samePort(p, o) || changedSince(p, obs.startedAt) || !inScope(p, obs))));
}

/**
 * The desired state after a resync: entries changed after the observation
 * started (a hook was faster) and entries out of its scope stay; a port
 * libvirt no longer runs goes; a changed one is replaced, unless its new
 * policy is in `bad` (then it keeps its last good policy); a new one comes in
 * unless it is in `bad`.
 */
export function resyncPorts(current: readonly DesiredPort[], obs: ObservedPorts, bad: ReadonlySet<DesiredPort>): DesiredPort[] {
  const seen = observedByTap(obs);
  const next: DesiredPort[] = [];
  for (const p of current) {
    const o = seen.get(p.tap);
    if (changedSince(p, obs.startedAt) || !inScope(p, obs) || (o && (samePort(o, p) || bad.has(o)))) next.push(p);
  }
  const taken = new Set(next.map((p) => p.tap));
  for (const o of resyncCandidates(current, obs)) if (!bad.has(o) && !taken.has(o.tap)) next.push(o);
  return next;
}
