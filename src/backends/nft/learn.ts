// IP learning in the nft backend (docs/design/ip-learning.md 2.1 and 3):
// a learning port learns its address from the packet path and is locked in
// the same packet.
//
// Learned state, persistent (names.ts `lrn-*`: never under a load tag, never
// flushed by a load; drift checks ignore their elements):
//   set lrn-addr    { type ifname . ipv4_addr; flags dynamic; }  every learning port's address
//   set lrn-locked  { type ifname; flags dynamic; }              the ports that learned
//   set lrn-w-<tap> { type ipv4_addr; size 1; flags dynamic; }  one port's address: the first writer wins
// The policy's `$IP` tests of a learning port (IpTest.learned) look the
// address up in lrn-addr (`iifname . ip saddr @lrn-addr`), in the port's
// shape, so a locked port takes exactly the static path.
//
// A learning port (`any`) is dispatched to its learning chains:
//   chain lrnc-out-<tap> {                                    from the VM
//     meta iifname @lrn-locked goto <its policy>              locked: the static path
//     ether saddr != $MAC goto drop-out-mac_spoof             libvirt's learning table from here on
//     ether type ip ip saddr != 0.0.0.0 ip saddr & 224.0.0.0 != 224.0.0.0
//       add @lrn-w-<tap> { ip saddr } add @lrn-addr { iifname . ip saddr } add @lrn-locked { iifname } goto <its policy>
//     ether type ip ip saddr != 0.0.0.0 ip saddr & 224.0.0.0 != 224.0.0.0 goto <its policy>
//     ether type ip accept
//     ether type arp accept
//     goto drop-out-other_l2
//   }
//   chain lrnc-in-<tap> { meta oifname @lrn-locked goto <its policy>; accept }   to the VM
// The size-1 set makes the first writer win: when it is full, `add` of
// another address fails and the rule stops before its other statements
// (nft_dynset); adding the address it holds succeeds. A frame from another
// source, even one processed at the same moment on another CPU, falls to
// the next rule and the static path drops it.
//
// Seeds (learned state from user space: learned.json, migration metadata)
// are elements of the port's part, so the port is locked in the transaction
// that creates its entries.
import type { DropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { accept, add, bitAnd, concat, eq, goto, hex, match, meta, ne, nftTable, payload, setRef, str, sym, tuple } from './build.js';
import type { NftCommand, Selector, SetUpdateStatement, Statement, Verdict } from './model.js';
import { BRIDGE_TABLE, nftNames } from './names.js';

const br = nftTable('bridge', BRIDGE_TABLE);
import { CODES, NwfError } from '../../util/errors.js';
import { ETHERTYPES } from '../../ir/values.js';
import { learnKey, type LearnedEntry } from '../../ir/learning.js';

/**
 * A learning port whose L3 (iptables) rules test the learned `$IP` is
 * refused (it fails closed): the ip/ip6 tables cannot read the bridge
 * table's learned state. Its other L3 rules apply from the start (libvirt
 * applies them only once the address is learned: stricter, never looser).
 */
export function checkLearnedL3(p: InterfacePolicy): void {
  for (const r of [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost]) {
    if (r.srcIp?.learned || r.dstIp?.learned) {
      throw new NwfError(CODES.IP_LEARNING_UNSUPPORTED, `interface ${p.iface}: L3 rule ${r.id} tests the learned $IP, which the nft backend cannot do yet (the address is learned in the bridge table): the port fails closed`, {
        iface: p.iface,
        filter: r.origin.filter,
        location: { file: r.origin.file, ...(r.origin.line !== undefined ? { line: r.origin.line } : {}) },
        hint: "give the address in the interface's filterref: <parameter name='IP' value='...'/>",
      });
    }
  }
}

/**
 * The seed of a learning port: the addresses of its entry in `seeds` (keyed
 * by owner UUID and MAC) when the entry's mode is the port's; for dhcp only
 * leases not expired at `now`. Empty when the port has no UUID or no entry.
 */
export function seedOf(p: InterfacePolicy, seeds: ReadonlyMap<string, LearnedEntry> | undefined, now = Date.now()): string[] {
  if (!p.learning || !seeds || !p.ownerUuid) return [];
  const e = seeds.get(learnKey(p.ownerUuid, p.mac));
  if (!e || e.mode !== p.learning.mode) return [];
  const live = e.addresses.filter((a) => a.expires === undefined || Date.parse(a.expires) > now).map((a) => a.ip);
  return e.mode === 'any' ? live.slice(0, 1) : live.slice(0, 4);
}

/** Room for the learned addresses of every learning port. */
export const LEARNED_SET_SIZE = 65536;

const ifKey = (dir: Direction) => meta(dir === 'out' ? 'iifname' : 'oifname');

/**
 * The learned-state sets every generation has (the skeleton's): empty when
 * declared, filled by the packet path. Declared with `flags timeout` (no
 * element carries one, so none expires): a set the packet path updates must
 * have a backend that can update, which the kernel picks for timeout sets
 * however the set was created. Without it the set must be created `dynamic`,
 * which nft 1.0.6's JSON cannot say and nft only adds when a rule of the
 * same batch updates it; declaring the set again without the flag then
 * fails (EEXIST), so a later full load would fail.
 */
export function learnedSkeleton(): NftCommand[] {
  return [
    add(br.set(nftNames.learnedAddrs(), ['ifname', 'ipv4_addr'], undefined, { flags: ['timeout'], size: LEARNED_SET_SIZE })),
    add(br.set(nftNames.learnedLocked(), 'ifname', undefined, { flags: ['timeout'], size: LEARNED_SET_SIZE })),
  ];
}

/** A learned `$IP` test: the port's learned address (`[!=] ifname . field @lrn-addr`). */
export function learnedMatch(dir: Direction, sel: Selector, neg: boolean): Statement {
  return match(concat(ifKey(dir), sel), neg ? '!=' : '==', setRef(nftNames.learnedAddrs()));
}

const setUpdate = (set: string, key: Selector): SetUpdateStatement => ({ kind: 'set-update', op: 'add', set, key });

/** An IPv4 source that teaches: not 0.0.0.0, not multicast or class E (224.0.0.0/3), as libvirt. */
function teaching(): Statement[] {
  return [eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4)), ne(payload('ip', 'saddr'), sym('0.0.0.0')), ne(bitAnd(payload('ip', 'saddr'), sym('224.0.0.0')), sym('224.0.0.0'))];
}

