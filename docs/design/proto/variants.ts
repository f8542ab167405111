// Hand-written nft rulesets for clean-traffic: today's lowering and candidate
// optimizations of it, for N ports. Prototype for docs/design/nft-optimizer.md,
// not product code: each variant is the ruleset an optimizer pass (or a
// combination of passes) would produce for the clean-traffic shape, written by
// hand so that it can be measured (measure.ts), walked (walk.ts) and checked
// frame by frame against the reference evaluator, drop reasons included
// (check.ts), before any pass exists.
//
// Every variant but the floors ("hooks", "dispatch", and the "info-" ones)
// must give every frame the verdict and the drop counter of today's lowering.
// Names follow today's lowering (table bridge nwf_fast, base chains pre/post,
// counters drop_<tap>_<reason>, counter maps cnt_<dir>_<reason>), so the
// checks read the same counters.
import { lowerToNft } from '../../../src/backends/nft/lower.js';
import { toNftJson } from '../../../src/backends/nft/serialize.js';
import type { PolicyIR } from '../../../src/ir/types.js';

export interface Port {
  /** The tap, e.g. vnet0. */
  name: string;
  mac: string;
  /** $IP: one address or a list. */
  ips: string[];
}

export interface Ruleset {
  format: 'json' | 'text';
  body: string;
}

export interface VariantContext {
  ports: readonly Port[];
  /** The resolved policy of the same ports (today's lowering starts from it). */
  ir: PolicyIR;
}

export interface Variant {
  name: string;
  /** One line: what it changes against the previous rung. */
  what: string;
  /** false for floors and informational variants that do not keep the policy. */
  exact: boolean;
  build(ctx: VariantContext): Ruleset;
}

const REASONS_OUT = ['mac-spoof', 'ip-spoof', 'arp-spoof', 'rarp', 'other-l2'] as const;
const REASONS_IN = ['rarp', 'other-l2'] as const;
const BCAST = 'ff:ff:ff:ff:ff:ff';

const macHex = (mac: string): string => `0x${mac.split(':').join('')}`;
const ipHex = (ip: string): string => `0x${ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join('')}`;
const q = (s: string): string => `"${s}"`;
const under = (reason: string): string => reason.replace(/-/g, '_');

function elements(items: readonly string[]): string {
  return items.length ? ` elements = { ${items.join(', ')} };` : '';
}

/** A text ruleset builder: sets and maps first, chains with their rules after. */
class Text {
  constructor(private readonly family: 'bridge' | 'netdev' = 'bridge') {}
  private head: string[] = [];
  private chains = new Map<string, string[]>();
  private base = new Map<string, string>();

  set(name: string, type: string, items: readonly string[], typeof_ = false): this {
    this.head.push(`  set ${name} { ${typeof_ ? 'typeof' : 'type'} ${type};${elements(items)} }`);
    return this;
  }
  map(name: string, type: string, items: readonly string[]): this {
    this.head.push(`  map ${name} { type ${type};${elements(items)} }`);
    return this;
  }
  counter(name: string): this {
    this.head.push(`  counter ${name} { }`);
    return this;
  }
  baseChain(name: string, hook: 'prerouting' | 'postrouting', prio: number): this {
    return this.hookedChain(name, `type filter hook ${hook} priority ${prio}; policy accept;`);
  }
  hookedChain(name: string, spec: string): this {
    this.base.set(name, spec);
    this.chains.set(name, []);
    return this;
  }
  rule(chain: string, text: string): this {
    const c = this.chains.get(chain) ?? [];
    c.push(text);
    this.chains.set(chain, c);
    return this;
  }
  render(): string {
    const out = [`table ${this.family} nwf_fast {`, ...this.head];
    for (const [name, rules] of this.chains) {
      out.push(`  chain ${name} {`);
      const b = this.base.get(name);
      if (b) out.push(`    ${b}`);
      for (const r of rules) out.push(`    ${r}`);
      out.push('  }');
    }
    out.push('}', '');
    return out.join('\n');
  }
}

