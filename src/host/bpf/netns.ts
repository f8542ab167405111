// Network-namespace helpers for the in-process kernel APIs that act on the
// calling thread's namespace (bpf_tc_* over netlink, tcx bpf_link_create,
// if_nametoindex). Switching namespaces is src/host/netns.ts's withNetns,
// re-exported here; see its module comment for the caveats of async scopes.
import { statSync } from 'node:fs';
import { CODES } from '../../util/errors.js';
import { OsError } from './errors.js';
import { clearErrno, lastErrno, libbpf } from './ffi.js';

export const CLONE_NEWNET = 0x40000000;
const NETNS_DIR = '/run/netns';
const IFNAMSIZ = 16;

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

/**
 * Run `fn` with the calling thread in network namespace `name`: the one
 * implementation in src/host/netns.ts (a single stack of active namespaces
 * for the whole process, so scopes nest correctly wherever they are opened).
 */
export { withNetns } from '../netns.js';

/** if_nametoindex(3) in the calling thread's namespace, as an OsError when absent. */
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
