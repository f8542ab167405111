// Diagnostics. Two kinds of failure, never mixed:
//  - NwfError: the user's input or environment is wrong. It carries a stable
//    code (see CODES), where the problem is (file, element path, line) and
//    what was expected. The CLI prints it and exits 2 (1 for runtime errors).
//  - InternalError: a bug in nwf-fast. The CLI prints a stack and exits 70.

export const CODES = {
  // input files
  XML_MALFORMED: 'NWF1001',
  XML_UNKNOWN_ELEMENT: 'NWF1002',
  XML_UNKNOWN_ATTRIBUTE: 'NWF1003',
  XML_MISSING_ATTRIBUTE: 'NWF1004',
  XML_BAD_ROOT: 'NWF1005',
  XML_DUPLICATE: 'NWF1006',
  FILE_UNREADABLE: 'NWF1007',
  // values
  VALUE_INVALID: 'NWF1101',
  VALUE_OUT_OF_RANGE: 'NWF1102',
  PRIORITY_INVALID: 'NWF1103',
  CHAIN_INVALID: 'NWF1104',
  ATTRIBUTE_CONFLICT: 'NWF1105',
  IFNAME_INVALID: 'NWF1106',
  // resolution
  FILTER_UNKNOWN: 'NWF1201',
  FILTER_CYCLE: 'NWF1202',
  VARIABLE_MISSING: 'NWF1203',
  VARIABLE_LIST_LENGTH: 'NWF1204',
  VARIABLE_INDEX: 'NWF1205',
  IP_LEARNING_UNSUPPORTED: 'NWF1206',
  BINDING_INVALID: 'NWF1207',
  INTERFACE_DUPLICATE: 'NWF1208',
  INTERFACE_UNKNOWN: 'NWF1209',
  // cli
  USAGE: 'NWF1301',
  FRAME_INVALID: 'NWF1302',
  // host / kernel
  COMMAND_FAILED: 'NWF1401',
  KERNEL_UNSUPPORTED: 'NWF1402',
  STATE_INVALID: 'NWF1403',
  LOAD_FAILED: 'NWF1404',
  BPF_FAILED: 'NWF1405',
  CLANG_FAILED: 'NWF1406',
} as const;

export type ErrorCode = (typeof CODES)[keyof typeof CODES];

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
