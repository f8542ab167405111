// Real libvirt as the baseline: a private libvirtd (src/lab/libvirt.ts) in
// the benchmark host's namespace protects vnet0..vnet{K-1} with clean-traffic
// through the filter binding API (virsh nwfilter-binding-create), one binding
// at a time, as libvirt does when VMs start. libvirt's rules are captured
// (ebtables-save) as the template for the data-plane runs. Since each binding
// runs ebtables ~130 times and ebtables-nft reads the whole table each time,
// a binding gets slower as ports accumulate; instead of creating 1000
// bindings, the table is filled with libvirt's own rules for more ports
// (ebtables-restore --noflush of the captured rules) up to ~100 and ~1000
// ports, and a few real bindings are timed on top of each. The time to
// protect N > K interfaces is then estimated from a linear fit of the
// per-binding time against the ports already present (labelled estimated).
// Then, on the ~1000-port host, vm0's IP is changed the only way libvirt can
// (binding delete + create; the port is unfiltered in between), timed, and
// again under a spoofed flood that counts the frames that got through.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Libvirtd, libvirtAvailable, DEFAULT_LOCK_FILE } from '../../src/lab/libvirt.js';
import { replicateRange, saveTemplate, templateFromSave, type EbtablesTemplate } from './ebtables.js';
import { createBenchHost, flood, startFlood, trafgenConfig, writeTrafgenConfigs } from './host.js';
import { ALT_IP, bindingXml, portIp } from './policy.js';
import { cmd, forkCount, inNs, log, onCleanup, sleep, stat, type Stat } from './util.js';

export interface LibvirtBinding {
  /** Ports with rules already present when the binding was created. */
  index: number;
  /** True for bindings on top of synthetic ports (libvirt's rules replicated with ebtables-restore). */
  onFill?: boolean;
  ms: number;
  /** Processes started machine-wide during the call (fork counter delta), minus the virsh we started. */
  forks: number;
}

export interface LibvirtResult {
  available: boolean;
  reason?: string;
  version?: string;
  startMs?: number;
  /** Consecutive real bindings from an empty host (vnet0..vnet{K-1}): the measured range of "time to protect N". */
  bindings: LibvirtBinding[];
  /** Real bindings timed on top of ~100 and ~1000 ports' rules. */
  samples: LibvirtBinding[];
  /** Per-binding time model fitted on all timed bindings: ms(i) = a + b * i (i = ports already present). */
  fit?: { a: number; b: number };
  /** Ports present during the IP-change measurement. */
  changePorts?: number;
  forksPerBinding?: Stat;
  change?: {
    changes: number;
    deleteMs: Stat;
    createMs: Stat;
    totalMs: Stat;
    /** Processes started per change (delete + create). */
    forks: Stat;
    /** From the end of the delete to the end of the create: the port has no rules (a lower bound of the unfiltered window). */
    unfilteredMs: Stat;
    leak: LeakResult;
  };
  waitedMs: number;
}

export interface LeakResult {
  /** IP changes made while the flood ran. */
  changes: number;
  /** Spoofed frames sent (source IP is no VM's, old or new) and how many reached the peer. */
  sent: number;
  leaked: number;
  /** Other frames the peer received meanwhile (not the flood's). */
  otherArrived?: number;
  /** After the last change: frames from the new IP delivered, frames from the old IP delivered (of `probe` each). */
  probe?: number;
  newIpDelivered?: number;
  oldIpDelivered?: number;
}

function libvirtdRunning(): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'libvirtd') pids.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return pids;
}

/** Waits (bounded) until no libvirtd runs on the machine and nobody holds the lock. */
async function waitForNoLibvirtd(maxWaitMs: number): Promise<{ ok: boolean; waitedMs: number; reason?: string }> {
  const t0 = performance.now();
  let announced = false;
  for (;;) {
    const pids = libvirtdRunning();
    const locked = existsSync(DEFAULT_LOCK_FILE);
    if (!pids.length && !locked) return { ok: true, waitedMs: performance.now() - t0 };
    const waited = performance.now() - t0;
    const why = `another libvirtd is running (pids ${pids.join(', ') || 'none'}${locked ? `, lock ${DEFAULT_LOCK_FILE} held` : ''})`;
    if (waited >= maxWaitMs) return { ok: false, waitedMs: waited, reason: `${why}; waited ${(waited / 1000).toFixed(0)} s` };
    if (!announced) log(`libvirt: ${why}; waiting up to ${(maxWaitMs / 1000).toFixed(0)} s`);
    announced = true;
    await sleep(Math.min(2_000, maxWaitMs - waited + 10));
  }
}

