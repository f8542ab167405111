// IP learning in the nft bridge family, from the packet path, inside
// nwf-fast's shared-chain layout (docs/design/ip-learning.md section 2.1).
//
// A namespace host with a bridge and three VMs under clean-traffic's shape:
//   vnet0  CTRL_IP_LEARNING=any, no IP          -> per-port chain lrn_i_vnet0
//   vnet1  IP=10.77.0.12 (static)               -> the shared chain is0 directly
//   vnet2  CTRL_IP_LEARNING=dhcp, DHCPSERVER=10.77.0.1
// and a peer (also the DHCP servers). The shared chains is0/os0 are a
// hand-written copy of what nwf-fast lowers for clean-traffic (sets a0..a3
// keyed `iifname . field`), with two changes: the $IP sets a1 and a3 are
// `flags dynamic,timeout`, and learned addresses are added to them from the
// packet path, so a locked port takes exactly the static path.
//
// Run (root): npx tsx docs/design/proto/nft-learning.ts [--only any,race,dhcp] [--trials N]
// Everything happens in namespaces it creates and removes.
import { createTestbed, type Testbed } from '../../../src/lab/testbed.js';
import { PacketSocket, settlePacketSockets } from '../../../src/lab/packet-io.js';
import { DHCP } from './dhcp.js';
import { anyBeforeProbes, Checks, isRootOrSay, raceTrial, dhcpBeforeProbes, floodAfter, inFrames, lockedProbes, makeHub, outFrames, passes, PinnedSender, ROGUE, runProbes, runScenario, scriptArgs, SERVER, sleep } from './common.js';

const MAC = ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'] as const;
const PEER_MAC = '52:54:00:00:00:99';
const STATIC_IP = '10.77.0.12';
const hex = (mac: string): string => `0x${mac.replace(/:/g, '')}`;
const ipHex = (ip: string): string => `0x${ip.split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join('')}`;
const ipOf = (n: number): string => [24, 16, 8, 0].map((sh) => (n >>> sh) & 255).join('.');

export interface RulesetOptions {
  /** 'size1': first writer wins through a per-port set of size 1; 'naive': only the lrn_locked flag gates learning. */
  gate: 'size1' | 'naive';
  /** Timeout of a lease learned in the kernel (nft cannot read option 51). */
  leaseSeconds: number;
}

