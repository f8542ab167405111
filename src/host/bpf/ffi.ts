// Raw koffi declarations for the system libbpf (libbpf.so.1, 1.1.x on Debian 12)
// and the few libc calls the BPF layer needs. Nothing here throws NwfError or
// interprets results: the typed wrappers live in object.ts, map.ts, program.ts,
// tc.ts, link.ts, bpffs.ts and netns.ts.
//
// Struct layouts were read from /usr/include/bpf/{libbpf,bpf}.h (libbpf 1.1.2)
// and checked against a C program compiled with clang (see
// test/unit/libbpf-layout.test.ts); STRUCT_SIZES below is asserted at load time
// so a mismatch fails loudly instead of corrupting memory. Every libbpf "opts"
// struct starts with `size_t sz` that must equal sizeof(struct) — libbpf
// rejects (-EINVAL) an opts struct whose sz is smaller than a non-zero field's
// end or bigger than what it knows with non-zero tail bytes.
//
// The layouts (LP64 sizes, x86-64 alignment, va_list passed as a pointer) hold
// on x86-64 only, and the opts structs are libbpf 1.1's: libbpf() refuses
// another architecture, and a libbpf older than 1.1 or not 1.x, before it binds
// anything (checkLibbpfArch, checkLibbpfVersion). Later 1.x releases keep the 1.x ABI: they
// only append fields to opts structs and read `sz` to know which ones a caller
// has, so 1.1's layouts stay valid there.
//
// Koffi type names live in one process-wide registry, and a module may be
// evaluated more than once per process (test runners re-import modules), so
// every named type goes through `namedType`, which reuses an existing type.
import koffi from 'koffi';
import type { LibraryHandle, TypeObject } from 'koffi';
import { CODES, NwfError } from '../../util/errors.js';

/** Sizes (bytes) of the libbpf structs, x86-64 / LP64, from the 1.1.2 headers. */
export const STRUCT_SIZES = {
  bpf_object_open_opts: 80,
  bpf_tc_hook: 24,
  bpf_tc_opts: 32,
  bpf_test_run_opts: 80,
  bpf_link_create_opts: 64,
  bpf_link_update_opts: 16,
} as const;

/** What the binding was written for: the CPU architecture and the libbpf versions. */
export const LIBBPF_SUPPORTED = { arch: 'x64', major: 1, minMinor: 1 } as const;

export interface LibbpfVersion {
  major: number;
  minor: number;
}

const NFT_NEEDS_NO_LIBBPF = 'the nft backend (--backend nft, the default) does not use libbpf';

/** Refuses a CPU architecture (`process.arch`) the struct layouts do not fit. */
export function checkLibbpfArch(arch: string): void {
  if (arch === LIBBPF_SUPPORTED.arch) return;
  throw new NwfError(CODES.KERNEL_UNSUPPORTED, `the eBPF backend's libbpf binding does not support the ${arch} architecture`, {
    expected: `${LIBBPF_SUPPORTED.arch} (x86-64): the binding's struct layouts and its va_list handling are x86-64's`,
    hint: NFT_NEEDS_NO_LIBBPF,
  });
}

/**
 * Refuses a libbpf whose ABI the binding was not written for: `version` is what
 * libbpf_major_version()/libbpf_minor_version() return, or undefined when the
 * library lacks them (libbpf older than 0.6).
 */
export function checkLibbpfVersion(version: LibbpfVersion | undefined): void {
  const S = LIBBPF_SUPPORTED;
  if (version && version.major === S.major && version.minor >= S.minMinor) return;
  const found = version ? `${version.major}.${version.minor}` : 'older than 0.6';
  throw new NwfError(CODES.KERNEL_UNSUPPORTED, `libbpf ${found} (libbpf.so.1) is not supported by the eBPF backend`, {
    expected: `libbpf ${S.major}.${S.minMinor} or a later ${S.major}.x (Debian 12: libbpf1 1.1.2)`,
    hint: NFT_NEEDS_NO_LIBBPF,
  });
}

