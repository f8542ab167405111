// nwf-fast demo: the main job on the built-in example, on a demo host built
// from network namespaces (nothing outside them is touched).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileGeneration } from '../compile.js';
import { writeGeneration } from '../host/generation.js';
import { loadGeneration, rollback } from '../host/apply.js';
import { status } from '../host/status.js';
import { canonicalFrame, deliver } from '../lab/packet-io.js';
import { createTestbed, type Testbed } from '../lab/testbed.js';
import { evaluate } from '../ir/eval.js';
import { DROP_REASONS } from '../ir/reasons.js';
import { resolvePolicy } from '../resolve/resolve.js';
import { loadSources, PACKAGE_ROOT } from '../resolve/sources.js';
import * as F from '../lab/frames/build.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, type ParsedArgs } from './args.js';
import type { CliIo } from './io.js';

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the built-in example on a demo host of network namespaces (root)',
  description:
    'Builds a demo KVM host from network namespaces (a bridge, three VMs under\nclean-traffic, one VM with an L3 policy, a neighbour), compiles the built-in\nexample (examples/demo) for both backends, loads it, sends legitimate and\nspoofed traffic under the nft backend and then with tc/eBPF programs on the\ntaps, prints the verdicts and drop counters, rolls back, and removes\neverything. Needs root.',
  options: {},
  run: runDemo,
};

const EXAMPLE = join(PACKAGE_ROOT, 'examples', 'demo');
const MAC = { vm1: '52:54:00:77:00:01', vm2: '52:54:00:77:00:02', vm3: '52:54:00:77:00:03', web: '52:54:00:77:00:04', peer: '52:54:00:77:00:99' };
const IP = { vm1: '10.77.0.1', vm2: '10.77.0.2', vm2b: '10.77.0.22', vm3: '10.77.0.3', web: '10.77.0.4', peer: '10.77.0.99' };

interface Scenario {
  from: 'vm1' | 'vm2' | 'vm3' | 'web' | 'peer';
  to: 'peer' | 'web';
  what: string;
  frame: Uint8Array;
}

function scenarios(): Scenario[] {
  const udp = (src: string, srcIp: string, dst = MAC.peer, dstIp = IP.peer) => F.udpFrame({ srcMac: src, dstMac: dst, srcIp, dstIp, sport: 40000, dport: 53 });
  const arp = (src: string, sha: string, spa: string, tpa: string) => F.arpFrame({ srcMac: src, sha, spa, tpa, tha: '00:00:00:00:00:00' });
  const tcp = (dport: number) => F.tcpFrame({ srcMac: MAC.peer, dstMac: MAC.web, srcIp: IP.peer, dstIp: IP.web, sport: 41000 + dport, dport, flags: ['SYN'], seq: 1 });
  return [
    { from: 'vm1', to: 'peer', what: 'IPv4 from its own MAC and IP', frame: udp(MAC.vm1, IP.vm1) },
    { from: 'vm1', to: 'peer', what: 'IPv4 with a spoofed source MAC', frame: udp('52:54:00:66:66:66', IP.vm1) },
    { from: 'vm1', to: 'peer', what: "IPv4 with vm3's source IP", frame: udp(MAC.vm1, IP.vm3) },
    { from: 'vm2', to: 'peer', what: 'IPv4 from the second IP of its list', frame: udp(MAC.vm2, IP.vm2b) },
    { from: 'vm1', to: 'peer', what: 'DHCP discover from 0.0.0.0', frame: F.udpFrame({ srcMac: MAC.vm1, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: '0.0.0.0', dstIp: '255.255.255.255', sport: 68, dport: 67 }) },
    { from: 'vm1', to: 'peer', what: 'ARP request, honest', frame: arp(MAC.vm1, MAC.vm1, IP.vm1, IP.peer) },
    { from: 'vm1', to: 'peer', what: "ARP claiming vm2's IP", frame: arp(MAC.vm1, MAC.vm1, IP.vm2, IP.peer) },
    { from: 'vm1', to: 'peer', what: "ARP with vm3's MAC as sender", frame: arp(MAC.vm1, MAC.vm3, IP.vm1, IP.peer) },
    { from: 'vm3', to: 'peer', what: 'gratuitous ARP for its own IP', frame: arp(MAC.vm3, MAC.vm3, IP.vm3, IP.vm3) },
    { from: 'vm3', to: 'peer', what: "gratuitous ARP taking over vm1's IP", frame: arp(MAC.vm3, MAC.vm3, IP.vm1, IP.vm1) },
    { from: 'vm3', to: 'peer', what: 'the QEMU RARP announce after migration', frame: F.rarpAnnounceFrame(MAC.vm3) },
    { from: 'vm2', to: 'peer', what: 'IPv6 (clean-traffic is IPv4 only)', frame: F.ipv6UdpFrame({ srcMac: MAC.vm2, dstMac: '33:33:00:00:00:01', srcIp: 'fe80::5054:ff:fe77:2', dstIp: 'ff02::1', sport: 5353, dport: 5353 }) },
    { from: 'peer', to: 'web', what: 'TCP to port 80 of the web VM', frame: tcp(80) },
    { from: 'peer', to: 'web', what: 'TCP to port 22 of the web VM', frame: tcp(22) },
  ];
}