/** The table: nwf-fast's clean-traffic shape plus the learning layer. */
export function ruleset(o: RulesetOptions): string {
  const [m0, m1, m2] = MAC;
  const lease = `${o.leaseSeconds}s`;
  const learnAdd = o.gate === 'size1' ? 'add @lrn_w_vnet0 { ip saddr } ' : '';
  // DHCP message checks at fixed offsets from the UDP header (@th): op (8),
  // chaddr (36), magic cookie (244), first option 53 with length 1 (248..250).
  const ack = `@th,64,8 2 @th,288,48 ${hex(m2)} @th,1952,32 0x63825363 @th,1984,24 0x350105`;
  const release = `@th,64,8 1 @th,1952,32 0x63825363 @th,1984,24 0x350107`;
  return `
table bridge lrnp {
  # ---- the shape's address sets (as nwf-fast lowers clean-traffic) -------------------
  set a0 { type ifname . ether_addr; elements = { "vnet0" . ${m0}, "vnet1" . ${m1}, "vnet2" . ${m2} }; }
  # $IP sets: keyed by a raw 32-bit payload, so that a DHCPACK's yiaddr (@th,192,32) can
  # be added (nft refuses a raw payload in a concatenation typed ifname . ipv4_addr).
  set a1 { typeof meta iifname . @nh,96,32; size 65536; flags dynamic,timeout; elements = { "vnet1" . ${ipHex(STATIC_IP)} }; }
  set a2 { type ifname . ether_addr; elements = { "vnet0" . ${m0}, "vnet1" . ${m1}, "vnet2" . ${m2} }; }
  set a3 { typeof meta iifname . @nh,96,32; size 65536; flags dynamic,timeout; elements = { "vnet1" . ${ipHex(STATIC_IP)} }; }
  # ---- learning state -----------------------------------------------------------------
  set lrn_locked { type ifname; size 65536; flags dynamic,timeout; }
  set lrn_w_vnet0 { type ipv4_addr; size 1; flags dynamic; }
  set lrn_w_vnet2 { type ipv4_addr; size 8; flags dynamic,timeout; }
  set dhcpsrv { type ifname . ipv4_addr; elements = { "vnet2" . ${SERVER} }; }
  counter drop_mac {}
  counter drop_ip {}
  counter drop_arp {}
  counter drop_l2 {}
  counter drop_learning {}

  # ---- shared chains of the shape (from the VM / to the VM) ------------------------
  chain is0 {
    jump is0_mac
    ether type ip jump is0_ip
    ether type ip accept
    ether type arp jump is0_arpmac
    ether type arp jump is0_arpip
    ether type arp accept
    # (simplified: QEMU's announce; nwf-fast's real chain tests every RARP field)
    ether type 0x8035 ether daddr ff:ff:ff:ff:ff:ff accept
    ether type 0x0835 accept
    counter name drop_l2 drop
  }
  chain is0_mac { meta iifname . ether saddr @a0 return; counter name drop_mac drop; }
  chain is0_ip {
    ip saddr 0.0.0.0 ip protocol udp return
    meta iifname . @nh,96,32 @a1 return
    counter name drop_ip drop
  }
  chain is0_arpmac { meta iifname . arp saddr ether @a2 return; counter name drop_arp drop; }
  chain is0_arpip { arp htype 1 arp ptype 0x0800 arp hlen 6 arp plen 4 meta iifname . @nh,112,32 @a3 return; counter name drop_arp drop; }
  chain os0 { ether type ip accept; ether type arp accept; ether type 0x8035 accept; counter name drop_l2 drop; }

  # ---- CTRL_IP_LEARNING=any, port vnet0 -------------------------------------------------
  chain lrn_i_vnet0 {
    meta iifname @lrn_locked jump is0
    ether saddr != ${m0} counter name drop_learning drop
    ether type ip ip saddr != { 0.0.0.0, 224.0.0.0/3 } ${learnAdd}add @a1 { meta iifname . @nh,96,32 } add @a3 { meta iifname . @nh,96,32 } add @lrn_locked { meta iifname } jump is0
    ether type ip ip saddr != { 0.0.0.0, 224.0.0.0/3 } jump is0
    ether type ip accept
    ether type arp accept
    counter name drop_learning drop
  }
  chain lrn_o_any {
    meta oifname @lrn_locked jump os0
    accept
  }

  # ---- CTRL_IP_LEARNING=dhcp, port vnet2 ------------------------------------------------
  chain lrn_i_vnet2 {
    ether type ip udp sport 68 udp dport 67 ${release} delete @lrn_w_vnet2 { @th,160,32 } delete @a1 { meta iifname . @th,160,32 } delete @a3 { meta iifname . @th,160,32 } delete @lrn_locked { meta iifname }
    meta iifname @lrn_locked jump is0
    ether saddr ${m2} ether type ip udp sport 68 udp dport 67 accept
    counter name drop_learning drop
  }
  chain lrn_o_vnet2 {
    meta oifname @lrn_locked jump os0
    ether daddr { ${m2}, ff:ff:ff:ff:ff:ff } ether type ip udp sport 67 udp dport 68 meta oifname . ip saddr @dhcpsrv accept
    counter name drop_learning drop
  }
  # After the policy (priority 300) accepted the frame: DHCPACK snooping.
  chain snoop_vnet2 {
    ether type ip udp sport 67 udp dport 68 meta oifname . ip saddr @dhcpsrv ${ack} update @lrn_w_vnet2 { @th,192,32 timeout ${lease} } update @a1 { meta oifname . @th,192,32 timeout ${lease} } update @a3 { meta oifname . @th,192,32 timeout ${lease} } update @lrn_locked { meta oifname timeout ${lease} }
  }

  chain pre { type filter hook prerouting priority -300; policy accept; meta iifname vmap { "vnet0" : jump lrn_i_vnet0, "vnet1" : jump is0, "vnet2" : jump lrn_i_vnet2 }; }
  chain post { type filter hook postrouting priority 300; policy accept; meta oifname vmap { "vnet0" : jump lrn_o_any, "vnet1" : jump os0, "vnet2" : jump lrn_o_vnet2 }; }
  chain post_snoop { type filter hook postrouting priority 301; policy accept; meta oifname "vnet2" jump snoop_vnet2; }
}
`;
}

