// How big a policy nwf-fast compiles. Each limit is far above any real
// policy and is there so that a hostile or mistaken input is refused in
// bounded time and memory, with its own error code, instead of exhausting
// the machine. README ("Limits") documents them; `compile --help` lists them.
//
// Reference points (libvirt 9.0): libvirt's remote protocol carries at most
// 4 MiB of XML in one string (VIR_NET_MESSAGE_STRING_MAX), so a filter or
// domain defined through the API is at most that big; its filterref walk has
// no depth limit and no memoization (a filter referenced twice is
// instantiated twice); every expanded rule instance becomes at least one
// ebtables or iptables process, and its duplicate check within one iterator
// is quadratic in the list length. The standard filters reach depth 3 and
// about 30 rule instances per interface.

export interface Limit {
  /** The value: an input above it is refused. */
  max: number;
  /** What is counted, for messages, --help and the README. */
  what: string;
}

export const LIMITS = {
  /** Bytes of one input XML file (filter, binding, domain). */
  fileBytes: { max: 16 * 1024 * 1024, what: 'bytes in one input XML file' },
  /** Nesting of filterrefs below the interface's filter. */
  filterrefDepth: { max: 64, what: 'levels of nested filterrefs' },
  /** Combinations of variable values one rule expands to. */
  ruleExpansions: { max: 65_536, what: 'expansions of one rule (combinations of variable values)' },
  /** Rule instances of one interface, after filterrefs and variable expansion. */
  interfaceRules: { max: 65_536, what: 'rule instances per interface (after filterrefs and expansion)' },
  /**
   * Resolved rules of all interfaces of one compile, which bounds the memory
   * of lowering and of the generation's files (about 2 GB and 20 s here at
   * the limit): an L2 rule or jump counts once per direction, an L3 rule
   * three times per path (its lowering costs about three times as much).
   * A clean-traffic interface costs 27: 10 000 of them 270 000.
   */
  policyRules: { max: 600_000, what: 'resolved rules of all interfaces (an L3 rule counts 3 per path)' },
} as const satisfies Record<string, Limit>;

/** What an interface's policy counts against LIMITS.policyRules. */
export function policyRuleCost(counts: { l2Rules: number; l3Rules: number }): number {
  return counts.l2Rules + 3 * counts.l3Rules;
}

export type LimitName = keyof typeof LIMITS;

/** One line per limit, for --help and the README. */
export function describeLimits(): string[] {
  return Object.values(LIMITS).map((l) => `${l.max.toLocaleString('en-US')} ${l.what}`);
}
