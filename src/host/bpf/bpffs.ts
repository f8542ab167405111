// The BPF filesystem (bpffs), where programs, maps and links are pinned so they
// outlive the process that loaded them.
import { existsSync, mkdirSync, rmSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { CODES, NwfError } from '../../util/errors.js';
import { OsError } from './errors.js';
import { clearErrno, lastErrno, libbpf } from './ffi.js';

export const BPF_FS_MAGIC = 0xcafe4a11;
const SYSFS_MAGIC = 0x62656572;
export const BPFFS_ROOT = '/sys/fs/bpf';
export const DEFAULT_PIN_DIR = '/sys/fs/bpf/nwf-fast';

// mount(2) flags
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_RELATIME = 0x200000;

function fsType(path: string): number | undefined {
  try {
    return Number(statfsSync(path).type) >>> 0;
  } catch {
    return undefined;
  }
}

/** Whether `path` exists and is on a bpf filesystem. */
export function isBpffs(path: string): boolean {
  return fsType(path) === BPF_FS_MAGIC;
}

let mountedHere = false;

/**
 * Whether this process mounted the bpf filesystem on /sys/fs/bpf (ensureBpffs
 * found none there): that instance lives only as long as a mount of it does,
 * so in a mount namespace of its own (`ip netns exec` makes one, with a fresh
 * /sys) everything pinned in it goes when the process exits.
 */
export function bpffsMountedByUs(): boolean {
  return mountedHere;
}

export interface EnsureBpffsOptions {
  /** Mount bpffs on /sys/fs/bpf when nothing is mounted there (default true). */
  mount?: boolean;
}

/**
 * Make sure `dir` (default /sys/fs/bpf/nwf-fast) is a directory on a bpf
 * filesystem, creating it (mode 0700) if needed. Mounts bpffs on /sys/fs/bpf
 * only when /sys/fs/bpf is still the plain sysfs directory; if something other
 * than bpffs is mounted there, refuses. Returns `dir`.
 */
export function ensureBpffs(dir: string = DEFAULT_PIN_DIR, opts: EnsureBpffsOptions = {}): string {
  const rootType = fsType(BPFFS_ROOT);
  if (rootType !== BPF_FS_MAGIC && dir.startsWith(BPFFS_ROOT + '/')) {
    if (rootType !== SYSFS_MAGIC) {
      throw new NwfError(
        CODES.KERNEL_UNSUPPORTED,
        `${BPFFS_ROOT} is not a bpf filesystem (statfs type 0x${(rootType ?? 0).toString(16)})`,
        { hint: 'mount -t bpf bpf /sys/fs/bpf' },
      );
    }
    if (opts.mount === false) {
      throw new NwfError(CODES.STATE_INVALID, `no bpf filesystem is mounted on ${BPFFS_ROOT}`, {
        hint: 'mount -t bpf bpf /sys/fs/bpf',
      });
    }
    clearErrno();
    const r = libbpf().mount('bpf', BPFFS_ROOT, 'bpf', MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, 'mode=0700');
    if (r !== 0) throw new OsError(CODES.BPF_FAILED, 'mount', `bpf on ${BPFFS_ROOT}`, lastErrno());
    mountedHere = true;
  }
  if (!existsSync(dir)) {
    // The nearest existing ancestor must be on bpffs (mkdir works there like anywhere).
    let parent = dirname(dir);
    while (!existsSync(parent) && parent !== dirname(parent)) parent = dirname(parent);
    if (!isBpffs(parent)) {
      throw new NwfError(CODES.STATE_INVALID, `${parent} is not on a bpf filesystem; cannot pin under ${dir}`);
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  if (!isBpffs(dir)) {
    throw new NwfError(CODES.STATE_INVALID, `${dir} is not on a bpf filesystem (statfs type 0x${(fsType(dir) ?? 0).toString(16)})`);
  }
  return dir;
}

/** Remove a pin (any pinned object is a file in bpffs). Missing pins are fine. */
export function unpinPath(path: string): void {
  rmSync(path, { force: true });
}
