// What libvirt says the host runs: the running domains' live XML and the
// nwfilter bindings, turned into the ports to protect. Only reconcile and
// adopt call libvirt (virsh); the hook never does (libvirt runs hooks while it
// holds the domain, and a hook calling back into libvirt deadlocks).
//
// Where a port's filter comes from, for each tap: nwf-fast's metadata for the
// interface's MAC (native mode), else libvirt's nwfilter binding for the tap,
// else the interface's <filterref>; with none of them the port is unfiltered
// (as libvirt leaves it: an explicit accept, not the fail-closed drop). An
// interface without <target dev> (not running) is skipped.
import { CODES, NwfError } from '../../util/errors.js';
import { libvirtDirs, readText, xmlFiles } from '../../resolve/sources.js';
import type { CommandRunner } from '../runner.js';
import { hostRunner } from '../netns.js';
import { parseLiveBinding, parseLiveDomain, type LiveDomain } from '../../xml/live-domain.js';
import { filterRefOf, UNFILTERED, type DesiredPort, type PortSource } from './ports.js';
import type { LearnedMetadata } from '../../xml/learned-metadata.js';

export interface VirshResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `virsh ARGS` against one libvirt (the URI is the client's). */
export interface VirshClient {
  run(args: readonly string[]): Promise<VirshResult>;
  /** For messages. */
  readonly uri: string;
}

export function virshClient(uri: string, runner: CommandRunner = hostRunner(), timeoutMs = 30_000): VirshClient {
  return {
    uri,
    async run(args) {
      const r = await runner.run(['virsh', '-q', '-c', uri, ...args], { check: false, timeoutMs });
      return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

async function virshOk(v: VirshClient, args: readonly string[]): Promise<string> {
  const r = await v.run(args);
  if (r.exitCode !== 0) throw new NwfError(CODES.COMMAND_FAILED, `virsh -c ${v.uri} ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** The ports of one domain: interfaces with a tap and a MAC, with their filter (metadata first, then libvirt's filterref) or unfiltered. */
export function portsOfDomain(d: LiveDomain, source: PortSource, at = new Date().toISOString()): DesiredPort[] {
  const out: DesiredPort[] = [];
  for (const i of d.interfaces) {
    if (!i.tap || !i.mac) continue;
    const ref = i.metadata ?? i.filterref;
    out.push({
      tap: i.tap,
      mac: i.mac,
      owner: { name: d.name, uuid: d.uuid },
      ...(i.bridge ? { bridge: i.bridge } : {}),
      filterref: ref ? filterRefOf(ref) : { filter: UNFILTERED, params: {} },
      origin: i.metadata ? 'metadata' : ref ? 'filterref' : 'none',
      source,
      at,
    });
  }
  return out;
}

/** Every tap (<target dev>) of a domain, protected or not. */
export function tapsOfDomain(d: LiveDomain): string[] {
  return d.interfaces.flatMap((i) => (i.tap ? [i.tap] : []));
}

export interface Observation {
  /** Epoch ms when the observation started: desired-state entries changed later are newer than it. */
  startedAt: number;
  /** Whether it covers every domain (a full resync) or only `domains`. */
  scope: 'all' | Set<string>;
  /** The running domains seen (in scope), with all their taps and the learned addresses their metadata holds (MAC order). */
  domains: { name: string; uuid: string; taps: string[]; learned?: LearnedMetadata[] }[];
  /** Ports to protect, by tap. */
  ports: DesiredPort[];
  /** What could not be read (a domain that went away meanwhile, XML nwf-fast refuses), for the log. */
  problems: string[];
}

/** Runs fn over items with at most `n` at a time. */
async function pool<T, R>(items: readonly T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T);
    }),
  );
  return out;
}

/**
 * Reads libvirt: the running domains (`virsh list --uuid`, then each one's
 * live XML) or only the named ones, and for a full observation the nwfilter
 * bindings too (a port libvirt filters whose domain XML was not seen).
 */
export async function observeLibvirt(v: VirshClient, scope: 'all' | Set<string> = 'all'): Promise<Observation> {
  const startedAt = Date.now();
  const at = new Date(startedAt).toISOString();
  const problems: string[] = [];
  const ids = scope === 'all' ? (await virshOk(v, ['list', '--uuid'])).split('\n').map((l) => l.trim()).filter(Boolean) : [...scope];
  const parsed = await pool(ids, 4, async (id) => {
    const r = await v.run(['dumpxml', id]);
    if (r.exitCode !== 0) {
      // gone since the list (or, scoped, not running): its ports go; another failure is reported
      if (!/failed to get domain|Domain not found/i.test(r.stderr)) problems.push(`domain ${id}: ${r.stderr.trim() || 'dumpxml failed'}`);
      return undefined;
    }
    try {
      return parseLiveDomain(r.stdout, `virsh dumpxml ${id}`);
    } catch (e) {
      problems.push(e instanceof NwfError ? e.format() : String(e));
      return undefined;
    }
  });
  // dumpxml answers for a defined domain that is not running: keep running ones (those with a tap or an id).
  const domains = parsed.filter((d): d is LiveDomain => d !== undefined && (scope === 'all' || d.interfaces.some((i) => i.tap !== undefined)));
  const ports = domains.flatMap((d) => portsOfDomain(d, 'reconcile', at));
  if (scope === 'all') {
    const list = await v.run(['nwfilter-binding-list']);
    if (list.exitCode === 0) {
      const seen = new Set(ports.map((p) => p.tap));
      const taps = list.stdout
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0] ?? '')
        .filter((t) => t && !seen.has(t));
      const bindings = await pool(taps, 4, async (tap) => {
        const r = await v.run(['nwfilter-binding-dumpxml', tap]);
        if (r.exitCode !== 0) return undefined;
        try {
          return parseLiveBinding(r.stdout, `virsh nwfilter-binding-dumpxml ${tap}`);
        } catch (e) {
          problems.push(e instanceof NwfError ? e.format() : String(e));
          return undefined;
        }
      });
      for (const b of bindings) {
        if (!b) continue;
        ports.push({ tap: b.tap, mac: b.mac, owner: b.owner, filterref: filterRefOf(b.filterref), origin: 'filterref', source: 'reconcile', at });
      }
    } else problems.push(`nwfilter bindings: ${list.stderr.trim()}`);
  }
  return { startedAt, scope, domains: domains.map((d) => ({ name: d.name, uuid: d.uuid, taps: tapsOfDomain(d), learned: [...(d.learned?.values() ?? [])] })), ports, problems };
}

/**
 * The same observation from libvirt's run-time files instead of the daemon
 * (`load` without DIR): the domain status files of the running domains
 * (/run/libvirt/qemu/*.xml) and the nwfilter binding status files
 * (/run/libvirt/nwfilter-binding/*.xml). As `--libvirt` does, it refuses a
 * machine where neither directory exists (NWF1210) unless allowEmpty. A file
 * nwf-fast refuses is a problem reported, like in observeLibvirt.
 */
export function observeRunDir(opts: { root?: string; allowEmpty?: boolean } = {}): Observation & { notes: string[] } {
  const startedAt = Date.now();
  const at = new Date(startedAt).toISOString();
  const problems: string[] = [];
  const notes: string[] = [];
  const dirs = libvirtDirs(opts.root ?? '', opts.allowEmpty === true, notes);
  const read = <T>(dir: string | undefined, parse: (text: string, file: string) => T): T[] => {
    if (!dir) return [];
    return xmlFiles(dir).flatMap((f) => {
      try {
        return [parse(readText(f), f)];
      } catch (e) {
        problems.push(e instanceof NwfError ? e.format() : `${f}: ${String(e)}`);
        return [];
      }
    });
  };
  const domains = read(dirs.domains, parseLiveDomain);
  const ports = domains.flatMap((d) => portsOfDomain(d, 'load', at));
  const seen = new Set(ports.map((p) => p.tap));
  for (const b of read(dirs.bindings, parseLiveBinding)) {
    if (seen.has(b.tap)) continue;
    seen.add(b.tap);
    ports.push({ tap: b.tap, mac: b.mac, owner: b.owner, filterref: filterRefOf(b.filterref), origin: 'filterref', source: 'load', at });
  }
  return { startedAt, scope: 'all', domains: domains.map((d) => ({ name: d.name, uuid: d.uuid, taps: tapsOfDomain(d) })), ports, problems, notes };
}
