// tc (clsact + cls_bpf direct-action) attachment through libbpf's bpf_tc_* API.
//
// These calls talk netlink from the calling thread, so they act on the
// thread's current network namespace: wrap them in withNetns() to reach an
// interface of another namespace. `ifindex` is that namespace's index.
//
// A filter is identified by (ifindex, direction, handle, priority). Replacing
// the program of an existing filter (tcReplace, BPF_TC_F_REPLACE) is a single
// netlink RTM_NEWTFILTER with NLM_F_REPLACE: the interface is never without a
// program in between.
import { checkInt, checkIntAllowing, invalid } from './call.js';
import { EEXIST, EINVAL, ENOENT } from './errors.js';
import { libbpf, STRUCT_SIZES } from './ffi.js';
import { progFd, progLabel, type ProgramLike } from './program.js';

export type TcDirection = 'ingress' | 'egress';

// enum bpf_tc_attach_point, enum bpf_tc_flags
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;

export interface TcFilterSpec {
  ifindex: number;
  direction: TcDirection;
  /** Filter handle; 0 on attach lets the kernel choose (then read it back). */
  handle: number;
  /** Filter priority 1..65535; 0 on attach lets the kernel choose. */
  priority: number;
}

export interface TcAttachment extends TcFilterSpec {
  /** Kernel id of the attached program. */
  progId: number;
}

function hook(ifindex: number, attachPoint: number) {
  return { sz: STRUCT_SIZES.bpf_tc_hook, ifindex, attach_point: attachPoint, parent: 0 };
}

function where(spec: { ifindex: number; direction?: TcDirection; handle?: number; priority?: number }): string {
  let s = `ifindex ${spec.ifindex}`;
  if (spec.direction) s += ` ${spec.direction}`;
  if (spec.handle !== undefined) s += ` handle ${spec.handle}`;
  if (spec.priority !== undefined) s += ` pref ${spec.priority}`;
  return s;
}

function checkSpec(op: string, spec: TcFilterSpec, needIds: boolean): void {
  if (!Number.isInteger(spec.ifindex) || spec.ifindex <= 0) throw invalid(op, where(spec), `a positive ifindex, got ${spec.ifindex}`);
  if (spec.direction !== 'ingress' && spec.direction !== 'egress') {
    throw invalid(op, where(spec), `direction ingress or egress, got ${String(spec.direction)}`);
  }
  const lo = needIds ? 1 : 0;
  if (!Number.isInteger(spec.handle) || spec.handle < lo || spec.handle > 0xffffffff) {
    throw invalid(op, where(spec), `a handle ${lo}..2^32-1, got ${spec.handle}`);
  }
  if (!Number.isInteger(spec.priority) || spec.priority < lo || spec.priority > 0xffff) {
    throw invalid(op, where(spec), `a priority ${lo}..65535, got ${spec.priority}`);
  }
}

const point = (d: TcDirection) => (d === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS);

/**
 * Create the clsact qdisc on `ifindex` (both ingress and egress hooks).
 * Returns false when it already existed.
 */
export function tcHookCreate(ifindex: number): boolean {
  const r = checkIntAllowing('bpf_tc_hook_create', `clsact on ifindex ${ifindex}`, (e) => e === EEXIST, () =>
    libbpf().bpf_tc_hook_create(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)),
  );
  return r >= 0;
}

/** Delete the clsact qdisc of `ifindex`, with every filter on it. Returns false if there was none. */
export function tcHookDestroy(ifindex: number): boolean {
  const r = checkIntAllowing('bpf_tc_hook_destroy', `clsact on ifindex ${ifindex}`, (e) => e === ENOENT || e === EINVAL, () =>
    libbpf().bpf_tc_hook_destroy(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)),
  );
  return r >= 0;
}

function attach(prog: ProgramLike, spec: TcFilterSpec, replace: boolean): TcAttachment {
  const op = replace ? 'bpf_tc_attach(BPF_TC_F_REPLACE)' : 'bpf_tc_attach';
  checkSpec(op, spec, replace);
  const fd = progFd(prog);
  const o = {
    sz: STRUCT_SIZES.bpf_tc_opts,
    prog_fd: fd,
    flags: replace ? BPF_TC_F_REPLACE : 0,
    prog_id: 0,
    handle: spec.handle,
    priority: spec.priority,
  };
  checkInt(op, `${progLabel(prog)} on ${where(spec)}`, () => libbpf().bpf_tc_attach(hook(spec.ifindex, point(spec.direction)), o));
  return { ifindex: spec.ifindex, direction: spec.direction, handle: o.handle, priority: o.priority, progId: o.prog_id };
}

/**
 * Attach a SCHED_CLS program as a direct-action cls_bpf filter. The clsact
 * qdisc must exist (tcHookCreate). Fails with EEXIST if a filter with the same
 * handle and priority is already there: use tcReplace to swap programs.
 */
export function tcAttach(prog: ProgramLike, spec: TcFilterSpec): TcAttachment {
  return attach(prog, spec, false);
}

/**
 * Attach or atomically replace the program of the filter (handle, priority):
 * BPF_TC_F_REPLACE. Handle and priority must be non-zero.
 */
export function tcReplace(prog: ProgramLike, spec: TcFilterSpec): TcAttachment {
  return attach(prog, spec, true);
}

/** Remove the filter (handle, priority). Returns false if it did not exist (nor a clsact qdisc: EINVAL). */
export function tcDetach(spec: TcFilterSpec): boolean {
  checkSpec('bpf_tc_detach', spec, true);
  const o = { sz: STRUCT_SIZES.bpf_tc_opts, prog_fd: 0, flags: 0, prog_id: 0, handle: spec.handle, priority: spec.priority };
  const r = checkIntAllowing('bpf_tc_detach', where(spec), (e) => e === ENOENT || e === EINVAL, () =>
    libbpf().bpf_tc_detach(hook(spec.ifindex, point(spec.direction)), o),
  );
  return r >= 0;
}

/** The program attached as filter (handle, priority), or undefined if none (or no clsact). */
export function tcQuery(spec: TcFilterSpec): TcAttachment | undefined {
  checkSpec('bpf_tc_query', spec, true);
  const o = { sz: STRUCT_SIZES.bpf_tc_opts, prog_fd: 0, flags: 0, prog_id: 0, handle: spec.handle, priority: spec.priority };
  const r = checkIntAllowing('bpf_tc_query', where(spec), (e) => e === ENOENT || e === EINVAL, () =>
    libbpf().bpf_tc_query(hook(spec.ifindex, point(spec.direction)), o),
  );
  if (r < 0) return undefined;
  return { ifindex: spec.ifindex, direction: spec.direction, handle: o.handle, priority: o.priority, progId: o.prog_id };
}
