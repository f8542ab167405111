// nwf-fast status: what is loaded, drops per interface and reason, drift,
// the VM ports on the managed bridges with who protects them, and one
// verdict (health) with its exit code.
import { addProblem, exitCodeOfHealth, status, type Status } from '../host/status.js';
import { liveStatus, type LiveStatus } from '../host/live/status.js';
import { UNFILTERED_TEXT } from '../host/live/ports.js';
import { DROP_REASONS } from '../ir/reasons.js';
import { describeOneLayer } from '../backends/layers.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';
import { printJson, statusJson } from './json.js';
import { addressText, learningStatus, type LearningStatus } from '../host/learn/status.js';
import { readLearned } from '../host/learn/store.js';
import { nftDhcpNote } from '../backends/nft/learn.js';

export const statusCommand: Command = {
  name: 'status',
  summary: 'loaded generation, drop counters, drift, unprotected VM ports',
  description:
    'Shows the loaded generation, the protected interfaces with their drop counters\n' +
    'per reason, whether the kernel matches what was recorded when it was loaded,\n' +
    'and the ports on the managed bridges matching tap_patterns that nwf-fast does\n' +
    "not protect alone: still under libvirt's rules (takeover not done) or\n" +
    'unprotected. Exit codes: 0 healthy; 3 not healthy: drift, an unprotected\n' +
    'port (also one whose policy failed: its traffic is dropped), drift not\n' +
    'checkable (nothing recorded as loaded),\n' +
    'or a change interrupted or failed after it had changed the kernel; 4 nothing\n' +
    'loaded; 1 status could not look (not root: the kernel is unreadable; the\n' +
    'state directory is damaged).',
  options: {
    ...HOST_OPTIONS,
    json: { value: false, help: 'print the status as JSON (schema version in "version")' },
  },
  run: runStatus,
};

const HEALTH_TEXT: Record<Status['health'], string> = {
  healthy: 'healthy',
  'not-loaded': 'nothing loaded',
  drift: 'DRIFT',
  unprotected: 'UNPROTECTED PORTS',
  unverified: 'NOT VERIFIED',
  interrupted: 'INTERRUPTED',
  'failed-after-apply': 'FAILED AFTER APPLY',
  'no-access': 'UNKNOWN (cannot read the kernel)',
  'state-damaged': 'UNKNOWN (state directory damaged)',
};

/** The status with the live host's view of the VM ports folded in (status and metrics). */
export async function hostStatus(p: ParsedArgs): Promise<{ s: Status; live?: LiveStatus; liveError?: string; learning?: LearningStatus }> {
  const s = await status(hostOptions(p));
  let live: LiveStatus | undefined;
  const host = liveHostFrom(p);
  let learning: LearningStatus | undefined;
  try {
    learning = await learnedView(host);
    if (learning.ports.length && !learning.kernelRead) s.notes.push(`learning ports: the kernel's learned addresses could not be read (${learning.kernelError ?? 'unknown'}); shown as learned.json records them`);
    const dhcp = s.backend === 'nft' ? learning.ports.filter((x) => x.mode === 'dhcp').map((x) => x.tap) : [];
    if (dhcp.length) s.notes.push(nftDhcpNote(dhcp, host.config.dhcpKernelLeaseS));
  } catch (e) {
    s.notes.push(`learning ports: cannot tell (${e instanceof Error ? e.message : String(e)})`);
  }
  try {
    live = await liveStatus(host);
  } catch (e) {
    const liveError = e instanceof Error ? e.message : String(e);
    s.notes.push(`VM ports on the managed bridges: cannot tell (${liveError})`);
    return { s, liveError, ...(learning ? { learning } : {}) };
  }
  const bare = live.ports.filter((x) => x.protection === 'unprotected').map((x) => x.port);
  if (bare.length) {
    addProblem(s, 'unprotected', `${bare.length} VM port(s) on the managed bridges have no rules of nwf-fast or libvirt: ${bare.join(', ')}`);
    s.unprotected = [...new Set([...s.unprotected, ...bare])];
  }
  return { s, live, ...(learning ? { learning } : {}) };
}

/** The learning ports of the desired state, with the kernel's learned addresses (or learned.json's, said so). */
async function learnedView(host: ReturnType<typeof liveHostFrom>): Promise<LearningStatus> {
  const res = { warnings: [] as string[] };
  const kernel = await host.kernelLearned(res);
  const v = learningStatus(host.ports(), kernel, readLearned(host.config.stateDir));
  return kernel === undefined ? { ...v, kernelError: res.warnings[0] ?? 'unknown' } : v;
}

