// reconcile: bring the desired state (and the kernel) to what libvirt runs,
// and take over taps whose libvirt dispatch came back. Once, or --follow:
// follow libvirt's domain events (`virsh event --all --loop --timestamp`),
// resync the domain an event names (a hot-plugged NIC fires no qemu hook,
// only a device-added event), reconnect with backoff when libvirtd goes away
// (then a full resync, repeated a few seconds later because libvirt
// re-instantiates its filters in the background), and resync everything
// periodically as a backstop (nwfilter-define of a filter in use, a binding
// re-created for an IP change: no domain event says so).
//
// libvirt is read (observeLibvirt) BEFORE the state lock is taken: a qemu
// hook runs while libvirt holds the domain and waits for the lock, so a
// reconcile holding the lock while asking libvirt about that domain would
// wait for the hook that waits for it.
import { execa, type ResultPromise } from 'execa';
import { describeChange, type ChangeResult, type LiveHost } from './host.js';
import { observeLibvirt, type VirshClient } from './observe.js';
import { newMetadataSync, noteObserved, syncLearnedMetadata, type MetadataSync, type SyncResult } from './learned.js';

export interface ReconcileResult extends ChangeResult {
  /** The learned addresses written into the domains' live metadata. */
  metadata?: SyncResult;
}

/**
 * One reconcile: the desired state brought to what libvirt runs (under the
 * lock), the kernel's learned addresses saved to learned.json (under the
 * lock), then each running domain's live metadata brought to its learned
 * addresses (without the lock: libvirt is asked).
 */
export async function reconcileOnce(host: LiveHost, virsh: VirshClient, scope: 'all' | Set<string> = 'all', sync: MetadataSync = newMetadataSync()): Promise<ReconcileResult> {
  const obs = await observeLibvirt(virsh, scope);
  noteObserved(sync, obs.domains);
  const r: ReconcileResult = await host.locked(`reconcile${scope === 'all' ? '' : ` ${[...scope].join(' ')}`}`, async () => {
    const res = await host.resync(obs);
    await host.saveLearned(res);
    return res;
  });
  r.metadata = await syncLearnedMetadata(virsh, host.config.stateDir, host.ports(), sync, { minIntervalMs: 0, ...(scope === 'all' ? {} : { only: scope }) });
  return r;
}

/**
 * The learned addresses' round (reconcile --follow, every second): under
 * `both`, the programs' addresses copied into nft; the kernel's state saved to learned.json when it changed, then the metadata of
 * the domains whose learned state changed (rate-limited per domain; a busy
 * domain is retried next round).
 */
export async function learnRound(host: LiveHost, virsh: VirshClient, sync: MetadataSync): Promise<SyncResult> {
  await host.locked('reconcile (learned addresses)', async () => {
    await host.copyLearnedToNft();
    return host.saveLearned();
  });
  return syncLearnedMetadata(virsh, host.config.stateDir, host.ports(), sync);
}

/** A running `virsh event` stream. */
export interface EventStream {
  /** Called with each line virsh prints. */
  onLine(fn: (line: string) => void): void;
  /** Resolves when the stream ends (virsh exited: libvirtd went away, or kill()). */
  readonly done: Promise<void>;
  kill(): void;
}

/** `virsh -c URI event --all --loop --timestamp` as an EventStream. */
export function virshEvents(uri: string, prefix: readonly string[] = []): () => EventStream {
  return () => {
    const argv = [...prefix, 'virsh', '-q', '-c', uri, 'event', '--all', '--loop', '--timestamp'];
    const p: ResultPromise = execa(argv[0] as string, argv.slice(1), { reject: false, buffer: false, stdin: 'ignore', stderr: 'ignore', cleanup: true });
    const listeners: ((l: string) => void)[] = [];
    let rest = '';
    p.stdout?.setEncoding('utf8');
    p.stdout?.on('data', (chunk: string) => {
      rest += chunk;
      const lines = rest.split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) for (const f of listeners) f(l);
    });
    return {
      onLine: (fn) => void listeners.push(fn),
      done: p.then(
        () => undefined,
        () => undefined,
      ),
      kill: () => void p.kill('SIGTERM'),
    };
  };
}

/** The domain an event line names (`... event 'device-added' for domain 'vm1': net0`). */
export function eventDomain(line: string): string | undefined {
  return /for domain '((?:[^'\\]|\\.)*)'/.exec(line)?.[1];
}

