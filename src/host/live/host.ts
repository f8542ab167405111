// The live host's state changes, shared by the libvirt hook, reconcile,
// takeover and handback. Every method expects the caller to hold the state
// lock (LiveHost.locked). The order of each change keeps a port protected at
// every instant: libvirt's dispatch is put back BEFORE nwf-fast drops a port,
// and removed only AFTER nwf-fast's rules for the port are verified in force.
import type { CommandRunner } from '../runner.js';
import { ifIndex, withNetns } from '../netns.js';
import type { HostConfig } from '../config.js';
import { withLock, type LockInfo } from '../lock.js';
import { applyDesiredPorts, portError, portFailures, tapsInForce, type ApplyOptions, type ApplyResult } from './apply.js';
import { readPorts, replaceDomainPorts, resyncCandidates, resyncPorts, writePorts, type DesiredPort } from './ports.js';
import { handBack, libvirtDispatchOf, takeOver, type HandbackResult, type TakeoverResult } from './takeover.js';
import type { Observation } from './observe.js';
import type { LiveDomain } from '../../xml/live-domain.js';
import { portsOfDomain, tapsOfDomain } from './observe.js';
import type { PortSource } from './ports.js';

const LEARNED = 'learned.json';
import { CODES, NwfError } from '../../util/errors.js';
import { appendAll } from '../../util/arrays.js';
import type { LearnedEntry } from '../../ir/learning.js';
import { copyBpfLearnedToNft, readLearnedFromKernel } from '../learn/kernel.js';
import { noteIncoming, takeIncoming } from '../learn/incoming.js';
import { readLearned, recordKernel, sameLearned, seedsForChange, seedsForStart, writeLearned, type StartSeeds } from '../learn/store.js';
import { learnedOfDomain } from './learned.js';

export interface LiveOptions {
  config: HostConfig;
  /** Network namespace to act in (tests); default: the caller's. */
  netns?: string;
  runner?: CommandRunner;
  /** libnftables in-process (default) or the nft program. */
  inProcess: boolean;
  /** Filter directories over the bundled ones (default /etc/libvirt/nwfilter). */
  filterDirs?: readonly string[];
}

export interface ChangeResult {
  /** Ports added, removed (by tap). */
  added: string[];
  removed: string[];
  /** The load, when the desired state changed. */
  apply?: ApplyResult;
  /** Taps whose libvirt dispatch was removed. */
  takeover?: TakeoverResult;
  handback?: HandbackResult;
  /** Problems that did not stop the change (ports skipped, a failed takeover). */
  warnings: string[];
  /** Learning ports seeded with learned addresses, one line each. */
  seeded?: string[];
}

/** One line saying what a change did (for hook.log and reconcile's log); '' when nothing happened. */
export function describeChange(r: ChangeResult): string {
  const parts: string[] = [];
  if (r.added.length) parts.push(`added ${r.added.join(',')}`);
  if (r.removed.length) parts.push(`removed ${r.removed.join(',')}`);
  if (r.apply) parts.push(`${r.apply.ports ? `ports changed (+${r.apply.ports.added.length} -${r.apply.ports.removed.length}), loaded ${r.apply.id}` : `generation ${r.apply.id}`}${r.apply.incremental ? ' (incremental)' : ''} compile ${r.apply.ms.compile.toFixed(1)} ms load ${r.apply.ms.load.toFixed(1)} ms`);
  if (r.takeover?.taken.length) parts.push(`took over ${r.takeover.taken.join(',')}`);
  if (r.handback?.restored.size) parts.push(`handed back ${[...r.handback.restored.keys()].join(',')}`);
  if (r.seeded?.length) parts.push(`seeded ${r.seeded.join('; ')}`);
  return parts.join('; ');
}

export class LiveHost {
  constructor(readonly opts: LiveOptions) {}

  get config(): HostConfig {
    return this.opts.config;
  }

