// Diagnostics. Two kinds of failure, never mixed:
//  - NwfError: the user's input or environment is wrong. It carries a stable
//    code (see ERRORS), where the problem is (file, element path, line) and
//    what was expected. Each code has a category, and the category alone
//    decides the CLI's exit code (exitCodeFor).
//  - InternalError: a bug in nwf-fast. The CLI prints a stack and exits 70.

/**
 * What kind of failure an error code reports:
 *  - input: the XML, a value in it, or a file the user named is wrong;
 *  - usage: the command line is wrong;
 *  - refused-policy: valid input that the chosen backend (or nwf-fast) does
 *    not enforce and refuses rather than approximates: bad input for it;
 *  - runtime: an operation failed on this host (a command, the kernel, state);
 *  - internal: a bug in nwf-fast.
 */
export type ErrorCategory = 'input' | 'usage' | 'refused-policy' | 'runtime' | 'internal';

/** Every error code: its stable number and its category. */
const ERRORS = {
  // input files
  XML_MALFORMED: ['NWF1001', 'input'],
  XML_UNKNOWN_ELEMENT: ['NWF1002', 'input'],
  XML_UNKNOWN_ATTRIBUTE: ['NWF1003', 'input'],
  XML_MISSING_ATTRIBUTE: ['NWF1004', 'input'],
  XML_BAD_ROOT: ['NWF1005', 'input'],
  XML_DUPLICATE: ['NWF1006', 'input'],
  FILE_UNREADABLE: ['NWF1007', 'input'],
  /** An input file above LIMITS.fileBytes (src/ir/limits.ts). */
  FILE_TOO_LARGE: ['NWF1008', 'refused-policy'],
  /** Not UTF-8 (invalid bytes, or another declared encoding). */
  FILE_ENCODING: ['NWF1009', 'input'],
  // values
  VALUE_INVALID: ['NWF1101', 'input'],
  VALUE_OUT_OF_RANGE: ['NWF1102', 'input'],
  PRIORITY_INVALID: ['NWF1103', 'input'],
  CHAIN_INVALID: ['NWF1104', 'input'],
  ATTRIBUTE_CONFLICT: ['NWF1105', 'input'],
  IFNAME_INVALID: ['NWF1106', 'input'],
  // resolution
  FILTER_UNKNOWN: ['NWF1201', 'input'],
  FILTER_CYCLE: ['NWF1202', 'input'],
  VARIABLE_MISSING: ['NWF1203', 'input'],
  VARIABLE_LIST_LENGTH: ['NWF1204', 'input'],
  VARIABLE_INDEX: ['NWF1205', 'input'],
  IP_LEARNING_UNSUPPORTED: ['NWF1206', 'refused-policy'],
  BINDING_INVALID: ['NWF1207', 'input'],
  INTERFACE_DUPLICATE: ['NWF1208', 'input'],
  INTERFACE_UNKNOWN: ['NWF1209', 'input'],
  /** --libvirt where libvirt's runtime directories are missing. */
  LIBVIRT_NOT_FOUND: ['NWF1210', 'input'],
  // limits (src/ir/limits.ts): valid input beyond what nwf-fast compiles
  LIMIT_RULE_EXPANSIONS: ['NWF1211', 'refused-policy'],
  LIMIT_INTERFACE_RULES: ['NWF1212', 'refused-policy'],
  LIMIT_FILTERREF_DEPTH: ['NWF1213', 'refused-policy'],
  LIMIT_POLICY_RULES: ['NWF1214', 'refused-policy'],
  /** CTRL_IP_LEARNING other than any, dhcp or none (or, under dhcp, a DHCPSERVER that is not IPv4): src/resolve/learning.ts. */
  IP_LEARNING_INVALID: ['NWF1215', 'input'],
  // cli
  USAGE: ['NWF1301', 'usage'],
  FRAME_INVALID: ['NWF1302', 'input'],
  // host / kernel, and what a backend refuses at compile time
  COMMAND_FAILED: ['NWF1401', 'runtime'],
  /** A policy the backend cannot express exactly (compile time). */
  POLICY_UNSUPPORTED: ['NWF1402', 'refused-policy'],
  STATE_INVALID: ['NWF1403', 'runtime'],
  LOAD_FAILED: ['NWF1404', 'runtime'],
  BPF_FAILED: ['NWF1405', 'runtime'],
  CLANG_FAILED: ['NWF1406', 'runtime'],
  /** This host lacks something a command needs (a kernel feature, a library, root). */
  KERNEL_UNSUPPORTED: ['NWF1407', 'runtime'],
  /** Another nwf-fast command held the state lock for longer than lock_timeout. */
  LOCK_TIMEOUT: ['NWF1408', 'runtime'],
  /** A load that would leave every protected port unprotected (without --allow-empty): bad input for it, exit 2. */
  LOAD_REFUSED: ['NWF1409', 'input'],
  /** A table named like nwf-fast's that does not carry its owner mark (someone else's, or another state directory's). */
  TABLE_NOT_OURS: ['NWF1410', 'runtime'],
  /** The state directory cannot be written (read-only, full, permissions): checked before the kernel is touched. */
  STATE_UNWRITABLE: ['NWF1411', 'runtime'],
  /** A step failed after the kernel had already changed: what is in force is in the message and in `status`. */
  FAILED_AFTER_APPLY: ['NWF1412', 'runtime'],
  // configuration
  CONFIG_INVALID: ['NWF1501', 'input'],
} as const satisfies Record<string, readonly [`NWF${number}`, ErrorCategory]>;

