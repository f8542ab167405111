// BPF programs: a program of a loaded BpfObject, or a standalone fd (a pinned
// program opened with openPinnedProgram), and BPF_PROG_TEST_RUN.
import { checkInt, invalid } from './call.js';
import { closeFd, cString, objGet, objInfo, PROG_INFO } from './fd.js';
import { libbpf, STRUCT_SIZES } from './ffi.js';
import { BpfHandle, type HandleSource, type MemberCalls } from './handle.js';

/** enum bpf_prog_type values nwf-fast uses. */
export const BpfProgType = {
  SOCKET_FILTER: 1,
  SCHED_CLS: 3,
  SCHED_ACT: 4,
  XDP: 6,
} as const;

/** tc verdicts (TC_ACT_*), as a SCHED_CLS program in direct-action mode returns them. */
export const TC_ACT = {
  UNSPEC: -1,
  OK: 0,
  RECLASSIFY: 1,
  SHOT: 2,
  PIPE: 3,
  STOLEN: 4,
  QUEUED: 5,
  REPEAT: 6,
  REDIRECT: 7,
} as const;

/** XDP verdicts (enum xdp_action). */
export const XDP_ACT = {
  ABORTED: 0,
  DROP: 1,
  PASS: 2,
  TX: 3,
  REDIRECT: 4,
} as const;

const PROGRAM_CALLS: MemberCalls = {
  kind: 'program',
  prefix: 'bpf_program__',
  fd: (ptr) => libbpf().bpf_program__fd(ptr),
  pin: (ptr, path) => libbpf().bpf_program__pin(ptr, path),
  unpin: (ptr, path) => libbpf().bpf_program__unpin(ptr, path),
};

export class BpfProgram extends BpfHandle {
  /** ELF section, e.g. "tc" or "classifier/x" (empty for a standalone fd). */
  readonly section: string;
  /** enum bpf_prog_type (3 = SCHED_CLS). */
  readonly type: number;

  /** @internal use BpfObject.program() or openPinnedProgram(). */
  constructor(info: { name: string; section: string; type: number }, src: HandleSource) {
    super(info.name, src, PROGRAM_CALLS);
    this.section = info.section;
    this.type = info.type;
  }

  /** Wrap a program fd (taking ownership: close() closes it). */
  static fromFd(fd: number): BpfProgram {
    const info = objInfo(fd, PROG_INFO.size, 'program');
    return new BpfProgram(
      { name: cString(info, PROG_INFO.name, PROG_INFO.nameLen), section: '', type: info.readUInt32LE(PROG_INFO.type) },
      { fd },
    );
  }

  get typeName(): string {
    return libbpf().libbpf_bpf_prog_type_str(this.type) ?? `prog type ${this.type}`;
  }

  /** Whether the program has an fd (its object is loaded and open). */
  get loaded(): boolean {
    const ptr = this.ptr;
    if (ptr !== null) return !this.ownerClosed && libbpf().bpf_program__fd(ptr) >= 0;
    try {
      return this.fd >= 0;
    } catch {
      return false; // closed
    }
  }

  /**
   * Whether bpf_object__load loads (and verifies) this program of an opened
   * object: set before the load. A program left out has no fd.
   */
  setAutoload(load: boolean): void {
    const ptr = this.ptr;
    if (ptr === null) throw invalid('bpf_program__set_autoload', this.label, 'a program of an object that is not loaded yet');
    checkInt('bpf_program__set_autoload', this.label, () => libbpf().bpf_program__set_autoload(ptr, load));
  }

  /** The kernel's id of the loaded program (what bpf_tc_query and link info report). */
  get id(): number {
    return objInfo(this.fd, PROG_INFO.size, this.label).readUInt32LE(PROG_INFO.id);
  }

  /** BPF_PROG_TEST_RUN on this program. */
  testRun(dataIn: Uint8Array, opts: TestRunOptions = {}): TestRunResult {
    return testRun(this.fd, dataIn, opts, this.label);
  }
}

