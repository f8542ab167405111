// Side effects behind one small interface: every external command nwf-fast
// runs (nft, ip, tc, clang) goes through a CommandRunner, so unit tests can
// record the commands (RecordingRunner) and kernel tests run them for real
// (ExecaRunner). A command that fails is a CommandError, whichever it was.
import { execa } from 'execa';
import { CODES, NwfError, type ErrorCode, type NwfErrorDetails } from '../util/errors.js';

export interface RunOptions {
  /** Data written to the command's stdin. */
  input?: string;
  /** When false, a non-zero exit is returned instead of thrown. Default true. */
  check?: boolean;
  timeoutMs?: number;
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
}

export interface RunResult {
  argv: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Why the command did not run or did not finish (not found, timed out, killed); absent when it exited. */
  failure?: string;
}

export interface CommandRunner {
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

/**
 * An external command failed: what ran, its exit code (-1 when it did not
 * run or was killed), its stderr, and the original error as `cause`.
 */
export class CommandError extends NwfError {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stderr: string;
  constructor(code: ErrorCode, message: string, r: { argv: readonly string[]; exitCode: number; stderr: string }, details: NwfErrorDetails = {}) {
    super(code, message, details);
    this.name = 'CommandError';
    this.argv = r.argv;
    this.exitCode = r.exitCode;
    this.stderr = r.stderr;
  }

  /** `what (exit N): argv` followed by stderr (or why it did not run). */
  static of(code: ErrorCode, what: string, r: { argv: readonly string[]; exitCode: number; stderr: string; failure?: string }, cause?: unknown): CommandError {
    const why = r.stderr.trim() || r.failure || '';
    return new CommandError(code, `${what} (exit ${r.exitCode}): ${r.argv.join(' ')}${why ? `\n${why}` : ''}`, r, cause === undefined ? {} : { cause });
  }
}

const failed = (r: RunResult): boolean => r.exitCode !== 0 || r.failure !== undefined;

/** Runs commands for real, always as argv arrays (never through a shell). */
export class ExecaRunner implements CommandRunner {
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = argv;
    if (!file) throw new Error('empty argv');
    const r = await execa(file, args, {
      input: opts.input,
      reject: false,
      timeout: opts.timeoutMs ?? 60_000,
      env: opts.env,
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      stripFinalNewline: false,
    });
    const result: RunResult = {
      argv,
      exitCode: r.exitCode ?? -1,
      stdout: String(r.stdout ?? ''),
      stderr: String(r.stderr ?? ''),
      ...(r.failed && r.exitCode === undefined ? { failure: r.shortMessage } : {}),
    };
    if (r.failed && result.exitCode === 0) result.exitCode = -1;
    if ((opts.check ?? true) && failed(result)) throw CommandError.of(CODES.COMMAND_FAILED, 'command failed', result, r);
    return result;
  }
}

/** Records commands instead of running them; answers from a script of replies. */
export class RecordingRunner implements CommandRunner {
  readonly calls: { argv: readonly string[]; input?: string; cwd?: string }[] = [];
  constructor(private readonly reply: (argv: readonly string[], input?: string) => Partial<RunResult> = () => ({})) {}
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push({ argv, ...(opts.input !== undefined ? { input: opts.input } : {}), ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}) });
    const r = this.reply(argv, opts.input);
    const result: RunResult = { argv, exitCode: r.exitCode ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ...(r.failure !== undefined ? { failure: r.failure } : {}) };
    if ((opts.check ?? true) && failed(result)) throw CommandError.of(CODES.COMMAND_FAILED, 'command failed', result);
    return result;
  }
}