class Host {
  constructor(
    readonly tb: Testbed,
    readonly c: Checks,
  ) {}

  async nft(args: string[], input?: string): Promise<string> {
    return (await this.tb.exec(this.tb.hostNs, ['nft', ...args], input !== undefined ? { input } : {})).stdout;
  }

  async load(o: RulesetOptions): Promise<void> {
    await this.nft(['delete', 'table', 'bridge', 'lrnp']).catch(() => undefined);
    await this.nft(['-f', '-'], ruleset(o));
  }

  /** Elements of a set as strings ("vnet0 . 10.77.0.2", with " expires" stripped). */
  async elements(set: string): Promise<string[]> {
    const j = JSON.parse(await this.nft(['-j', 'list', 'set', 'bridge', 'lrnp', set])) as { nftables: { set?: { elem?: unknown[] } }[] };
    const elems = j.nftables.find((x) => x.set)?.set?.elem ?? [];
    const str = (e: unknown): string => {
      if (typeof e === 'number') return ipOf(e);
      if (typeof e === 'string') return /^0x[0-9a-f]{8}$/.test(e) ? ipOf(parseInt(e, 16)) : e;
      const o = e as { concat?: unknown[]; elem?: { val: unknown } };
      if (o.concat) return o.concat.map(str).join(' . ');
      if (o.elem) return str(o.elem.val);
      return JSON.stringify(e);
    };
    return elems.map(str).sort();
  }

  /** Raw JSON of a set (elements with their timeout and expiry), what user space reads back. */
  async setJson(set: string): Promise<unknown> {
    return JSON.parse(await this.nft(['-j', 'list', 'set', 'bridge', 'lrnp', set]));
  }

  async counter(name: string): Promise<number> {
    const out = await this.nft(['list', 'counter', 'bridge', 'lrnp', name]);
    return Number(/packets (\d+)/.exec(out)?.[1] ?? -1);
  }

  ep(name: string) {
    return this.tb.guest(name).endpoint;
  }

  out(vm: 'vm0' | 'vm1' | 'vm2', frame: Uint8Array): Promise<boolean> {
    return passes(this.ep(vm), this.ep('peer'), frame);
  }

  in(vm: 'vm0' | 'vm1' | 'vm2', frame: Uint8Array): Promise<boolean> {
    return passes(this.ep('peer'), this.ep(vm), frame);
  }
}

// ---- scenarios --------------------------------------------------------------------------

async function scenarioAny(h: Host): Promise<void> {
  const S = 'nft-any';
  const c = h.c;
  await h.load({ gate: 'size1', leaseSeconds: 30 });
  const o = outFrames(MAC[0], PEER_MAC);
  const send = (dir: 'out' | 'in', f: Uint8Array): Promise<boolean> => (dir === 'out' ? h.out('vm0', f) : h.in('vm0', f));
  // Before learning: libvirt's basic rules (from the VM: right MAC, IPv4 or ARP; to the VM: everything).
  await runProbes(c, S, 'before', anyBeforeProbes(MAC[0], PEER_MAC), send);
  c.check(S, 'before: nothing learned', [], await h.elements('lrn_locked'));
  // The first qualifying packet, then a spoofed flood.
  const w = await floodAfter(h.ep('vm0'), h.ep('peer'), o.udp('10.77.0.2'), { mac: MAC[0], peerMac: PEER_MAC, ip: '10.77.0.66' }, 1500);
  c.note('nft-any: flood after the teaching frame', w);
  c.check(S, 'the teaching frame passes', true, w.teachArrived);
  c.check(S, 'spoofed frames leaked after the teaching frame', 0, w.leaked);
  c.check(S, 'learned into the SAME set as the static IP of vnet1 (a1)', ['vnet0 . 10.77.0.2', `vnet1 . ${STATIC_IP}`], await h.elements('a1'));
  c.check(S, 'and into the ARP set (a3)', ['vnet0 . 10.77.0.2', `vnet1 . ${STATIC_IP}`], await h.elements('a3'));
  c.check(S, 'the port is locked', ['vnet0'], await h.elements('lrn_locked'));
  // After: exactly the static path.
  await runProbes(c, S, 'after', lockedProbes(MAC[0], PEER_MAC, '10.77.0.2'), send);
  c.check(S, 'a second address is never learned', ['vnet0 . 10.77.0.2', `vnet1 . ${STATIC_IP}`], await h.elements('a1'));
  c.check(S, 'ip-spoof drops counted', true, (await h.counter('drop_ip')) > 0);
  // The static port on the same shared chains is unaffected.
  const o1 = outFrames(MAC[1], PEER_MAC);
  c.check(S, 'static vnet1: out from its IP passes', true, await h.out('vm1', o1.udp(STATIC_IP)));
  c.check(S, 'static vnet1: out from .2 (vnet0\'s) drops', false, await h.out('vm1', o1.udp('10.77.0.2')));
  c.note('nft-any: lrn_w_vnet0 (what user space reads back)', await h.setJson('lrn_w_vnet0'));
}

