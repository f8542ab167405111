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
//
// `dhcp` (docs/design/ip-learning.md 1.3, 2.1, 3). The leases of a port are
// one persistent set of its own:
//   set lrn-lease-<tap> { type ipv4_addr; size 4; flags timeout; }     up to 4 leases, each expiring
// and the port's `$IP` tests read it directly (`ip saddr @lrn-lease-<tap>`),
// in the port's own chains (a dhcp port shares no shape). Why not one shared
// `ifname . address` set as for `any`: the lease address is a DHCPACK's
// yiaddr, a raw payload (@th,192,32), and nft 1.0.6 refuses a raw payload
// in a typed concatenation ("datatype mismatch ... (network interface name,
// integer)"); the way around it, a set typed `typeof meta iifname .
// @nh,96,32`, cannot be declared in libnftables JSON 1.0.6 (the load path's
// input: `"type": ["ifname", "integer"]` is refused as a variable-sized type
// in a concatenation, and JSON has no `typeof`). A single typed ipv4_addr key
// takes the raw yiaddr (verified), and `size 4` gives the 5-lease limit for
// free: a new lease while 4 are live fails the dynset and stops the rule.
//   chain lrnc-out-<tap> {                                       from the VM
//     ether type ip udp sport 68 udp dport 67 <RELEASE: op 1, cookie, 53=7 first> ip saddr @lrn-lease-<tap>
//       delete @lrn-lease-<tap> { @th,160,32 } delete @lrn-locked { iifname }    ciaddr ends its lease and the lock
//     meta iifname @lrn-locked goto <its policy>
//     ether saddr != $MAC goto drop-out-mac_spoof                 libvirt's DHCP-only rules from here on
//     ether type ip udp sport 68 udp dport 67 accept
//     ether type ip goto drop-out-ip_spoof; ether type arp goto drop-out-arp_spoof; goto drop-out-other_l2
//   }
//   chain lrnc-in-<tap> {                                        to the VM
//     meta oifname @lrn-locked goto <its policy>
//     ether daddr { $MAC, broadcast } ether type ip udp sport 67 udp dport 68 [ip saddr @lsrv-<tap>] accept
//     goto drop-in-policy
//   }
//   chain lrn_snoop { type filter hook postrouting priority 301; ...  base chain after `post` (300): only
//     ether type ip udp sport 67 udp dport 68 <ACK: op 2, cookie, 53=5 first> oifname vmap @snoop_map }   what the policy let through
//   chain lrns-<tap> {                                           the port's ACKs
//     [ip saddr @lsrv-<tap>] @th,288,48 $MAC @th,192,32 != 0 (not 224.0.0.0/3)
//       update @lrn-lease-<tap> { @th,192,32 timeout T } update @lrn-locked { oifname timeout T }
//   }
// DHCPSERVER (lsrv-<tap>, static) is checked at every ACK, also after the
// lock. What nft cannot do, the port fails closed on: an ACK whose option 53
// is not the first option teaches nothing (options are not at fixed offsets),
// and the lease time (option 51) cannot be read: every lease lasts T =
// dhcp_kernel_lease (default 3600 s) from its last ACK. lrn-locked gets the
// same T from the latest ACK, so it ends with the last lease; a RELEASE ends
// the lock even when another lease is live (the port is DHCP-only until the
// next ACK: fails closed).
import type { DropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy, L3Rule } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { accept, add, bitAnd, concat, eq, goto, hex, match, meta, ne, nftTable, payload, raw, setOf, setRef, str, sym, timed, tuple, vmap } from './build.js';
import type { ElemValue, NftCommand, Selector, SetUpdateStatement, Statement, Verdict } from './model.js';
import { BASE_CHAINS, BRIDGE_TABLE, FIXED, nftNames } from './names.js';
import { macToBytes } from '../../ir/values.js';
import { appendAll, maxOf } from '../../util/arrays.js';

const br = nftTable('bridge', BRIDGE_TABLE);
import { CODES, InternalError, NwfError } from '../../util/errors.js';
import { ETHERTYPES } from '../../ir/values.js';
import { learnKey, type LearnedEntry } from '../../ir/learning.js';

