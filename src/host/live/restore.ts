// `nwf-fast restore` (boot, nwf-fast-restore.service): load the generation
// recorded as loaded, as it is, before libvirt starts any guest. It refuses
// nothing (a tap that does not exist yet is only reported: its rules match
// by name, so they apply from the moment libvirt creates it). Nothing is
// restored after an `unload` (nothing is recorded as loaded then).
import { loadGeneration, type HostOptions, type LoadResult } from '../apply.js';
import { StateDir } from '../generation.js';
import { ifIndex, withNetns } from '../netns.js';

export interface RestoreResult {
  load?: LoadResult;
  /** Interfaces of the generation that do not exist now. */
  missingTaps: string[];
}

export async function restoreLast(opts: HostOptions): Promise<RestoreResult> {
  const state = new StateDir(opts.stateDir);
  const s = state.read();
  if (!s.current) return { missingTaps: [] };
  const load = await loadGeneration(state.generationDir(s.current), { ...opts, full: true });
  const exists = (tap: string): boolean => {
    try {
      return ifIndex(tap) > 0;
    } catch {
      return false;
    }
  };
  const taps = load.generation.manifest.interfaces.map((i) => i.iface);
  const missingTaps = opts.netns ? withNetns(opts.netns, () => taps.filter((t) => !exists(t))) : taps.filter((t) => !exists(t));
  return { load, missingTaps };
}
