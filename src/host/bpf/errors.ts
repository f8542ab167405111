// Errors of the BPF / netns layer. Both are NwfErrors, so the CLI formats them
// like any other diagnostic; `details` carries the errno, its name, the
// strerror text and (BpfError) the libbpf log captured during the failed call.
import { constants as osConstants } from 'node:os';
import { CODES, NwfError, type ErrorCode, type NwfErrorDetails } from '../../util/errors.js';
import { libbpf } from './ffi.js';
import { extractVerifierLog, verifierReason } from './log.js';

export interface OsErrorDetails extends NwfErrorDetails {
  /** The failing call, e.g. `bpf_object__load` or `setns`. */
  op: string;
  /** What it was applied to (path, program or map name, interface). */
  object?: string;
  /** Positive errno (libbpf returns -errno; libbpf's own codes are >= 4000). */
  errno: number;
  /** Symbolic name of errno when known, e.g. `EACCES`. */
  errnoName?: string;
  strerror: string;
}

export interface BpfErrorDetails extends OsErrorDetails {
  /** Lines libbpf printed during the failed call (WARN and INFO by default). */
  log: string[];
  /** The kernel verifier log, when the failure was a program load. */
  verifierLog?: string;
}

const ERRNO_NAMES: Map<number, string> = (() => {
  const m = new Map<number, string>();
  for (const [name, value] of Object.entries(osConstants.errno)) if (!m.has(value)) m.set(value, name);
  return m;
})();

// libbpf-specific codes (enum libbpf_errno in libbpf.h)
const LIBBPF_ERRNO_NAMES: Record<number, string> = {
  4000: 'LIBBPF_ERRNO__LIBELF',
  4001: 'LIBBPF_ERRNO__FORMAT',
  4002: 'LIBBPF_ERRNO__KVERSION',
  4003: 'LIBBPF_ERRNO__ENDIAN',
  4004: 'LIBBPF_ERRNO__INTERNAL',
  4005: 'LIBBPF_ERRNO__RELOC',
  4006: 'LIBBPF_ERRNO__LOAD',
  4007: 'LIBBPF_ERRNO__VERIFY',
  4008: 'LIBBPF_ERRNO__PROG2BIG',
  4009: 'LIBBPF_ERRNO__KVER',
  4010: 'LIBBPF_ERRNO__PROGTYPE',
  4011: 'LIBBPF_ERRNO__WRNGPID',
  4012: 'LIBBPF_ERRNO__INVSEQ',
  4013: 'LIBBPF_ERRNO__NLPARSE',
};

export function errnoName(errno: number): string | undefined {
  return ERRNO_NAMES.get(errno) ?? LIBBPF_ERRNO_NAMES[errno];
}

/** strerror through libbpf_strerror (knows libbpf's own codes too). */
export function strerror(errno: number): string {
  try {
    const buf = Buffer.alloc(256);
    libbpf().libbpf_strerror(errno, buf, buf.length);
    const end = buf.indexOf(0);
    const s = buf.toString('utf8', 0, end < 0 ? buf.length : end);
    if (s) return s;
  } catch {
    // fall through
  }
  return errnoName(errno) ?? `error ${errno}`;
}

function osDetails(op: string, object: string | undefined, errno: number): OsErrorDetails {
  const name = errnoName(errno);
  return {
    op,
    ...(object !== undefined ? { object } : {}),
    errno,
    ...(name ? { errnoName: name } : {}),
    strerror: strerror(errno),
  };
}

function describe(op: string, object: string | undefined, d: OsErrorDetails): string {
  return `${op}${object !== undefined ? ` (${object})` : ''} failed: ${d.strerror} (${d.errnoName ? d.errnoName + ', ' : ''}errno ${d.errno})`;
}

/** A failed system or library call outside libbpf proper (setns, if_nametoindex, mount). */
export class OsError extends NwfError {
  declare readonly details: OsErrorDetails;
  constructor(code: ErrorCode, op: string, object: string | undefined, errno: number, extra: NwfErrorDetails = {}) {
    const d = { ...extra, ...osDetails(op, object, errno) };
    super(code, describe(op, object, d), d);
    this.name = 'OsError';
  }
  get errno(): number {
    return this.details.errno;
  }
}

/** A failed libbpf / bpf() call. Code is always CODES.BPF_FAILED. */
export class BpfError extends NwfError {
  declare readonly details: BpfErrorDetails;
  constructor(op: string, object: string | undefined, errno: number, log: readonly string[] = [], extra: NwfErrorDetails = {}) {
    const verifierLog = extractVerifierLog(log);
    const reason = verifierLog !== undefined ? verifierReason(verifierLog) : undefined;
    const base = osDetails(op, object, errno);
    const d: BpfErrorDetails = {
      ...(reason !== undefined && extra.hint === undefined ? { hint: `verifier: ${reason}` } : {}),
      ...extra,
      ...base,
      log: [...log],
      ...(verifierLog !== undefined ? { verifierLog } : {}),
    };
    let message = describe(op, object, d);
    if (extra.expected !== undefined) message += `: expected ${extra.expected}`;
    if (reason !== undefined) message += `: verifier: ${reason}`;
    else {
      // Otherwise name libbpf's last warning, which is usually the reason.
      const last = log.filter((l) => l.startsWith('libbpf:')).at(-1);
      if (last) message += `\n  ${last}`;
    }
    super(CODES.BPF_FAILED, message, d);
    this.name = 'BpfError';
  }
  get errno(): number {
    return this.details.errno;
  }
  get log(): string[] {
    return this.details.log;
  }
  get verifierLog(): string | undefined {
    return this.details.verifierLog;
  }
}

export const EINVAL = osConstants.errno.EINVAL;
export const ENOENT = osConstants.errno.ENOENT;
export const EEXIST = osConstants.errno.EEXIST;
export const EBADF = osConstants.errno.EBADF;
export const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;
export const ENODEV = osConstants.errno.ENODEV;
export const EBUSY = osConstants.errno.EBUSY;
