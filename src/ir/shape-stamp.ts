// Which interfaces the resolver built from one skeleton (src/resolve/shape.ts):
// their policies are the skeleton's with their own values at the same places
// (values[k] at the places of the skeleton's k-th value), everything else
// equal (shared rules by identity). Kept beside the policy, not in it: a
// policy rebuilt or changed after resolving (a copy, the second-line view)
// has no stamp, and the backends then take their full paths.
import type { InterfacePolicy } from './types.js';

export interface ShapeStamp {
  /** The skeleton, unique in the process. */
  id: number;
  /** The interface's value at each of the skeleton's places, in the skeleton's order (addresses as the layout formats them). */
  values: readonly string[];
}

const stamps = new WeakMap<InterfacePolicy, ShapeStamp>();

export function stampShape(p: InterfacePolicy, s: ShapeStamp): void {
  stamps.set(p, s);
}

export function shapeStampOf(p: InterfacePolicy): ShapeStamp | undefined {
  return stamps.get(p);
}
