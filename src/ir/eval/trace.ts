// One step of an evaluation trace.

export interface TraceStep {
  stage: 'l2' | 'l3' | 'host';
  /** Chain as libvirt names it (e.g. `libvirt-I-vnet0`, `I-vnet0-mac`, `FI-vnet0`). */
  chain: string;
  event: 'match' | 'jump' | 'return' | 'fall-off' | 'not-hooked' | 'skip' | 'drop';
  ruleId?: string;
  filter?: string;
  rule?: number;
  verdict?: string;
  note?: string;
}
