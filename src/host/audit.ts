// The audit log: `audit.log` in the state directory, append-only, one JSON
// object per line for every load, rollback, unload and takeover (attempted
// or done): when, what, which generation over which, the interfaces that
// changed, how long it took and how it ended. Each line is one write(2) on a
// file opened with O_APPEND, so concurrent writers never interleave inside
// a line. A damaged line (a crash mid-write) is skipped by readers.
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { InterfacePolicy, PolicyIR } from '../ir/types.js';
import type { HostState } from './generation.js';
import type { ChangeOp } from './journal.js';

export const AUDIT_FILE = 'audit.log';
/** The schema version of an audit line. */
export const AUDIT_VERSION = 1;

/**
 * ok: done; refused: checks failed, nothing was tried on the kernel;
 * failed: the kernel refused, the previous generation stays in force;
 * failed-after-apply: the kernel had changed when a later step failed.
 */
export type AuditOutcome = 'ok' | 'refused' | 'failed' | 'failed-after-apply';

export interface InterfaceChanges {
  added: string[];
  removed: string[];
  /** Interfaces in both whose binding (MAC, owner, filter, parameters) or rule counts differ. */
  changed: string[];
}

export interface AuditRecord {
  version: typeof AUDIT_VERSION;
  /** ISO time the operation ended. */
  time: string;
  op: ChangeOp;
  outcome: AuditOutcome;
  generation: string | null;
  previous: string | null;
  backend?: string;
  interfaces?: InterfaceChanges;
  durationMs: number;
  incremental?: boolean;
  /** unload --force: from the kernel alone. */
  forced?: boolean;
  /** What this change repaired (an interrupted change, a damaged state file or stored copy). */
  repaired?: string[];
  error?: { code: string; message: string };
  pid: number;
}

export type AuditInput = Omit<AuditRecord, 'version' | 'time' | 'pid'>;

/** Appends one line; returns false (and changes nothing else) when the log cannot be written. */
export function appendAudit(stateDir: string, rec: AuditInput): boolean {
  const line: AuditRecord = { version: AUDIT_VERSION, time: new Date().toISOString(), ...rec, pid: process.pid };
  try {
    appendFileSync(join(stateDir, AUDIT_FILE), JSON.stringify(line) + '\n', { mode: 0o644 });
    return true;
  } catch {
    return false;
  }
}

/** The log's records, oldest first; damaged lines are skipped and counted. */
export function readAudit(stateDir: string): { records: AuditRecord[]; damagedLines: number } {
  let text: string;
  try {
    text = readFileSync(join(stateDir, AUDIT_FILE), 'utf8');
  } catch {
    return { records: [], damagedLines: 0 };
  }
  const records: AuditRecord[] = [];
  let damagedLines = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const r = JSON.parse(line) as AuditRecord;
      if (r && typeof r.op === 'string' && typeof r.outcome === 'string') records.push(r);
      else damagedLines++;
    } catch {
      damagedLines++;
    }
  }
  return { records, damagedLines };
}

/** The load history as the audit log tells it (what was in force after each change that completed). */
export function stateFromAudit(stateDir: string): HostState {
  const s: HostState = { current: null, history: [] };
  for (const r of readAudit(stateDir).records) {
    if (r.outcome !== 'ok' && r.outcome !== 'failed-after-apply') continue;
    if (r.op === 'unload') s.current = null;
    else if ((r.op === 'load' || r.op === 'rollback') && r.generation) {
      // after a failure after apply, what is in force is uncertain: it is history, not current
      if (r.outcome === 'ok') s.current = r.generation;
      if (s.history[s.history.length - 1] !== r.generation) s.history.push(r.generation);
    }
  }
  return s;
}

/**
 * What identifies an interface's policy for the audit, cheaply (a whole
 * policy is large: hashing 1000 of them twice costs about 300 ms): its
 * binding (MAC, owner, filter, parameters) and its rule counts.
 */
function policyKey(i: InterfacePolicy): string {
  const count = (xs: readonly { rules?: readonly unknown[] }[]): number => xs.reduce((n, c) => n + (c.rules?.length ?? 1), 0);
  const l2 = [i.l2.out, i.l2.in].map((d) => `${d.root.length}/${count(d.chains)}`);
  const l3 = [i.l3.fromVm.length, i.l3.toVm.length, i.l3.toHost.length];
  return JSON.stringify([i.mac, i.owner, i.filter, i.vars, l2, l3]);
}

/** Which interfaces a change adds, removes and changes (by binding and rule counts, policyKey). */
export function interfaceChanges(prev: PolicyIR | undefined, next: PolicyIR | undefined): InterfaceChanges {
  const before = new Map((prev?.interfaces ?? []).map((i) => [i.iface, i]));
  const after = new Map((next?.interfaces ?? []).map((i) => [i.iface, i]));
  const out: InterfaceChanges = { added: [], removed: [], changed: [] };
  for (const [iface, i] of after) {
    const b = before.get(iface);
    if (!b) out.added.push(iface);
    else if (policyKey(b) !== policyKey(i)) out.changed.push(iface);
  }
  for (const iface of before.keys()) if (!after.has(iface)) out.removed.push(iface);
  return out;
}