/** Counters and counter maps exactly as today's lowering names them. */
function counters(t: Text, ports: readonly Port[]): void {
  for (const p of ports) for (const r of REASONS_OUT) t.counter(`drop_${p.name}_${r}`);
  for (const [dir, reasons] of [['out', REASONS_OUT], ['in', REASONS_IN]] as const) {
    for (const r of reasons) t.map(`cnt_${dir}_${under(r)}`, 'ifname : counter', ports.map((p) => `${q(p.name)} : ${q(`drop_${p.name}_${r}`)}`));
  }
}

const cnt = (dir: 'out' | 'in', reason: string): string => `counter name meta ${dir === 'out' ? 'iifname' : 'oifname'} map @cnt_${dir}_${under(reason)} drop`;

// ---- address sets ---------------------------------------------------------------------------

const macPairs = (ps: readonly Port[]): string[] => ps.map((p) => `${q(p.name)} . ${p.mac}`);
const ipPairsRaw = (ps: readonly Port[]): string[] => ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${ipHex(ip)}`));
const macPairsRaw = (ps: readonly Port[]): string[] => ps.map((p) => `${q(p.name)} . ${macHex(p.mac)}`);
const macIp = (ps: readonly Port[]): string[] => ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${p.mac} . ${ip}`));
const macIpRaw = (ps: readonly Port[]): string[] => ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${p.mac} . ${ipHex(ip)}`));
/** ARP from the VM accepted at once: Ethernet source, sender MAC and sender IP all the VM's own. */
const arpOk = (ps: readonly Port[]): string[] => ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${p.mac} . ${macHex(p.mac)} . ${ipHex(ip)}`));
/** QEMU's RARP announce: sender and target hardware address the VM's MAC (both directions). */
const rarpAnnounce = (ps: readonly Port[]): string[] => ps.map((p) => `${q(p.name)} . ${macHex(p.mac)} . ${macHex(p.mac)}`);

// Guards of the ARP tests, as today's lowering writes them (raw loads: RARP has no nft fields,
// and the raw forms carry no implicit `ether type` dependency).
const ARP_MAC_GUARD = '@nh,0,16 1 @nh,32,8 6 meta length >= 14';
const ARP_IP_GUARD = '@nh,16,16 0x800 @nh,32,8 6 @nh,40,8 4 meta length >= 28';
const ARP_BOTH_GUARD = '@nh,0,16 1 @nh,16,16 0x800 @nh,32,8 6 @nh,40,8 4 meta length >= 28';
/** The RARP announce rule's fixed tests (broadcast, Request_Reverse, sender and target IP 0.0.0.0). */
const ANNOUNCE_FIXED = `ether daddr ${BCAST} ${ARP_BOTH_GUARD} @nh,48,16 3 @nh,112,32 0x0 @nh,192,32 0x0`;

/** The per-interface announce chains of today's lowering (two per interface), kept by the rungs below "vmap". */
function perIfaceAnnounce(t: Text, ps: readonly Port[], dir: 'out' | 'in', chain: string): void {
  const map = `${chain}_d`;
  const items: string[] = [];
  for (const p of ps) {
    const tiny = `${map}_${p.name}`;
    const src = dir === 'out' ? `ether saddr ${p.mac} ` : '';
    t.rule(tiny, `${src}${ANNOUNCE_FIXED} @nh,64,48 ${macHex(p.mac)} @nh,144,48 ${macHex(p.mac)} accept`);
    items.push(`${q(p.name)} : jump ${tiny}`);
  }
  t.map(map, 'ifname : verdict', items);
  t.rule(chain, `meta ${dir === 'out' ? 'iifname' : 'oifname'} vmap @${map}`);
}

/** The announce as one set lookup per direction (the per-interface chains gone). */
function announceSet(t: Text, ps: readonly Port[], dir: 'out' | 'in', chain: string): void {
  const ifk = dir === 'out' ? 'iifname' : 'oifname';
  t.set(`rarp_${dir}`, `meta ${ifk} . @nh,64,48 . @nh,144,48`, rarpAnnounce(ps), true);
  t.rule(chain, `${ANNOUNCE_FIXED} meta ${ifk} . @nh,64,48 . @nh,144,48 @rarp_${dir} accept`);
}