  get applyOptions(): ApplyOptions {
    const c = this.opts.config;
    return {
      stateDir: c.stateDir,
      pinDir: c.pinDir,
      backend: c.backend,
      keepGenerations: c.keepGenerations,
      dhcpKernelLease: c.dhcpKernelLeaseS,
      inProcess: this.opts.inProcess,
      ...(c.bpfHook ? { bpfHook: c.bpfHook } : {}),
      allowEmpty: true,
      ...(this.opts.netns ? { netns: this.opts.netns } : {}),
      ...(this.opts.runner ? { runner: this.opts.runner } : {}),
      ...(this.opts.filterDirs ? { filterDirs: this.opts.filterDirs } : {}),
    };
  }

  private get xt(): { netns?: string; runner?: CommandRunner } {
    return { ...(this.opts.netns ? { netns: this.opts.netns } : {}), ...(this.opts.runner ? { runner: this.opts.runner } : {}) };
  }

  /** Runs fn under the state lock (waiting at most lock_timeout). */
  locked<T>(command: string, fn: (info: LockInfo) => Promise<T>): Promise<T> {
    return withLock(this.config.stateDir, { timeoutS: this.config.lockTimeoutS, command }, fn);
  }

  ports(): DesiredPort[] {
    return readPorts(this.config.stateDir);
  }

  /**
   * Moves the desired state from `current` to `next`: libvirt's dispatch back
   * for the ports that go or change owner, then the load, then the record.
   */
  private async change(current: readonly DesiredPort[], next: readonly DesiredPort[], res: ChangeResult, opts: { allowEmpty?: boolean; force?: boolean; partial?: boolean; start?: { uuid: string; seeds: StartSeeds } } = {}): Promise<void> {
    const kept = new Set(next);
    const gone = current.filter((p) => !kept.has(p));
    const byTap = new Map(next.map((p) => [p.tap, p]));
    // a port that goes, or whose tap now belongs to another domain: libvirt's own rules first
    const giveBack = gone.filter((p) => byTap.get(p.tap)?.owner.uuid !== p.owner.uuid).map((p) => p.tap);
    appendAll(res.removed, gone.filter((p) => !byTap.has(p.tap)).map((p) => p.tap));
    appendAll(res.added, next.filter((p) => !current.includes(p)).map((p) => p.tap));
    if (!opts.force && !gone.length && next.length === current.length) return;
    if (giveBack.length) res.handback = await handBack(this.config.stateDir, giveBack, this.xt);
    const seeds = await this.seeds(next, res, opts.start);
    res.apply = await applyDesiredPorts(next, { ...this.applyOptions, allowEmpty: opts.allowEmpty ?? true, seeds, ...(opts.partial ? { partial: true } : {}) });
    writePorts(this.config.stateDir, next);
  }

