// Running nft: check, apply and list, optionally inside a namespace.
//
// Two paths with the same results:
//  - the `nft` binary through the CommandRunner (`ip netns exec NS nft ...`),
//    the default, recordable in unit tests;
//  - `inProcess: true`: libnftables.so.1 through koffi: no process start and
//    no `ip netns exec` (an add-only transaction: ~0.1-0.6 ms vs ~5 ms).
//    libnftables talks netlink in the namespace of the calling thread, so the
//    context is created, used and freed inside withNetns() (one per call).
// Measured here: a transaction that deletes anything (flush of a table with
// rules, delete element) waits for an RCU grace period in the kernel commit,
// 6-25 ms on either path; pure additions do not.
// Without `netns` both paths act on the caller's current namespace.
// Failures keep argv, exit code and stderr (runner.ts CommandError).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import koffi from 'koffi';
import type { NftJsonDocument, Json } from '../backends/nft/model.js';
import { CODES, NwfError, type ErrorCode } from '../util/errors.js';
import { CommandError, type CommandRunner } from './runner.js';
import { hostRunner, inNetns, withNetns } from './netns.js';

export interface NftRunOptions {
  /** Run inside this namespace (never leave it out in tests: the root namespace is the machine's). */
  netns?: string;
  runner?: CommandRunner;
  /** Use libnftables in-process instead of spawning nft. */
  inProcess?: boolean;
  timeoutMs?: number;
}

type Input = NftJsonDocument | string;
const inputText = (input: Input): string => (typeof input === 'string' ? input : JSON.stringify(input));

