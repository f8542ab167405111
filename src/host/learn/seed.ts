// Seeding the eBPF learned-state map (bpf/lib/nwf_learn.h): a learning port
// that starts with learned state (learned.json, migration metadata) gets its
// entry before its tap is enabled in its shape, so it is locked from its
// first frame. The kernel wins: an entry already there (learned meanwhile)
// is kept.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseIPv4 } from '../../ir/values.js';
import { BPF_NOEXIST, openPinnedMap } from '../bpf/map.js';

/** The pinned eBPF learned-state map's name in the pin directory. */
export const BPF_LEARNED_MAP = 'nwf_lrn_any';

/** Writes `ip` as tap `ifindex`'s learned address unless it has one. Returns whether it wrote. */
export function seedLearned(pinDir: string, ifindex: number, ip: string): boolean {
  const path = join(pinDir, BPF_LEARNED_MAP);
  const n = parseIPv4(ip);
  if (n === undefined || !existsSync(path)) return false;
  const map = openPinnedMap(path);
  try {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(ifindex);
    if (map.lookup(key)) return false;
    // struct nwf_lrn_any_val: the address's memory image (4 bytes, zero-extended), learned_ns 0 (seeded)
    const value = Buffer.alloc(16);
    value.writeUInt32BE(n >>> 0, 0);
    try {
      map.update(key, value, BPF_NOEXIST);
    } catch (e) {
      if (map.lookup(key)) return false; // the port learned in the meantime: the kernel wins
      throw e;
    }
    return true;
  } finally {
    map.close();
  }
}