/**
 * The learned `$IP` tests of a learning port's L3 (iptables) rules: the ip
 * and ip6 tables cannot read the bridge table's learned state, so the bridge
 * table decides them and carries the answer in the packet mark (l3.ts
 * markCommands, learnedMarkTest), which says whether ip saddr / ip daddr is
 * one of the port's learned addresses. A mask other than /32 on a learned
 * address cannot be said that way: refused (the port fails closed).
 */
export function checkLearnedL3(p: InterfacePolicy): void {
  for (const r of [...p.l3.fromVm, ...p.l3.toVm, ...p.l3.toHost]) {
    if (r.srcRange?.learned || r.dstRange?.learned) unsupportedLearned(p, r, 'an address range (srcipfrom/srcipto, dstipfrom/dstipto) with a learned $IP', 'a single address: srcipaddr/dstipaddr');
    for (const t of [r.srcIp, r.dstIp]) {
      if (t?.learned && t.prefix !== 32) unsupportedLearned(p, r, `a learned $IP with a /${t.prefix} mask`, 'no srcipmask/dstipmask (or 32) with a learned $IP');
    }
  }
}

function unsupportedLearned(p: InterfacePolicy, r: L3Rule, what: string, expected: string): never {
  throw new NwfError(CODES.IP_LEARNING_UNSUPPORTED, `interface ${p.iface}: L3 rule ${r.id} tests ${what}; the nft backend tests a learned address only as a whole: the port fails closed`, {
    iface: p.iface,
    filter: r.origin.filter,
    location: { file: r.origin.file, ...(r.origin.line !== undefined ? { line: r.origin.line } : {}) },
    expected,
    hint: "give the address in the interface's filterref: <parameter name='IP' value='...'/>",
  });
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

/** A dhcp lease to seed: its address and the seconds it has left. */
export interface LeaseSeed {
  ip: string;
  timeout: number;
}

/** The seed of a port as its part takes it: the address of an `any` port, the leases of a `dhcp` port. */
export type PortSeed = readonly string[] | readonly LeaseSeed[];

/** Leases per dhcp port (design 3): a new one while this many are live teaches nothing. */
export const DHCP_MAX_LEASES = 4;

/** Seconds a lease learned by the nft packet path lasts (config dhcp_kernel_lease): nft cannot read option 51. */
export const DEFAULT_DHCP_KERNEL_LEASE = 3600;

/**
 * seedOf with what the port's part needs: for a dhcp port its unexpired
 * leases with the whole seconds each has left at `now` (at least 1; a lease
 * with less than a second left is dropped), the 4 latest-expiring.
 */
export function portSeedOf(p: InterfacePolicy, seeds: ReadonlyMap<string, LearnedEntry> | undefined, now = Date.now()): PortSeed {
  if (p.learning?.mode !== 'dhcp') return seedOf(p, seeds, now);
  if (!seeds || !p.ownerUuid) return [];
  const e = seeds.get(learnKey(p.ownerUuid, p.mac));
  if (!e || e.mode !== 'dhcp') return [];
  const out: LeaseSeed[] = [];
  for (const a of e.addresses) {
    const left = a.expires === undefined ? NaN : Math.floor((Date.parse(a.expires) - now) / 1000);
    if (left >= 1 && !out.some((x) => x.ip === a.ip)) out.push({ ip: a.ip, timeout: left });
  }
  return out.sort((a, b) => b.timeout - a.timeout).slice(0, DHCP_MAX_LEASES);
}

/**
 * What the nft packet path cannot do for dhcp ports, said by `compile` and
 * `status` (the port fails closed where it cannot learn).
 */
export function nftDhcpNote(ifaces: readonly string[], kernelLease = DEFAULT_DHCP_KERNEL_LEASE): string {
  return (
    `CTRL_IP_LEARNING=dhcp in nft (${ifaces.join(', ')}): a lease is learned only from a DHCPACK whose first option is 53 (the message type); ` +
    `from any other layout nothing is learned and the port stays DHCP-only (fails closed). The lease time is not read: every lease lasts ` +
    `dhcp_kernel_lease (${kernelLease} s) after its latest ACK`
  );
}

const LEASE_SET_PREFIX = nftNames.learnedLeases('');

/**
 * A stored part's dhcp seeds, `elapsedS` seconds after they were lowered (a
 * generation loaded or rolled back to later than it was compiled): each
 * seeded lease and lock element has that much less time left, and one with
 * less than a second left is left out, so an old generation never brings
 * back a lease that has ended since. Other commands are returned as they are.
 */
export function ageLearnedSeeds(commands: readonly NftCommand[], elapsedS: number): NftCommand[] {
  const elapsed = Math.max(0, Math.floor(elapsedS));
  if (elapsed === 0) return [...commands];
  const out: NftCommand[] = [];
  for (const c of commands) {
    const o = c.object;
    const learned = o.kind === 'element' && (o.name === nftNames.learnedLocked() || o.name.startsWith(LEASE_SET_PREFIX));
    if (c.op !== 'add' || o.kind !== 'element' || !learned) {
      out.push(c);
      continue;
    }
    const elements = [];
    for (const e of o.elements) {
      if (Array.isArray(e) || (e as { kind: string }).kind !== 'elem' || (e as ElemValue).timeout === undefined) elements.push(e);
      else {
        const left = ((e as ElemValue).timeout as number) - elapsed;
        if (left >= 1) elements.push({ ...(e as ElemValue), timeout: left });
      }
    }
    if (elements.length) out.push({ op: 'add', object: { ...o, elements } });
  }
  return out;
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
export function learnedSkeleton(snoop: boolean): NftCommand[] {
  const out = [
    add(br.set(nftNames.learnedAddrs(), ['ifname', 'ipv4_addr'], undefined, { flags: ['timeout'], size: LEARNED_SET_SIZE })),
    add(br.set(nftNames.learnedLocked(), 'ifname', undefined, { flags: ['timeout'], size: LEARNED_SET_SIZE })),
  ];
  if (snoop) {
    out.push(
      add(br.verdictMap(FIXED.snoopMap, 'ifname')),
      add(br.rule(BASE_CHAINS.bridgeSnoop, [...dhcpMessage('server', DHCPACK), vmap(meta('oifname'), FIXED.snoopMap)], 'a DHCPACK to a dhcp learning port: its snoop chain')),
    );
  }
  return out;
}

/**
 * Whether a port's part learns from DHCPACKs in nft: it has an entry in
 * the snoop map (a dhcp port whose learner is nft; under --backend both the
 * eBPF program learns and the part has none). The skeleton has the snoop
 * base chain exactly while some port does (skeleton.ts withSnoop).
 */
export function portSnoops(p: { learn?: { mode: string } | undefined; commands: readonly NftCommand[] }): boolean {
  if (p.learn?.mode !== 'dhcp') return false;
  return p.commands.some((c) => c.op === 'add' && c.object.kind === 'element' && c.object.name === FIXED.snoopMap);
}

/** The snoop base chain's priority: right after the postrouting dispatch (skeleton.ts BRIDGE_POST_PRIORITY, 300). */
export const SNOOP_PRIORITY = 301;

/**
 * The dhcp snoop base chain (persistent, like `pre` and `post`; its rule is
 * in learnedSkeleton): after `post`, so only an ACK the policy let through
 * to the VM teaches. The skeleton declares it with the other base chains,
 * before the objects a load replaces, and only while a port snoops
 * (portSnoops): a change that adds the first such port adds the chain in the
 * same transaction, one that removes the last removes it with the port's
 * other objects.
 */
export function snoopBaseChain(): NftCommand {
  return add(br.baseChain(BASE_CHAINS.bridgeSnoop, { type: 'filter', hook: 'postrouting', prio: SNOOP_PRIORITY, policy: 'accept' }));
}

const DHCPACK = 5;
const DHCPRELEASE = 7;
/** Bit offsets from the UDP header (@th): BOOTP op, ciaddr, yiaddr, chaddr, magic cookie, first option. */
const TH = { op: 64, ciaddr: 160, yiaddr: 192, chaddr: 288, magic: 1952, option: 1984 } as const;

/**
 * A DHCP message at fixed offsets: IPv4 UDP 67 -> 68 (`server`) or 68 -> 67
 * (`client`), BOOTP op 2 or 1, the magic cookie, and option 53 = `type` as
 * the first option (nft cannot walk options: another layout does not match).
 */
function dhcpMessage(from: 'server' | 'client', type: number): Statement[] {
  const [sport, dport] = from === 'server' ? [67, 68] : [68, 67];
  return [
    eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4)),
    eq(payload('udp', 'sport'), sport),
    eq(payload('udp', 'dport'), dport),
    eq(raw('th', TH.op, 8), from === 'server' ? 2 : 1),
    eq(raw('th', TH.magic, 32), hex(0x63825363)),
    eq(raw('th', TH.option, 24), hex(0x350100 | type)),
  ];
}

