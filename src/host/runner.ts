// Side effects behind one small interface: every external command nwf-fast
// runs goes through a CommandRunner, so unit tests can record the commands
// (RecordingRunner) and kernel tests run them for real (ExecaRunner).
import { execa } from 'execa';
import { CODES, NwfError } from '../util/errors.js';

export interface RunOptions {
  /** Data written to the command's stdin. */
  input?: string;
  /** When false, a non-zero exit is returned instead of thrown. Default true. */
  check?: boolean;
  timeoutMs?: number;
  env?: Record<string, string>;
}

export interface RunResult {
  argv: readonly string[];
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface CommandRunner {
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
}

function commandError(argv: readonly string[], r: { exitCode: number; stderr: string }, cause?: unknown): NwfError {
  return new NwfError(
    CODES.COMMAND_FAILED,
    `command failed (exit ${r.exitCode}): ${argv.join(' ')}${r.stderr ? `\n${r.stderr.trim()}` : ''}`,
    { cause },
  );
}

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
      stripFinalNewline: false,
    });
    const result: RunResult = {
      argv,
      exitCode: r.exitCode ?? (r.failed ? 1 : 0),
      stdout: String(r.stdout ?? ''),
      stderr: String(r.stderr ?? ''),
    };
    if ((opts.check ?? true) && (result.exitCode !== 0 || r.failed)) {
      throw commandError(argv, result, r);
    }
    return result;
  }
}

/** Records commands instead of running them; answers from a script of replies. */
export class RecordingRunner implements CommandRunner {
  readonly calls: { argv: readonly string[]; input?: string }[] = [];
  constructor(private readonly reply: (argv: readonly string[], input?: string) => Partial<RunResult> = () => ({})) {}
  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push({ argv, ...(opts.input !== undefined ? { input: opts.input } : {}) });
    const r = this.reply(argv, opts.input);
    const result: RunResult = { argv, exitCode: r.exitCode ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    if ((opts.check ?? true) && result.exitCode !== 0) throw commandError(argv, result);
    return result;
  }
}