type ErrorName = keyof typeof ERRORS;

export const CODES = Object.fromEntries(Object.entries(ERRORS).map(([k, [code]]) => [k, code])) as { readonly [K in ErrorName]: (typeof ERRORS)[K][0] };

export type ErrorCode = (typeof CODES)[ErrorName];

const CATEGORY = new Map<string, ErrorCategory>(Object.values(ERRORS).map(([code, category]) => [code, category]));

/** The category of an error code. */
export function categoryOf(code: ErrorCode): ErrorCategory {
  return CATEGORY.get(code) ?? 'internal';
}

/**
 * The CLI's exit codes (README, CLI reference). `drift` and `notLoaded` are
 * `status` (and `metrics`) results: 3 the kernel does not match what is
 * recorded (or cannot be verified, or a change was interrupted), 4 nothing
 * is loaded (never loaded, or unloaded). `partial`: a load (or a compile
 * with --partial) in which some ports' policies failed: those ports fail
 * closed (their traffic is dropped), every other port is protected.
 */
export const EXIT = { ok: 0, runtime: 1, badInput: 2, drift: 3, notLoaded: 4, partial: 5, internal: 70 } as const;

const EXIT_OF_CATEGORY: Readonly<Record<ErrorCategory, number>> = {
  input: EXIT.badInput,
  usage: EXIT.badInput,
  'refused-policy': EXIT.badInput,
  runtime: EXIT.runtime,
  internal: EXIT.internal,
};

/** The exit code for a failure: by its code's category for an NwfError, 70 (a bug) for anything else. */
export function exitCodeFor(e: unknown): number {
  return e instanceof NwfError ? EXIT_OF_CATEGORY[categoryOf(e.code)] : EXIT.internal;
}

/** Where in the input a problem is. */
export interface SourceLocation {
  file: string;
  /** Element path, e.g. `filter[name=clean-traffic]/rule[3]/ip@srcipaddr`. */
  path?: string;
  line?: number;
}

export interface NwfErrorDetails {
  location?: SourceLocation;
  /** What was expected, in words ("a MAC address like 52:54:00:12:34:56"). */
  expected?: string;
  /** Filter, rule, interface context for resolution errors. */
  filter?: string;
  iface?: string;
  hint?: string;
  cause?: unknown;
}

export class NwfError extends Error {
  readonly code: ErrorCode;
  readonly details: NwfErrorDetails;
  constructor(code: ErrorCode, message: string, details: NwfErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'NwfError';
    this.code = code;
    this.details = details;
  }

  /** One diagnostic in the style `file:line: path: error NWF1101: message`. */
  format(): string {
    const d = this.details;
    const where: string[] = [];
    if (d.location) {
      where.push(d.location.line ? `${d.location.file}:${d.location.line}` : d.location.file);
      if (d.location.path) where.push(d.location.path);
    }
    let s = `${where.length ? where.join(': ') + ': ' : ''}error ${this.code}: ${this.message}`;
    if (d.filter) s += `\n  filter: ${d.filter}`;
    if (d.iface) s += `\n  interface: ${d.iface}`;
    if (d.expected) s += `\n  expected: ${d.expected}`;
    if (d.hint) s += `\n  hint: ${d.hint}`;
    return s;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details, cause: undefined };
  }
}

/** A bug in nwf-fast, never the user's fault. */
export class InternalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InternalError';
  }
}

/** Exhaustiveness check for switches over tagged unions. */
export function assertNever(x: never, what = 'value'): never {
  throw new InternalError(`unexpected ${what}: ${JSON.stringify(x)}`);
}