/**
 * Starts the benchmark's private libvirtd in `netns` once no other libvirtd
 * runs (waiting at most maxWaitMs from `since`); a lost race for the lock goes
 * back to waiting. Without a daemon, the reason. With `alongside`, when others
 * still run after the wait, starts anyway (src/lab/libvirt.ts keeps private
 * daemons apart by namespace) and says so in `alongside`.
 */
export async function startPrivateLibvirtd(netns: string, maxWaitMs: number, since = performance.now(), opts: { alongside?: boolean } = {}): Promise<{ lv?: Libvirtd; waitedMs: number; reason?: string; alongside?: string }> {
  for (;;) {
    const left = maxWaitMs - (performance.now() - since);
    const w = await waitForNoLibvirtd(Math.max(0, left));
    const waitedMs = performance.now() - since;
    if (!w.ok && opts.alongside) {
      log(`libvirt: ${w.reason}; starting ours alongside (its own namespace and lock)`);
      return { lv: await Libvirtd.start({ netns, startTimeoutMs: 60_000, commandTimeoutMs: 120_000 }), waitedMs, alongside: w.reason ?? 'other libvirtd running' };
    }
    if (!w.ok) return { waitedMs, reason: w.reason ?? 'busy' };
    try {
      return { lv: await Libvirtd.start({ netns, startTimeoutMs: 60_000, commandTimeoutMs: 120_000 }), waitedMs };
    } catch (e) {
      if (!/another private libvirtd is running/.test((e as Error).message) || performance.now() - since > maxWaitMs) throw e;
      log('libvirt: lost the race for the libvirtd lock; waiting again');
    }
  }
}

/** Least squares fit y = a + b x. */
export function linearFit(xs: readonly number[], ys: readonly number[]): { a: number; b: number } {
  const n = xs.length;
  if (n === 0) return { a: Number.NaN, b: 0 };
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    sxx += ((xs[i] as number) - mx) ** 2;
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  return { a: my - b * mx, b };
}

/**
 * Time to protect n interfaces: the measured cumulative sum when n <= the
 * consecutive bindings measured, else measured + the fitted per-binding time
 * of the remaining ones (estimated).
 */
export function libvirtProtectMs(r: LibvirtResult, n: number): { ms: number; extrapolated: boolean } | undefined {
  if (!r.bindings.length) return undefined;
  const k = r.bindings.length;
  const measured = r.bindings.slice(0, Math.min(n, k)).reduce((s, b) => s + b.ms, 0);
  if (n <= k) return { ms: measured, extrapolated: false };
  if (!r.fit) return undefined;
  const { a, b } = r.fit;
  // sum over i = k..n-1 of a + b i
  const rest = (n - k) * a + (b * (n * (n - 1) - k * (k - 1))) / 2;
  return { ms: measured + rest, extrapolated: true };
}

export interface LibvirtPhaseOptions {
  workDir: string;
  /** Bindings created with real libvirt (the measured range). */
  bindings: number;
  /** IP changes timed, and changes made during the leak flood. */
  changes: number;
  leakChanges: number;
  maxWaitMs: number;
  templateFile: string;
  /** Fill the table up to these port counts and time `samplesPerFill` real bindings on top of each. */
  fillTo: number[];
  samplesPerFill: number;
}

