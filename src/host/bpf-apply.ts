// Putting a generation's eBPF programs on the taps, and taking them off.
//
// Every object is loaded (verified) and configured before anything is
// attached, so a verifier refusal changes nothing. Attaching uses tc clsact
// filters with nwf-fast's own handle and priority; an existing nwf-fast
// filter is replaced in place (BPF_TC_F_REPLACE), so a tap is never
// unprotected between two generations. Maps are pinned under
// <pinDir>/<tap>/ for status and in-place updates.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadInterface, readStats, updateConfig, type DirectionStats, type LoadedInterface } from '../backends/bpf/load.js';
import type { StoredBpf } from '../backends/bpf/generation.js';
import { DEFAULT_PIN_DIR, ensureBpffs, ifIndex, openPinnedMap, tcDetach, tcHookCreate, tcReplace, type BpfMap } from './bpf/libbpf.js';
import type { Direction } from '../ir/types.js';
import { DIRECTIONS } from '../ir/types.js';
import { namePart } from '../backends/nft/names.js';

/** nwf-fast's tc filter identity on every tap ("NW"). */
export const TC_HANDLE = 0x4e57;
export const TC_PRIORITY = 0x4e57;

export { DEFAULT_PIN_DIR };

export interface PreparedBpf {
  loaded: LoadedInterface[];
  close(): void;
}

/** Opens, verifies and configures every interface's programs; attaches nothing. */
export function prepareBpf(genDir: string, stored: StoredBpf): PreparedBpf {
  const loaded: LoadedInterface[] = [];
  try {
    for (const i of stored.interfaces) {
      loaded.push(
        loadInterface({
          iface: i.iface,
          shapeId: i.shapeId,
          objectPath: join(genDir, i.object),
          programs: i.programs,
          hooks: i.hooks,
          maps: i.maps.map((m) => ({ map: m.map, key: Buffer.from(m.key, 'hex'), value: Buffer.from(m.value, 'hex') })),
        }),
      );
    }
  } catch (e) {
    for (const l of loaded) l.close();
    throw e;
  }
  return { loaded, close: () => loaded.forEach((l) => l.close()) };
}

function tapIndex(iface: string): number | undefined {
  try {
    return ifIndex(iface);
  } catch {
    return undefined;
  }
}

export interface AttachResult {
  attached: string[];
  /** Taps that do not exist (yet): attached by a later load. */
  missing: string[];
}

function pinPath(pinDir: string, iface: string, what: string): string {
  return join(pinDir, namePart(iface), what);
}

/** Attaches (or replaces in place) the prepared programs and pins their maps. */
export function attachBpf(p: PreparedBpf, pinDir = DEFAULT_PIN_DIR): AttachResult {
  const res: AttachResult = { attached: [], missing: [] };
  let pinsReady = false;
  for (const l of p.loaded) {
    const ifindex = tapIndex(l.iface);
    if (ifindex === undefined) {
      res.missing.push(l.iface);
      continue;
    }
    tcHookCreate(ifindex);
    for (const d of DIRECTIONS) tcReplace(l.programs[d], { ifindex, direction: l.hooks[d], handle: TC_HANDLE, priority: TC_PRIORITY });
    res.attached.push(l.iface);
    if (!pinsReady) {
      ensureBpffs(pinDir);
      pinsReady = true;
    }
    mkdirSync(join(pinDir, namePart(l.iface)), { recursive: true, mode: 0o700 });
    for (const [what, map] of Object.entries(l.maps) as [string, BpfMap][]) {
      const path = pinPath(pinDir, l.iface, what);
      rmSync(path, { force: true });
      map.pin(path);
    }
  }
  return res;
}

/** Removes nwf-fast's filters from these taps and their pins (taps that are gone are skipped). */
export function detachBpf(ifaces: readonly string[], pinDir = DEFAULT_PIN_DIR): void {
  for (const iface of ifaces) {
    const ifindex = tapIndex(iface);
    if (ifindex !== undefined) {
      for (const direction of ['ingress', 'egress'] as const) tcDetach({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY });
    }
    rmSync(join(pinDir, namePart(iface)), { recursive: true, force: true });
  }
}

/** Per-interface eBPF counters from the pinned stats maps (absent pins: no entry). */
export function bpfStats(ifaces: readonly string[], pinDir = DEFAULT_PIN_DIR): Map<string, Record<Direction, DirectionStats>> {
  const out = new Map<string, Record<Direction, DirectionStats>>();
  for (const iface of ifaces) {
    const path = pinPath(pinDir, iface, 'stats');
    if (!existsSync(path)) continue;
    const stats = openPinnedMap(path);
    try {
      out.set(iface, readStats({ maps: { stats } as unknown as LoadedInterface['maps'] }));
    } finally {
      stats.close();
    }
  }
  return out;
}

/**
 * Changes the values of already attached programs in place (same interfaces,
 * same shapes): writes the inactive config slot of each changed interface
 * through its pinned maps, then selects it. Returns false (and changes
 * nothing) when that is not possible: different interfaces or shapes, or
 * missing pins.
 */
export function updateBpfInPlace(prev: StoredBpf, next: StoredBpf, pinDir = DEFAULT_PIN_DIR): boolean {
  if (prev.interfaces.length !== next.interfaces.length) return false;
  const byIface = new Map(prev.interfaces.map((i) => [i.iface, i]));
  const changes: { iface: string; value: Buffer }[] = [];
  for (const n of next.interfaces) {
    const o = byIface.get(n.iface);
    if (!o || o.shapeId !== n.shapeId) return false;
    const cfg = n.maps.find((m) => m.map === 'nwf_cfg');
    const oldCfg = o.maps.find((m) => m.map === 'nwf_cfg');
    if (!cfg || !oldCfg) return false;
    if (cfg.value === oldCfg.value) continue;
    for (const what of ['cfg', 'sel']) if (!existsSync(pinPath(pinDir, n.iface, what))) return false;
    changes.push({ iface: n.iface, value: Buffer.from(cfg.value, 'hex') });
  }
  for (const c of changes) {
    const cfg = openPinnedMap(pinPath(pinDir, c.iface, 'cfg'));
    const sel = openPinnedMap(pinPath(pinDir, c.iface, 'sel'));
    try {
      updateConfig({ shapeId: '', maps: { cfg, sel } as unknown as LoadedInterface['maps'] }, { shapeId: '', maps: [{ map: 'nwf_cfg', key: new Uint8Array(4), value: c.value }] });
    } finally {
      cfg.close();
      sel.close();
    }
  }
  return true;
}