/** libbpf's own version, or undefined for a library without the version calls (before 0.6). */
function readLibbpfVersion(lib: LibraryHandle): LibbpfVersion | undefined {
  let major: () => number;
  let minor: () => number;
  try {
    major = lib.func('uint32_t libbpf_major_version(void)') as () => number;
    minor = lib.func('uint32_t libbpf_minor_version(void)') as () => number;
  } catch {
    return undefined;
  }
  return { major: major(), minor: minor() };
}

function namedType(name: string, make: () => TypeObject): TypeObject {
  try {
    return koffi.type(name);
  } catch {
    return make();
  }
}

function defineTypes() {
  const opaque = (n: string) => namedType(n, () => koffi.opaque(n));
  const bpf_object = opaque('bpf_object');
  const bpf_program = opaque('bpf_program');
  const bpf_map = opaque('bpf_map');

  const openOpts = namedType('nwf_bpf_object_open_opts', () =>
    koffi.struct('nwf_bpf_object_open_opts', {
      sz: 'size_t',
      object_name: 'const char *',
      relaxed_maps: 'bool',
      pin_root_path: 'const char *',
      _stub_attach_prog_fd: 'uint32_t', // `__u32 :32;` in the header
      kconfig: 'const char *',
      btf_custom_path: 'const char *',
      kernel_log_buf: 'void *',
      kernel_log_size: 'size_t',
      kernel_log_level: 'uint32_t',
    }),
  );
  const tcHook = namedType('nwf_bpf_tc_hook', () =>
    koffi.struct('nwf_bpf_tc_hook', {
      sz: 'size_t',
      ifindex: 'int',
      attach_point: 'int', // enum bpf_tc_attach_point
      parent: 'uint32_t',
    }),
  );
  const tcOpts = namedType('nwf_bpf_tc_opts', () =>
    koffi.struct('nwf_bpf_tc_opts', {
      sz: 'size_t',
      prog_fd: 'int',
      flags: 'uint32_t',
      prog_id: 'uint32_t',
      handle: 'uint32_t',
      priority: 'uint32_t',
    }),
  );
  const testRunOpts = namedType('nwf_bpf_test_run_opts', () =>
    koffi.struct('nwf_bpf_test_run_opts', {
      sz: 'size_t',
      data_in: 'void *',
      data_out: 'void *',
      data_size_in: 'uint32_t',
      data_size_out: 'uint32_t',
      ctx_in: 'void *',
      ctx_out: 'void *',
      ctx_size_in: 'uint32_t',
      ctx_size_out: 'uint32_t',
      retval: 'uint32_t',
      repeat: 'int',
      duration: 'uint32_t',
      flags: 'uint32_t',
      cpu: 'uint32_t',
      batch_size: 'uint32_t',
    }),
  );
  const linkCreateOpts = namedType('nwf_bpf_link_create_opts', () =>
    koffi.struct('nwf_bpf_link_create_opts', {
      sz: 'size_t',
      flags: 'uint32_t',
      iter_info: 'void *',
      iter_info_len: 'uint32_t',
      target_btf_id: 'uint32_t',
      // union { perf_event; kprobe_multi{flags,cnt,syms,addrs,cookies}; tracing }:
      // 32 bytes, 8-aligned. Never used for tcx; kept zero.
      _union: koffi.array('uint64_t', 4),
    }),
  );
  const linkUpdateOpts = namedType('nwf_bpf_link_update_opts', () =>
    koffi.struct('nwf_bpf_link_update_opts', {
      sz: 'size_t',
      flags: 'uint32_t',
      old_prog_fd: 'uint32_t',
    }),
  );
  // int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *fmt, va_list ap)
  // On x86-64 va_list is `__va_list_tag[1]`, which decays to a pointer when
  // passed: the callback receives it as a plain pointer, and so do we. `fmt` is
  // taken as void * so it reaches vsnprintf unconverted.
  const printFn = namedType('nwf_libbpf_print_fn', () =>
    koffi.proto('int nwf_libbpf_print_fn(int level, void *fmt, void *ap)'),
  );

  const sizes: Record<keyof typeof STRUCT_SIZES, TypeObject> = {
    bpf_object_open_opts: openOpts,
    bpf_tc_hook: tcHook,
    bpf_tc_opts: tcOpts,
    bpf_test_run_opts: testRunOpts,
    bpf_link_create_opts: linkCreateOpts,
    bpf_link_update_opts: linkUpdateOpts,
  };
  for (const [name, t] of Object.entries(sizes)) {
    const want = STRUCT_SIZES[name as keyof typeof STRUCT_SIZES];
    if (koffi.sizeof(t) !== want) {
      throw new Error(`koffi layout of struct ${name} is ${koffi.sizeof(t)} bytes, libbpf 1.1 has ${want}`);
    }
  }
  return { bpf_object, bpf_program, bpf_map, openOpts, tcHook, tcOpts, testRunOpts, linkCreateOpts, linkUpdateOpts, printFn };
}

