// The journal: `journal.json` in the state directory says that a change of
// the kernel is under way ("applying G over F"), written before the kernel
// is touched and removed once the new state is recorded. A journal that
// outlives its process means the change was interrupted (killed, power
// lost) or failed after the kernel had changed: `status` reports it, and the
// next load repairs it with a full replacement.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic, type StateDir } from './generation.js';

export const JOURNAL_FILE = 'journal.json';

export type ChangeOp = 'load' | 'rollback' | 'unload' | 'takeover';

export interface JournalEntry {
  version: 1;
  op: ChangeOp;
  /** What is being applied (null: unload). */
  generation: string | null;
  /** What was in force before. */
  previous: string | null;
  pid: number;
  /** The process's start time (/proc/PID/stat), so a reused pid is not taken for the writer. */
  pidStart?: string;
  startedAt: string;
  /** applying: under way (or interrupted when its process is gone); failed-after-apply: failed with the kernel changed. */
  phase: 'applying' | 'failed-after-apply';
  /** What is in force after the failure, in words. */
  inForce?: string;
  error?: { code: string; message: string };
}

export type JournalRead =
  | { kind: 'none' }
  /** `running`: the process that wrote it still runs (the change is in progress). */
  | { kind: 'entry'; entry: JournalEntry; running: boolean }
  | { kind: 'damaged'; error: string };

/** Field 22 of /proc/PID/stat: when the process started (clock ticks since boot). */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may hold spaces
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

const journalFile = (state: StateDir): string => join(state.dir, JOURNAL_FILE);

export function writeJournal(state: StateDir, e: JournalEntry): void {
  writeAtomic(journalFile(state), JSON.stringify(e, null, 2) + '\n');
}

export function removeJournal(state: StateDir): void {
  rmSync(journalFile(state), { force: true });
}

export function readJournal(state: StateDir): JournalRead {
  let text: string;
  try {
    text = readFileSync(journalFile(state), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    return { kind: 'damaged', error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
  let entry: JournalEntry;
  try {
    entry = JSON.parse(text) as JournalEntry;
    if (!entry || typeof entry.op !== 'string' || typeof entry.pid !== 'number') throw new Error('not a journal entry');
  } catch (e) {
    return { kind: 'damaged', error: text.length === 0 ? 'empty' : (e as Error).message };
  }
  const start = processStart(entry.pid);
  const running = entry.phase === 'applying' && start !== undefined && (entry.pidStart === undefined || entry.pidStart === start);
  return { kind: 'entry', entry, running };
}

/** One sentence on a journal left behind, for status and the next load. */
export function describeJournal(j: JournalRead): string | undefined {
  if (j.kind === 'none') return undefined;
  if (j.kind === 'damaged') return `a change was interrupted (its journal is damaged: ${j.error}); what the kernel holds is unknown`;
  const e = j.entry;
  const what = e.op === 'unload' ? `an unload of ${e.previous ?? 'nothing'}` : `a ${e.op} of ${e.generation} over ${e.previous ?? 'nothing'}`;
  if (j.running) return `${what} is in progress (pid ${e.pid}, since ${e.startedAt})`;
  if (e.phase === 'failed-after-apply') return `${what} failed after the kernel had changed (${e.error?.code ?? ''} ${e.error?.message ?? ''}); in force: ${e.inForce ?? 'unknown'}`;
  return `${what} was interrupted (pid ${e.pid} ended at an unknown point after ${e.startedAt}); the kernel may hold either or a mix`;
}