function dispatch(t: Text, ps: readonly Port[], pre: string[] = [], post: string[] = [], roots: { out: string; in: string } = { out: 'is0', in: 'os0' }): void {
  t.baseChain('pre', 'prerouting', -300).baseChain('post', 'postrouting', 300);
  t.map('from_vm', 'ifname : verdict', ps.map((p) => `${q(p.name)} : jump ${roots.out}`));
  t.map('to_vm', 'ifname : verdict', ps.map((p) => `${q(p.name)} : jump ${roots.in}`));
  for (const r of pre) t.rule('pre', r);
  t.rule('pre', 'meta iifname vmap @from_vm');
  for (const r of post) t.rule('post', r);
  t.rule('post', 'meta oifname vmap @to_vm');
}

// ---- the rungs ------------------------------------------------------------------------------

/** Today's lowering, unchanged (the JSON nwf-fast loads). */
function today(ctx: VariantContext): Ruleset {
  return { format: 'json', body: JSON.stringify(toNftJson(lowerToNft(ctx.ir).batch)) };
}

/** Today minus guards implied by earlier tests: the `ether type` of every sub-chain rule (the jump's guard). */
function guards({ ports: ps }: VariantContext): Ruleset {
  const t = new Text();
  counters(t, ps);
  t.set('mac', 'ifname . ether_addr', macPairs(ps));
  // Raw loads: a typed `ip saddr` / `arp saddr ip` would make nft add its own dependency again.
  t.set('ip4', 'meta iifname . @nh,96,32', ipPairsRaw(ps), true);
  t.set('sha', 'meta iifname . @nh,64,48', macPairsRaw(ps), true);
  t.set('spa', 'meta iifname . @nh,112,32', ipPairsRaw(ps), true);
  dispatch(t, ps);
  t.rule('is0', 'jump is0_mac')
    .rule('is0', 'ether type ip jump is0_ip')
    .rule('is0', 'ether type ip accept')
    .rule('is0', 'ether type arp jump is0_arpmac')
    .rule('is0', 'ether type arp jump is0_arpip')
    .rule('is0', 'ether type arp accept')
    .rule('is0', 'ether type 0x8035 jump is0_rarp')
    .rule('is0', 'ether type 0x0835 accept')
    .rule('is0', cnt('out', 'other-l2'))
    .rule('is0', 'accept');
  t.rule('is0_mac', 'meta iifname . ether saddr @mac return').rule('is0_mac', cnt('out', 'mac-spoof')).rule('is0_mac', 'accept');
  t.rule('is0_ip', 'meta length >= 20 @nh,96,32 0x0 @nh,72,8 17 return')
    .rule('is0_ip', 'meta length >= 20 meta iifname . @nh,96,32 @ip4 return')
    .rule('is0_ip', cnt('out', 'ip-spoof'))
    .rule('is0_ip', 'accept');
  t.rule('is0_arpmac', `${ARP_MAC_GUARD} meta iifname . @nh,64,48 @sha return`).rule('is0_arpmac', cnt('out', 'arp-spoof')).rule('is0_arpmac', 'accept');
  t.rule('is0_arpip', `${ARP_IP_GUARD} meta iifname . @nh,112,32 @spa return`).rule('is0_arpip', cnt('out', 'arp-spoof')).rule('is0_arpip', 'accept');
  perIfaceAnnounce(t, ps, 'out', 'is0_rarp');
  t.rule('is0_rarp', cnt('out', 'rarp')).rule('is0_rarp', 'accept');
  t.rule('os0', 'ether type ip jump os0_ip').rule('os0', 'ether type arp accept').rule('os0', 'ether type 0x8035 jump os0_rarp').rule('os0', cnt('in', 'other-l2')).rule('os0', 'accept');
  t.rule('os0_ip', 'accept');
  perIfaceAnnounce(t, ps, 'in', 'os0_rarp');
  t.rule('os0_rarp', cnt('in', 'rarp')).rule('os0_rarp', 'accept');
  return { format: 'text', body: t.render() };
}

/**
 * "guards" plus flattening: a sub-chain of the form "return if X; drop" entered
 * unconditionally is inlined as "drop if not X" (the MAC chain); a `return`
 * whose continuation in the caller is fixed becomes that continuation (the
 * IPv4 chain's returns are the caller's next rule, `accept`; arp-mac's returns
 * are the jump to arp-ip), so jump/return pairs become gotos; a sub-chain that
 * is a bare accept is inlined (IPv4 to the VM).
 */
