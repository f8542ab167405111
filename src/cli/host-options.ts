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
import { CODES, NwfError } from '../util/errors.js';
import { one, type OptionSpec, type ParsedArgs } from './args.js';

export const HOST_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  'state-dir': { value: true, arg: 'DIR', help: 'where generations and the load history live (default: state_dir of the configuration, /var/lib/nwf-fast)' },
  'nft-binary': { value: false, help: 'apply through the nft program instead of libnftables in-process' },
  'pin-dir': { value: true, arg: 'DIR', help: 'bpffs directory for the eBPF maps (default: pin_dir of the configuration, /sys/fs/bpf/nwf-fast)' },
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
  return { stateDir: c.stateDir, inProcess: !p.flags.has('nft-binary') && libnftablesAvailable(), pinDir: c.pinDir, ...(c.bpfHook ? { bpfHook: c.bpfHook } : {}) };
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
