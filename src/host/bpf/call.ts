// Calling conventions of libbpf 1.x: int-returning APIs return -errno on
// failure (and also set errno); pointer-returning APIs return NULL and set
// errno. These helpers run a call with libbpf's log captured and turn a
// failure into a BpfError carrying errno, strerror and the log.
import { BpfError, EINVAL } from './errors.js';
import { lastErrno, type Ptr } from './ffi.js';
import { captureLibbpfLog } from './log.js';

/** Run an int-returning libbpf call; negative results throw. Returns the result (>= 0). */
export function checkInt(op: string, object: string | undefined, fn: () => number): number {
  const { value, log } = captureLibbpfLog(fn);
  if (value < 0) throw new BpfError(op, object, -value, log);
  return value;
}

/**
 * For the raw bpf() wrappers (bpf_map_*_elem and friends), which never print:
 * the same contract as checkInt without the log capture (map operations are a
 * hot path, ~0.3 us each).
 */
export function checkSys(op: string, object: string | undefined, ret: number, accept?: (errno: number) => boolean): number {
  if (ret < 0 && !accept?.(-ret)) throw new BpfError(op, object, -ret);
  return ret;
}

/** Like checkInt, but `accept(errno)` lets expected failures through as a negative result. */
export function checkIntAllowing(
  op: string,
  object: string | undefined,
  accept: (errno: number) => boolean,
  fn: () => number,
): number {
  const { value, log } = captureLibbpfLog(fn);
  if (value < 0 && !accept(-value)) throw new BpfError(op, object, -value, log);
  return value;
}

/** Run a pointer-returning libbpf call; NULL throws with errno. */
export function checkPtr(op: string, object: string | undefined, fn: () => Ptr): bigint {
  const { value, log } = captureLibbpfLog(() => {
    const v = fn();
    return { v, errno: lastErrno() };
  });
  if (value.v === null || value.v === 0n) throw new BpfError(op, object, value.errno || EINVAL, log);
  return value.v;
}

/** A BpfError for a caller mistake detected before calling into libbpf. */
export function invalid(op: string, object: string | undefined, why: string): BpfError {
  return new BpfError(op, object, EINVAL, [], { expected: why });
}
