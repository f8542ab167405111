// The state lock: flock(2) on <state_dir>/lock around every command that
// changes state (load, rollback, unload, restore, the libvirt hook,
// reconcile's changes, takeover, handback). The kernel releases it when the
// holder's process ends, however it ends (kill -9 included). A waiter polls
// with LOCK_NB (so its wait is bounded and never leaves a thread blocked in
// flock) and, after lock_timeout, fails naming the holder: the holder writes
// its pid, command and start time into the lock file once it has the lock.
//
// Held in-process per state directory with a depth count, so a command that
// already holds the lock can call another locked operation.
import fs from 'node:fs';
import { join } from 'node:path';
import koffi from 'koffi';
import { CODES, NwfError } from '../util/errors.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;
const EINTR = 4;

let flockFn: ((fd: number, op: number) => number) | undefined;
function flock(fd: number, op: number): number {
  if (!flockFn) {
    const f = koffi.load('libc.so.6').func('int flock(int fd, int operation)');
    flockFn = (d, o) => f(d, o) as number;
  }
  return flockFn(fd, op);
}

export const LOCK_FILE = 'lock';

export interface LockOptions {
  /** How long to wait for another holder, in seconds. */
  timeoutS: number;
  /** What this process is doing, for a waiter's message (e.g. `libvirt-hook vm1 start begin`). */
  command: string;
}

export interface LockInfo {
  /** Milliseconds spent waiting for the lock. */
  waitedMs: number;
}

interface Held {
  fd: number;
  depth: number;
}
const held = new Map<string, Held>();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the lock file says about its holder (best effort: empty while a holder is writing it). */
export function lockHolder(stateDir: string): string {
  try {
    return fs.readFileSync(join(stateDir, LOCK_FILE), 'utf8').trim();
  } catch {
    return '';
  }
}

function tryLock(fd: number): boolean {
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    if (errno === EWOULDBLOCK) return false;
    throw new NwfError(CODES.STATE_INVALID, `flock on the state lock failed: errno ${errno}`);
  }
}

/**
 * Opens (creating) the lock file. On a state directory that cannot be
 * written, an existing lock file is opened read-only (flock works on it), so
 * the command goes on to its own check of the directory and says what is
 * wrong before it changes anything; anything else is a clear error.
 */
function openLockFile(stateDir: string, file: string): number {
  try {
    fs.mkdirSync(stateDir, { recursive: true });
    return fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  } catch (e) {
    try {
      return fs.openSync(file, fs.constants.O_RDONLY);
    } catch {
      throw new NwfError(CODES.STATE_UNWRITABLE, `cannot open the state lock ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
        location: { file },
        hint: 'make the state directory writable (--state-dir, NWF_FAST_STATE_DIR); nothing was changed',
      });
    }
  }
}

/** Takes the lock of stateDir (waiting at most opts.timeoutS); returns how long it waited. */
export async function acquireLock(stateDir: string, opts: LockOptions): Promise<LockInfo> {
  const h = held.get(stateDir);
  if (h) {
    h.depth++;
    return { waitedMs: 0 };
  }
  const file = join(stateDir, LOCK_FILE);
  // Node opens every file close-on-exec, so child processes never inherit the lock.
  const fd = openLockFile(stateDir, file);
  const t0 = performance.now();
  const deadline = t0 + opts.timeoutS * 1000;
  try {
    let pause = 2;
    // Bounded: every pass sleeps at least 2 ms until the deadline.
    while (!tryLock(fd)) {
      if (performance.now() >= deadline) {
        const holder = lockHolder(stateDir);
        throw new NwfError(CODES.LOCK_TIMEOUT, `another nwf-fast command has held the state lock ${file} for more than ${opts.timeoutS} s (${holder ? `holder: ${holder}` : 'holder unknown'})`, {
          hint: 'wait for it to finish; if it hangs, end that process (the kernel releases the lock when it exits); lock_timeout in the configuration sets the wait',
        });
      }
      await sleep(Math.min(pause, Math.max(1, deadline - performance.now())));
      pause = Math.min(pause * 2, 25);
    }
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  held.set(stateDir, { fd, depth: 1 });
  const text = `pid ${process.pid} since ${new Date().toISOString()}: nwf-fast ${opts.command}\n`;
  try {
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, text, 0);
  } catch {
    // the description is informative only
  }
  return { waitedMs: performance.now() - t0 };
}

/** Releases one level of the lock of stateDir; the last one unlocks and closes the file. */
export function releaseLock(stateDir: string): void {
  const h = held.get(stateDir);
  if (!h) return;
  if (--h.depth > 0) return;
  held.delete(stateDir);
  try {
    fs.ftruncateSync(h.fd, 0);
  } catch {
    // informative only
  }
  flock(h.fd, LOCK_UN);
  fs.closeSync(h.fd);
}

/** Runs fn holding the lock of stateDir. */
export async function withLock<T>(stateDir: string, opts: LockOptions, fn: (info: LockInfo) => Promise<T> | T): Promise<T> {
  const info = await acquireLock(stateDir, opts);
  try {
    return await fn(info);
  } finally {
    releaseLock(stateDir);
  }
}

/** Whether this process holds the lock of stateDir. */
export function holdsLock(stateDir: string): boolean {
  return held.has(stateDir);
}
