// Options shared by the commands that act on the kernel.
import { DEFAULT_STATE_DIR } from '../host/generation.js';
import { libnftablesAvailable } from '../host/nft.js';
import type { HostOptions } from '../host/apply.js';
import { one, type OptionSpec, type ParsedArgs } from './args.js';

export const HOST_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  'state-dir': { value: true, arg: 'DIR', help: `where generations and the load history live (default ${DEFAULT_STATE_DIR})` },
  'nft-binary': { value: false, help: 'apply through the nft program instead of libnftables in-process' },
  'pin-dir': { value: true, arg: 'DIR', help: 'bpffs directory for the eBPF maps (default /sys/fs/bpf/nwf-fast)' },
};

export function hostOptions(p: ParsedArgs): HostOptions {
  const pinDir = one(p, 'pin-dir');
  return { stateDir: one(p, 'state-dir') ?? DEFAULT_STATE_DIR, inProcess: !p.flags.has('nft-binary') && libnftablesAvailable(), ...(pinDir ? { pinDir } : {}) };
}