function flat({ ports: ps }: VariantContext): Ruleset {
  const t = new Text();
  counters(t, ps);
  t.set('mac', 'ifname . ether_addr', macPairs(ps));
  t.set('ip4', 'meta iifname . @nh,96,32', ipPairsRaw(ps), true);
  t.set('sha', 'meta iifname . @nh,64,48', macPairsRaw(ps), true);
  t.set('spa', 'meta iifname . @nh,112,32', ipPairsRaw(ps), true);
  dispatch(t, ps);
  flatOut(t, ps, []);
  flatIn(t, ps);
  return { format: 'text', body: t.render() };
}

function flatOut(t: Text, ps: readonly Port[], first: readonly string[]): void {
  for (const r of first) t.rule('is0', r);
  t.rule('is0', `meta iifname . ether saddr != @mac ${cnt('out', 'mac-spoof')}`)
    .rule('is0', 'ether type ip goto is0_ip')
    .rule('is0', 'ether type arp goto is0_arpmac')
    .rule('is0', 'ether type 0x8035 goto is0_rarp')
    .rule('is0', 'ether type 0x0835 accept')
    .rule('is0', cnt('out', 'other-l2'));
  t.rule('is0_ip', 'meta length >= 20 @nh,96,32 0x0 @nh,72,8 17 accept').rule('is0_ip', 'meta length >= 20 meta iifname . @nh,96,32 @ip4 accept').rule('is0_ip', cnt('out', 'ip-spoof'));
  t.rule('is0_arpmac', `${ARP_MAC_GUARD} meta iifname . @nh,64,48 @sha goto is0_arpip`).rule('is0_arpmac', cnt('out', 'arp-spoof'));
  t.rule('is0_arpip', `${ARP_IP_GUARD} meta iifname . @nh,112,32 @spa accept`).rule('is0_arpip', cnt('out', 'arp-spoof'));
  perIfaceAnnounce(t, ps, 'out', 'is0_rarp');
  t.rule('is0_rarp', cnt('out', 'rarp'));
}

function flatIn(t: Text, ps: readonly Port[]): void {
  t.rule('os0', 'ether type ip accept').rule('os0', 'ether type arp accept').rule('os0', 'ether type 0x8035 goto os0_rarp').rule('os0', cnt('in', 'other-l2'));
  perIfaceAnnounce(t, ps, 'in', 'os0_rarp');
  t.rule('os0_rarp', cnt('in', 'rarp'));
}

const FAST_IP4 = 'ether type ip meta length >= 20 meta iifname . ether saddr . ip saddr @mi4 accept';
const FAST_ARP = `ether type arp ${ARP_BOTH_GUARD} meta iifname . ether saddr . @nh,64,48 . @nh,112,32 @arpok accept`;

/** "flat" plus fused lookups on the common accept paths, first in the chain (IPv4 and ARP from the VM). */
function fused({ ports: ps }: VariantContext): Ruleset {
  const t = new Text();
  counters(t, ps);
  t.set('mac', 'ifname . ether_addr', macPairs(ps));
  t.set('ip4', 'meta iifname . @nh,96,32', ipPairsRaw(ps), true);
  t.set('sha', 'meta iifname . @nh,64,48', macPairsRaw(ps), true);
  t.set('spa', 'meta iifname . @nh,112,32', ipPairsRaw(ps), true);
  t.set('mi4', 'ifname . ether_addr . ipv4_addr', macIp(ps));
  t.set('arpok', 'meta iifname . ether saddr . @nh,64,48 . @nh,112,32', arpOk(ps), true);
  dispatch(t, ps);
  flatOut(t, ps, [FAST_IP4, FAST_ARP]);
  flatIn(t, ps);
  return { format: 'text', body: t.render() };
}

/**
 * Dispatch by EtherType with a verdict map; each EtherType's chain is the
 * policy specialised to it (fused accept first, then the MAC drop, then what
 * is left of that EtherType's sub-chains); the RARP announce is one set
 * lookup. `preFast` also puts the IPv4 fast path in the base chain, before
 * the per-interface dispatch; `key` picks the interface key.
 */
