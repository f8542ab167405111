// Seeding the eBPF learned-state maps (bpf/lib/nwf_learn.h): a learning port
// that starts with learned state (learned.json, migration metadata) gets its
// entry before its tap is enabled in its shape, so it is locked from its
// first frame. The kernel wins: an entry already there (learned meanwhile)
// is kept. A dhcp port's lease entry is created even without a seed (all
// slots free: the DHCP-only table), and never updated afterwards: the
// program claims and renews slots in place.
import { existsSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { parseIPv4 } from '../../ir/values.js';
import { BPF_NOEXIST, openPinnedMap } from '../bpf/map.js';
import { libc } from '../netns.js';
import type { SeedLease } from '../../backends/bpf/lower.js';

/** The pinned eBPF learned-state maps' names in the pin directory. */
export const BPF_LEARNED_MAP = 'nwf_lrn_any';
export const BPF_LEASES_MAP = 'nwf_lrn_dhcp';

/** Lease slots per port (NWF_LRN_SLOTS) and the size of one (struct nwf_lease). */
export const LEASE_SLOTS = 4;
const LEASE_SIZE = 24;
/** A lease's valid bit in its slot word (NWF_LRN_VALID). */
const VALID = 1n << 32n;
/** The deadline of an infinite lease (option 51 = 0xffffffff). */
export const INFINITE_NS = (1n << 64n) - 1n;
/** The wall-clock expiry an infinite lease is recorded with (learned.json and the metadata want one). */
export const INFINITE_EXPIRES = '9999-12-31T23:59:59.000Z';
const INFINITE_MS = Date.parse(INFINITE_EXPIRES);

const LE = endianness() === 'LE';
const CLOCK_BOOTTIME = 7;

/** clock_gettime(CLOCK_BOOTTIME) in ns: the clock of bpf_ktime_get_boot_ns(). */
export function bootTimeNs(): bigint {
  const ts = Buffer.alloc(16);
  if (libc().clock_gettime(CLOCK_BOOTTIME, ts) !== 0) throw new Error(`clock_gettime(CLOCK_BOOTTIME) failed: errno ${libc().errno()}`);
  const sec = LE ? ts.readBigInt64LE(0) : ts.readBigInt64BE(0);
  const nsec = LE ? ts.readBigInt64LE(8) : ts.readBigInt64BE(8);
  return sec * 1_000_000_000n + nsec;
}

/** The boot-time deadline of a wall-clock expiry (ISO; absent or INFINITE_EXPIRES: infinite), given both clocks now. */
export function deadlineOf(expires: string | undefined, clocks: { wallMs: number; bootNs: bigint }): bigint {
  if (expires === undefined || Date.parse(expires) >= INFINITE_MS) return INFINITE_NS;
  return clocks.bootNs + BigInt(Math.round(Date.parse(expires) - clocks.wallMs)) * 1_000_000n;
}

/** The wall-clock expiry (ISO) of a boot-time deadline; INFINITE_EXPIRES for an infinite lease. */
export function expiryOf(deadline: bigint, clocks: { wallMs: number; bootNs: bigint }): string {
  if (deadline === INFINITE_NS) return INFINITE_EXPIRES;
  return new Date(clocks.wallMs + Number((deadline - clocks.bootNs) / 1_000_000n)).toISOString();
}

const u32key = (n: number): Buffer => {
  const key = Buffer.alloc(4);
  if (LE) key.writeUInt32LE(n);
  else key.writeUInt32BE(n);
  return key;
};

/** A live lease of a slot: the address, its boot-time deadline, the server of its last ACK (none when seeded without). */
export interface KernelLease {
  ip: string;
  deadline: bigint;
  server?: string;
}

const ipBytes = (ip: string): Buffer | undefined => {
  const n = parseIPv4(ip);
  if (n === undefined) return undefined;
  const a = Buffer.alloc(4);
  a.writeUInt32BE(n >>> 0); // the address's bytes as on the wire: its memory image
  return a;
};

/** struct nwf_lrn_dhcp_val for `leases` (at most LEASE_SLOTS). */
export function encodeLeases(leases: readonly KernelLease[]): Buffer {
  const v = Buffer.alloc(LEASE_SLOTS * LEASE_SIZE);
  leases.slice(0, LEASE_SLOTS).forEach((l, i) => {
    const a = ipBytes(l.ip);
    if (!a) return;
    const word = VALID | BigInt(LE ? a.readUInt32LE(0) : a.readUInt32BE(0));
    const s = l.server !== undefined ? ipBytes(l.server) : undefined;
    const server = s ? BigInt(LE ? s.readUInt32LE(0) : s.readUInt32BE(0)) : 0n;
    const put = (x: bigint, at: number): void => void (LE ? v.writeBigUInt64LE(x, at) : v.writeBigUInt64BE(x, at));
    put(word, i * LEASE_SIZE);
    put(l.deadline, i * LEASE_SIZE + 8);
    put(server, i * LEASE_SIZE + 16);
  });
  return v;
}

/** The live leases of a struct nwf_lrn_dhcp_val at boot time `nowNs`. */
export function decodeLeases(v: Buffer, nowNs: bigint): KernelLease[] {
  const out: KernelLease[] = [];
  for (let i = 0; i < LEASE_SLOTS && (i + 1) * LEASE_SIZE <= v.length; i++) {
    const word = LE ? v.readBigUInt64LE(i * LEASE_SIZE) : v.readBigUInt64BE(i * LEASE_SIZE);
    const deadline = LE ? v.readBigUInt64LE(i * LEASE_SIZE + 8) : v.readBigUInt64BE(i * LEASE_SIZE + 8);
    const server = LE ? v.readBigUInt64LE(i * LEASE_SIZE + 16) : v.readBigUInt64BE(i * LEASE_SIZE + 16);
    if ((word & VALID) === 0n || deadline <= nowNs) continue;
    const text = (x: bigint): string => {
      const a = Buffer.alloc(4);
      if (LE) a.writeUInt32LE(Number(x & 0xffffffffn));
      else a.writeUInt32BE(Number(x & 0xffffffffn));
      return [...a].join('.');
    };
    out.push({ ip: text(word), deadline, ...(server !== 0n ? { server: text(server) } : {}) });
  }
  return out;
}

/** Writes `ip` as tap `ifindex`'s learned address unless it has one. Returns whether it wrote. */
export function seedLearned(pinDir: string, ifindex: number, ip: string): boolean {
  const path = join(pinDir, BPF_LEARNED_MAP);
  const n = parseIPv4(ip);
  if (n === undefined || !existsSync(path)) return false;
  const map = openPinnedMap(path);
  try {
    const key = u32key(ifindex);
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

/**
 * Creates tap `ifindex`'s lease entry with the unexpired `leases` (none: all
 * slots free) unless it has one. Returns whether it wrote. Expired leases
 * are never seeded.
 */
export function seedLeases(pinDir: string, ifindex: number, leases: readonly SeedLease[]): boolean {
  const path = join(pinDir, BPF_LEASES_MAP);
  if (!existsSync(path)) return false;
  const map = openPinnedMap(path);
  try {
    const key = u32key(ifindex);
    if (map.lookup(key)) return false;
    const clocks = { wallMs: Date.now(), bootNs: bootTimeNs() };
    const live = leases.map((l) => ({ ip: l.ip, deadline: deadlineOf(l.expires, clocks), ...(l.server !== undefined ? { server: l.server } : {}) })).filter((l) => l.deadline > clocks.bootNs);
    try {
      map.update(key, encodeLeases(live), BPF_NOEXIST);
    } catch (e) {
      if (map.lookup(key)) return false; // created meanwhile: the kernel wins
      throw e;
    }
    return true;
  } finally {
    map.close();
  }
}