/** Two CPUs send two different sources at the same instant to a fresh learning port. */
async function scenarioRace(h: Host, trials: number): Promise<void> {
  const c = h.c;
  const ep = h.ep('vm0');
  const s0 = PinnedSender.start(0, ep, MAC[0], PEER_MAC, '10.77.0.9');
  const s1 = PinnedSender.start(1, ep, MAC[0], PEER_MAC, '10.77.0.9');
  const rx = PacketSocket.open(h.ep('peer').ns, 'eth0');
  try {
    for (const gate of ['size1', 'naive'] as const) {
      const S = `nft-race-${gate}`;
      let twoLearned = 0;
      let loserDelivered = 0;
      let nonWinnerTrials = 0;
      for (let t = 0; t < trials; t++) {
        await h.load({ gate, leaseSeconds: 30 });
        const { sent, got } = await raceTrial(s0, s1, rx);
        const learned = (await h.elements('a1')).filter((e) => e.startsWith('vnet0'));
        if (learned.length > 1) twoLearned++;
        if (learned.length === 1) {
          const loser = learned[0]?.endsWith('10.77.1.1') ? 2 : 1;
          loserDelivered += got[loser];
        } else nonWinnerTrials++;
        if (t === 0) c.note(`${S}: first trial`, { sent, delivered: got, learned });
      }
      c.note(`${S}: trials with two addresses learned`, `${twoLearned} of ${trials}`);
      if (gate === 'size1') {
        c.check(S, `${trials} trials: never two addresses learned`, 0, twoLearned);
        c.check(S, `${trials} trials: frames of the losing source delivered`, 0, loserDelivered);
      } else {
        c.note(`${S}: frames of the other source delivered when one address was learned`, loserDelivered);
        c.note(`${S}: trials without exactly one address`, nonWinnerTrials);
      }
    }
  } finally {
    rx.close();
    await s0.stop();
    await s1.stop();
  }
}

