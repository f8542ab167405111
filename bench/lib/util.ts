// Small helpers shared by the benchmark phases: statistics, logging, bounded
// commands, namespaces named so that stale ones can be found again, and the
// cleanup registry that runs on success, failure and signals.
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { destroyStale } from '../../src/lab/testbed.js';

/** Prefix of every namespace the benchmark creates (`nwfbench-<pid>-<rand>-<name>`, like the testbed's). */
export const PREFIX = 'nwfbench';

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stat(xs: readonly number[]): Stat {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN, n: 0 };
  const m = v.length >> 1;
  const median = v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2;
  return { median, min: v[0] as number, max: v[v.length - 1] as number, n: v.length };
}

const t0 = performance.now();
export function log(msg: string): void {
  const s = ((performance.now() - t0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${s}s] ${msg}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface CmdResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  ms: number;
}

/** Runs argv (never through a shell of ours), bounded by timeoutMs; throws on failure unless check is false. */
export async function cmd(argv: readonly string[], opts: { input?: string; timeoutMs?: number; check?: boolean } = {}): Promise<CmdResult> {
  const [file, ...args] = argv;
  if (!file) throw new Error('empty argv');
  const t = performance.now();
  const r = await execa(file, args, { input: opts.input, reject: false, timeout: opts.timeoutMs ?? 60_000 });
  const res = { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? 1, ms: performance.now() - t };
  if ((opts.check ?? true) && (res.exitCode !== 0 || r.failed)) {
    throw new Error(`command failed (exit ${res.exitCode}${r.timedOut ? ', timed out' : ''}): ${argv.join(' ')}\n${res.stderr.trim().slice(-2000)}`);
  }
  return res;
}

/** `ip netns exec NS argv`. */
export function inNs(ns: string, argv: readonly string[], opts: { input?: string; timeoutMs?: number; check?: boolean } = {}): Promise<CmdResult> {
  return cmd(['ip', 'netns', 'exec', ns, ...argv], opts);
}

// ---- cleanup -----------------------------------------------------------------------------

type Cleanup = { name: string; fn: () => Promise<void> | void };
const cleanups: Cleanup[] = [];
const handles = new WeakMap<() => Promise<void>, Cleanup>();

/** Unregisters an undo step without running it (the thing it undoes is already gone). */
export function dropCleanup(handle: () => Promise<void>): void {
  const c = handles.get(handle);
  const i = c ? cleanups.indexOf(c) : -1;
  if (i >= 0) cleanups.splice(i, 1);
}

/** Registers an undo step; returns a function that runs it now (once) and unregisters it. */
export function onCleanup(name: string, fn: () => Promise<void> | void): () => Promise<void> {
  const c: Cleanup = { name, fn };
  cleanups.push(c);
  const handle = async (): Promise<void> => {
    const i = cleanups.indexOf(c);
    if (i < 0) return;
    cleanups.splice(i, 1);
    await c.fn();
  };
  handles.set(handle, c);
  return handle;
}

/** Runs every registered undo step, newest first; errors are logged, not thrown. */
export async function runCleanups(): Promise<void> {
  while (cleanups.length) {
    const c = cleanups.pop() as Cleanup;
    try {
      await c.fn();
    } catch (e) {
      log(`cleanup ${c.name} failed: ${(e as Error).message}`);
    }
  }
}

// ---- namespaces ----------------------------------------------------------------------------

const RUN_ID = `${PREFIX}-${process.pid}-${randomBytes(2).toString('hex')}`;

/** A namespace name of this run (`nwfbench-<pid>-<rand>-<suffix>`), which destroyStale() recognises. */
export function nsName(suffix: string): string {
  if (!/^[a-z0-9]+$/.test(suffix)) throw new Error(`bad namespace suffix ${suffix}`);
  return `${RUN_ID}-${suffix}`;
}

/** Removes namespaces and bpffs pin directories left by earlier benchmark runs whose process is gone. */
export async function removeStale(): Promise<string[]> {
  const removed = await destroyStale(PREFIX);
  const bpffs = '/sys/fs/bpf';
  for (const d of existsSync(bpffs) ? readdirSync(bpffs) : []) {
    const pid = Number(new RegExp(`^${PREFIX}-(\\d+)$`).exec(d)?.[1] ?? Number.NaN);
    if (!Number.isInteger(pid) || pid === process.pid || existsSync(`/proc/${pid}`)) continue;
    rmSync(join(bpffs, d), { recursive: true, force: true });
    removed.push(join(bpffs, d));
  }
  return removed;
}

// ---- CPU accounting -------------------------------------------------------------------------

/** PIDs of the ksoftirqd/N kernel threads (softirq work deferred out of the sender's context runs there). */
export function ksoftirqdPids(): number[] {
  const out: number[] = [];
  // Kernel threads are children of kthreadd (pid 2).
  let children: string[] = [];
  try {
    children = readFileSync('/proc/2/task/2/children', 'utf8').trim().split(/\s+/);
  } catch {
    children = [];
  }
  for (const p of children) {
    try {
      if (/^ksoftirqd\/\d+$/.test(readFileSync(`/proc/${p}/comm`, 'utf8').trim())) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Sum of sum_exec_runtime (ns) of the given tasks (/proc/PID/schedstat, first field). */
export function runtimeNs(pids: readonly number[]): number {
  let s = 0;
  for (const p of pids) {
    try {
      s += Number(readFileSync(`/proc/${p}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* gone */
    }
  }
  return s;
}

/** Machine-wide busy CPU time in ms (all CPUs: user+nice+system+irq+softirq+steal), from /proc/stat. */
export function machineBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const hz = 100; // USER_HZ
  const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
  return (busy * 1000) / hz;
}

/** Total forks since boot (/proc/stat `processes`). */
export function forkCount(): number {
  return Number(/^processes (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? 0);
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(Math.min(1, digits));
  return x.toFixed(digits);
}
