// BPF maps: a map of a loaded BpfObject, or a standalone fd (a pinned map
// opened with openPinnedMap). Keys and values are raw bytes in the kernel's
// layout (host byte order for integers unless the program says otherwise).
import { checkInt, checkSys, invalid } from './call.js';
import { BpfError, EBADF, ENOENT } from './errors.js';
import { closeFd, cString, MAP_INFO, objGet, objInfo } from './fd.js';
import { libbpf } from './ffi.js';
import { BpfHandle, type HandleSource, type MemberCalls } from './handle.js';

export type { OwnerState } from './handle.js';

/** Flags of bpf_map_update_elem. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;
export type MapUpdateFlags = number;

/** enum bpf_map_type (the ones nwf-fast is likely to meet). */
export const BpfMapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  PERCPU_CGROUP_STORAGE: 21,
  RINGBUF: 27,
} as const;

const PERCPU_TYPES: ReadonlySet<number> = new Set([
  BpfMapType.PERCPU_HASH,
  BpfMapType.PERCPU_ARRAY,
  BpfMapType.LRU_PERCPU_HASH,
  BpfMapType.PERCPU_CGROUP_STORAGE,
]);

let possibleCpus: number | undefined;
/** libbpf_num_possible_cpus(): the number of slots of a per-CPU value. */
export function numPossibleCpus(): number {
  possibleCpus ??= checkInt('libbpf_num_possible_cpus', undefined, () => libbpf().libbpf_num_possible_cpus());
  return possibleCpus;
}

export interface BpfMapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