  /** The kernel's learned state, or undefined (with a warning) when it cannot be read. */
  async kernelLearned(res?: Pick<ChangeResult, 'warnings'>): Promise<LearnedEntry[] | undefined> {
    try {
      return await readLearnedFromKernel({ stateDir: this.config.stateDir, pinDir: this.config.pinDir, ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
    } catch (e) {
      res?.warnings.push(`learned addresses: the kernel's state could not be read (${e instanceof Error ? e.message : String(e)}); seeds come from ${LEARNED}`);
      return undefined;
    }
  }

  /**
   * Seeds for a load of `next` (design 4.3): the kernel's learned state where
   * it has a port, else learned.json; for a starting domain, its start seeds
   * (metadata when incoming, else dhcp leases) instead.
   */
  private async seeds(next: readonly DesiredPort[], res: ChangeResult, start?: { uuid: string; seeds: StartSeeds }): Promise<Map<string, LearnedEntry>> {
    const kernel = (await this.kernelLearned(res)) ?? [];
    if (start?.seeds.notes.length) appendAll((res.seeded ??= []), start.seeds.notes);
    return seedsForChange(next, kernel, readLearned(this.config.stateDir), start);
  }

  /**
   * Under `both` the eBPF programs are the only learner: copies what they
   * learned into nft's learned-state sets, so the nft line (its L3 rules
   * included) treats the port as locked too. The caller holds the lock.
   */
  async copyLearnedToNft(): Promise<string[]> {
    if (this.applyOptions.backend !== 'both') return [];
    return copyBpfLearnedToNft({ stateDir: this.config.stateDir, pinDir: this.config.pinDir, ...(this.opts.netns ? { netns: this.opts.netns } : {}) });
  }

  /** learned.json brought up to date with the kernel's state (when it can be read). Returns whether it changed. */
  async saveLearned(res?: Pick<ChangeResult, 'warnings'>): Promise<boolean> {
    const kernel = await this.kernelLearned(res);
    if (!kernel) return false;
    const state = readLearned(this.config.stateDir);
    const next = recordKernel(state, kernel);
    if (sameLearned(next, state)) return false;
    writeLearned(this.config.stateDir, next);
    return true;
  }

  /** A domain announced by `migrate begin` / `restore begin`: its next start seeds from its metadata. */
  noteIncoming(d: Pick<LiveDomain, 'name' | 'uuid'>, op: string): void {
    noteIncoming(this.config.stateDir, d.uuid, d.name, op);
  }

  /**
   * Reloads the desired state in full when nwf-fast's rules for one of its
   * (existing) taps are not in force in the kernel: drift (a flushed ruleset,
   * a reboot without the restore unit), repaired here rather than left to
   * the next change.
   */
  private async repair(ports: readonly DesiredPort[], res: ChangeResult): Promise<void> {
    const taps = await this.existing(ports.map((p) => p.tap));
    const inForce = await tapsInForce(taps, this.applyOptions);
    const missing = taps.filter((t) => !inForce.has(t));
    if (!missing.length) return;
    res.warnings.push(`nwf-fast's rules were not in force for ${missing.join(', ')}: reloaded the desired state`);
    res.apply = await applyDesiredPorts(ports, { ...this.applyOptions, full: true, seeds: await this.seeds(ports, res) });
  }

  /** Those of `taps` that exist in the namespace (the nft backend's rules match by name: every tap counts there). */
  private async existing(taps: readonly string[]): Promise<string[]> {
    if (this.config.backend === 'nft') return [...taps];
    const check = (): string[] =>
      taps.filter((t) => {
        try {
          return ifIndex(t) > 0;
        } catch {
          return false;
        }
      });
    return this.opts.netns ? withNetns(this.opts.netns, check) : check();
  }

  /**
   * Removes libvirt's dispatch for those of `taps` that nwf-fast's rules
   * protect in the kernel now (verified here, just before). Takeover mode
   * only, unless forced. Never throws: a failure leaves both in force.
   */
  async takeoverCheck(taps: readonly string[], res: Pick<ChangeResult, 'takeover' | 'warnings'>, force = false): Promise<void> {
    if (this.config.mode !== 'takeover' && !force) return;
    try {
      const inForce = await tapsInForce(taps, this.applyOptions);
      const missing = taps.filter((t) => !inForce.has(t));
      if (missing.length) res.warnings.push(`not taken over (nwf-fast's rules not verified in force): ${missing.join(', ')}`);
      res.takeover = await takeOver(this.config.stateDir, [...inForce], this.xt);
    } catch (e) {
      res.warnings.push(`takeover failed, libvirt's rules stay in force next to nwf-fast's: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /**
   * A domain that starts (or is resynced by the hook): its ports replace
   * whatever the desired state had for its UUID or its taps. Throws when its
   * ports cannot be protected (nothing changed then).
   */
  async protectDomain(d: LiveDomain, source: PortSource, opts: { start?: boolean } = {}): Promise<ChangeResult> {
    const res: ChangeResult = { added: [], removed: [], warnings: [] };
    const ports = portsOfDomain(d, source);
    const current = this.ports();
    const ch = replaceDomainPorts(current, d.uuid, tapsOfDomain(d), ports);
    let start: { uuid: string; seeds: StartSeeds } | undefined;
    if (opts.start) {
      // a start: seeds from the XML's metadata when migrate/restore begin announced it, else a fresh boot
      const incoming = takeIncoming(this.config.stateDir, d.uuid) !== undefined;
      start = { uuid: d.uuid, seeds: seedsForStart(ports, learnedOfDomain(d), readLearned(this.config.stateDir), incoming) };
    }
    await this.change(current, ch.ports, res, { force: start !== undefined && start.seeds.seeds.size > 0, ...(start ? { start } : {}) });
    // a fresh boot drops the domain's old `any` addresses (they were kept for a restore or a migration back)
    if (start && !sameLearned(start.seeds.state, readLearned(this.config.stateDir))) writeLearned(this.config.stateDir, start.seeds.state);
    await this.repair(ch.ports, res);
    const taps = ports.map((p) => p.tap);
    const inForce = await tapsInForce(taps, this.applyOptions);
    const missing = taps.filter((t) => !inForce.has(t));
    if (missing.length) {
      throw new NwfError(CODES.LOAD_FAILED, `domain ${d.name}: nwf-fast's rules are not in force for ${missing.join(', ')} after the load`, { hint: 'nwf-fast status shows the loaded generation' });
    }
    await this.takeoverCheck(taps, res);
    return res;
  }

  /** A domain that stopped: its ports (by UUID, and any port on one of its taps) go. */
  async releaseDomain(uuid: string, taps: readonly string[]): Promise<ChangeResult> {
    const res: ChangeResult = { added: [], removed: [], warnings: [] };
    // the departing ports' learned state first: a restore or an incoming migration may want it back
    await this.saveLearned(res);
    const current = this.ports();
    await this.change(current, replaceDomainPorts(current, uuid, taps, []).ports, res);
    return res;
  }

  /**
   * Brings the desired state to what libvirt runs (an observation made
   * before the lock was taken): entries changed after the observation
   * started are left alone (a hook was faster), ports whose policy does not
   * compile are skipped with a warning (an existing one keeps its last good
   * policy). Then takes over the taps whose libvirt dispatch is there.
   * `partial` (load): such ports are loaded failing closed instead (dropped,
   * with their error: ChangeResult.apply.failed), every other one protected.
   */
  async resync(obs: Observation, opts: { strict?: boolean; partial?: boolean; allowEmpty?: boolean; force?: boolean } = {}): Promise<ChangeResult> {
    const res: ChangeResult = { added: [], removed: [], warnings: [...obs.problems] };
    const current = this.ports();
    const candidates = resyncCandidates(current, obs);
    const failures = opts.partial ? [] : portFailures(candidates, this.applyOptions);
    if (opts.strict && failures.length) throw portError(failures);
    for (const f of failures) res.warnings.push(`port ${f.port.tap} of domain ${f.port.owner.name} skipped: ${f.error.format()}`);
    const next = resyncPorts(current, obs, new Set(failures.map((f) => f.port)));
    await this.change(current, next, res, opts);
    if (!res.apply) await this.repair(next, res);
    await this.takeoverCheck(
      next.map((p) => p.tap),
      res,
    );
    return res;
  }

  /** Takes over every protected tap now (the `takeover` command: also in native mode). */
  async takeoverAll(): Promise<ChangeResult> {
    const res: ChangeResult = { added: [], removed: [], warnings: [] };
    await this.takeoverCheck(
      this.ports().map((p) => p.tap),
      res,
      true,
    );
    return res;
  }

  /** Puts libvirt's dispatch back for every tap nwf-fast took over. */
  async handbackAll(): Promise<HandbackResult> {
    return handBack(this.config.stateDir, 'all', this.xt);
  }

  /** For each tap, whether libvirt's dispatch is in the kernel now. */
  async libvirtDispatch(taps: readonly string[]): Promise<Set<string>> {
    return new Set((await libvirtDispatchOf(taps, this.xt)).keys());
  }
}