/** Open a program pinned in bpffs (bpf_obj_get). Close it when done. */
export function openPinnedProgram(path: string): BpfProgram {
  const fd = objGet(path);
  try {
    return BpfProgram.fromFd(fd);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/** Something that names a loaded program: a BpfProgram or a raw program fd. */
export type ProgramLike = BpfProgram | number;

export function progFd(p: ProgramLike): number {
  return typeof p === 'number' ? p : p.fd;
}

export function progLabel(p: ProgramLike): string {
  return typeof p === 'number' ? `program fd ${p}` : p.label;
}

export interface TestRunOptions {
  /** Run the program this many times (default 1); durationNs is the average. */
  repeat?: number;
  /** Context in, e.g. a `struct __sk_buff` for tc programs (optional). */
  ctxIn?: Uint8Array;
  /** Room for the context out (default: ctxIn's size, or none). */
  ctxOutSize?: number;
  /** Room for the packet out (default: input length + 256, for programs that grow it). */
  dataOutSize?: number;
  /** BPF_F_TEST_* flags (default 0). */
  flags?: number;
}

export interface TestRunResult {
  /** The program's return value as a signed 32-bit int (TC_ACT_UNSPEC is -1). */
  retval: number;
  /** The packet after the program ran. */
  dataOut: Buffer;
  /** The context after the program ran (only when ctxIn or ctxOutSize was given). */
  ctxOut?: Buffer;
  /** Average run time per repetition, in nanoseconds (kernel-measured). */
  durationNs: number;
}

/**
 * BPF_PROG_TEST_RUN through bpf_prog_test_run_opts (libbpf 1.1; struct
 * bpf_test_run_opts is 80 bytes). For SCHED_CLS programs `dataIn` is an
 * Ethernet frame of at least 14 bytes.
 */
export function testRun(progFd: number, dataIn: Uint8Array, opts: TestRunOptions = {}, label = `program fd ${progFd}`): TestRunResult {
  const repeat = opts.repeat ?? 1;
  if (!Number.isInteger(repeat) || repeat < 0 || repeat > 0x7fffffff) {
    throw invalid('bpf_prog_test_run_opts', label, `a repeat count between 0 and 2^31-1, got ${repeat}`);
  }
  const dataOut = Buffer.alloc(opts.dataOutSize ?? dataIn.byteLength + 256);
  const ctxOutSize = opts.ctxOutSize ?? opts.ctxIn?.byteLength ?? 0;
  const ctxOut = ctxOutSize > 0 ? Buffer.alloc(ctxOutSize) : null;
  const o: Record<string, unknown> = {
    sz: STRUCT_SIZES.bpf_test_run_opts,
    data_in: dataIn.byteLength > 0 ? dataIn : null,
    data_out: dataOut,
    data_size_in: dataIn.byteLength,
    data_size_out: dataOut.length,
    ctx_in: opts.ctxIn && opts.ctxIn.byteLength > 0 ? opts.ctxIn : null,
    ctx_out: ctxOut,
    ctx_size_in: opts.ctxIn?.byteLength ?? 0,
    ctx_size_out: ctxOut?.length ?? 0,
    retval: 0,
    repeat,
    duration: 0,
    flags: opts.flags ?? 0,
    cpu: 0,
    batch_size: 0,
  };
  checkInt('bpf_prog_test_run_opts', label, () => libbpf().bpf_prog_test_run_opts(progFd, o));
  const outLen = Math.min(Number(o.data_size_out), dataOut.length);
  const result: TestRunResult = {
    retval: Number(o.retval) | 0,
    dataOut: dataOut.subarray(0, outLen),
    durationNs: Number(o.duration),
  };
  if (ctxOut) result.ctxOut = ctxOut.subarray(0, Math.min(Number(o.ctx_size_out), ctxOut.length));
  return result;
}
