// `nwf-fast restore` (boot, nwf-fast-restore.service): put back what is
// recorded as loaded (the loaded record: the last whole load and every port
// change since, e.g. by the libvirt hook), as it is, before libvirt starts
// any guest: a full replacement with the fail-closed skeleton of the
// configuration. It refuses nothing (a tap that does not exist yet is only
// reported: its rules match by name, so they apply from the moment libvirt
// creates it). Nothing is restored after an `unload` (nothing is recorded
// as loaded then). Learning ports are seeded (design ip-learning.md 4.3):
// the kernel's learned state where it survived, else learned.json (after a
// reboot: the addresses the ports had, expired dhcp leases left out).
import { commit, type CommitResult, type HostOptions } from '../apply.js';
import { StateDir } from '../generation.js';
import { LoadedStore } from '../loaded.js';
import { ifIndex, withNetns } from '../netns.js';
import { readLearnedFromKernel } from '../learn/kernel.js';
import { readLearned, seedsForLoad } from '../learn/store.js';
import { readPorts } from './ports.js';

export interface RestoreResult {
  /** What was restored (the loaded record's id, and its generation last loaded whole). */
  restored?: { id: string; generation: string | null; interfaces: number; commit: CommitResult };
  /** Interfaces of the record that do not exist now. */
  missingTaps: string[];
  /** Learning ports seeded, and whether the kernel's learned state could be read. */
  seeded: number;
  kernelRead: boolean;
}

export async function restoreLast(opts: HostOptions): Promise<RestoreResult> {
  const s = new StateDir(opts.stateDir).read();
  const store = new LoadedStore(opts.stateDir);
  const head = store.readHead();
  if (!s.current || !head) return { missingTaps: [], seeded: 0, kernelRead: false };
  const kernel = await readLearnedFromKernel({ stateDir: opts.stateDir, ...(opts.pinDir ? { pinDir: opts.pinDir } : {}), ...(opts.netns ? { netns: opts.netns } : {}) }).catch(() => undefined);
  const seeds = seedsForLoad(readPorts(opts.stateDir), kernel ?? [], readLearned(opts.stateDir));
  // an empty change on the recorded state, replaced in full and verified everywhere
  const c = await commit({ backend: head.backend, ports: new Map(), whole: false, shapes: new Map(), bpfObjects: new Map(), verify: 'all' }, { ...opts, full: true, seeds });
  const exists = (tap: string): boolean => {
    try {
      return ifIndex(tap) > 0;
    } catch {
      return false;
    }
  };
  const taps = store.portNames();
  const missingTaps = opts.netns ? withNetns(opts.netns, () => taps.filter((t) => !exists(t))) : taps.filter((t) => !exists(t));
  return { restored: { id: c.head.id, generation: c.head.generation, interfaces: taps.length, commit: c }, missingTaps, seeded: seeds.size, kernelRead: kernel !== undefined };
}
