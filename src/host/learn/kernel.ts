// Reading the learned state back from the kernel: the persistent per-port
// nft sets and the pinned eBPF learning maps of the loaded generation.
// "learncore" owns this file (the contract, /work/team/tasks/learn-common.md);
// until its kernel side lands this is a stub that says so, and the callers
// (store seeds, the hook's save on stop, reconcile, status) treat the
// failure as "the kernel's state is unknown": they seed from learned.json
// and never overwrite it with nothing.
import type { LearnedEntry } from '../../ir/learning.js';
import { CODES, NwfError } from '../../util/errors.js';

export interface ReadLearnedOptions {
  /** nwf-fast's state directory (the loaded generation's record). */
  stateDir?: string;
  /** bpffs directory of nwf-fast's pins. */
  pinDir?: string;
  /** Network namespace to read in (tests); absent: the caller's. */
  netns?: string;
}

/** Every learning port's addresses as the kernel holds them (source 'kernel'). */
export function readLearnedFromKernel(_opts: ReadLearnedOptions = {}): Promise<LearnedEntry[]> {
  return Promise.reject(new NwfError(CODES.COMMAND_FAILED, 'reading learned addresses from the kernel: not implemented in this build'));
}