function vmapRuleset(ps: readonly Port[], opts: { preFast: boolean; key: 'name' | 'index'; lenGuard: boolean; post: boolean }): Ruleset {
  const t = new Text();
  counters(t, ps);
  const ifType = opts.key === 'name' ? 'ifname' : 'iface_index';
  const iif = opts.key === 'name' ? 'meta iifname' : 'meta iif';
  const oif = opts.key === 'name' ? 'meta oifname' : 'meta oif';
  t.set('mac', 'ifname . ether_addr', macPairs(ps));
  t.set('sha', 'meta iifname . @nh,64,48', macPairsRaw(ps), true);
  t.set('spa', 'meta iifname . @nh,112,32', ipPairsRaw(ps), true);
  // Behind `ether type vmap { ip : ... }` the EtherType is known: raw loads keep nft from testing it again.
  t.set('mi4raw', 'meta iifname . ether saddr . @nh,96,32', macIpRaw(ps), true);
  t.set('arpok', 'meta iifname . ether saddr . @nh,64,48 . @nh,112,32', arpOk(ps), true);
  const len = opts.lenGuard ? 'meta length >= 20 ' : '';
  const pre: string[] = [];
  if (opts.preFast) {
    t.set('fast4', `${ifType} . ether_addr . ipv4_addr`, macIp(ps));
    pre.push(`ether type ip ${len}${iif} . ether saddr . ip saddr @fast4 accept`);
  }
  t.baseChain('pre', 'prerouting', -300);
  t.map('from_vm', `${ifType} : verdict`, ps.map((p) => `${q(p.name)} : jump is0`));
  for (const r of pre) t.rule('pre', r);
  t.rule('pre', `${iif} vmap @from_vm`);
  if (opts.post) {
    t.baseChain('post', 'postrouting', 300);
    t.map('to_vm', `${ifType} : verdict`, ps.map((p) => `${q(p.name)} : jump os0`));
    t.rule('post', `${oif} vmap @to_vm`);
  }
  const macDrop = `meta iifname . ether saddr != @mac ${cnt('out', 'mac-spoof')}`;
  t.rule('is0', 'ether type vmap { ip : goto is0_ip, arp : goto is0_arp, 0x8035 : goto is0_rarp }').rule('is0', macDrop).rule('is0', 'ether type 0x0835 accept').rule('is0', cnt('out', 'other-l2'));
  t.rule('is0_ip', `${len}meta iifname . ether saddr . @nh,96,32 @mi4raw accept`)
    .rule('is0_ip', macDrop)
    .rule('is0_ip', 'meta length >= 20 @nh,96,32 0x0 @nh,72,8 17 accept')
    .rule('is0_ip', cnt('out', 'ip-spoof'));
  t.rule('is0_arp', `${ARP_BOTH_GUARD} meta iifname . ether saddr . @nh,64,48 . @nh,112,32 @arpok accept`)
    .rule('is0_arp', macDrop)
    .rule('is0_arp', `${ARP_MAC_GUARD} meta iifname . @nh,64,48 @sha goto is0_arpip`)
    .rule('is0_arp', cnt('out', 'arp-spoof'));
  t.rule('is0_arpip', `${ARP_IP_GUARD} meta iifname . @nh,112,32 @spa accept`).rule('is0_arpip', cnt('out', 'arp-spoof'));
  t.rule('is0_rarp', macDrop);
  announceSet(t, ps, 'out', 'is0_rarp');
  t.rule('is0_rarp', cnt('out', 'rarp'));
  t.rule('os0', 'ether type vmap { ip : accept, arp : accept, 0x8035 : goto os0_rarp }').rule('os0', cnt('in', 'other-l2'));
  announceSet(t, ps, 'in', 'os0_rarp');
  t.rule('os0_rarp', cnt('in', 'rarp'));
  return { format: 'text', body: t.render() };
}

/**
 * The "base" ruleset on per-device hooks instead of the bridge's: netdev
 * ingress on the VM taps for frames from the VMs, netdev egress on the taps
 * for frames to them, with raw loads throughout. No dispatch lookup, and frames between other ports
 * (the uplink) pass no nwf-fast hook at all. The kernel refuses a chain of
 * 256 devices (EFBIG, NFT_NETDEVICE_MAX), so ports are spread over base
 * chains of DEVS_PER_CHAIN devices that share the rest. At egress `meta length` counts the Ethernet header:
 * the RARP announce's length guard is 14 bytes longer there.
 */
const DEVS_PER_CHAIN = 128;

