// Network namespaces, in-process and through `ip netns`.
//
// withNetns() switches the *calling thread* (Node's main thread) into a named
// namespace with setns(2) through koffi, and always switches back. Anything
// the thread creates meanwhile (sockets, BPF links, libnftables netlink
// sockets, child processes spawned from the main thread) belongs to that
// namespace and stays there afterwards.
//
// Caveat, by design of setns(2): while the namespace is switched, *every*
// piece of JavaScript running on the main thread runs in it. With a
// synchronous fn that is just fn itself. With an async fn, whatever else the
// event loop runs between fn's awaits (timers, other tests' callbacks, spawns)
// also runs inside the namespace, and two overlapping async withNetns() calls
// interleave their switches. Prefer synchronous fns (socket creation, bpf()
// calls, libnftables runs) and do the awaiting outside. Work that libuv or
// koffi runs on worker threads (fs callbacks, `.async` FFI calls) never sees
// the switch: those threads stay in the original namespace.
//
// This module also holds the libc bindings the host layer uses (koffi, loaded
// at first use), so packet-io and friends share one binding.
import fs from 'node:fs';
import koffi from 'koffi';
import { CODES, InternalError, NwfError } from '../util/errors.js';
import { ExecaRunner, type CommandRunner } from './runner.js';

export const CLONE_NEWNET = 0x40000000;

// ---------------------------------------------------------------------------
// libc through koffi

export interface Libc {
  setns(fd: number, nstype: number): number;
  if_nametoindex(name: string): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  send(fd: number, buf: Uint8Array, len: number, flags: number): number;
  recvfrom(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer | null, addrlen: Buffer | null): number;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  close(fd: number): number;
  /**
   * close(2) on a koffi worker thread. Closing an AF_PACKET socket waits for
   * an RCU grace period in the kernel (synchronize_net, 8-16 ms here).
   */
  closeAsync(fd: number): Promise<number>;
  poll(fds: Buffer, nfds: number, timeoutMs: number): number;
  /** poll(2) on a koffi worker thread: does not block the event loop. */
  pollAsync(fds: Buffer, nfds: number, timeoutMs: number): Promise<number>;
  /** clock_gettime(2) into a struct timespec (16 bytes: tv_sec, tv_nsec as 64-bit integers). */
  clock_gettime(clock: number, ts: Buffer): number;
  /** errno of the last call made on this thread. */
  errno(): number;
}

/** Linux errno values the host layer looks at. */
export const ERRNO = { ENOENT: 2, EINTR: 4, EAGAIN: 11, ENODEV: 19, EMSGSIZE: 90, ENOBUFS: 105 } as const;

let libcCache: Libc | undefined;

/** libc bound through koffi (loaded at first use). Pointer arguments are Buffers passed in place. */
export function libc(): Libc {
  if (libcCache) return libcCache;
  const lib = koffi.load('libc.so.6');
  const setns = lib.func('int setns(int fd, int nstype)');
  const ifNameToIndex = lib.func('unsigned int if_nametoindex(const char *ifname)');
  const socket = lib.func('int socket(int domain, int type, int protocol)');
  const bind = lib.func('int bind(int fd, void *addr, uint32_t addrlen)');
  const send = lib.func('intptr_t send(int fd, void *buf, size_t len, int flags)');
  const recvfrom = lib.func('intptr_t recvfrom(int fd, void *buf, size_t len, int flags, void *addr, void *addrlen)');
  const setsockopt = lib.func('int setsockopt(int fd, int level, int name, void *val, uint32_t len)');
  const close = lib.func('int close(int fd)');
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
  const clockGettime = lib.func('int clock_gettime(int clk, void *ts)');
  libcCache = {
    setns: (fd, nstype) => setns(fd, nstype) as number,
    if_nametoindex: (name) => ifNameToIndex(name) as number,
    socket: (d, t, p) => socket(d, t, p) as number,
    bind: (fd, addr, len) => bind(fd, addr, len) as number,
    send: (fd, buf, len, flags) => Number(send(fd, buf, len, flags)),
    recvfrom: (fd, buf, len, flags, addr, addrlen) => Number(recvfrom(fd, buf, len, flags, addr, addrlen)),
    setsockopt: (fd, level, name, val, len) => setsockopt(fd, level, name, val, len) as number,
    close: (fd) => close(fd) as number,
    closeAsync: (fd) =>
      new Promise<number>((resolve, reject) => {
        close.async(fd, (err: unknown, res: number) => (err ? reject(err) : resolve(res)));
      }),
    poll: (fds, n, t) => poll(fds, n, t) as number,
    pollAsync: (fds, n, t) =>
      new Promise<number>((resolve, reject) => {
        poll.async(fds, n, t, (err: unknown, res: number) => (err ? reject(err) : resolve(res)));
      }),
    clock_gettime: (clk, ts) => clockGettime(clk, ts) as number,
    errno: () => koffi.errno(),
  };
  return libcCache;
}

