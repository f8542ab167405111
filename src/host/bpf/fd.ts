// Plain BPF file descriptors: pin, get, info, close.
import { closeSync } from 'node:fs';
import { checkInt } from './call.js';
import { libbpf } from './ffi.js';

/** bpf_obj_pin: pin any BPF fd (program, map, link) at `path` in a bpf filesystem. */
export function pinFd(fd: number, path: string, what = 'object'): void {
  checkInt('bpf_obj_pin', `${what} fd ${fd} -> ${path}`, () => libbpf().bpf_obj_pin(fd, path));
}

/** bpf_obj_get: open a pinned object; returns a new fd the caller must close. */
export function objGet(path: string): number {
  return checkInt('bpf_obj_get', path, () => libbpf().bpf_obj_get(path));
}

/** bpf_obj_get_info_by_fd into a buffer of `size` bytes (the kernel fills what it knows). */
export function objInfo(fd: number, size: number, what = 'object'): Buffer {
  const info = Buffer.alloc(size);
  const len = [size];
  checkInt('bpf_obj_get_info_by_fd', `${what} fd ${fd}`, () => libbpf().bpf_obj_get_info_by_fd(fd, info, len));
  return info;
}

// Offsets in struct bpf_prog_info / bpf_map_info / bpf_link_info (linux/bpf.h).
export const PROG_INFO = { size: 232, type: 0, id: 4, tag: 8, name: 64, nameLen: 16 } as const;
export const MAP_INFO = { size: 88, type: 0, id: 4, keySize: 8, valueSize: 12, maxEntries: 16, flags: 20, name: 24, nameLen: 16 } as const;
// The link_info union starts at 16; its tcx member (kernel >= 6.6, not in
// Debian's 6.1 header) is { __u32 ifindex; __u32 attach_type; }.
export const LINK_INFO = { size: 48, type: 0, id: 4, progId: 8, union: 16 } as const;

export function cString(buf: Buffer, offset: number, len: number): string {
  const slice = buf.subarray(offset, offset + len);
  const end = slice.indexOf(0);
  return slice.toString('utf8', 0, end < 0 ? slice.length : end);
}

export function closeFd(fd: number): void {
  if (fd >= 0) closeSync(fd);
}