async function scenarioDhcp(h: Host): Promise<void> {
  const S = 'nft-dhcp';
  const c = h.c;
  await h.load({ gate: 'size1', leaseSeconds: 4 });
  const o = outFrames(MAC[2], PEER_MAC);
  const i = inFrames(MAC[2], PEER_MAC);
  // Before: libvirt's DHCP-only rules.
  await runProbes(c, S, 'before', dhcpBeforeProbes(MAC[2], PEER_MAC), (dir, f) => (dir === 'out' ? h.out('vm2', f) : h.in('vm2', f)));
  c.check(S, 'an OFFER and an untrusted ACK teach nothing', [], await h.elements('lrn_w_vnet2'));
  // An ACK whose message type is not the first option: nft cannot find it (user-space fallback).
  c.check(S, 'in trusted ACK with option 53 after a PAD passes', true, await h.in('vm2', i.reply(DHCP.ACK, SERVER, '10.77.0.2', { lease: 60, pad: 1, noServerId: true })));
  c.check(S, 'nft does not learn from it (53 not at the first option)', [], await h.elements('lrn_w_vnet2'));
  // The usual ACK: 53 first.
  c.check(S, 'in trusted ACK (53 first) passes', true, await h.in('vm2', i.reply(DHCP.ACK, SERVER, '10.77.0.2', { lease: 60, noServerId: true, dstMac: MAC[2] })));
  c.check(S, 'learned: lease, a1, a3, lock', [['10.77.0.2'], ['vnet1 . 10.77.0.12', 'vnet2 . 10.77.0.2'], ['vnet2']], [await h.elements('lrn_w_vnet2'), await h.elements('a1'), await h.elements('lrn_locked')]);
  c.check(S, 'after: out from .2 passes', true, await h.out('vm2', o.udp('10.77.0.2')));
  c.check(S, 'after: out from .3 drops', false, await h.out('vm2', o.udp('10.77.0.3')));
  c.check(S, 'after: out ARP spa .2 passes', true, await h.out('vm2', o.arp('Request', '10.77.0.2', SERVER)));
  // After the lock the static path lets every IPv4 frame in; an untrusted ACK reaches the VM but teaches nothing.
  c.check(S, 'after: in ACK from an untrusted server passes (clean-traffic allows incoming IPv4)', true, await h.in('vm2', i.reply(DHCP.ACK, ROGUE, '10.77.0.41', { lease: 60, noServerId: true })));
  c.check(S, 'an untrusted ACK teaches nothing', ['10.77.0.2'], await h.elements('lrn_w_vnet2'));
  c.note('nft-dhcp: lease set with expiry (what user space reads back)', await h.setJson('lrn_w_vnet2'));
  // Expiry: the kernel's element timeout (4 s here) ends the lease, the port is back to DHCP-only.
  await sleep(5500);
  c.check(S, 'after the timeout: lease, a1 entry and lock are gone', [[], ['vnet1 . 10.77.0.12'], []], [await h.elements('lrn_w_vnet2'), await h.elements('a1'), await h.elements('lrn_locked')]);
  c.check(S, 'after the timeout: out from .2 drops again (DHCP-only)', false, await h.out('vm2', o.udp('10.77.0.2')));
  // Renewal keeps it alive; RELEASE from the VM (ciaddr) ends it.
  await h.in('vm2', i.reply(DHCP.ACK, SERVER, '10.77.0.5', { lease: 60, noServerId: true, dstMac: MAC[2] }));
  await sleep(3000);
  await h.in('vm2', i.reply(DHCP.ACK, SERVER, '10.77.0.5', { lease: 60, noServerId: true, dstMac: MAC[2] }));
  await sleep(2500);
  c.check(S, 'a renewal (a second ACK) extends the lease past the first timeout', ['10.77.0.5'], await h.elements('lrn_w_vnet2'));
  c.check(S, 'out DHCPRELEASE (ciaddr .5) passes', true, await h.out('vm2', o.release('10.77.0.5')));
  c.check(S, 'RELEASE ends the lease and the lock', [[], ['vnet1 . 10.77.0.12'], []], [await h.elements('lrn_w_vnet2'), await h.elements('a1'), await h.elements('lrn_locked')]);
}

async function main(): Promise<void> {
  if (!isRootOrSay('network namespaces, nftables')) return;
  const { only, trials } = scriptArgs();
  const c = new Checks();
  const tb = await createTestbed({
    prefix: 'lrnnft',
    vms: MAC.map((mac, k) => ({ name: `vm${k}`, tap: `vnet${k}`, mac })),
    peers: [{ name: 'peer', mac: PEER_MAC }],
  });
  try {
    await makeHub(tb, ['vnet0', 'vnet1', 'vnet2', tb.guest('peer').port]);
    const h = new Host(tb, c);
    const run = (name: string, f: () => Promise<void>): Promise<void> => runScenario(c, only, name, f);
    await run('any', () => scenarioAny(h));
    await run('race', () => scenarioRace(h, trials));
    await run('dhcp', () => scenarioDhcp(h));
  } finally {
    await settlePacketSockets();
    await tb.destroy();
  }
  c.finish();
}

await main();