/** A native pointer as koffi 3 returns it (BigInt), or null. */
export type Ptr = bigint | null;
type Bytes = Uint8Array | null;

function bind(libbpf: LibraryHandle, libc: LibraryHandle) {
  const f = (lib: LibraryHandle, proto: string) => lib.func(proto);
  return {
    // objects
    bpf_object__open_file: f(libbpf, 'bpf_object *bpf_object__open_file(const char *path, const nwf_bpf_object_open_opts *opts)') as (path: string, opts: object | null) => Ptr,
    bpf_object__load: f(libbpf, 'int bpf_object__load(bpf_object *obj)') as (obj: bigint) => number,
    bpf_object__close: f(libbpf, 'void bpf_object__close(bpf_object *obj)') as (obj: bigint) => void,
    bpf_object__name: f(libbpf, 'const char *bpf_object__name(const bpf_object *obj)') as (obj: bigint) => string | null,
    bpf_object__next_program: f(libbpf, 'bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prog)') as (obj: bigint, prev: Ptr) => Ptr,
    bpf_object__find_program_by_name: f(libbpf, 'bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)') as (obj: bigint, name: string) => Ptr,
    bpf_object__next_map: f(libbpf, 'bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)') as (obj: bigint, prev: Ptr) => Ptr,
    bpf_object__find_map_by_name: f(libbpf, 'bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)') as (obj: bigint, name: string) => Ptr,
    // programs
    bpf_program__name: f(libbpf, 'const char *bpf_program__name(const bpf_program *prog)') as (p: bigint) => string,
    bpf_program__section_name: f(libbpf, 'const char *bpf_program__section_name(const bpf_program *prog)') as (p: bigint) => string,
    bpf_program__type: f(libbpf, 'int bpf_program__type(const bpf_program *prog)') as (p: bigint) => number,
    bpf_program__expected_attach_type: f(libbpf, 'int bpf_program__expected_attach_type(const bpf_program *prog)') as (p: bigint) => number,
    bpf_program__fd: f(libbpf, 'int bpf_program__fd(const bpf_program *prog)') as (p: bigint) => number,
    bpf_program__insn_cnt: f(libbpf, 'size_t bpf_program__insn_cnt(const bpf_program *prog)') as (p: bigint) => number,
    bpf_program__set_autoload: f(libbpf, 'int bpf_program__set_autoload(bpf_program *prog, bool autoload)') as (p: bigint, v: boolean) => number,
    bpf_program__autoload: f(libbpf, 'bool bpf_program__autoload(const bpf_program *prog)') as (p: bigint) => boolean,
    bpf_program__pin: f(libbpf, 'int bpf_program__pin(bpf_program *prog, const char *path)') as (p: bigint, path: string) => number,
    bpf_program__unpin: f(libbpf, 'int bpf_program__unpin(bpf_program *prog, const char *path)') as (p: bigint, path: string) => number,
    libbpf_bpf_prog_type_str: f(libbpf, 'const char *libbpf_bpf_prog_type_str(int t)') as (t: number) => string | null,
    libbpf_bpf_map_type_str: f(libbpf, 'const char *libbpf_bpf_map_type_str(int t)') as (t: number) => string | null,
    libbpf_bpf_attach_type_str: f(libbpf, 'const char *libbpf_bpf_attach_type_str(int t)') as (t: number) => string | null,
    // maps (object side)
    bpf_map__fd: f(libbpf, 'int bpf_map__fd(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__name: f(libbpf, 'const char *bpf_map__name(const bpf_map *map)') as (m: bigint) => string,
    bpf_map__type: f(libbpf, 'int bpf_map__type(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__key_size: f(libbpf, 'uint32_t bpf_map__key_size(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__value_size: f(libbpf, 'uint32_t bpf_map__value_size(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__set_max_entries: f(libbpf, 'int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)') as (m: bigint, n: number) => number,
    bpf_map__max_entries: f(libbpf, 'uint32_t bpf_map__max_entries(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__map_flags: f(libbpf, 'uint32_t bpf_map__map_flags(const bpf_map *map)') as (m: bigint) => number,
    bpf_map__is_internal: f(libbpf, 'bool bpf_map__is_internal(const bpf_map *map)') as (m: bigint) => boolean,
    bpf_map__pin: f(libbpf, 'int bpf_map__pin(bpf_map *map, const char *path)') as (m: bigint, path: string | null) => number,
    bpf_map__unpin: f(libbpf, 'int bpf_map__unpin(bpf_map *map, const char *path)') as (m: bigint, path: string | null) => number,
    bpf_map__pin_path: f(libbpf, 'const char *bpf_map__pin_path(const bpf_map *map)') as (m: bigint) => string | null,
    bpf_map__is_pinned: f(libbpf, 'bool bpf_map__is_pinned(const bpf_map *map)') as (m: bigint) => boolean,
    // raw bpf() wrappers (fd based). Buffers are passed by address, no copy.
    bpf_map_lookup_elem: f(libbpf, 'int bpf_map_lookup_elem(int fd, const void *key, void *value)') as (fd: number, key: Bytes, value: Uint8Array) => number,
    bpf_map_update_elem: f(libbpf, 'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)') as (fd: number, key: Bytes, value: Uint8Array, flags: number) => number,
    // opts NULL: elem_flags BPF_ANY; count in: entries, out: entries updated
    bpf_map_update_batch: f(libbpf, 'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const void *opts)') as (fd: number, keys: Uint8Array, values: Uint8Array, count: number[], opts: null) => number,
    bpf_map_delete_elem: f(libbpf, 'int bpf_map_delete_elem(int fd, const void *key)') as (fd: number, key: Bytes) => number,
    bpf_map_get_next_key: f(libbpf, 'int bpf_map_get_next_key(int fd, const void *key, void *next_key)') as (fd: number, key: Bytes, next: Uint8Array) => number,
    bpf_obj_pin: f(libbpf, 'int bpf_obj_pin(int fd, const char *pathname)') as (fd: number, path: string) => number,
    bpf_obj_get: f(libbpf, 'int bpf_obj_get(const char *pathname)') as (path: string) => number,
    bpf_obj_get_info_by_fd: f(libbpf, 'int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *info_len)') as (fd: number, info: Uint8Array, len: number[]) => number,
    bpf_prog_get_fd_by_id: f(libbpf, 'int bpf_prog_get_fd_by_id(uint32_t id)') as (id: number) => number,
    bpf_prog_test_run_opts: f(libbpf, 'int bpf_prog_test_run_opts(int prog_fd, _Inout_ nwf_bpf_test_run_opts *opts)') as (fd: number, opts: Record<string, unknown>) => number,
    bpf_link_create: f(libbpf, 'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const nwf_bpf_link_create_opts *opts)') as (progFd: number, target: number, attachType: number, opts: object | null) => number,
    bpf_link_update: f(libbpf, 'int bpf_link_update(int link_fd, int new_prog_fd, const nwf_bpf_link_update_opts *opts)') as (linkFd: number, progFd: number, opts: object | null) => number,
    bpf_link_detach: f(libbpf, 'int bpf_link_detach(int link_fd)') as (linkFd: number) => number,
    // tc (netlink, in the calling thread's network namespace)
    bpf_tc_hook_create: f(libbpf, 'int bpf_tc_hook_create(nwf_bpf_tc_hook *hook)') as (hook: object) => number,
    bpf_tc_hook_destroy: f(libbpf, 'int bpf_tc_hook_destroy(nwf_bpf_tc_hook *hook)') as (hook: object) => number,
    bpf_tc_attach: f(libbpf, 'int bpf_tc_attach(const nwf_bpf_tc_hook *hook, _Inout_ nwf_bpf_tc_opts *opts)') as (hook: object, opts: Record<string, number>) => number,
    bpf_tc_detach: f(libbpf, 'int bpf_tc_detach(const nwf_bpf_tc_hook *hook, const nwf_bpf_tc_opts *opts)') as (hook: object, opts: object) => number,
    bpf_tc_query: f(libbpf, 'int bpf_tc_query(const nwf_bpf_tc_hook *hook, _Inout_ nwf_bpf_tc_opts *opts)') as (hook: object, opts: Record<string, number>) => number,
    // misc
    libbpf_num_possible_cpus: f(libbpf, 'int libbpf_num_possible_cpus(void)') as () => number,
    libbpf_strerror: f(libbpf, 'int libbpf_strerror(int err, _Out_ uint8_t *buf, size_t size)') as (err: number, buf: Uint8Array, size: number) => number,
    libbpf_set_print: f(libbpf, 'void *libbpf_set_print(nwf_libbpf_print_fn *fn)') as (fn: Ptr) => Ptr,
    // libc
    vsnprintf: f(libc, 'int vsnprintf(uint8_t *buf, size_t size, void *fmt, void *ap)') as (buf: Bytes, size: number, fmt: unknown, ap: unknown) => number,
    setns: f(libc, 'int setns(int fd, int nstype)') as (fd: number, nstype: number) => number,
    if_nametoindex: f(libc, 'unsigned int if_nametoindex(const char *ifname)') as (name: string) => number,
    if_indextoname: f(libc, 'char *if_indextoname(unsigned int ifindex, _Out_ uint8_t *ifname)') as (index: number, buf: Uint8Array) => Ptr,
    mount: f(libc, 'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)') as (src: string, target: string, fstype: string, flags: number, data: string | null) => number,
  };
}

export type LibbpfApi = ReturnType<typeof bind> & { types: ReturnType<typeof defineTypes>; version: LibbpfVersion };

let api: LibbpfApi | undefined;
let loadError: unknown;

/**
 * The bound functions, loaded on first use (importing this module on a machine
 * without libbpf.so.1 does not fail; the first BPF call does, and so does an
 * unsupported architecture or libbpf version: only the eBPF backend needs them).
 */
export function libbpf(): LibbpfApi {
  if (api) return api;
  if (loadError) throw loadError;
  try {
    checkLibbpfArch(process.arch);
    const lbpf = koffi.load('libbpf.so.1');
    const version = readLibbpfVersion(lbpf);
    checkLibbpfVersion(version);
    const types = defineTypes();
    const libc = koffi.load('libc.so.6');
    api = Object.assign(bind(lbpf, libc), { types, version: version as LibbpfVersion });
    return api;
  } catch (e) {
    loadError =
      e instanceof NwfError
        ? e
        : new NwfError(CODES.KERNEL_UNSUPPORTED, `cannot use libbpf.so.1 through koffi: ${(e as Error).message}`, {
            hint: 'install the libbpf1 package (Debian: apt-get install libbpf1)',
            cause: e,
          });
    throw loadError;
  }
}

/** The version of the libbpf in use (loads it; throws like libbpf() where it is unusable). */
export function libbpfVersion(): LibbpfVersion {
  return libbpf().version;
}

/** koffi's saved errno of the last native call made from this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

/** Clear errno before a libc call that reports failure only through errno. */
export function clearErrno(): void {
  koffi.errno(0);
}

export { koffi };