export async function libvirtPhase(opts: LibvirtPhaseOptions): Promise<{ result: LibvirtResult; template?: EbtablesTemplate }> {
  const avail = libvirtAvailable();
  if (!avail.ok) return { result: { available: false, reason: avail.reason ?? 'unavailable', bindings: [], samples: [], waitedMs: 0 } };
  const tw = performance.now();
  const top = Math.max(opts.bindings, ...opts.fillTo.map((m) => m + opts.samplesPerFill));
  const host = await createBenchHost(top, join(opts.workDir, 'libvirt'));
  let lv: Libvirtd | undefined;
  const stopLv = onCleanup('libvirtd', async () => {
    await lv?.stop();
  });
  let waitedMs = 0;
  try {
    const started = await startPrivateLibvirtd(host.hostNs, opts.maxWaitMs, tw);
    waitedMs = started.waitedMs;
    if (!started.lv) return { result: { available: false, reason: started.reason ?? 'busy', bindings: [], samples: [], waitedMs } };
    lv = started.lv;
    const version = /(\d+\.\d+\.\d+)/.exec((await cmd(['/usr/sbin/libvirtd', '--version'], { check: false })).stdout)?.[1];
    log(`libvirt: libvirtd ${lv.pid} up in ${lv.startMs.toFixed(0)} ms in ${host.hostNs}`);
    const bindings: LibvirtBinding[] = [];
    for (let i = 0; i < opts.bindings; i++) {
      const f0 = forkCount();
      const ms = await lv.createBinding(bindingXml(i));
      bindings.push({ index: i, ms, forks: Math.max(0, forkCount() - f0 - 1) });
      if (i === 0 || (i + 1) % 10 === 0) log(`libvirt: binding ${i + 1}/${opts.bindings}: ${ms.toFixed(0)} ms, ${bindings[i]?.forks} processes`);
    }
    const saved = await lv.ebtablesSave();
    const template = templateFromSave(saved, `libvirt ${version ?? ''} nwfilter-binding-create clean-traffic (captured by this run)`.replace(/\s+/g, ' '));
    saveTemplate(opts.templateFile, template);

    // Fill up with libvirt's own rules for more ports, time real bindings on top.
    const samples: LibvirtBinding[] = [];
    let present = opts.bindings;
    for (const m of opts.fillTo) {
      if (m > present) {
        const text = replicateRange(template, present, m);
        await inNs(host.hostNs, ['ebtables-restore', '--noflush'], { input: text, timeoutMs: 600_000 });
        present = m;
      }
      for (let k = 0; k < opts.samplesPerFill; k++) {
        const f0 = forkCount();
        const ms = await lv.createBinding(bindingXml(present));
        samples.push({ index: present, ms, forks: Math.max(0, forkCount() - f0 - 1), onFill: true });
        log(`libvirt: binding with ${present} ports present: ${ms.toFixed(0)} ms, ${samples[samples.length - 1]?.forks} processes`);
        present++;
      }
    }
    const all = [...bindings, ...samples];
    const fit = linearFit(
      all.map((b) => b.index),
      all.map((b) => b.ms),
    );

    // IP change: delete + create (the port has no rules in between).
    const del: number[] = [];
    const cre: number[] = [];
    const forks: number[] = [];
    for (let c = 0; c < opts.changes; c++) {
      const ip = c % 2 === 0 ? ALT_IP : portIp(0);
      const f0 = forkCount();
      del.push(await lv.deleteBinding('vnet0'));
      cre.push(await lv.createBinding(bindingXml(0, ip)));
      forks.push(Math.max(0, forkCount() - f0 - 2));
    }
    // Leave vnet0 at its own address, then change under a spoofed flood.
    if (opts.changes % 2 === 1) {
      await lv.deleteBinding('vnet0');
      await lv.createBinding(bindingXml(0));
    }
    const cfg = writeTrafgenConfigs(host);
    const fl = await startFlood(host, cfg.spoof, 120_000 + opts.leakChanges * 60_000);
    let lastIp = portIp(0);
    let leak: LeakResult;
    try {
      await sleep(200);
      for (let c = 0; c < opts.leakChanges; c++) {
        lastIp = c % 2 === 0 ? ALT_IP : portIp(0);
        await lv.deleteBinding('vnet0');
        await lv.createBinding(bindingXml(0, lastIp));
      }
      await sleep(200);
    } finally {
      const r = await fl.stop();
      leak = { changes: opts.leakChanges, sent: r.sent, leaked: r.spoofArrived, otherArrived: r.delivered - r.spoofArrived };
    }
    leak = { ...leak, ...(await probeIps(host, lastIp, lastIp === portIp(0) ? ALT_IP : portIp(0))) };
    log(`libvirt: IP change delete ${stat(del).median.toFixed(0)} ms + create ${stat(cre).median.toFixed(0)} ms; flood: ${leak.leaked} of ${leak.sent} spoofed frames leaked during ${leak.changes} changes`);
    return {
      result: {
        available: true,
        ...(version ? { version } : {}),
        startMs: lv.startMs,
        bindings,
        samples,
        fit,
        changePorts: present,
        forksPerBinding: stat(bindings.map((b) => b.forks)),
        change: {
          changes: opts.changes,
          deleteMs: stat(del),
          createMs: stat(cre),
          totalMs: stat(del.map((d, i) => d + (cre[i] as number))),
          forks: stat(forks),
          unfilteredMs: stat(cre),
          leak,
        },
        waitedMs,
      },
      template,
    };
  } finally {
    await stopLv();
    await host.destroy();
  }
}

/** After an IP change: `probe` frames from the new IP must arrive, `probe` from the old IP must not. */
export async function probeIps(host: Awaited<ReturnType<typeof createBenchHost>>, newIp: string, oldIp: string, probe = 1000): Promise<Pick<LeakResult, 'probe' | 'newIpDelivered' | 'oldIpDelivered'>> {
  const fNew = join(host.workDir, 'probe-new.cfg');
  const fOld = join(host.workDir, 'probe-old.cfg');
  writeFileSync(fNew, trafgenConfig('valid', newIp));
  writeFileSync(fOld, trafgenConfig('valid', oldIp));
  const a = await flood(host, fNew, probe, 30_000);
  const b = await flood(host, fOld, probe, 30_000);
  return { probe, newIpDelivered: a.delivered, oldIpDelivered: b.delivered };
}