/** From a dispatch verdict (a jump into the port's policy, or accept) to the verdict of a learning chain. */
function onward(v: Verdict): Verdict {
  return v.kind === 'jump' ? goto(v.target) : v;
}

/**
 * The part of a learning port that replaces its dispatch: its learning
 * chains, its size-1 set, its dispatch entries and its seed. `policy` is
 * where each direction goes once locked (the port's shape or own chains, or
 * accept); drop reasons the chains use are added to `reasons`.
 */
export function learningPortCommands(p: InterfacePolicy, policy: Record<Direction, Verdict>, reasons: Record<Direction, Set<DropReason>>, seed: readonly string[] = [], copied = false): NftCommand[] {
  const mode = p.learning?.mode;
  if (mode !== 'any') {
    throw new NwfError(CODES.IP_LEARNING_UNSUPPORTED, `interface ${p.iface} learns its IP address with CTRL_IP_LEARNING=${mode ?? '?'}, which the nft backend does not implement yet: the port fails closed`, {
      iface: p.iface,
      filter: p.filter,
      location: { file: p.file },
      hint: "give the address in the interface's filterref (<parameter name='IP' value='...'/>), or use CTRL_IP_LEARNING=any",
    });
  }
  const iface = p.iface;
  const own = nftNames.learnedPort(iface);
  const locked = nftNames.learnedLocked();
  const addrs = nftNames.learnedAddrs();
  // the size-1 set is the first-writer gate of nft's own learning (not under both: the eBPF map is)
  const cmds: NftCommand[] = copied ? [] : [add(br.set(own, 'ipv4_addr', undefined, { flags: ['timeout'], size: 1 }))];
  for (const dir of DIRECTIONS) cmds.push(add(br.chain(nftNames.learnChain(dir, iface))));
  const out = nftNames.learnChain('out', iface);
  const outPolicy = onward(policy.out);
  const dropTo = (reason: DropReason): Verdict => {
    reasons.out.add(reason);
    return goto(nftNames.dropChain('out', reason));
  };
  cmds.push(
    add(br.rule(out, [match(meta('iifname'), '==', setRef(locked)), outPolicy], 'learned: the port is locked to its address')),
    add(br.rule(out, [ne(payload('ether', 'saddr'), sym(p.mac)), dropTo('mac-spoof')], 'learning: another source MAC')),
  );
  // under --backend both the eBPF program learns: this table waits for nwf-fast to copy its address
  if (!copied) {
    const learn = [setUpdate(own, payload('ip', 'saddr')), setUpdate(addrs, concat(meta('iifname'), payload('ip', 'saddr'))), setUpdate(locked, meta('iifname'))];
    cmds.push(
      add(br.rule(out, [...teaching(), ...learn, outPolicy], 'learning: the first IPv4 source locks the port')),
      add(br.rule(out, [...teaching(), outPolicy], 'learning: another CPU locked the port first')),
    );
  }
  cmds.push(
    add(br.rule(out, [eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4)), accept()], 'learning: IPv4 passes')),
    add(br.rule(out, [eq(payload('ether', 'type'), hex(ETHERTYPES.ARP)), accept()], 'learning: ARP passes')),
    add(br.rule(out, [dropTo('other-l2')], 'learning: nothing else passes')),
  );
  const inn = nftNames.learnChain('in', iface);
  cmds.push(add(br.rule(inn, [match(meta('oifname'), '==', setRef(locked)), onward(policy.in)], 'learned: the port is locked to its address')), add(br.rule(inn, [accept()], 'learning: everything to the VM passes')));
  const first = seed[0];
  if (first !== undefined) {
    if (!copied) cmds.push(add(br.element(own, [sym(first)])));
    cmds.push(add(br.element(addrs, [tuple(str(iface), sym(first))])), add(br.element(locked, [str(iface)])));
  }
  return cmds;
}