async function runStatus(p: ParsedArgs, io: CliIo): Promise<number> {
  const { s, live, learning } = await hostStatus(p);
  const code = exitCodeOfHealth(s.health);
  if (p.flags.has('json')) {
    printJson(io, 'status', { ...statusJson(s, code), ...(live ? { live } : {}), ...(learning ? { learning } : {}) });
    return code;
  }
  io.out(`health: ${HEALTH_TEXT[s.health]}\n`);
  io.out(`generation: ${s.current ?? '(none loaded)'}${s.backend ? ` (${s.backend})` : ''}${s.current && s.loadedAt ? `  loaded ${s.loadedAt}` : ''}\n`);
  const verified = !['no-access', 'state-damaged'].includes(s.health) && !s.problems.some((x) => x.startsWith('drift cannot be checked'));
  io.out(`drift: ${s.drift ? `YES: ${s.driftDetail}` : verified ? (s.current ? 'no' : 'no (nothing loaded)') : 'UNKNOWN (not checked)'}\n`);
  for (const x of s.problems) if (!x.startsWith('drift: ')) io.out(`problem: ${x}\n`);
  for (const x of s.notes) io.out(`note: ${x}\n`);
  if (s.unprotected.length) io.out(`unprotected: ${s.unprotected.join(', ')}\n`);
  if (s.loaded) io.out(`loaded: ${s.loaded.id} (revision ${s.loaded.revision}), tap patterns ${s.loaded.tapPatterns.join(' ')}, bridges ${s.loaded.bridges.length ? s.loaded.bridges.join(' ') : '(all)'}\n`);
  if (s.unknownPortDrops) io.out(`ports without an entry: ${s.unknownPortDrops.fromVm} frame(s) from, ${s.unknownPortDrops.toVm} to them dropped (unprotected)\n`);
  if (s.interfaces.length) {
    const cols = [...DROP_REASONS];
    io.out(`\n${'interface'.padEnd(12)}${'owner'.padEnd(14)}${'filter'.padEnd(24)}${cols.map((c) => c.padStart(10)).join('')}\n`);
    for (const i of s.interfaces) {
      if (i.status === 'failed') {
        io.out(`${i.iface.padEnd(12)}${i.owner.slice(0, 13).padEnd(14)}${i.filter.slice(0, 23).padEnd(24)}UNPROTECTED (dropped): error ${i.error?.code ?? '?'}: ${i.error?.message ?? ''}\n`);
        continue;
      }
      io.out(`${i.iface.padEnd(12)}${i.owner.slice(0, 13).padEnd(14)}${i.filter.slice(0, 23).padEnd(24)}${cols.map((c) => String(i.drops[c] ?? 0).padStart(10)).join('')}\n`);
      if (i.bpfDrops || i.bpfHooks) {
        const h = i.bpfHooks;
        const where = h === undefined ? '' : h === 'no-tap' ? ', no tap' : h.out === h.in ? ` on ${h.out ?? 'NOTHING'}` : ` on ${h.out ?? 'NOTHING'}/${h.in ?? 'NOTHING'}`;
        if (i.gate === 'closed') io.out(`${''.padEnd(12)}  DROPPED by the nft gate: its tap is not the instance its eBPF programs were attached to (counted unprotected)\n`);
        io.out(`${''.padEnd(12)}${`  (eBPF${where})`.padEnd(38)}${cols.map((c) => String(i.bpfDrops?.[c] ?? 0).padStart(10)).join('')}\n`);
      }
      for (const r of i.oneLayer ?? []) io.out(`${''.padEnd(12)}${describeOneLayer(r)}\n`);
    }
  }
  if (live) {
    const c = live.counts;
    const unfiltered = live.ports.filter((x) => x.unfiltered).length;
    io.out(`\nVM ports (mode ${live.mode}): ${c['nwf-fast']} nwf-fast, ${c.both} nwf-fast and libvirt, ${c.libvirt} libvirt only, ${c.unprotected} UNPROTECTED${unfiltered ? ` (${unfiltered} with no filterref)` : ''}\n`);
    for (const x of live.ports.filter((x) => x.protection !== 'nwf-fast' || x.unfiltered)) {
      const what =
        x.protection === 'both'
          ? "nwf-fast, and still libvirt's rules (takeover not done)"
          : x.protection === 'libvirt'
            ? "libvirt's rules only (not protected by nwf-fast)"
            : x.protection === 'nwf-fast'
              ? UNFILTERED_TEXT
              : 'UNPROTECTED (no rules of nwf-fast or libvirt)';
      io.out(`  ${x.port.padEnd(12)}${x.bridge.padEnd(10)}${(x.owner ?? '').padEnd(16)}${what}\n`);
    }
  }
  if (learning && (learning.ports.length || learning.stored)) {
    const n = (st: string): number => learning.ports.filter((x) => x.state === st).length;
    io.out(`\nlearning ports: ${n('locked')} locked, ${n('learning')} learning${learning.kernelRead ? '' : `, ${n('unknown')} UNKNOWN (kernel not read; learned.json shown)`}; ${learning.stored} stored entr${learning.stored === 1 ? 'y' : 'ies'} of VMs not running here\n`);
    for (const x of learning.ports) {
      const what = x.state === 'learning' ? 'learning (no address yet)' : x.addresses.length ? x.addresses.map(addressText).join(', ') : '-';
      io.out(`  ${x.tap.padEnd(12)}${x.owner.slice(0, 15).padEnd(16)}${x.mac.padEnd(19)}${x.mode.padEnd(6)}${x.state.padEnd(10)}${what}\n`);
    }
  }
  return code;
}