async function runNft(
  args: readonly string[],
  opts: NftRunOptions,
  input: string | undefined,
  code: ErrorCode,
  what: string,
): Promise<string> {
  if (opts.inProcess) return runInProcess(args, opts, input, code, what);
  // `nft -f -` opens /dev/stdin, which fails (ENXIO) when stdin is the
  // socketpair Node gives child processes; so the input goes through a
  // private temporary file instead (`-f -` in args is replaced by its path).
  let dir: string | undefined;
  let nftArgs = [...args];
  if (input !== undefined) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nwf-nft-'));
    const file = path.join(dir, args.includes('-j') ? 'batch.json' : 'batch.nft');
    fs.writeFileSync(file, input, { mode: 0o600 });
    nftArgs = args.map((a, i) => (a === '-' && args[i - 1] === '-f' ? file : a));
  }
  const argv = inNetns(opts.netns, ['nft', ...nftArgs]);
  const runner = opts.runner ?? hostRunner();
  try {
    let r;
    try {
      r = await runner.run(argv, { check: false, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
    } catch (cause) {
      throw CommandError.of(code, what, { argv, exitCode: -1, stderr: '' }, cause);
    }
    if (r.exitCode !== 0 || r.failure !== undefined) throw CommandError.of(code, what, r);
    return r.stdout;
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** `nft -c -j -f FILE`: validates a JSON batch (the kernel checks it too) without applying it. */
export async function nftCheck(doc: Input, opts: NftRunOptions = {}): Promise<void> {
  await runNft(['-c', '-j', '-f', '-'], opts, inputText(doc), CODES.LOAD_FAILED, 'nft rejected the batch');
}

/** `nft -j -f FILE`: applies a JSON batch as one transaction. */
export async function nftApply(doc: Input, opts: NftRunOptions = {}): Promise<void> {
  await runNft(['-j', '-f', '-'], opts, inputText(doc), CODES.LOAD_FAILED, 'nft could not apply the batch');
}

/** `nft -c -f FILE`: validates text syntax (e.g. printNftText output). */
export async function nftCheckText(text: string, opts: NftRunOptions = {}): Promise<void> {
  await runNft(['-c', '-f', '-'], opts, text, CODES.LOAD_FAILED, 'nft rejected the ruleset text');
}

/** `nft -f FILE` with text. */
export async function nftApplyText(text: string, opts: NftRunOptions = {}): Promise<void> {
  await runNft(['-f', '-'], opts, text, CODES.LOAD_FAILED, 'nft could not apply the ruleset text');
}

function parseList(stdout: string, argv: readonly string[]): NftJsonDocument {
  try {
    const doc = JSON.parse(stdout) as unknown;
    if (typeof doc === 'object' && doc !== null && Array.isArray((doc as { nftables?: unknown }).nftables)) {
      return doc as NftJsonDocument;
    }
  } catch (cause) {
    throw CommandError.of(CODES.COMMAND_FAILED, 'nft printed invalid JSON', { argv, exitCode: 0, stderr: stdout.slice(0, 200) }, cause);
  }
  throw CommandError.of(CODES.COMMAND_FAILED, 'nft printed JSON without an nftables array', { argv, exitCode: 0, stderr: stdout.slice(0, 200) });
}

/** `nft -j list table FAMILY NAME`, parsed. */
export async function nftListTable(family: string, name: string, opts: NftRunOptions = {}): Promise<NftJsonDocument> {
  const args = ['-j', 'list', 'table', family, name];
  return parseList(await runNft(args, opts, undefined, CODES.COMMAND_FAILED, 'nft list failed'), args);
}

/** `nft -j list set FAMILY TABLE NAME`, parsed. */
export async function nftListSet(family: string, table: string, name: string, opts: NftRunOptions = {}): Promise<NftJsonDocument> {
  const args = ['-j', 'list', 'set', family, table, name];
  return parseList(await runNft(args, opts, undefined, CODES.COMMAND_FAILED, 'nft list failed'), args);
}

/** `nft -j list ruleset`, parsed. */
export async function nftListRuleset(opts: NftRunOptions = {}): Promise<NftJsonDocument> {
  const args = ['-j', 'list', 'ruleset'];
  return parseList(await runNft(args, opts, undefined, CODES.COMMAND_FAILED, 'nft list failed'), args);
}

// ---------------------------------------------------------------------------
// Reading list output

type JsonObject = { [key: string]: Json };

/** The inner objects of one kind ('table', 'chain', 'rule', 'set', 'map', 'counter', ...) in list output. */
export function listed(doc: NftJsonDocument, kind: string): JsonObject[] {
  const out: JsonObject[] = [];
  for (const item of doc.nftables) {
    const v = item[kind];
    if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v);
  }
  return out;
}

export interface RuleCounter {
  chain: string;
  handle: number;
  comment?: string;
  packets: number;
  bytes: number;
}

/** Anonymous counters of the rules in list output (one entry per rule with a counter). */
export function ruleCounters(doc: NftJsonDocument, chain?: string): RuleCounter[] {
  const out: RuleCounter[] = [];
  for (const r of listed(doc, 'rule')) {
    if (chain !== undefined && r.chain !== chain) continue;
    for (const s of Array.isArray(r.expr) ? r.expr : []) {
      const c = s && typeof s === 'object' && !Array.isArray(s) ? s.counter : undefined;
      if (c && typeof c === 'object' && !Array.isArray(c)) {
        out.push({
          chain: String(r.chain),
          handle: Number(r.handle),
          ...(typeof r.comment === 'string' ? { comment: r.comment } : {}),
          packets: Number(c.packets ?? 0),
          bytes: Number(c.bytes ?? 0),
        });
      }
    }
  }
  return out;
}

/** Named counter objects in list output, by name. */
export function namedCounters(doc: NftJsonDocument): Map<string, { packets: number; bytes: number }> {
  const m = new Map<string, { packets: number; bytes: number }>();
  for (const c of listed(doc, 'counter')) m.set(String(c.name), { packets: Number(c.packets ?? 0), bytes: Number(c.bytes ?? 0) });
  return m;
}

// ---------------------------------------------------------------------------
// In-process libnftables

const NFT_CTX_DEFAULT = 0;
const NFT_CTX_OUTPUT_JSON = 1 << 4;

interface LibNftables {
  ctxNew(flags: number): unknown;
  ctxFree(ctx: unknown): void;
  setOutputFlags(ctx: unknown, flags: number): void;
  setDryRun(ctx: unknown, dry: boolean): void;
  bufferOutput(ctx: unknown): number;
  bufferError(ctx: unknown): number;
  outputBuffer(ctx: unknown): string | null;
  errorBuffer(ctx: unknown): string | null;
  runFromBuffer(ctx: unknown, buf: string): number;
}

let libCache: LibNftables | null | undefined;

function libnftables(): LibNftables | null {
  if (libCache !== undefined) return libCache;
  try {
    const lib = koffi.load('libnftables.so.1');
    const ctxNew = lib.func('void *nft_ctx_new(uint32_t flags)');
    const ctxFree = lib.func('void nft_ctx_free(void *ctx)');
    const setOutputFlags = lib.func('void nft_ctx_output_set_flags(void *ctx, unsigned int flags)');
    const setDryRun = lib.func('void nft_ctx_set_dry_run(void *ctx, bool dry)');
    const bufferOutput = lib.func('int nft_ctx_buffer_output(void *ctx)');
    const bufferError = lib.func('int nft_ctx_buffer_error(void *ctx)');
    const outputBuffer = lib.func('const char *nft_ctx_get_output_buffer(void *ctx)');
    const errorBuffer = lib.func('const char *nft_ctx_get_error_buffer(void *ctx)');
    const runFromBuffer = lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
    libCache = {
      ctxNew: (f) => ctxNew(f),
      ctxFree: (c) => ctxFree(c),
      setOutputFlags: (c, f) => setOutputFlags(c, f),
      setDryRun: (c, d) => setDryRun(c, d),
      bufferOutput: (c) => bufferOutput(c) as number,
      bufferError: (c) => bufferError(c) as number,
      outputBuffer: (c) => outputBuffer(c) as string | null,
      errorBuffer: (c) => errorBuffer(c) as string | null,
      runFromBuffer: (c, b) => runFromBuffer(c, b) as number,
    };
  } catch {
    libCache = null;
  }
  return libCache;
}

/** True when libnftables.so.1 can be loaded for `inProcess: true`. */
export function libnftablesAvailable(): boolean {
  return libnftables() !== null;
}

export interface NftRunResult {
  rc: number;
  output: string;
  error: string;
}

/**
 * Runs nft commands (JSON or text, as `nft -f` would read them) through
 * libnftables in the calling thread's namespace, or in `netns`. Synchronous.
 * `json` switches JSON output on (list commands); JSON input is recognised
 * either way.
 */
export function runLibnftables(input: string, opts: { netns?: string; dryRun?: boolean; json?: boolean } = {}): NftRunResult {
  const lib = libnftables();
  if (!lib) throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'libnftables.so.1 is not available', { hint: 'install the libnftables1 package' });
  const run = (): NftRunResult => {
    const ctx = lib.ctxNew(NFT_CTX_DEFAULT);
    if (!ctx) throw new NwfError(CODES.COMMAND_FAILED, 'nft_ctx_new failed');
    try {
      // JSON input is only parsed as JSON with the JSON flag; text falls back to the text parser.
      const jsonInput = input.trimStart().startsWith('{');
      if (opts.json || jsonInput) lib.setOutputFlags(ctx, NFT_CTX_OUTPUT_JSON);
      if (opts.dryRun) lib.setDryRun(ctx, true);
      lib.bufferOutput(ctx);
      lib.bufferError(ctx);
      const rc = lib.runFromBuffer(ctx, input);
      return { rc, output: lib.outputBuffer(ctx) ?? '', error: lib.errorBuffer(ctx) ?? '' };
    } finally {
      lib.ctxFree(ctx);
    }
  };
  return opts.netns === undefined ? run() : withNetns(opts.netns, run);
}

function runInProcess(args: readonly string[], opts: NftRunOptions, input: string | undefined, code: ErrorCode, what: string): string {
  // Map the nft argv this module builds onto libnftables settings.
  const dryRun = args.includes('-c');
  const json = args.includes('-j');
  const fileIdx = args.indexOf('-f');
  const commands = fileIdx >= 0 ? (input ?? '') : args.filter((a) => a !== '-c' && a !== '-j').join(' ');
  const argv = ['libnftables', ...(opts.netns ? [`netns=${opts.netns}`] : []), ...args];
  const r = runLibnftables(commands, { ...(opts.netns !== undefined ? { netns: opts.netns } : {}), dryRun, json });
  if (r.rc !== 0) throw CommandError.of(code, what, { argv, exitCode: r.rc, stderr: r.error });
  return r.output;
}
