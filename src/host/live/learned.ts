// Learned addresses and the live domain XML (design ip-learning.md 4.4):
// reconcile keeps each running domain's <nwf:learned> entries in step with
// the learned state, with `virsh metadata DOMAIN --uri NS --key nwf --set XML
// --live`, so that a live migration carries them to the destination, whose
// `start begin` hook seeds the ports from them before the VM resumes.
//
// `--set` replaces the whole nwf:filters element: the native mode's
// <nwf:interface> entries are read back first and written with the learned
// ones. libvirt is asked without the state lock (a hook waiting for the lock
// while libvirt holds the domain would deadlock a reconcile that holds it).
import type { LearnedEntry } from '../../ir/learning.js';
import { learnKey } from '../../ir/learning.js';
import { NWF_METADATA_NS, NWF_METADATA_PREFIX, parseNwfMetadata, type LiveDomain, type NwfMetadata } from '../../xml/live-domain.js';
import { learnedElementsText, MAX_LEASES, type LearnedMetadata } from '../../xml/learned-metadata.js';
import { parseXmlDocument } from '../../xml/xml.js';
import { filterRefText } from './adopt.js';
import { learningPorts, readLearned, liveEntry } from '../learn/store.js';
import type { DesiredPort } from './ports.js';
import type { VirshClient } from './observe.js';

/** The <nwf:learned> entries of a domain XML as learned entries of the domain (source 'metadata'). */
export function learnedOfDomain(d: Pick<LiveDomain, 'name' | 'uuid' | 'learned'>): LearnedEntry[] {
  return [...(d.learned?.values() ?? [])].map((m) => ({ owner: { name: d.name, uuid: d.uuid }, mac: m.mac, mode: m.mode, addresses: m.addresses.map((a) => ({ ...a, source: 'metadata' as const })) }));
}

/**
 * What a running domain's metadata should say: the live learned entries of
 * its learning ports (by owner UUID and MAC, in the port's mode), sorted by
 * MAC; a dhcp port's leases the MAX_LEASES that end last.
 */
export function desiredLearned(ports: readonly DesiredPort[], uuid: string, state: readonly LearnedEntry[], now = Date.now()): LearnedMetadata[] {
  const byKey = new Map(state.map((e) => [learnKey(e.owner.uuid, e.mac), e]));
  const out: LearnedMetadata[] = [];
  for (const lp of learningPorts(ports.filter((p) => p.owner.uuid === uuid))) {
    const e = byKey.get(lp.key);
    const live = e && e.mode === lp.mode ? liveEntry(e, now) : undefined;
    if (!live) continue;
    const addresses = lp.mode === 'dhcp' ? [...live.addresses].sort((a, b) => Date.parse(b.expires ?? '') - Date.parse(a.expires ?? '')).slice(0, MAX_LEASES) : live.addresses.slice(0, 1);
    out.push({ mac: lp.port.mac, mode: lp.mode, addresses });
  }
  return out.sort((a, b) => (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0));
}

/** nwf-fast's metadata as `virsh metadata --uri NS` prints it (`<filters>…</filters>`, children in no namespace). */
export function parseVirshMetadata(text: string, file: string): NwfMetadata {
  if (!text.trim()) return { refs: new Map(), learned: new Map() };
  // the element printed is in nwf-fast's namespace, as a default namespace on a wrapper says
  const doc = parseXmlDocument(`<metadata xmlns='${NWF_METADATA_NS}'>${text.trim()}</metadata>`, file);
  return parseNwfMetadata(doc);
}

/**
 * The element for `virsh metadata --set`: the native-mode entries kept as
 * they are, the learned entries replaced; undefined when nothing is left
 * (the element is then removed).
 */
export function mergedMetadataText(current: NwfMetadata, learned: readonly LearnedMetadata[]): string | undefined {
  const refs = [...current.refs].map(([mac, ref]) => `<interface mac='${mac}'>${filterRefText(ref, '').map((l) => l.trim()).join('')}</interface>`);
  const l = learnedElementsText(learned);
  if (!refs.length && !l) return undefined;
  return `<filters>${refs.join('')}${l}</filters>`;
}

/** The learned entries' text, for comparing what a domain's metadata says with what it should say. */
const learnedKey = (l: readonly LearnedMetadata[]): string => learnedElementsText([...l].sort((a, b) => (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0)));

