// --backend both, CTRL_IP_LEARNING=dhcp: the nft second line of a dhcp
// learning port (docs/design/ip-learning.md 3 "Backends"). The eBPF program
// is the only learner (bpf/lib/nwf_learn.h); nwf-fast copies its live leases
// into lrn-addr / lrn-locked with their remaining time as element timeouts
// (host/learn/copy-leases.ts). This line never learns on its own: until a
// lease is copied, and again once the last copied lease ends, it holds the
// port in libvirt's DHCP-only table, so it fails closed, never open:
//   chain lrnc-out-<tap> {                                             from the VM
//     meta iifname @lrn-locked goto <its policy>                       a lease was copied
//     ether saddr != $MAC goto drop-out-mac_spoof
//     ether type ip ip protocol udp udp sport 68 udp dport 67 accept   DHCP from the client
//     ether type ip goto drop-out-ip_spoof
//     ether type arp goto drop-out-arp_spoof
//     goto drop-out-other_l2
//   }
//   chain lrnc-in-<tap> {                                              to the VM
//     meta oifname @lrn-locked goto <its policy>
//     ether daddr { $MAC, ff:ff:ff:ff:ff:ff } ether type ip [ip saddr { DHCPSERVER }]
//       ip protocol udp udp sport 67 udp dport 68 accept               DHCP from a trusted server
//     goto drop-in-policy
//   }
import type { DropReason } from '../../ir/reasons.js';
import type { Direction, InterfacePolicy } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { ETHERTYPES } from '../../ir/values.js';
import { accept, add, eq, goto, hex, match, meta, ne, nftTable, num, payload, setOf, setRef, sym } from './build.js';
import type { NftCommand, Statement, Verdict } from './model.js';
import { BRIDGE_TABLE, nftNames } from './names.js';

const br = nftTable('bridge', BRIDGE_TABLE);

const udpPorts = (sport: number, dport: number): Statement[] => [
  eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4)),
  eq(payload('ip', 'protocol'), num(17)),
  eq(payload('udp', 'sport'), num(sport)),
  eq(payload('udp', 'dport'), num(dport)),
];

/**
 * The learning chains of a dhcp port whose addresses the eBPF program
 * learns (`policy`: where each direction goes once a lease is copied; the
 * drop reasons the chains use are added to `reasons`).
 */
export function copiedDhcpPortCommands(p: InterfacePolicy, policy: Record<Direction, Verdict>, reasons: Record<Direction, Set<DropReason>>): NftCommand[] {
  const iface = p.iface;
  const locked = nftNames.learnedLocked();
  const cmds: NftCommand[] = DIRECTIONS.map((dir) => add(br.chain(nftNames.learnChain(dir, iface))));
  const dropTo = (dir: Direction, reason: DropReason): Verdict => {
    reasons[dir].add(reason);
    return goto(nftNames.dropChain(dir, reason));
  };
  const onward = (v: Verdict): Verdict => (v.kind === 'jump' ? goto(v.target) : v);
  const out = nftNames.learnChain('out', iface);
  cmds.push(
    add(br.rule(out, [match(meta('iifname'), '==', setRef(locked)), onward(policy.out)], 'learned: a lease the eBPF program learned was copied')),
    add(br.rule(out, [ne(payload('ether', 'saddr'), sym(p.mac)), dropTo('out', 'mac-spoof')], 'DHCP only: another source MAC')),
    add(br.rule(out, [...udpPorts(68, 67), accept()], 'DHCP only: the client talks to servers')),
    add(br.rule(out, [eq(payload('ether', 'type'), hex(ETHERTYPES.IPV4)), dropTo('out', 'ip-spoof')], 'DHCP only: no other IPv4')),
    add(br.rule(out, [eq(payload('ether', 'type'), hex(ETHERTYPES.ARP)), dropTo('out', 'arp-spoof')], 'DHCP only: no ARP')),
    add(br.rule(out, [dropTo('out', 'other-l2')], 'DHCP only: nothing else')),
  );
  const inn = nftNames.learnChain('in', iface);
  const servers = p.learning?.dhcpServers ?? [];
  const from = servers.length ? [match(payload('ip', 'saddr'), '==', { kind: 'set' as const, items: servers.map((s) => sym(s)) })] : [];
  const [ipv4, ...l4] = udpPorts(67, 68);
  cmds.push(
    add(br.rule(inn, [match(meta('oifname'), '==', setRef(locked)), onward(policy.in)], 'learned: a lease the eBPF program learned was copied')),
    add(br.rule(inn, [match(payload('ether', 'daddr'), '==', setOf(sym(p.mac), sym('ff:ff:ff:ff:ff:ff'))), ipv4 as Statement, ...from, ...l4, accept()], 'DHCP only: replies of a trusted server')),
    add(br.rule(inn, [dropTo('in', 'policy')], 'DHCP only: nothing else')),
  );
  return cmds;
}