/** A MAC as a 48-bit number (for a raw compare). */
function macNumber(m: string): number {
  return [...macToBytes(m)].reduce((a, x) => a * 256 + x, 0);
}

/**
 * A learned `$IP` test: the port's learned address (`[!=] ifname . field
 * @lrn-addr`); for a dhcp port (`leasesOf` its tap) its live leases
 * (`[!=] field @lrn-lease-<tap>`, see the module comment).
 */
export function learnedMatch(dir: Direction, sel: Selector, neg: boolean, leasesOf?: string): Statement {
  if (leasesOf !== undefined) return match(sel, neg ? '!=' : '==', setRef(nftNames.learnedLeases(leasesOf)));
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
export function learningPortCommands(
  p: InterfacePolicy,
  policy: Record<Direction, Verdict>,
  reasons: Record<Direction, Set<DropReason>>,
  seed: PortSeed = [],
  copied = false,
  kernelLease = DEFAULT_DHCP_KERNEL_LEASE,
): NftCommand[] {
  const mode = p.learning?.mode;
  if (mode === 'dhcp') return dhcpPortCommands(p, policy, reasons, seed.filter((x): x is LeaseSeed => typeof x !== 'string'), copied, kernelLease);
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
  const first = seed.find((x): x is string => typeof x === 'string');
  if (first !== undefined) {
    if (!copied) cmds.push(add(br.element(own, [sym(first)])));
    cmds.push(add(br.element(addrs, [tuple(str(iface), sym(first))])), add(br.element(locked, [str(iface)])));
  }
  return cmds;
}

/**
 * The part of a dhcp learning port (see the module comment): its lease set,
 * its DHCPSERVER set, its learning chains (DHCP-only until a lease locks it)
 * and its snoop chain, the snoop map entry and its seed (leases with the
 * seconds they have left; the lock until the latest of them ends).
 * `copied` (--backend both): the eBPF program learns and nwf-fast copies
 * its leases here, so this table neither snoops nor releases.
 */
function dhcpPortCommands(p: InterfacePolicy, policy: Record<Direction, Verdict>, reasons: Record<Direction, Set<DropReason>>, seed: readonly LeaseSeed[], copied: boolean, kernelLease: number): NftCommand[] {
  if (!Number.isSafeInteger(kernelLease) || kernelLease < 1) throw new InternalError(`dhcp_kernel_lease ${kernelLease}: want a whole number of seconds, at least 1`);
  const iface = p.iface;
  const leases = nftNames.learnedLeases(iface);
  const locked = nftNames.learnedLocked();
  const servers = p.learning?.dhcpServers ?? [];
  const srv = nftNames.dhcpServers(iface);
  const fromServer: Statement[] = servers.length ? [match(payload('ip', 'saddr'), '==', setRef(srv))] : [];
  const cmds: NftCommand[] = [add(br.set(leases, 'ipv4_addr', undefined, { flags: ['timeout'], size: DHCP_MAX_LEASES }))];
  if (servers.length) cmds.push(add(br.set(srv, 'ipv4_addr', servers.map(sym))));
  const out = nftNames.learnChain('out', iface);
  const inn = nftNames.learnChain('in', iface);
  cmds.push(add(br.chain(out)), add(br.chain(inn)));
  const dropTo = (dir: Direction, reason: DropReason): Verdict => {
    reasons[dir].add(reason);
    return goto(nftNames.dropChain(dir, reason));
  };
  const ipv4 = eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4));
  if (!copied) {
    const ciaddr = raw('th', TH.ciaddr, 32);
    const release: SetUpdateStatement[] = [
      { kind: 'set-update', op: 'delete', set: leases, key: ciaddr },
      { kind: 'set-update', op: 'delete', set: locked, key: meta('iifname') },
    ];
    // a dynset delete never stops its rule: the RELEASE must come from a lease the port holds (a client
    // sends it from the address it releases; nft 1.0.6 refuses the raw ciaddr in a lookup of a typed set),
    // or any RELEASE would end the lock
    cmds.push(
      add(
        br.rule(
          out,
          [...dhcpMessage('client', DHCPRELEASE), eq(payload('ether', 'saddr'), sym(p.mac)), match(payload('ip', 'saddr'), '==', setRef(leases)), ...release],
          'dhcp: a DHCPRELEASE from a lease ends the lease named by ciaddr, and the lock',
        ),
      ),
    );
  }
  cmds.push(
    add(br.rule(out, [match(meta('iifname'), '==', setRef(locked)), onward(policy.out)], 'learned: the port holds a lease')),
    add(br.rule(out, [ne(payload('ether', 'saddr'), sym(p.mac)), dropTo('out', 'mac-spoof')], 'dhcp learning: another source MAC')),
    add(br.rule(out, [ipv4, eq(payload('udp', 'sport'), 68), eq(payload('udp', 'dport'), 67), accept()], 'dhcp learning: DHCP to the servers passes')),
    add(br.rule(out, [ipv4, dropTo('out', 'ip-spoof')], 'dhcp learning: no other IPv4 before a lease')),
    add(br.rule(out, [eq(payload('ether', 'type'), hex(ETHERTYPES.ARP)), dropTo('out', 'arp-spoof')], 'dhcp learning: no ARP before a lease')),
    add(br.rule(out, [dropTo('out', 'other-l2')], 'dhcp learning: nothing else passes')),
    add(br.rule(inn, [match(meta('oifname'), '==', setRef(locked)), onward(policy.in)], 'learned: the port holds a lease')),
    add(
      br.rule(
        inn,
        [match(payload('ether', 'daddr'), '==', setOf(sym(p.mac.toLowerCase()), sym('ff:ff:ff:ff:ff:ff'))), ipv4, eq(payload('udp', 'sport'), 67), eq(payload('udp', 'dport'), 68), ...fromServer, accept()],
        servers.length ? 'dhcp learning: DHCP from a trusted server passes' : 'dhcp learning: DHCP from a server passes',
      ),
    ),
    add(br.rule(inn, [dropTo('in', 'policy')], 'dhcp learning: nothing else passes')),
  );
  if (!copied) {
    const snoop = nftNames.snoopChain(iface);
    const yiaddr = raw('th', TH.yiaddr, 32);
    const teach: SetUpdateStatement[] = [
      { kind: 'set-update', op: 'update', set: leases, key: yiaddr, timeout: kernelLease },
      { kind: 'set-update', op: 'update', set: locked, key: meta('oifname'), timeout: kernelLease },
    ];
    cmds.push(
      add(br.chain(snoop)),
      add(
        br.rule(
          snoop,
          [...fromServer, eq(raw('th', TH.chaddr, 48), hex(macNumber(p.mac))), ne(yiaddr, hex(0)), ne(bitAnd(yiaddr, hex(0xe0000000)), hex(0xe0000000)), ...teach],
          `dhcp: a DHCPACK for the VM adds or renews the lease yiaddr (${kernelLease} s)`,
        ),
      ),
      add(br.element(FIXED.snoopMap, [[str(iface), goto(snoop)]])),
    );
  }
  appendAll(cmds, leaseCommands(iface, seed));
  return cmds;
}

/**
 * The element commands that give a dhcp port `leases` (each with the seconds
 * it has left) and lock it until the latest ends: its seed, and what a copy
 * of leases learned elsewhere (the eBPF program under --backend both) sends.
 */
export function leaseCommands(iface: string, leases: readonly LeaseSeed[]): NftCommand[] {
  if (!leases.length) return [];
  return [
    add(br.element(nftNames.learnedLeases(iface), leases.map((l) => timed(sym(l.ip), l.timeout)))),
    add(br.element(nftNames.learnedLocked(), [timed(str(iface), maxOf(leases.map((l) => l.timeout)))])),
  ];
}
