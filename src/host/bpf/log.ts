// Capture of libbpf's log output (libbpf_set_print).
//
// libbpf prints through a varargs callback `int (*)(level, const char *fmt,
// va_list ap)`. JS cannot walk a va_list, so the callback hands fmt and ap
// straight to libc's vsnprintf. On x86-64 a va_list is a 24-byte struct
// (`__va_list_tag[1]`) that decays to a pointer; vsnprintf consumes it, so to
// size the output first we format from a byte copy of it (exactly what va_copy
// does on x86-64) and then format for real from the original. On other
// architectures we format once into a large buffer.
//
// One callback is registered per process (shared through a global symbol, since
// test runners may evaluate this module more than once). Each libbpf operation
// runs inside `captureLibbpfLog`, which collects the lines printed during that
// call so errors can carry them (a failed bpf_object__load prints the verifier
// log at WARN level between "-- BEGIN PROG LOAD LOG --" and "-- END PROG LOAD
// LOG --").
import { koffi, libbpf } from './ffi.js';

/** enum libbpf_print_level */
export const LibbpfLogLevel = { WARN: 0, INFO: 1, DEBUG: 2 } as const;
export type LibbpfLogLevel = (typeof LibbpfLogLevel)[keyof typeof LibbpfLogLevel];

export type LibbpfLogSink = (level: LibbpfLogLevel, text: string) => void;

interface PrintState {
  cb: bigint | null;
  previous: bigint | null;
  /** Innermost capture first. */
  captures: string[][];
  /** Levels above this are dropped before formatting (DEBUG is voluminous). */
  maxLevel: LibbpfLogLevel;
  sink: LibbpfLogSink | undefined;
  /** Last few messages, for diagnostics outside any capture. */
  recent: string[];
}

const STATE_KEY = Symbol.for('nwf-fast.bpf.libbpf-print');
const RECENT_MAX = 200;
const FIRST_BUF = 4096;
const FALLBACK_BUF = 1 << 20;

function state(): PrintState {
  const g = globalThis as unknown as Record<symbol, PrintState | undefined>;
  let s = g[STATE_KEY];
  if (!s) {
    s = { cb: null, previous: null, captures: [], maxLevel: LibbpfLogLevel.INFO, sink: undefined, recent: [] };
    g[STATE_KEY] = s;
  }
  return s;
}

function format(fmt: unknown, ap: unknown): string {
  const api = libbpf();
  if (process.arch === 'x64' && typeof ap === 'bigint') {
    // Format from a copy of the va_list to learn the length; keep `ap` intact.
    const copy = Buffer.from(new Uint8Array(koffi.view(ap, 24)));
    const small = Buffer.alloc(FIRST_BUF);
    const n = api.vsnprintf(small, small.length, fmt, copy);
    if (n < 0) return '';
    if (n < small.length) return small.toString('utf8', 0, n);
    const big = Buffer.alloc(n + 1);
    const m = api.vsnprintf(big, big.length, fmt, ap);
    return big.toString('utf8', 0, Math.max(0, Math.min(m, n)));
  }
  const buf = Buffer.alloc(FALLBACK_BUF);
  const n = api.vsnprintf(buf, buf.length, fmt, ap);
  return n < 0 ? '' : buf.toString('utf8', 0, Math.min(n, buf.length - 1));
}

function onPrint(level: number, fmt: unknown, ap: unknown): number {
  const s = state();
  if (level > s.maxLevel) return 0;
  try {
    const text = format(fmt, ap);
    for (const c of s.captures) c.push(text);
    s.recent.push(text);
    if (s.recent.length > RECENT_MAX) s.recent.splice(0, s.recent.length - RECENT_MAX);
    s.sink?.(level as LibbpfLogLevel, text);
  } catch {
    // Never let an exception cross back into libbpf.
  }
  return 0;
}

/** Install the capturing print callback (idempotent). */
export function installLibbpfPrint(): void {
  const s = state();
  if (s.cb !== null) return;
  const api = libbpf();
  s.cb = koffi.register(onPrint, koffi.pointer(api.types.printFn));
  s.previous = api.libbpf_set_print(s.cb);
}

/**
 * Restore libbpf's previous print function and unregister the koffi callback.
 * Only needed by long-running processes that stop using BPF.
 */
export function uninstallLibbpfPrint(): void {
  const s = state();
  if (s.cb === null) return;
  const api = libbpf();
  api.libbpf_set_print(s.previous);
  koffi.unregister(s.cb);
  s.cb = null;
  s.previous = null;
}

/** Which libbpf messages to capture: WARN and INFO by default; DEBUG on request. */
export function setLibbpfLogLevel(level: LibbpfLogLevel): void {
  state().maxLevel = level;
}

/** Also forward every captured message to `sink` (undefined to stop). */
export function setLibbpfLogSink(sink: LibbpfLogSink | undefined): void {
  state().sink = sink;
}

/** The last messages libbpf printed (up to 200), oldest first. */
export function recentLibbpfLog(): string[] {
  return [...state().recent];
}

/** Run `fn` and return what libbpf printed meanwhile, split into lines. */
export function captureLibbpfLog<T>(fn: () => T): { value: T; log: string[] } {
  installLibbpfPrint();
  const s = state();
  const mine: string[] = [];
  s.captures.push(mine);
  try {
    const value = fn();
    return { value, log: toLines(mine) };
  } finally {
    const i = s.captures.lastIndexOf(mine);
    if (i >= 0) s.captures.splice(i, 1);
  }
}

export function toLines(chunks: readonly string[]): string[] {
  const out: string[] = [];
  for (const c of chunks) {
    for (const line of c.split('\n')) if (line.length > 0) out.push(line);
  }
  return out;
}

/** The verifier log between libbpf's BEGIN/END PROG LOAD LOG markers, if any. */
export function extractVerifierLog(lines: readonly string[]): string | undefined {
  const start = lines.findIndex((l) => l.includes('-- BEGIN PROG LOAD LOG --'));
  if (start < 0) return undefined;
  let end = lines.findIndex((l, i) => i > start && l.includes('-- END PROG LOAD LOG --'));
  if (end < 0) end = lines.length;
  const body = lines.slice(start + 1, end);
  // "-- END PROG LOAD LOG --" may share a line with the log's last line.
  const last = lines[end];
  if (last !== undefined) {
    const before = last.split('-- END PROG LOAD LOG --')[0];
    if (before && before.trim()) body.push(before);
  }
  return body.join('\n');
}

/**
 * The verifier's reason: the trailing message lines of its log (at most two,
 * e.g. "invalid access to packet, off=12 size=2, ...; R1 offset is outside of
 * the packet"), skipping statistics, instructions and source comments.
 */
export function verifierReason(log: string): string | undefined {
  const lines = log.split('\n').map((l) => l.trim()).filter(Boolean);
  const reason: string[] = [];
  for (let i = lines.length - 1; i >= 0 && reason.length < 2; i--) {
    const l = lines[i]!;
    if (/^(processed \d+ insns|verification time|stack depth|-- )/.test(l)) {
      if (reason.length === 0) continue;
      break;
    }
    if (/^\d+: /.test(l) || l.startsWith(';')) break;
    reason.unshift(l);
  }
  return reason.length ? reason.join('; ') : undefined;
}