function netdev({ ports: ps }: VariantContext): Ruleset {
  const t = new Text('netdev');
  counters(t, ps);
  // Raw link-layer loads: in the netdev family every typed `ether` field brings an implicit
  // `meta iiftype ether` test. Raw loads read the offloaded VLAN tag like typed ones do.
  const ETYPE = '@ll,96,16';
  const SRC = '@ll,48,48';
  t.set('mac', `meta iifname . ${SRC}`, macPairsRaw(ps), true);
  t.set('sha', 'meta iifname . @nh,64,48', macPairsRaw(ps), true);
  t.set('spa', 'meta iifname . @nh,112,32', ipPairsRaw(ps), true);
  t.set('mi4raw', `meta iifname . ${SRC} . @nh,96,32`, ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${macHex(p.mac)} . ${ipHex(ip)}`)), true);
  t.set('arpok', `meta iifname . ${SRC} . @nh,64,48 . @nh,112,32`, ps.flatMap((p) => p.ips.map((ip) => `${q(p.name)} . ${macHex(p.mac)} . ${macHex(p.mac)} . ${ipHex(ip)}`)), true);
  for (let k = 0; k * DEVS_PER_CHAIN < ps.length; k++) {
    const devs = ps.slice(k * DEVS_PER_CHAIN, (k + 1) * DEVS_PER_CHAIN).map((p) => p.name).join(', ');
    t.hookedChain(`in${k}`, `type filter hook ingress devices = { ${devs} } priority -300; policy accept;`);
    t.rule(`in${k}`, `${ETYPE} 0x0800 meta length >= 20 meta iifname . ${SRC} . @nh,96,32 @mi4raw accept`).rule(`in${k}`, 'goto is0');
    t.hookedChain(`out${k}`, `type filter hook egress devices = { ${devs} } priority 300; policy accept;`);
    t.rule(`out${k}`, `${ETYPE} vmap { 0x0800 : accept, 0x0806 : accept, 0x8035 : goto os0_rarp }`).rule(`out${k}`, cnt('in', 'other-l2'));
  }
  const macDrop = `meta iifname . ${SRC} != @mac ${cnt('out', 'mac-spoof')}`;
  t.rule('is0', `${ETYPE} vmap { 0x0800 : goto is0_ip, 0x0806 : goto is0_arp, 0x8035 : goto is0_rarp }`).rule('is0', macDrop).rule('is0', `${ETYPE} 0x0835 accept`).rule('is0', cnt('out', 'other-l2'));
  t.rule('is0_ip', macDrop).rule('is0_ip', 'meta length >= 20 @nh,96,32 0x0 @nh,72,8 17 accept').rule('is0_ip', 'meta length >= 20 meta iifname . @nh,96,32 @ip4 accept').rule('is0_ip', cnt('out', 'ip-spoof'));
  t.set('ip4', 'meta iifname . @nh,96,32', ipPairsRaw(ps), true);
  t.rule('is0_arp', `${ARP_BOTH_GUARD} meta iifname . ${SRC} . @nh,64,48 . @nh,112,32 @arpok accept`)
    .rule('is0_arp', macDrop)
    .rule('is0_arp', `${ARP_MAC_GUARD} meta iifname . @nh,64,48 @sha goto is0_arpip`)
    .rule('is0_arp', cnt('out', 'arp-spoof'));
  t.rule('is0_arpip', `${ARP_IP_GUARD} meta iifname . @nh,112,32 @spa accept`).rule('is0_arpip', cnt('out', 'arp-spoof'));
  t.rule('is0_rarp', macDrop);
  t.set('rarp_out', 'meta iifname . @nh,64,48 . @nh,144,48', rarpAnnounce(ps), true);
  const announce = (len: number): string => `@ll,0,48 0xffffffffffff ${ARP_BOTH_GUARD.replace('meta length >= 28', `meta length >= ${len}`)} @nh,48,16 3 @nh,112,32 0x0 @nh,192,32 0x0`;
  t.rule('is0_rarp', `${announce(28)} meta iifname . @nh,64,48 . @nh,144,48 @rarp_out accept`);
  t.rule('is0_rarp', cnt('out', 'rarp'));
  t.set('rarp_in', 'meta oifname . @nh,64,48 . @nh,144,48', rarpAnnounce(ps), true);
  t.rule('os0_rarp', `${announce(42)} meta oifname . @nh,64,48 . @nh,144,48 @rarp_in accept`);
  t.rule('os0_rarp', cnt('in', 'rarp'));
  return { format: 'text', body: t.render() };
}

// ---- floors -------------------------------------------------------------------------------

/** Both base chains registered, no rule: what having nft hooks on the bridge costs. */
function hooks(): Ruleset {
  const t = new Text();
  t.baseChain('pre', 'prerouting', -300).baseChain('post', 'postrouting', 300);
  return { format: 'text', body: t.render() };
}

/** Today's dispatch and nothing else: each interface's chain only accepts (the floor of the dispatch design). */
function dispatchOnly({ ports: ps }: VariantContext): Ruleset {
  const t = new Text();
  dispatch(t, ps);
  t.rule('is0', 'accept').rule('os0', 'accept');
  return { format: 'text', body: t.render() };
}

export const VARIANTS: readonly Variant[] = [
  { name: 'hooks', what: 'floor: pre and post base chains with no rules', exact: false, build: hooks },
  { name: 'dispatch', what: 'floor: iifname/oifname vmap to a chain that accepts', exact: false, build: dispatchOnly },
  { name: 'today', what: "today's lowering (lowerToNft)", exact: true, build: today },
  { name: 'guards', what: 'today minus implied guards (sub-chain ether type tests; raw loads)', exact: true, build: guards },
  { name: 'flat', what: 'guards + jump/return pairs flattened (inline, goto to the continuation)', exact: true, build: flat },
  { name: 'fused', what: 'flat + fused MAC.IP (and ARP) lookups first in the chain', exact: true, build: fused },
  { name: 'vmap', what: 'EtherType vmap into specialised chains, fused accept first, RARP announce as a set', exact: true, build: ({ ports }) => vmapRuleset(ports, { preFast: false, key: 'name', lenGuard: true, post: true }) },
  { name: 'base', what: 'vmap + the IPv4 fast path in the base chain, before the dispatch', exact: true, build: ({ ports }) => vmapRuleset(ports, { preFast: true, key: 'name', lenGuard: true, post: true }) },
  { name: 'netdev', what: 'base on netdev ingress/egress hooks of the taps instead of the bridge hooks (no dispatch lookup)', exact: true, build: netdev },
  { name: 'info-base-iif', what: 'info: base keyed by ifindex (meta iif/oif) instead of the name', exact: true, build: ({ ports }) => vmapRuleset(ports, { preFast: true, key: 'index', lenGuard: true, post: true }) },
  { name: 'info-base-nolen', what: 'info: base without the meta length >= 20 guard (not exact: truncated frames)', exact: false, build: ({ ports }) => vmapRuleset(ports, { preFast: true, key: 'name', lenGuard: false, post: true }) },
  { name: 'info-base-nopost', what: 'info: base without the postrouting hook (not exact: nothing filters frames to VMs)', exact: false, build: ({ ports }) => vmapRuleset(ports, { preFast: true, key: 'name', lenGuard: true, post: false }) },
];

export function variant(name: string): Variant {
  const v = VARIANTS.find((x) => x.name === name);
  if (!v) throw new Error(`unknown variant ${name} (${VARIANTS.map((x) => x.name).join(', ')})`);
  return v;
}

/** The table family of a ruleset. */
export const familyOf = (r: Ruleset): 'bridge' | 'netdev' => (r.format === 'text' && r.body.startsWith('table netdev ') ? 'netdev' : 'bridge');

/** The same ruleset in another table (measure.ts keeps every variant loaded, each in its own table). */
export function renameTable(r: Ruleset, table: string): Ruleset {
  if (r.format === 'text') return { format: 'text', body: r.body.replace(/^table (bridge|netdev) nwf_fast \{/m, `table $1 ${table} {`) };
  return { format: 'json', body: r.body.replace(/"nwf_fast"/g, JSON.stringify(table)) };
}

/** Removes the table of any variant (add + delete: no error when absent). */
export const UNLOAD_TEXT = 'add table bridge nwf_fast\ndelete table bridge nwf_fast\nadd table netdev nwf_fast\ndelete table netdev nwf_fast\n';

export const _test = { ipHex, macHex };