export interface FollowOptions {
  events: () => EventStream;
  /** Full resync period (ms). Default 10 000. */
  periodMs?: number;
  /** Extra full resyncs this long after each (re)connect (ms). Default [1000, 3000, 6000]. */
  afterConnectMs?: readonly number[];
  /** Coalesces events for this long before resyncing (ms). Default 100. */
  debounceMs?: number;
  /** Reconnect backoff bounds (ms). Default 500 .. 10 000. */
  backoffMs?: { min: number; max: number };
  /** Learned-address round period (ms): kernel state to learned.json and the domains' metadata. Default 1000; 0: off. */
  learnPollMs?: number;
  signal: AbortSignal;
  log: (line: string) => void;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * Follows libvirt until the signal aborts. Resyncs run one at a time; the
 * requests that arrive meanwhile are merged (a full one covers every scoped
 * one). Never throws for libvirt or kernel errors: they are logged and the
 * next resync tries again.
 */
export async function follow(host: LiveHost, virsh: VirshClient, opts: FollowOptions): Promise<void> {
  const periodMs = opts.periodMs ?? 10_000;
  const debounceMs = opts.debounceMs ?? 100;
  const backoff = opts.backoffMs ?? { min: 500, max: 10_000 };
  const sync = newMetadataSync();
  let pending: 'all' | Set<string> | undefined;
  let wake: (() => void) | undefined;
  const request = (scope: 'all' | string): void => {
    if (scope === 'all' || pending === 'all') pending = 'all';
    else {
      const set: Set<string> = pending ?? new Set<string>();
      set.add(scope);
      pending = set;
    }
    wake?.();
  };
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  opts.signal.addEventListener('abort', () => wake?.(), { once: true });
  // the worker: one resync at a time
  const worker = (async () => {
    while (!opts.signal.aborted) {
      if (!pending) {
        await new Promise<void>((r) => {
          wake = r;
        });
        wake = undefined;
        continue;
      }
      await sleep(debounceMs, opts.signal);
      const scope = pending;
      pending = undefined;
      if (!scope || opts.signal.aborted) continue;
      const t0 = performance.now();
      try {
        const r = await reconcileOnce(host, virsh, scope, sync);
        const what = describeChange(r);
        for (const w of r.warnings) opts.log(`warning: ${w}`);
        logSync(r.metadata, opts.log);
        if (what) opts.log(`resync ${scope === 'all' ? 'all' : [...scope].join(',')} in ${(performance.now() - t0).toFixed(0)} ms: ${what}`);
      } catch (e) {
        opts.log(`resync ${scope === 'all' ? 'all' : [...scope].join(',')} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  })();

  const periodic = setInterval(() => request('all'), periodMs);
  // the learned addresses' rounds, one at a time (a slow libvirt delays the next, never stacks them)
  const learnPoll = opts.learnPollMs ?? 1000;
  const learner =
    learnPoll > 0
      ? (async () => {
          while (!opts.signal.aborted) {
            await sleep(learnPoll, opts.signal);
            if (opts.signal.aborted) break;
            try {
              logSync(await learnRound(host, virsh, sync), opts.log);
            } catch (e) {
              opts.log(`learned addresses: ${e instanceof Error ? e.message : String(e)}`);
            }
          }
        })()
      : Promise.resolve();
  try {
    let delay = backoff.min;
    while (!opts.signal.aborted) {
      const stream = opts.events();
      const connectedAt = performance.now();
      const abort = (): void => stream.kill();
      opts.signal.addEventListener('abort', abort, { once: true });
      stream.onLine((line) => {
        const d = eventDomain(line);
        request(d ?? 'all');
      });
      request('all');
      for (const ms of opts.afterConnectMs ?? [1000, 3000, 6000]) later(ms, () => request('all'));
      await stream.done;
      opts.signal.removeEventListener('abort', abort);
      if (opts.signal.aborted) break;
      delay = performance.now() - connectedAt > 10_000 ? backoff.min : Math.min(delay * 2, backoff.max);
      opts.log(`libvirt event stream ended; reconnecting in ${delay} ms`);
      await sleep(delay, opts.signal);
    }
  } finally {
    clearInterval(periodic);
    for (const t of timers) clearTimeout(t);
    wake?.();
    await worker;
    await learner;
  }
}

function logSync(r: SyncResult | undefined, log: (line: string) => void): void {
  if (!r) return;
  if (r.written.length) log(`learned addresses written to the live metadata of ${r.written.join(', ')}`);
  for (const e of r.errors) log(`learned addresses: ${e}`);
}
