// One change of the kernel's state (load, rollback, unload) as the state
// directory records it. apply.ts calls, in order:
//   const c = startChange(state, op)     before its checks (times the whole operation)
//   c.journal(generation, previous)      after its checks, before the kernel is touched
//   c.touched(inForce)                   after each step that changed the kernel
//   c.done(...)                          after the new state is recorded
// and on any failure `throw c.fail(e)`. A failure before `journal` is a
// refusal (nothing was tried), between `journal` and the first `touched` a
// failure that left the previous generation in force, after it a failure
// after apply: the journal stays (phase failed-after-apply) for `status`,
// and the error says what is in force now (FAILED_AFTER_APPLY, exit 1).
// Every outcome is one line of the audit log.
import { CODES, NwfError } from '../util/errors.js';
import { appendAudit, type AuditInput, type InterfaceChanges } from './audit.js';
import type { StateDir } from './generation.js';
import { processStart, removeJournal, writeJournal, type ChangeOp, type JournalEntry } from './journal.js';

export interface ChangeDetails {
  backend?: string;
  interfaces?: InterfaceChanges;
  incremental?: boolean;
  forced?: boolean;
  /** What this change repairs, reported in the audit log. */
  repaired?: string[];
}

export class StateChange {
  private readonly t0 = performance.now();
  private entry: JournalEntry | undefined;
  private inForce: string | undefined;
  private generation: string | null = null;
  private previous: string | null = null;
  private details: ChangeDetails = {};

  constructor(
    readonly state: StateDir,
    readonly op: ChangeOp,
  ) {}

  /** Milliseconds since the change started. */
  get elapsedMs(): number {
    return performance.now() - this.t0;
  }

  /** Sets what the audit line names (before the journal, for refusals). */
  describe(generation: string | null, previous: string | null, details: ChangeDetails = {}): void {
    this.generation = generation;
    this.previous = previous;
    this.details = { ...this.details, ...details };
  }

  /** Writes the journal entry "applying generation over previous" (throws STATE_UNWRITABLE before anything changed). */
  journal(generation: string | null, previous: string | null, details: ChangeDetails = {}): void {
    this.describe(generation, previous, details);
    const pidStart = processStart(process.pid);
    this.entry = { version: 1, op: this.op, generation, previous, pid: process.pid, ...(pidStart ? { pidStart } : {}), startedAt: new Date().toISOString(), phase: 'applying' };
    writeJournal(this.state, this.entry);
  }

  /** The kernel has changed: `inForce` says what holds now, in words. */
  touched(inForce: string): void {
    this.inForce = inForce;
  }

  get kernelChanged(): boolean {
    return this.inForce !== undefined;
  }

  private audit(outcome: AuditInput['outcome'], error?: unknown): void {
    const e = error instanceof NwfError ? { code: error.code, message: error.message } : error !== undefined ? { code: 'internal', message: (error as Error)?.message ?? String(error) } : undefined;
    appendAudit(this.state.dir, {
      op: this.op,
      outcome,
      generation: this.generation,
      previous: this.previous,
      durationMs: Math.round(this.elapsedMs * 10) / 10,
      ...this.details,
      ...(e ? { error: e } : {}),
    });
  }

  /** The change is recorded: the journal goes, the audit log gets its line. */
  done(details: ChangeDetails = {}): void {
    this.details = { ...this.details, ...details };
    removeJournal(this.state);
    this.audit('ok');
  }

  /** Records a failure and returns the error to throw. */
  fail(e: unknown): unknown {
    if (!this.entry) {
      this.audit('refused', e);
      return e;
    }
    if (!this.inForce) {
      removeJournal(this.state);
      this.audit('failed', e);
      return e;
    }
    const cause = e instanceof NwfError ? `${e.code}: ${e.message}` : `${(e as Error)?.message ?? String(e)}`;
    const err = new NwfError(
      CODES.FAILED_AFTER_APPLY,
      `${this.op} of ${this.generation ?? 'nothing'} failed after the kernel had changed: ${cause}. In force now: ${this.inForce}`,
      { hint: '`nwf-fast status` shows it; `nwf-fast load` of a generation (or `nwf-fast rollback`) repairs it', cause: e },
    );
    try {
      writeJournal(this.state, { ...this.entry, phase: 'failed-after-apply', inForce: this.inForce, error: { code: err.code, message: cause } });
    } catch {
      // the journal stays as it was (applying): status reports the change as interrupted
    }
    this.audit('failed-after-apply', err);
    return err;
  }
}

export function startChange(state: StateDir, op: ChangeOp): StateChange {
  return new StateChange(state, op);
}
