// P6 `fast-base`: the fast paths of P4 (fast-accept.ts) hoisted into the
// bridge's prerouting base chain, before the dispatch by interface name, so
// a valid frame from a VM is accepted by one rule and one lookup, without
// the `iifname vmap @from_vm` lookup and the jump into its shape:
//
//   chain pre {
//     [iifname vmap @mark_in]                        ports with L3 rules: mark first
//     ether type 0x800 meta length >= 20 iifname . ether saddr . ip saddr @fast_ip4 accept
//     ether type 0x806 @nh,0,32 0x10800 @nh,32,16 0x604 meta length >= 28
//         iifname . ether saddr . arp saddr ether . arp saddr ip @fast_arp accept
//     ether type 0x86dd meta length >= 40 iifname . ether saddr . ip6 saddr @fast_ip6 accept
//     iifname vmap @from_vm
//     ...
//   }
//
// One set per kind of frame for every shape (the key is the same whatever
// the shape: interface, source MAC, source address(es)); a port puts in it
// the elements its shape's fast set holds (each one proved by the walk of
// its own template), with its own MAC where its shape's key has no MAC.
//
// Exact because, for every element (iface, mac, ...) of a base set:
//  - iface's entry in `from_vm` is `jump sh-<shape>` (the element is only
//    added by a port whose dispatch goes straight to its shape: not a
//    learning port, whose frames go through its learning chain first, nor a
//    port with eBPF programs under --backend both, whose frames go through
//    the gate of its tap instance first: skeleton.ts);
//  - the first rules of sh-<shape> are the P4 fast rules, with the same
//    EtherType, ARP fields, length guard and lookup: a frame this rule
//    accepts is accepted there too, by the same test (the shape's key binds
//    a subset of this key's fields, so its class holds every frame here);
//  - the only rule before it in `pre` is the L3 mark, which still runs;
//    accept ends `pre` either way, and `post` runs as before.
// A frame the rule does not accept goes on to the dispatch unchanged.
//
// Only from the VM: a frame to a VM is dispatched in postrouting, where a
// rule before `oifname vmap @to_vm` would cost every frame to a port that is
// no VM (the uplink) one more lookup, and clean-traffic checks no address of
// the VM's on that side (P4 does not fire there).
import type { Direction } from '../../../ir/types.js';
import { add } from '../build.js';
import type { NftCommand, TupleValue } from '../model.js';
import { BASE_CHAINS, FIXED } from '../names.js';
import { br } from '../l2.js';
import { str, sym } from '../build.js';
import { FAST_KINDS, fastRule, fastSetType, type FastKind, type FastPath } from './fast-accept.js';
import type { BoundPath } from './walk.js';

export { FAST_KINDS, type FastKind };

/** The key of each base set, after the interface name: the source MAC and the source address(es). */
const BASE_KEY: Record<FastKind, readonly BoundPath[]> = { ip4: ['src', 'srcIp'], arp: ['src', 'sha', 'spa'], ip6: ['src', 'srcIp'] };
/** Key paths a port fills with its own MAC when its shape's key leaves them open. */
const MAC_PATHS: ReadonlySet<BoundPath> = new Set(['src', 'sha']);

const SET_OF: Record<FastKind, string> = { ip4: FIXED.fastIp4, arp: FIXED.fastArp, ip6: FIXED.fastIp6 };

/** The base set of a kind. */
export const fastBaseSet = (kind: FastKind): string => SET_OF[kind];

/** The sets and the `pre` rules of the kinds hoisted (skeleton.ts puts the rules after the L3 mark and before the dispatch). */
export function fastBaseSkeleton(kinds: readonly FastKind[]): { sets: NftCommand[]; rules: NftCommand[] } {
  const ks = FAST_KINDS.filter((k) => kinds.includes(k));
  return {
    sets: ks.map((k) => add(br.set(SET_OF[k], fastSetType(k, BASE_KEY[k])))),
    rules: ks.map((k) => add(br.rule(BASE_CHAINS.bridgePre, fastRule(k, 'out', BASE_KEY[k], SET_OF[k]), `fast-base ${k}: a valid frame from a VM, accepted before the dispatch`))),
  };
}

/** Whether a shape's fast path can be hoisted: from the VM, and its key holds the source address (the base key's MACs a port can fill in). */
export function hoistable(dir: Direction, fp: Pick<FastPath, 'kind' | 'paths'>): boolean {
  return dir === 'out' && BASE_KEY[fp.kind].every((p) => fp.paths.includes(p) || MAC_PATHS.has(p));
}

/** What the pass does with a shape's fast paths (compile --explain-opt). */
export function fastBaseReport(dir: Direction, paths: readonly Pick<FastPath, 'kind' | 'paths'>[]): string[] {
  return paths.map((fp) => {
    if (dir !== 'out') return `${fp.kind}: not hoisted (to the VM: the fast rule stays in the shape)`;
    if (!hoistable(dir, fp)) return `${fp.kind}: not hoisted (the fast key has no ${BASE_KEY[fp.kind].filter((p) => !fp.paths.includes(p)).join(', ')})`;
    return `${fp.kind}: hoisted into the base chain ${BASE_CHAINS.bridgePre}, key iifname . ${BASE_KEY[fp.kind].join(' . ')} in ${SET_OF[fp.kind]}`;
  });
}

/**
 * One port's elements of the base sets: the elements of its shape's fast
 * sets (`accepted`, from fastPortElements), with its own MAC where the
 * shape's key has no MAC. Only for a port whose `from_vm` entry jumps
 * straight to that shape (the caller's to know).
 *
 * `moved`: the shape's fast sets whose key is the base key: the port's
 * elements there are left out (the caller drops them), since a frame of
 * this port reaching the shape's fast rule has failed the same test in
 * `pre` already; the shape's rule stays for the ports that are not in the
 * base chain (learning ports).
 */
export function fastBasePortElements(iface: string, mac: string, accepted: readonly { path: FastPath; combos: readonly string[][] }[]): { commands: NftCommand[]; kinds: FastKind[]; moved: string[] } {
  const commands: NftCommand[] = [];
  const kinds: FastKind[] = [];
  const moved: string[] = [];
  const own = mac.toLowerCase();
  for (const { path: fp, combos } of accepted) {
    if (!hoistable('out', fp) || combos.length === 0) continue;
    const seen = new Set<string>();
    const elements: TupleValue[] = [];
    for (const combo of combos) {
      // a path the shape's key leaves open is one more fixed field of the frames the walk accepted: still accepted
      const values = BASE_KEY[fp.kind].map((p) => {
        const i = fp.paths.indexOf(p);
        return i < 0 ? own : (combo[i] as string);
      });
      const id = values.join(' ');
      if (seen.has(id)) continue;
      seen.add(id);
      elements.push({ kind: 'tuple', items: [str(iface), ...values.map((v) => sym(v))] });
    }
    commands.push(add(br.element(SET_OF[fp.kind], elements)));
    kinds.push(fp.kind);
    if (BASE_KEY[fp.kind].every((p, i) => fp.paths[i] === p) && fp.paths.length === BASE_KEY[fp.kind].length) moved.push(fp.set);
  }
  return { commands, kinds, moved };
}
