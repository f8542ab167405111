// Drop reasons: every drop nwf-fast enforces is tagged with one of these so
// operators can see who spoofs what (nft counters, BPF counters, traces).
import type { RuleOrigin } from './types.js';

export const DROP_REASONS = ['mac-spoof', 'ip-spoof', 'arp-spoof', 'rarp', 'other-l2', 'policy'] as const;
export type DropReason = (typeof DROP_REASONS)[number];

const BY_FILTER: Readonly<Record<string, DropReason>> = {
  'no-mac-spoofing': 'mac-spoof',
  'no-ip-spoofing': 'ip-spoof',
  'no-ipv6-spoofing': 'ip-spoof',
  'no-arp-mac-spoofing': 'arp-spoof',
  'no-arp-ip-spoofing': 'arp-spoof',
  'no-other-rarp-traffic': 'rarp',
  'no-other-l2-traffic': 'other-l2',
};

/** The reason a drop by this rule is counted under (by the standard filter it comes from). */
export function dropReason(origin: RuleOrigin): DropReason {
  return BY_FILTER[origin.filter] ?? 'policy';
}
