// Every name the eBPF backend shares with its C templates (bpf/) and with the
// host that loads, attaches and pins its objects.
import type { Direction } from '../../ir/types.js';
import { InternalError } from '../../util/errors.js';

/** The two tc programs of every object, by direction (bpf/nwf.bpf.c). */
export const PROGRAM_NAMES: Readonly<Record<Direction, string>> = { out: 'nwf_from_vm', in: 'nwf_to_vm' };

/** The from-VM policy as an XDP program, in every object (bpf/nwf.bpf.c). */
export const XDP_PROGRAM_NAME = 'nwf_from_vm_xdp';

/** tc hook of each direction's program on the tap: out = from the VM, in = to the VM. */
export const TC_HOOKS: Readonly<Record<Direction, 'ingress' | 'egress'>> = { out: 'ingress', in: 'egress' };

/** The maps a loader fills (bpf/lib/nwf_maps.h). */
export const MAP_NAMES = { cfg: 'nwf_cfg', ifxDir: 'nwf_ifx_dir', ifx: 'nwf_ifx', slot: 'nwf_slot', stats: 'nwf_stats' } as const;

/** The kernel's name of a shape's loaded object (at most 15 characters). */
export function objectName(shapeId: string): string {
  return `nwf_${shapeId.slice(0, 8)}`;
}

/** The directory (under the pin root) holding a shape's pinned maps. */
export function shapePinDir(shapeId: string): string {
  if (!/^[0-9a-f]+$/.test(shapeId)) throw new InternalError(`invalid shape id ${JSON.stringify(shapeId)}`);
  return `shape-${shapeId}`;
}

/** The shape id of a pin directory, if it is one of nwf-fast's. */
export function shapeOfPinDir(dir: string): string | undefined {
  return /^shape-([0-9a-f]+)$/.exec(dir)?.[1];
}

/** A shape's object file inside a generation directory. */
export function objectFile(shapeId: string): string {
  return `${shapeId}.bpf.o`;
}