const pad = (s: string, n: number): string => (s.length > n ? s.slice(0, n - 1) + '~' : s.padEnd(n));

async function runDemo(_p: ParsedArgs, io: CliIo): Promise<number> {
  if (process.getuid?.() !== 0) throw new NwfError(CODES.KERNEL_UNSUPPORTED, 'the demo builds network namespaces and needs root', { hint: 'sudo ./scripts/demo.sh' });
  const work = mkdtempSync(join(tmpdir(), 'nwf-fast-demo-'));
  let tb: Testbed | undefined;
  try {
    io.out('== building a demo host: bridge br0, VMs vm1 vm2 vm3 (clean-traffic), web (clean-traffic + TCP 80 only), a neighbour\n');
    tb = await createTestbed({
      prefix: 'nwfdemo',
      vms: [
        { name: 'vm1', tap: 'vnet0', mac: MAC.vm1 },
        { name: 'vm2', tap: 'vnet1', mac: MAC.vm2 },
        { name: 'vm3', tap: 'vnet2', mac: MAC.vm3 },
        { name: 'web', tap: 'vnet3', mac: MAC.web },
      ],
      peers: [{ name: 'peer', mac: MAC.peer }],
    });
    const state = join(work, 'state');
    const opts = { stateDir: state, netns: tb.hostNs, pinDir: `/sys/fs/bpf/nwf-fast-demo-${process.pid}` };

    // Generation 1: the three clean-traffic VMs (nft). Generation 2: the whole example (nft).
    // Generation 3: the whole example with tc/eBPF programs on the taps and nft as a second line.
    const srcAll = loadSources({ filterDirs: [join(EXAMPLE, 'filters')], bundled: true, bindingPaths: [join(EXAMPLE, 'bindings')], domainPaths: [], libvirt: false });
    const srcFirst = { ...srcAll, bindings: srcAll.bindings.filter((b) => b.iface !== 'vnet3') };
    const g1 = join(work, 'gen1');
    const g2 = join(work, 'gen2');
    const g3 = join(work, 'gen3');
    await writeGeneration(g1, compileGeneration(srcFirst, 'nft'));
    const c2 = compileGeneration(srcAll, 'nft');
    const m2 = await writeGeneration(g2, c2);
    const t3 = performance.now();
    const c3 = compileGeneration(srcAll, 'both');
    const m3 = await writeGeneration(g3, c3);
    io.out(`== compiled examples/demo: ${m2.interfaces.length} interfaces; nft: ${c2.nft.batch.length} commands in one transaction; eBPF: ${c3.bpf?.shapes.length ?? 0} program object(s) in ${(performance.now() - t3).toFixed(0)} ms\n`);
    const l1 = await loadGeneration(g1, opts);
    io.out(`== loaded generation ${l1.generation.manifest.id} (nft, vm1-vm3) in ${l1.ms.apply.toFixed(1)} ms\n`);
    const l2 = await loadGeneration(g2, opts);
    io.out(`== loaded generation ${l2.generation.manifest.id} (nft, all four VMs) in ${l2.ms.apply.toFixed(1)} ms, atomically replacing the first\n`);

    const ir = resolvePolicy(srcAll.filters, srcAll.bindings);
    const policyOf = (name: string) => ir.interfaces.find((i) => i.owner === name);
    const run = async (): Promise<boolean[]> => {
      const got: boolean[] = [];
      for (const s of scenarios()) {
        const r = await deliver((tb as Testbed).guest(s.from).endpoint, (tb as Testbed).guest(s.to).endpoint, [s.frame], { key: canonicalFrame, quietMs: 50, maxWaitMs: 500 });
        got.push(r.arrived[0] as boolean);
      }
      return got;
    };
    const withNft = await run();
    const l3 = await loadGeneration(g3, opts);
    io.out(`== loaded generation ${m3.id} (eBPF on the taps + nft) in ${l3.ms.apply.toFixed(1)} ms, replacing generation ${l2.generation.manifest.id}\n\n`);
    const withBpf = await run();

    io.out(`${pad('from', 6)}${pad('to', 6)}${pad('traffic', 42)}${pad('libvirt says', 22)}${pad('nft', 11)}${pad('eBPF+nft', 11)}\n`);
    let wrong = 0;
    scenarios().forEach((s, k) => {
      const pol = s.from === 'peer' ? policyOf(s.to) : policyOf(s.from);
      const expected = pol ? evaluate(pol, s.from === 'peer' ? 'in' : 'out', s.frame) : undefined;
      const want = expected?.verdict === 'accept';
      const ok = !expected || (withNft[k] === want && withBpf[k] === want);
      if (!ok) wrong++;
      const verdict = expected ? `${expected.verdict}${expected.reason ? ` (${expected.reason})` : ''}` : '-';
      const show = (d: boolean | undefined) => pad(d ? 'delivered' : 'dropped', 11);
      io.out(`${pad(s.from, 6)}${pad(s.to, 6)}${pad(s.what, 42)}${pad(verdict, 22)}${show(withNft[k])}${show(withBpf[k])}${ok ? '' : '  <- DIFFERS'}\n`);
    });

    const st = await status(opts);
    io.out(`\n== drop counters (nwf-fast status; eBPF drops at the tap, nft sees what passes it)\n${pad('interface', 11)}${pad('owner', 7)}${pad('', 7)}${DROP_REASONS.map((r) => r.padStart(10)).join('')}\n`);
    for (const i of st.interfaces) {
      io.out(`${pad(i.iface, 11)}${pad(i.owner, 7)}${pad('nft', 7)}${DROP_REASONS.map((r) => String(i.drops[r] ?? 0).padStart(10)).join('')}\n`);
      if (i.bpfDrops) io.out(`${pad('', 18)}${pad('eBPF', 7)}${DROP_REASONS.map((r) => String(i.bpfDrops?.[r] ?? 0).padStart(10)).join('')}\n`);
    }
    const rb = await rollback(opts);
    const after = await status(opts);
    io.out(`\n== rolled back to generation ${rb.generation.manifest.id} (${after.backend}): ${after.interfaces.map((i) => i.iface).join(', ')} protected, eBPF programs removed from the taps, drift: ${after.drift ? 'yes' : 'no'}\n`);
    io.out(wrong ? `\n${wrong} verdict(s) differ from libvirt's semantics\n` : '\nevery frame was delivered exactly when libvirt\'s rules accept it\n');
    return wrong ? 1 : 0;
  } finally {
    if (tb) await tb.destroy();
    rmSync(work, { recursive: true, force: true });
    rmSync(`/sys/fs/bpf/nwf-fast-demo-${process.pid}`, { recursive: true, force: true });
    io.out('== demo host removed\n');
  }
}
