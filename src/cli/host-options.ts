// Options shared by the commands that act on the kernel. Where a value comes
// from, first to last: the option, NWF_FAST_STATE_DIR / NWF_FAST_PIN_DIR, the
// configuration file (NWF_FAST_CONFIG or /etc/nwf-fast/nwf-fast.conf), the
// default.
import { loadConfig, type HostConfig } from '../host/config.js';
import { libnftablesAvailable } from '../host/nft.js';
import type { HostOptions } from '../host/apply.js';
import { LiveHost } from '../host/live/host.js';
import { withLock } from '../host/lock.js';
import { BPF_HOOK_CHOICES, type BpfHookChoice } from '../host/bpf/hook.js';
import { CODES, EXIT, NwfError } from '../util/errors.js';
import { many, one, type OptionSpec, type ParsedArgs } from './args.js';
import type { FailedInterface } from '../ir/types.js';
import type { CliIo } from './io.js';

export const HOST_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  'state-dir': { value: true, arg: 'DIR', help: 'where generations and the load history live (default: state_dir of the configuration, /var/lib/nwf-fast)' },
  'nft-binary': { value: false, help: 'apply through the nft program instead of libnftables in-process' },
  'pin-dir': { value: true, arg: 'DIR', help: 'bpffs directory for the eBPF maps (default: pin_dir of the configuration, /sys/fs/bpf/nwf-fast)' },
};

/** What a load puts in the skeleton (the host configuration's tap_patterns and bridges). */
export const SKELETON_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  'tap-pattern': { value: true, repeatable: true, arg: 'NAME', help: 'names of the VM ports, a name or a prefix and * (default vnet*, or as last loaded): a matching port without an entry is dropped' },
  bridge: { value: true, repeatable: true, arg: 'NAME', help: 'a bridge nwf-fast manages (default: every bridge, or as last loaded)' },
};

/** For the commands that attach eBPF programs (load, rollback). */
export const BPF_HOOK_OPTION: Readonly<Record<string, OptionSpec>> = {
  'bpf-hook': {
    value: true,
    arg: 'auto|tc|tcx|xdp',
    help: 'where the eBPF programs go on the taps: tc (clsact filters), tcx (links, Linux 6.6+; 13 ms a link to attach), xdp (XDP for the frames from the VM, tc towards them); auto (default) is tc. Kept for later loads',
  },
};

/** --bpf-hook, checked. */
export function bpfHookOption(p: ParsedArgs): BpfHookChoice | undefined {
  const v = one(p, 'bpf-hook');
  if (v === undefined) return undefined;
  if (!(BPF_HOOK_CHOICES as readonly string[]).includes(v)) {
    throw new NwfError(CODES.USAGE, `--bpf-hook: unknown hook ${JSON.stringify(v)}`, { expected: BPF_HOOK_CHOICES.join(', ') });
  }
  return v as BpfHookChoice;
}

/** The configuration with the command line's --state-dir and --pin-dir on top. */
export function configFrom(p: ParsedArgs): HostConfig {
  const c = loadConfig();
  const stateDir = one(p, 'state-dir');
  const pinDir = one(p, 'pin-dir');
  return { ...c, ...(stateDir ? { stateDir } : {}), ...(pinDir ? { pinDir } : {}) };
}

export function hostOptions(p: ParsedArgs): HostOptions {
  const c = configFrom(p);
  const taps = p.options.has('tap-pattern') ? many(p, 'tap-pattern') : undefined;
  const bridges = p.options.has('bridge') ? many(p, 'bridge') : undefined;
  return {
    stateDir: c.stateDir,
    inProcess: !p.flags.has('nft-binary') && libnftablesAvailable(),
    pinDir: c.pinDir,
    ...(c.bpfHook ? { bpfHook: c.bpfHook } : {}),
    tapPatterns: taps ?? c.tapPatterns,
    bridges: bridges ?? c.bridges,
  };
}

/** The live host (hook, reconcile, takeover) of the command line's configuration. */
export function liveHostFrom(p: ParsedArgs): LiveHost {
  return new LiveHost({ config: configFrom(p), inProcess: !p.flags.has('nft-binary') && libnftablesAvailable() });
}

/** Runs fn under the state lock of the command line's state directory (lock_timeout of the configuration). */
export function lockedCommand<T>(p: ParsedArgs, command: string, fn: () => Promise<T>): Promise<T> {
  const c = configFrom(p);
  return withLock(c.stateDir, { timeoutS: c.lockTimeoutS, command }, fn);
}

/** Reports ports that fail closed; returns the exit code (5 when some did). */
export function reportFailed(failed: readonly FailedInterface[], io: CliIo): number {
  for (const f of failed) io.err(`${f.file ? `${f.file}: ` : ''}error ${f.code}: ${f.message}\n  interface: ${f.iface} (unprotected: its traffic is dropped)\n`);
  if (failed.length) io.err(`partial: ${failed.length} interface(s) fail closed: ${failed.map((f) => f.iface).join(', ')}\n`);
  return failed.length ? EXIT.partial : 0;
}
