// The state lock: flock(2) across processes, a bounded wait that names the
// holder, release by the kernel when the holder dies (kill -9), and nesting
// inside one process.
import { execa, type ResultPromise } from 'execa';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { acquireLock, holdsLock, lockHolder, releaseLock, withLock } from '../../src/host/lock.js';
import { NwfError } from '../../src/util/errors.js';

const HOLDER = join(import.meta.dirname, '..', 'support', 'lock-holder.ts');
const children: ResultPromise[] = [];

/** Starts a holder process and resolves once it has the lock (with its pid: a ResultPromise is thenable, so it is not returned). */
async function holder(stateDir: string, command: string): Promise<{ pid: number; kill: (s: NodeJS.Signals) => void }> {
  const p = execa(process.execPath, ['--import', 'tsx', HOLDER, stateDir, command], { reject: false, stdin: 'pipe', timeout: 60_000 });
  children.push(p);
  await new Promise<void>((resolve, reject) => {
    p.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('locked')) resolve();
    });
    void p.then((r) => reject(new Error(`holder exited: ${r.stderr}`)));
  });
  return { pid: p.pid as number, kill: (s) => void p.kill(s) };
}

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

describe('the state lock', () => {
  it('a second process waits, then fails after the timeout naming the holder (pid and command)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-lock-'));
    const h = await holder(dir, 'libvirt-hook vm7 start begin');
    expect(lockHolder(dir)).toMatch(new RegExp(`^pid ${h.pid} since .*: nwf-fast libvirt-hook vm7 start begin$`));
    const t0 = performance.now();
    let err: unknown;
    try {
      await acquireLock(dir, { timeoutS: 1, command: 'load' });
    } catch (e) {
      err = e;
    }
    const waited = performance.now() - t0;
    expect(err).toBeInstanceOf(NwfError);
    expect((err as NwfError).code).toBe('NWF1408');
    expect((err as NwfError).message).toMatch(new RegExp(`more than 1 s \\(holder: pid ${h.pid} .*libvirt-hook vm7 start begin\\)`));
    expect(waited).toBeGreaterThanOrEqual(950);
    expect(waited).toBeLessThan(5000);
    expect(holdsLock(dir)).toBe(false);
  }, 30_000);

  it('a holder killed with -9 releases the lock: the waiter gets it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-lock-'));
    const h = await holder(dir, 'reconcile');
    const waiting = acquireLock(dir, { timeoutS: 20, command: 'waiter' });
    await new Promise((r) => setTimeout(r, 200));
    h.kill('SIGKILL');
    const info = await waiting;
    expect(info.waitedMs).toBeGreaterThan(100);
    expect(holdsLock(dir)).toBe(true);
    expect(lockHolder(dir)).toMatch(new RegExp(`^pid ${process.pid} .*: nwf-fast waiter$`));
    releaseLock(dir);
    expect(holdsLock(dir)).toBe(false);
  }, 30_000);

  it('serialises: a holder in another process waits for this one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-lock-'));
    await acquireLock(dir, { timeoutS: 5, command: 'first' });
    const p = execa(process.execPath, ['--import', 'tsx', HOLDER, dir, 'second', '1'], { reject: false, stdin: 'pipe', timeout: 30_000 });
    children.push(p);
    const r = await p;
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/NWF1408|more than 1 s/);
    expect(r.stderr).toContain(`pid ${process.pid}`);
    releaseLock(dir);
    const q = await holder(dir, 'third');
    expect(lockHolder(dir)).toContain(`pid ${q.pid}`);
  }, 30_000);

  it('nests inside one process and is released by the outermost level', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-lock-'));
    await withLock(dir, { timeoutS: 1, command: 'outer' }, async () => {
      await withLock(dir, { timeoutS: 1, command: 'inner' }, async () => {
        expect(holdsLock(dir)).toBe(true);
      });
      expect(holdsLock(dir)).toBe(true);
    });
    expect(holdsLock(dir)).toBe(false);
    // and it is free for another process now
    const h = await holder(dir, 'after');
    expect(lockHolder(dir)).toContain(`pid ${h.pid}`);
  }, 30_000);
});
