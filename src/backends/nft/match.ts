// Match statements shared by the L2 (ebtables) and L3 (iptables) lowering:
// address and range comparisons, the refusal of what nft cannot express,
// and rule comments.
import { CODES, NwfError } from '../../util/errors.js';
import type { IpTest, MacTest, RangeTest } from '../../ir/types.js';
import { macToBytes } from '../../ir/values.js';
import { bitAnd, eq, ne, num, prefix, range, sym } from './build.js';
import type { Selector, Statement } from './model.js';

export function cmp(left: Selector, neg: boolean, right: Parameters<typeof eq>[1]): Statement {
  return neg ? ne(left, right) : eq(left, right);
}

export function macMatch(sel: Selector, t: MacTest): Statement {
  if (!t.mask || t.mask === 'ff:ff:ff:ff:ff:ff') return cmp(sel, t.neg, sym(t.addr));
  const mask = macToBytes(t.mask);
  const want = macToBytes(t.addr).map((b, i) => b & (mask[i] as number));
  const wantMac = [...want].map((b) => b.toString(16).padStart(2, '0')).join(':');
  return cmp(bitAnd(sel, sym(t.mask)), t.neg, sym(wantMac));
}

export function ipPrefix(sel: Selector, t: IpTest): Statement {
  const full = t.family === 'ipv4' ? 32 : 128;
  return cmp(sel, t.neg, t.prefix === full ? sym(t.addr) : prefix(t.addr, t.prefix));
}

export function portRange(sel: Selector, t: RangeTest): Statement {
  return cmp(sel, t.neg, t.lo === t.hi ? num(t.lo) : range(t.lo, t.hi));
}

/** A policy the nftables backend refuses rather than approximates (bad input for this backend). */
export function unsupported(rule: { id: string; origin: { file: string; filter: string } }, what: string, iface: string, why?: string): never {
  throw new NwfError(CODES.POLICY_UNSUPPORTED, `${what} cannot be expressed in the nftables backend (rule ${rule.id})${why ? `: ${why}` : ''}`, {
    location: { file: rule.origin.file },
    filter: rule.origin.filter,
    iface,
    hint: why
      ? 'use --backend both (the eBPF programs enforce this rule and the nftables second line leaves it out), or --backend bpf for a policy without L3 rules, or rewrite the rule'
      : 'rewrite the rule',
  });
}

/** A rule id as an nft comment. */
export function ruleComment(rule: { id: string }): string {
  return rule.id.replace(/[^A-Za-z0-9_.:/#@+-]/g, '_').slice(0, 120);
}
