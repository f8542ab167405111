// Running code inside a named network namespace (/run/netns/<name>, as made by
// `ip netns add`), for the in-process kernel APIs that act on the calling
// thread's namespace: bpf_tc_* (netlink), tcx bpf_link_create (ifindex),
// if_nametoindex.
//
// setns(2) moves only the calling thread. koffi runs synchronous calls on the
// JS main thread, so those calls see the namespace. Caveats while an async
// function runs inside withNetns: everything else the main thread does in the
// meantime (sockets it opens, processes it spawns) also happens in the
// namespace, whereas libuv's thread pool (fs, dns) stays where it was. Two
// async withNetns scopes must therefore not overlap: a second, unrelated one
// is refused (nesting inside the same async chain is fine).
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, openSync, statSync } from 'node:fs';
import { CODES } from '../../util/errors.js';
import { OsError } from './errors.js';
import { clearErrno, lastErrno, libbpf } from './ffi.js';

export const CLONE_NEWNET = 0x40000000;
const NETNS_DIR = '/run/netns';
const IFNAMSIZ = 16;

interface Scope {
  name: string;
}
const als = new AsyncLocalStorage<Scope>();
const active: Scope[] = [];

export function netnsPath(name: string): string {
  if (!name || name.includes('/') || name === '.' || name === '..' || name.includes('\0')) {
    throw new OsError(CODES.VALUE_INVALID, 'netns', name, 22, { expected: 'a namespace name as made by `ip netns add`' });
  }
  return `${NETNS_DIR}/${name}`;
}

/** The calling thread's network namespace inode (compare to tell namespaces apart). */
export function currentNetnsInode(): number {
  return statSync('/proc/thread-self/ns/net').ino;
}

function enter(fd: number, what: string): void {
  clearErrno();
  if (libbpf().setns(fd, CLONE_NEWNET) !== 0) throw new OsError(CODES.STATE_INVALID, 'setns', what, lastErrno() || 22);
}

/**
 * Run `fn` with the calling thread in network namespace `name`, then switch
 * back, also when `fn` throws or its promise rejects. A synchronous `fn` gets
 * a synchronous result; an async one a promise.
 */
export function withNetns<T>(name: string, fn: () => Promise<T>): Promise<T>;
export function withNetns<T>(name: string, fn: () => T): T;
export function withNetns<T>(name: string, fn: () => T | Promise<T>): T | Promise<T> {
  const path = netnsPath(name);
  const top = active.at(-1);
  if (top && als.getStore() !== top) {
    throw new OsError(CODES.STATE_INVALID, 'setns', name, 16 /* EBUSY */, {
      hint: `an async withNetns(${top.name}) is still running; await it first`,
    });
  }
  let selfFd: number;
  let targetFd: number;
  try {
    selfFd = openSync('/proc/thread-self/ns/net', 'r');
  } catch (e) {
    throw new OsError(CODES.STATE_INVALID, 'open', '/proc/thread-self/ns/net', Math.abs((e as NodeJS.ErrnoException).errno ?? 2));
  }
  try {
    targetFd = openSync(path, 'r');
  } catch (e) {
    closeSync(selfFd);
    throw new OsError(CODES.STATE_INVALID, 'open', path, Math.abs((e as NodeJS.ErrnoException).errno ?? 2), {
      hint: `create it with: ip netns add ${name}`,
    });
  }
  const scope: Scope = { name };
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    try {
      enter(selfFd, 'original namespace');
    } finally {
      const i = active.lastIndexOf(scope);
      if (i >= 0) active.splice(i, 1);
      closeSync(selfFd);
    }
  };
  try {
    enter(targetFd, path);
  } catch (e) {
    closeSync(targetFd);
    closeSync(selfFd);
    throw e;
  }
  closeSync(targetFd);
  active.push(scope);
  let result: T | Promise<T>;
  try {
    result = als.run(scope, fn);
  } catch (e) {
    restore();
    throw e;
  }
  if (result instanceof Promise) {
    return result.finally(restore);
  }
  restore();
  return result;
}

/** if_nametoindex in the calling thread's namespace. Throws if there is no such interface. */
export function ifIndex(name: string): number {
  if (!name || name.length >= IFNAMSIZ) {
    throw new OsError(CODES.IFNAME_INVALID, 'if_nametoindex', name, 22, { expected: 'an interface name of 1..15 bytes' });
  }
  clearErrno();
  const idx = libbpf().if_nametoindex(name);
  if (idx === 0) throw new OsError(CODES.INTERFACE_UNKNOWN, 'if_nametoindex', name, lastErrno() || 19 /* ENODEV */);
  return idx;
}

/** if_indextoname in the calling thread's namespace, or undefined. */
export function ifName(index: number): string | undefined {
  const buf = Buffer.alloc(IFNAMSIZ);
  const r = libbpf().if_indextoname(index, buf);
  if (r === null) return undefined;
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 ? buf.length : end);
}