function bytes(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

const MAP_CALLS: MemberCalls = {
  kind: 'map',
  prefix: 'bpf_map__',
  fd: (ptr) => libbpf().bpf_map__fd(ptr),
  pin: (ptr, path) => libbpf().bpf_map__pin(ptr, path),
  unpin: (ptr, path) => libbpf().bpf_map__unpin(ptr, path),
};

export class BpfMap extends BpfHandle implements BpfMapInfo {
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;

  /** @internal use BpfObject.map() or openPinnedMap(). */
  constructor(info: BpfMapInfo, src: HandleSource) {
    super(info.name, src, MAP_CALLS);
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
  }

  /** Wrap a map fd (taking ownership: close() closes it). */
  static fromFd(fd: number): BpfMap {
    const info = objInfo(fd, MAP_INFO.size, 'map');
    return new BpfMap(
      {
        name: cString(info, MAP_INFO.name, MAP_INFO.nameLen),
        type: info.readUInt32LE(MAP_INFO.type),
        keySize: info.readUInt32LE(MAP_INFO.keySize),
        valueSize: info.readUInt32LE(MAP_INFO.valueSize),
        maxEntries: info.readUInt32LE(MAP_INFO.maxEntries),
        flags: info.readUInt32LE(MAP_INFO.flags),
      },
      { fd },
    );
  }

  /** Before the object is loaded: the number of entries the kernel map gets (bpf_map__set_max_entries). */
  setMaxEntries(n: number): void {
    const ptr = this.ptr;
    if (ptr === null) throw new BpfError('bpf_map__set_max_entries', this.label, EBADF, [], { hint: 'only maps of an object that is not loaded yet' });
    checkInt('bpf_map__set_max_entries', `${this.label} -> ${n}`, () => libbpf().bpf_map__set_max_entries(ptr, n));
  }

  /** The kernel's id of the map (bpf_obj_get_info_by_fd). */
  get id(): number {
    return objInfo(this.fd, MAP_INFO.size, this.label).readUInt32LE(MAP_INFO.id);
  }

  get typeName(): string {
    return libbpf().libbpf_bpf_map_type_str(this.type) ?? `map type ${this.type}`;
  }

  get isPerCpu(): boolean {
    return PERCPU_TYPES.has(this.type);
  }

  /** Bytes of one value as bpf_map_lookup_elem writes it (all CPUs' slots for per-CPU maps). */
  get valueBufferSize(): number {
    return this.isPerCpu ? roundUp8(this.valueSize) * numPossibleCpus() : this.valueSize;
  }

  #key(op: string, key: Uint8Array): Buffer {
    if (key.byteLength !== this.keySize) {
      throw invalid(op, this.label, `a ${this.keySize}-byte key, got ${key.byteLength} bytes`);
    }
    return bytes(key);
  }

  /**
   * bpf_map_lookup_elem. Returns a fresh buffer, or undefined when the key is
   * absent. For per-CPU maps it holds every possible CPU's slot (each rounded up
   * to 8 bytes); see lookupPerCpu.
   */
  lookup(key: Uint8Array): Buffer | undefined {
    const k = this.#key('bpf_map_lookup_elem', key);
    const value = Buffer.alloc(this.valueBufferSize);
    const r = checkSys('bpf_map_lookup_elem', this.label, libbpf().bpf_map_lookup_elem(this.fd, k, value), isENOENT);
    return r < 0 ? undefined : value;
  }

  /** Lookup in a per-CPU map: one `valueSize` buffer per possible CPU. */
  lookupPerCpu(key: Uint8Array): Buffer[] | undefined {
    if (!this.isPerCpu) throw invalid('bpf_map_lookup_elem', this.label, 'a per-CPU map');
    const raw = this.lookup(key);
    if (!raw) return undefined;
    const slot = roundUp8(this.valueSize);
    const out: Buffer[] = [];
    for (let cpu = 0; cpu < numPossibleCpus(); cpu++) out.push(raw.subarray(cpu * slot, cpu * slot + this.valueSize));
    return out;
  }

  /**
   * bpf_map_update_elem with BPF_ANY (default), BPF_NOEXIST or BPF_EXIST.
   * For per-CPU maps a `valueSize` value is written to every CPU's slot; a
   * value of `valueBufferSize` bytes is passed through as is.
   */
  update(key: Uint8Array, value: Uint8Array, flags: MapUpdateFlags = BPF_ANY): void {
    const k = this.#key('bpf_map_update_elem', key);
    let v: Buffer;
    if (value.byteLength === this.valueBufferSize) v = bytes(value);
    else if (this.isPerCpu && value.byteLength === this.valueSize) {
      v = this.#perCpuValue(Array.from({ length: numPossibleCpus() }, () => value));
    } else {
      throw invalid('bpf_map_update_elem', this.label, `a ${this.valueSize}-byte value, got ${value.byteLength} bytes`);
    }
    checkSys('bpf_map_update_elem', this.label, libbpf().bpf_map_update_elem(this.fd, k, v, flags));
  }

  /**
   * BPF_MAP_UPDATE_BATCH with BPF_ANY: `count` entries, their keys one after
   * the other in `keys`, their values in `values` (whole raw values: per-CPU
   * maps take every CPU's slot). One bpf(2) call instead of one per entry.
   */
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number): void {
    if (count === 0) return;
    if (keys.byteLength !== count * this.keySize || values.byteLength !== count * this.valueBufferSize) {
      throw invalid('bpf_map_update_batch', this.label, `${count} keys of ${this.keySize} bytes and values of ${this.valueBufferSize}, got ${keys.byteLength} and ${values.byteLength} bytes`);
    }
    const n = [count];
    checkSys('bpf_map_update_batch', this.label, libbpf().bpf_map_update_batch(this.fd, bytes(keys), bytes(values), n, null));
    if (n[0] !== count) throw new BpfError('bpf_map_update_batch', this.label, 5 /* EIO */, [], { expected: `${count} entries updated, got ${n[0]}` });
  }

  /** Update a per-CPU map with one value per possible CPU. */
  updatePerCpu(key: Uint8Array, values: readonly Uint8Array[], flags: MapUpdateFlags = BPF_ANY): void {
    if (!this.isPerCpu) throw invalid('bpf_map_update_elem', this.label, 'a per-CPU map');
    if (values.length !== numPossibleCpus()) {
      throw invalid('bpf_map_update_elem', this.label, `${numPossibleCpus()} per-CPU values, got ${values.length}`);
    }
    this.update(key, this.#perCpuValue(values), flags);
  }

  #perCpuValue(values: readonly Uint8Array[]): Buffer {
    const slot = roundUp8(this.valueSize);
    const raw = Buffer.alloc(slot * values.length);
    values.forEach((v, cpu) => {
      if (v.byteLength !== this.valueSize) {
        throw invalid('bpf_map_update_elem', this.label, `${this.valueSize}-byte per-CPU values, got ${v.byteLength} bytes`);
      }
      raw.set(v, cpu * slot);
    });
    return raw;
  }

  /** bpf_map_delete_elem. Returns false when the key was absent. */
  delete(key: Uint8Array): boolean {
    const k = this.#key('bpf_map_delete_elem', key);
    return checkSys('bpf_map_delete_elem', this.label, libbpf().bpf_map_delete_elem(this.fd, k), isENOENT) >= 0;
  }

  /**
   * Iterate keys with bpf_map_get_next_key. As in C, deleting the current key
   * while iterating a hash map restarts the walk from the first key; collect
   * the keys first (`[...map.keys()]`) when deleting.
   */
  *keys(): Generator<Buffer, void, undefined> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const r = checkSys('bpf_map_get_next_key', this.label, libbpf().bpf_map_get_next_key(this.fd, prev, next), isENOENT);
      if (r < 0) return;
      yield next;
      prev = next;
    }
  }

  /** Iterate [key, value] pairs (entries deleted meanwhile are skipped). */
  *entries(): Generator<[Buffer, Buffer], void, undefined> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) yield [k, v];
    }
  }
}

/** Open a map pinned in bpffs (bpf_obj_get). Close it when done. */
export function openPinnedMap(path: string): BpfMap {
  const fd = objGet(path);
  try {
    return BpfMap.fromFd(fd);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

const isENOENT = (e: number) => e === ENOENT;

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

/** Little helpers for the common integer keys and values (host byte order). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
export function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
export function readU64(b: Uint8Array, offset = 0): bigint {
  return bytes(b).readBigUInt64LE(offset);
}
