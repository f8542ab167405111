// The libvirt qemu hook: `nwf-fast libvirt-hook DOMAIN OPERATION SUBOP EXTRA`
// with the domain XML on stdin (libvirt's docs/hooks.rst; the order verified
// with libvirt 9.0 is in host-facts.md). What each call does:
//
//   start begin       the taps exist, QEMU does not run yet: protect the
//                     domain's interfaces, its learning ports seeded (an
//                     incoming domain from the XML's <nwf:learned>, a fresh
//                     boot with its unexpired dhcp leases); a non-zero exit
//                     makes libvirt refuse the start (and tear the taps down)
//   reconnect begin   libvirtd restarted with the domain running: resync it;
//                     NEVER fails (a failing reconnect hook kills the QEMU)
//   stopped end,      save the learned state (learned.json), then remove the
//   release end       domain's ports (by UUID, and any port on one of its taps)
//   migrate begin,    note the domain as incoming (its start begin follows);
//   restore begin     print nothing (the XML passes unchanged); never fail
//   anything else     nothing
//
// The hook never calls libvirt. Every call is bounded: the lock wait
// (lock_timeout) plus the change, under a hard deadline; its timings go to
// <state_dir>/hook.log (one line per call) and, with --verbose, to stderr.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { NwfError } from '../../util/errors.js';
import { parseLiveDomain, type LiveDomain } from '../../xml/live-domain.js';
import { describeChange, type ChangeResult, type LiveHost } from './host.js';
import { tapsOfDomain } from './observe.js';

export const HOOK_LOG = 'hook.log';

/** What the hook does for OPERATION SUBOP. */
export type HookAction = 'protect' | 'resync' | 'release' | 'incoming' | 'none';

export function hookAction(op: string, subop: string): HookAction {
  if (op === 'start' && subop === 'begin') return 'protect';
  if (op === 'reconnect' && subop === 'begin') return 'resync';
  if ((op === 'stopped' || op === 'release') && subop === 'end') return 'release';
  if ((op === 'migrate' || op === 'restore') && subop === 'begin') return 'incoming';
  return 'none';
}

export interface HookOutcome {
  exitCode: number;
  /** What the hook prints on stdout (libvirt reads it back for migrate/restore: always empty). */
  stdout: string;
  /** Diagnostics for stderr. */
  messages: string[];
  /** One line for hook.log. */
  logLine: string;
}

/**
 * Runs one hook call. `argv` is DOMAIN OPERATION SUBOP EXTRA; `xml` what
 * libvirt wrote to stdin. Never throws: failures become the exit code (0
 * always for reconnect, migrate, restore and anything not handled).
 */
/** What the hook needs of the live host (a fake in unit tests). */
export type HookHost = Pick<LiveHost, 'locked' | 'protectDomain' | 'releaseDomain' | 'ports' | 'noteIncoming'>;

export async function runHook(host: HookHost, argv: readonly string[], xml: string): Promise<HookOutcome> {
  const [domain = '', op = '', subop = ''] = argv;
  const action = hookAction(op, subop);
  const t0 = performance.now();
  const out: HookOutcome = { exitCode: 0, stdout: '', messages: [], logLine: '' };
  const ms = (): string => (performance.now() - t0).toFixed(1);
  let waited = 0;
  if (action === 'none') {
    out.logLine = `${domain} ${op} ${subop}: nothing to do`;
    return out;
  }
  if (action === 'incoming') {
    // never fails, prints nothing: at worst the start is taken for a fresh boot (the port learns anew)
    try {
      const d = parseLiveDomain(xml, `libvirt-hook stdin (${domain} ${op} ${subop})`);
      await host.locked(`libvirt-hook ${domain} ${op} ${subop}`, async (info) => {
        waited = info.waitedMs;
        host.noteIncoming(d, op);
      });
      out.logLine = `${domain} ${op} ${subop}: noted as incoming in ${ms()} ms (lock wait ${waited.toFixed(1)} ms)`;
    } catch (e) {
      const text = e instanceof NwfError ? e.format() : e instanceof Error ? e.message : String(e);
      out.messages.push(`warning: not noted as incoming (its start will learn anew): ${text}`);
      out.logLine = `${domain} ${op} ${subop}: not noted as incoming in ${ms()} ms: ${text.split('\n')[0]}`;
    }
    return out;
  }
  let result: ChangeResult | undefined;
  try {
    let d: LiveDomain;
    try {
      d = parseLiveDomain(xml, `libvirt-hook stdin (${domain} ${op} ${subop})`);
    } catch (e) {
      // a stopped domain's ports go even when its XML is unusable: found by its name
      const owner = action === 'release' ? host.ports().find((p) => p.owner.name === domain)?.owner : undefined;
      if (!owner) throw e;
      out.messages.push(`warning: unusable domain XML, ports of ${domain} found by name: ${e instanceof Error ? e.message : String(e)}`);
      d = { name: owner.name, uuid: owner.uuid, interfaces: [], unmatchedMetadata: [] };
    }
    if (d.name !== domain) out.messages.push(`note: the hook is for domain '${domain}', its XML names '${d.name}'`);
    for (const mac of d.unmatchedMetadata) out.messages.push(`warning: domain ${d.name}: nwf-fast metadata for MAC ${mac} matches no interface`);
    result = await host.locked(`libvirt-hook ${domain} ${op} ${subop}`, async (info) => {
      waited = info.waitedMs;
      if (action === 'release') return host.releaseDomain(d.uuid, tapsOfDomain(d));
      return host.protectDomain(d, 'hook', { start: action === 'protect' });
    });
    for (const w of result.warnings) out.messages.push(`warning: ${w}`);
    out.logLine = `${domain} ${op} ${subop}: ok in ${ms()} ms (lock wait ${waited.toFixed(1)} ms)${describeChange(result) ? `: ${describeChange(result)}` : ''}`;
  } catch (e) {
    const text = e instanceof NwfError ? e.format() : e instanceof Error ? (e.stack ?? e.message) : String(e);
    out.messages.push(text);
    // a failing start hook refuses the start; a reconnect hook must never fail
    out.exitCode = action === 'resync' ? 0 : 1;
    out.logLine = `${domain} ${op} ${subop}: FAILED in ${ms()} ms (lock wait ${waited.toFixed(1)} ms)${action === 'resync' ? ' (reconnect: exit 0 anyway)' : ''}: ${text.split('\n')[0]}`;
  }
  return out;
}

/** Appends one line to <state_dir>/hook.log (best effort: the log never fails a hook). */
export function appendHookLog(stateDir: string, line: string): void {
  try {
    mkdirSync(stateDir, { recursive: true });
    appendFileSync(join(stateDir, HOOK_LOG), `${new Date().toISOString()} pid ${process.pid} ${line}\n`);
  } catch {
    // best effort
  }
}