// ---------------------------------------------------------------------------
// Switching the calling thread

interface Frame {
  name: string;
  fd: number;
}

let originalFd: number | undefined;
const active: Frame[] = [];

function nsPath(name: string): string {
  if (name.startsWith('/')) return name; // e.g. /proc/<pid>/ns/net
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') {
    throw new NwfError(CODES.VALUE_INVALID, `invalid network namespace name ${JSON.stringify(name)}`, {
      expected: 'a name like nwf-x1-host (letters, digits, _ . -)',
    });
  }
  return `/run/netns/${name}`;
}

function originalNsFd(): number {
  if (originalFd === undefined) {
    // /proc/thread-self is the calling thread; for the main thread it is the
    // same namespace as /proc/self. Opened once, before any switch.
    const path = fs.existsSync('/proc/thread-self/ns/net') ? '/proc/thread-self/ns/net' : '/proc/self/ns/net';
    originalFd = fs.openSync(path, 'r');
  }
  return originalFd;
}

function switchTo(fd: number, what: string): void {
  if (libc().setns(fd, CLONE_NEWNET) !== 0) {
    const errno = libc().errno();
    throw new NwfError(CODES.COMMAND_FAILED, `setns(${what}, CLONE_NEWNET) failed: errno ${errno}`, {
      hint: 'switching network namespaces needs CAP_SYS_ADMIN',
    });
  }
}

function enter(name: string): Frame {
  originalNsFd();
  const path = nsPath(name);
  let fd: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (cause) {
    throw new NwfError(CODES.STATE_INVALID, `network namespace ${name} does not exist (${path})`, { cause });
  }
  try {
    switchTo(fd, path);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  const frame = { name, fd };
  active.push(frame);
  return frame;
}

function leave(frame: Frame): void {
  const i = active.lastIndexOf(frame);
  if (i >= 0) active.splice(i, 1);
  // Back to the innermost namespace still active, else the original one.
  const back = active[active.length - 1];
  try {
    switchTo(back ? back.fd : originalNsFd(), back ? back.name : 'original namespace');
  } catch (cause) {
    throw new InternalError(`could not switch the thread back from network namespace ${frame.name}`, { cause });
  } finally {
    fs.closeSync(frame.fd);
  }
}

function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function';
}

/**
 * Runs fn with the calling thread inside network namespace `name`
 * (/run/netns/<name>, or an absolute path such as /proc/<pid>/ns/net), then
 * switches back, also when fn throws or its promise rejects. Calls nest.
 * See the module comment before passing an async fn.
 */
export function withNetns<T>(name: string, fn: () => T): T {
  const frame = enter(name);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    leave(frame);
    throw e;
  }
  if (isPromiseLike(result)) {
    return Promise.resolve(result).then(
      (v) => {
        leave(frame);
        return v;
      },
      (e: unknown) => {
        leave(frame);
        throw e;
      },
    ) as T;
  }
  leave(frame);
  return result;
}

/** Name of the namespace withNetns() has the thread in right now, or null for the original one. */
export function currentNetns(): string | null {
  return active[active.length - 1]?.name ?? null;
}

/** if_nametoindex(3) in the calling thread's current namespace; throws when there is no such interface. */
export function ifIndex(name: string): number {
  const idx = libc().if_nametoindex(name);
  if (!idx) {
    const where = currentNetns();
    throw new NwfError(CODES.INTERFACE_UNKNOWN, `no interface ${name}${where ? ` in network namespace ${where}` : ''}`);
  }
  return idx;
}

/** ifIndex() inside namespace ns. */
export function ifIndexIn(ns: string, name: string): number {
  return withNetns(ns, () => ifIndex(name));
}

// ---------------------------------------------------------------------------
// `ip netns` wrappers

let defaultRunner: CommandRunner | undefined;
/** The shared ExecaRunner used when a function is given no runner. */
export function hostRunner(): CommandRunner {
  return (defaultRunner ??= new ExecaRunner());
}

export async function netnsAdd(name: string, runner: CommandRunner = hostRunner()): Promise<void> {
  nsPath(name);
  await runner.run(['ip', 'netns', 'add', name]);
}

/** Names of all named network namespaces (`ip netns list`). */
export async function netnsList(runner: CommandRunner = hostRunner()): Promise<string[]> {
  const r = await runner.run(['ip', 'netns', 'list']);
  // Lines look like "name (id: 3)" or "name".
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

export async function netnsExists(name: string, runner: CommandRunner = hostRunner()): Promise<boolean> {
  return (await netnsList(runner)).includes(name);
}

/** argv that runs argv inside namespace ns (`ip netns exec ns ...`). */
export function inNetns(ns: string | undefined, argv: readonly string[]): string[] {
  return ns === undefined ? [...argv] : ['ip', 'netns', 'exec', ns, ...argv];
}
