// The learning ports in `status` (design ip-learning.md 4.1): per port its
// mode, addresses with since/expires, and whether it is locked or still
// learning. The kernel's state is the truth; when it cannot be read the
// status says so and shows learned.json's record, never "locked" on faith.
import { learnKey, type LearnedAddress, type LearnedEntry, type LearnMode } from '../../ir/learning.js';
import type { DesiredPort } from '../live/ports.js';
import { byKey, learningPorts, liveEntry } from './store.js';

export type LearnState = 'locked' | 'learning' | 'unknown';

export interface LearningPortStatus {
  tap: string;
  owner: string;
  mac: string;
  mode: LearnMode;
  /** locked: the kernel holds an address; learning: it holds none; unknown: the kernel could not be read. */
  state: LearnState;
  addresses: LearnedAddress[];
}

export interface LearningStatus {
  /** Whether the kernel's learned state could be read (else `state` is unknown and addresses are learned.json's). */
  kernelRead: boolean;
  kernelError?: string;
  ports: LearningPortStatus[];
  /** learned.json entries of ports not on this host now (stopped domains, migrated away): kept for a restore or a return. */
  stored: number;
}

export function learningStatus(ports: readonly DesiredPort[], kernel: readonly LearnedEntry[] | undefined, state: readonly LearnedEntry[], now = Date.now()): LearningStatus {
  const k = kernel ? byKey(kernel) : undefined;
  const s = byKey(state);
  const lps = learningPorts(ports);
  const out: LearningPortStatus[] = lps.map((lp) => {
    const e = k ? k.get(lp.key) : s.get(lp.key);
    const live = e && e.mode === lp.mode ? liveEntry(e, now) : undefined;
    const st: LearnState = !k ? 'unknown' : live ? 'locked' : 'learning';
    return { tap: lp.port.tap, owner: lp.port.owner.name, mac: lp.port.mac, mode: lp.mode, state: st, addresses: live?.addresses ?? [] };
  });
  const running = new Set(lps.map((l) => l.key));
  return { kernelRead: kernel !== undefined, ports: out.sort((a, b) => (a.tap < b.tap ? -1 : 1)), stored: state.filter((e) => !running.has(learnKey(e.owner.uuid, e.mac))).length };
}

/** One address for a line of text: `10.0.0.5 since 2026-…` / `10.0.0.6 until 2026-… (server 10.0.0.1)`. */
export function addressText(a: LearnedAddress): string {
  return [a.ip, a.since ? `since ${a.since}` : '', a.expires ? `until ${a.expires}` : '', a.server ? `(server ${a.server})` : ''].filter(Boolean).join(' ');
}