/** libvirt says the domain has no element of nwf-fast's namespace. */
const NO_METADATA = /metadata not found|not present/i;
/** libvirt is busy with the domain (a migration job, a hook running): try again at the next poll. */
const BUSY = /another job|job .*(is active|running)|timeout|cannot acquire state change lock|is being migrated/i;

export interface MetadataSync {
  /** What was last written to (or read from) each domain's metadata, by UUID: unchanged learned state writes nothing. */
  written: Map<string, string>;
  /** When each domain was last written (epoch ms): at most one write per domain per minIntervalMs. */
  lastWrite: Map<string, number>;
}

export const newMetadataSync = (): MetadataSync => ({ written: new Map(), lastWrite: new Map() });

/**
 * What a full look at libvirt saw in each domain's metadata: the next sync
 * compares with that, so metadata changed behind reconcile's back (another
 * `virsh metadata --set`, `adopt --apply`) is written again.
 */
export function noteObserved(sync: MetadataSync, domains: readonly { uuid: string; learned?: readonly LearnedMetadata[] }[]): void {
  for (const d of domains) if (d.learned) sync.written.set(d.uuid, learnedKey(d.learned));
}

export interface SyncResult {
  /** Domains whose metadata was written (or cleared). */
  written: string[];
  /** Domains left for the next round (busy, rate limit), with why. */
  retry: string[];
  errors: string[];
}

/**
 * Brings each running domain's live metadata to its learned state. `ports`
 * are the desired ports (the running domains nwf-fast protects). Never
 * throws for libvirt's errors: a busy domain is retried next round.
 */
export async function syncLearnedMetadata(
  virsh: VirshClient,
  stateDir: string,
  ports: readonly DesiredPort[],
  sync: MetadataSync,
  opts: { minIntervalMs?: number; now?: number; only?: ReadonlySet<string> } = {},
): Promise<SyncResult> {
  const now = opts.now ?? Date.now();
  const minInterval = opts.minIntervalMs ?? 1000;
  const state = readLearned(stateDir);
  const res: SyncResult = { written: [], retry: [], errors: [] };
  const domains = new Map(ports.map((p) => [p.owner.uuid, p.owner.name]));
  for (const uuid of sync.written.keys()) if (!domains.has(uuid)) sync.written.delete(uuid);
  for (const [uuid, name] of domains) {
    if (opts.only && !opts.only.has(name) && !opts.only.has(uuid)) continue;
    const want = desiredLearned(ports, uuid, state, now);
    const wantKey = learnedKey(want);
    if (sync.written.get(uuid) === wantKey) continue;
    if (now - (sync.lastWrite.get(uuid) ?? Number.NEGATIVE_INFINITY) < minInterval) {
      res.retry.push(`${name}: rate limit`);
      continue;
    }
    const get = await virsh.run(['metadata', uuid, '--uri', NWF_METADATA_NS, '--live']);
    let current: NwfMetadata;
    if (get.exitCode === 0) {
      try {
        current = parseVirshMetadata(get.stdout, `virsh metadata ${name} --live`);
      } catch (e) {
        res.errors.push(`${name}: its nwf-fast metadata is unusable, left alone: ${e instanceof Error ? e.message : String(e)}`);
        continue;
      }
    } else if (NO_METADATA.test(get.stderr)) current = { refs: new Map(), learned: new Map() };
    else {
      (BUSY.test(get.stderr) ? res.retry : res.errors).push(`${name}: reading its metadata: ${get.stderr.trim()}`);
      continue;
    }
    if (learnedKey([...current.learned.values()]) === wantKey) {
      sync.written.set(uuid, wantKey);
      continue;
    }
    const text = mergedMetadataText(current, want);
    const args = text === undefined ? ['metadata', uuid, '--uri', NWF_METADATA_NS, '--remove', '--live'] : ['metadata', uuid, '--uri', NWF_METADATA_NS, '--key', NWF_METADATA_PREFIX, '--set', text, '--live'];
    sync.lastWrite.set(uuid, now);
    const set = await virsh.run(args);
    if (set.exitCode === 0) {
      sync.written.set(uuid, wantKey);
      res.written.push(name);
    } else (BUSY.test(set.stderr) ? res.retry : res.errors).push(`${name}: writing its metadata: ${set.stderr.trim()}`);
  }
  return res;
}
