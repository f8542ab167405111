// A BPF ELF object: bpf_object__open_file, bpf_object__load, programs, maps.
import { checkInt, checkPtr } from './call.js';
import { BpfError, EBADF, ENOENT } from './errors.js';
import { libbpf, STRUCT_SIZES, type Ptr } from './ffi.js';
import { BpfMap, type OwnerState } from './map.js';
import { BpfProgram } from './program.js';

export interface BpfObjectOpenOptions {
  /**
   * Directory in bpffs where maps declared with `__uint(pinning,
   * LIBBPF_PIN_BY_NAME)` are pinned (and reused if already pinned). libbpf's
   * default is /sys/fs/bpf.
   */
  pinRoot?: string;
  /** Override the object name (default: file name without extension). */
  objectName?: string;
  /** Kernel verifier log level for every program (0 = only on failure, libbpf's default). */
  kernelLogLevel?: number;
}

export class BpfObject {
  readonly path: string;
  readonly #ptr: bigint;
  readonly #owner: OwnerState;
  #loaded = false;
  readonly #programs = new Map<bigint, BpfProgram>();
  readonly #maps = new Map<bigint, BpfMap>();

  private constructor(path: string, ptr: bigint, label: string) {
    this.path = path;
    this.#ptr = ptr;
    this.#owner = { label, closed: false };
  }

  /** bpf_object__open_file: parse the ELF object (nothing is loaded into the kernel yet). */
  static open(path: string, opts: BpfObjectOpenOptions = {}): BpfObject {
    const api = libbpf();
    const o = {
      sz: STRUCT_SIZES.bpf_object_open_opts,
      object_name: opts.objectName ?? null,
      relaxed_maps: false,
      pin_root_path: opts.pinRoot ?? null,
      _stub_attach_prog_fd: 0,
      kconfig: null,
      btf_custom_path: null,
      kernel_log_buf: null,
      kernel_log_size: 0,
      kernel_log_level: opts.kernelLogLevel ?? 0,
    };
    const ptr = checkPtr('bpf_object__open_file', path, () => api.bpf_object__open_file(path, o));
    const name = api.bpf_object__name(ptr) ?? path;
    return new BpfObject(path, ptr, `object ${name}`);
  }

  get name(): string {
    return this.#owner.label.replace(/^object /, '');
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  get closed(): boolean {
    return this.#owner.closed;
  }

  #live(op: string): bigint {
    if (this.#owner.closed) throw new BpfError(op, this.#owner.label, EBADF, [], { hint: 'the BpfObject was closed' });
    return this.#ptr;
  }

  /**
   * bpf_object__load: create maps, load and verify every program. On failure
   * the BpfError carries errno and the libbpf log, including the verifier log.
   */
  load(): this {
    const ptr = this.#live('bpf_object__load');
    checkInt('bpf_object__load', `${this.#owner.label} (${this.path})`, () => libbpf().bpf_object__load(ptr));
    this.#loaded = true;
    return this;
  }

  #program(p: bigint): BpfProgram {
    let w = this.#programs.get(p);
    if (!w) {
      const api = libbpf();
      w = new BpfProgram(
        { name: api.bpf_program__name(p), section: api.bpf_program__section_name(p), type: api.bpf_program__type(p) },
        { ptr: p, owner: this.#owner },
      );
      this.#programs.set(p, w);
    }
    return w;
  }

  #map(m: bigint): BpfMap {
    let w = this.#maps.get(m);
    if (!w) {
      const api = libbpf();
      w = new BpfMap(
        {
          name: api.bpf_map__name(m),
          type: api.bpf_map__type(m),
          keySize: api.bpf_map__key_size(m),
          valueSize: api.bpf_map__value_size(m),
          maxEntries: api.bpf_map__max_entries(m),
          flags: api.bpf_map__map_flags(m),
        },
        { ptr: m, owner: this.#owner },
      );
      this.#maps.set(m, w);
    }
    return w;
  }

  /** Every program in the object, in ELF order. */
  programs(): BpfProgram[] {
    const ptr = this.#live('bpf_object__next_program');
    const out: BpfProgram[] = [];
    for (let p: Ptr = libbpf().bpf_object__next_program(ptr, null); p; p = libbpf().bpf_object__next_program(ptr, p)) {
      out.push(this.#program(p));
    }
    return out;
  }

  findProgram(name: string): BpfProgram | undefined {
    const p = libbpf().bpf_object__find_program_by_name(this.#live('bpf_object__find_program_by_name'), name);
    return p ? this.#program(p) : undefined;
  }

  /** The program named `name` (the C function name); throws if absent. */
  program(name: string): BpfProgram {
    const p = this.findProgram(name);
    if (!p) {
      throw new BpfError('bpf_object__find_program_by_name', `${name} in ${this.#owner.label}`, ENOENT, [], {
        hint: `programs: ${this.programs().map((x) => x.name).join(', ') || '(none)'}`,
      });
    }
    return p;
  }

  /** Every map in the object, including libbpf's internal .bss/.data/.rodata maps. */
  maps(): BpfMap[] {
    const ptr = this.#live('bpf_object__next_map');
    const out: BpfMap[] = [];
    for (let m: Ptr = libbpf().bpf_object__next_map(ptr, null); m; m = libbpf().bpf_object__next_map(ptr, m)) {
      out.push(this.#map(m));
    }
    return out;
  }

  findMap(name: string): BpfMap | undefined {
    const m = libbpf().bpf_object__find_map_by_name(this.#live('bpf_object__find_map_by_name'), name);
    return m ? this.#map(m) : undefined;
  }

  /** The map named `name`; throws if absent. */
  map(name: string): BpfMap {
    const m = this.findMap(name);
    if (!m) {
      throw new BpfError('bpf_object__find_map_by_name', `${name} in ${this.#owner.label}`, ENOENT, [], {
        hint: `maps: ${this.maps().map((x) => x.name).join(', ') || '(none)'}`,
      });
    }
    return m;
  }

  /**
   * bpf_object__close: unload programs and close every fd of the object.
   * Attachments keep running (tc filters and links hold their own reference);
   * pinned maps survive. Idempotent.
   */
  close(): void {
    if (this.#owner.closed) return;
    this.#owner.closed = true;
    libbpf().bpf_object__close(this.#ptr);
    this.#programs.clear();
    this.#maps.clear();
  }
}
