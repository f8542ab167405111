// Domains announced as incoming by the libvirt hook (design ip-learning.md
// 4.3): `migrate begin` and `restore begin` come just before the same
// domain's `start begin`, which then seeds its learning ports from the XML's
// metadata (or learned.json) instead of treating the start as a fresh boot.
// <state_dir>/learn-incoming.json, by owner UUID, each note living
// INCOMING_TTL_MS. Written atomically, under the state lock.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../generation.js';

export const INCOMING_FILE = 'learn-incoming.json';
/** How long a note lives: libvirt calls start begin right after (seconds on a loaded host). */
export const INCOMING_TTL_MS = 5 * 60_000;

interface Note {
  name: string;
  op: string;
  at: number;
}

function read(stateDir: string): Record<string, Note> {
  const file = join(stateDir, INCOMING_FILE);
  if (!existsSync(file)) return {};
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { domains?: Record<string, Note> };
    return doc.domains && typeof doc.domains === 'object' ? doc.domains : {};
  } catch {
    // a damaged note file only loses the notes: the start is then a fresh boot (the port learns anew, window-free)
    return {};
  }
}

function write(stateDir: string, domains: Record<string, Note>, now: number): void {
  const live = Object.fromEntries(Object.entries(domains).filter(([, n]) => now - n.at < INCOMING_TTL_MS && n.at <= now + 60_000));
  mkdirSync(stateDir, { recursive: true });
  writeAtomic(join(stateDir, INCOMING_FILE), JSON.stringify({ domains: live }, null, 1) + '\n');
}

/** Notes `uuid` as incoming (migrate begin, restore begin). */
export function noteIncoming(stateDir: string, uuid: string, name: string, op: string, now = Date.now()): void {
  const d = read(stateDir);
  d[uuid.toLowerCase()] = { name, op, at: now };
  write(stateDir, d, now);
}

/** Whether `uuid` was noted as incoming within INCOMING_TTL_MS; the note is consumed. */
export function takeIncoming(stateDir: string, uuid: string, now = Date.now()): Note | undefined {
  const d = read(stateDir);
  const key = uuid.toLowerCase();
  const n = d[key];
  if (!n) return undefined;
  delete d[key];
  write(stateDir, d, now);
  return now - n.at < INCOMING_TTL_MS && n.at <= now + 60_000 ? n : undefined;
}
