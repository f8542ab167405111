// --backend both with a policy each backend refuses alone: ARP gratuitous
// tests (nft cannot express them: the eBPF programs enforce them, nft leaves
// them out) and L3 rules (eBPF implements L2 only: nftables enforces them).
// Every corpus frame goes through a real bridge with both layers loaded and
// must be delivered exactly when the reference evaluator accepts it. A second
// VM has a policy the eBPF programs cannot hold (over 1024 addresses in one
// rule group) that nft enforces alone, without a program on its tap.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration } from '../../src/compile.js';
import { writeGeneration } from '../../src/host/generation.js';
import { loadGeneration, unload } from '../../src/host/apply.js';
import { status } from '../../src/host/status.js';
import { evaluate } from '../../src/ir/eval.js';
import type { InterfacePolicy } from '../../src/ir/types.js';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import { execa } from 'execa';
import { deliver, canonicalFrame } from '../../src/lab/packet-io.js';
import { TC_HANDLE, TC_PRIORITY } from '../../src/host/bpf-apply.js';
import { tcQuery } from '../../src/host/bpf/libbpf.js';
import { ifIndex, withNetns } from '../../src/host/netns.js';
import { loadSources } from '../../src/resolve/sources.js';
import { generateCorpus, type CorpusFrame } from '../../src/lab/frames/corpus.js';
import * as F from '../../src/lab/frames/build.js';
import { nwfErrorOf } from '../support/cli.js';
import { bindingXml } from '../support/policy.js';
import { isRoot, PEER_MAC, ROOT_REASON, runDifferential, VM_MAC } from './support/differential.js';

// From the VM: no gratuitous ARP at all (not even for its own address, which clean-traffic allows);
// to the VM: no gratuitous ARP for 10.77.0.8; L3: only TCP 80 in, nothing else.
const FILTER = `<filter name='garp-web' chain='root'>
  <rule action='drop' direction='out' priority='-950'><arp gratuitous='true'/></rule>
  <rule action='drop' direction='in' priority='-950'><arp gratuitous='true' arpsrcipaddr='10.77.0.8'/></rule>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='100'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout' priority='900'><all/></rule>
</filter>`;
const PARAMS = { IP: '10.77.0.2' };
const BCAST = 'ff:ff:ff:ff:ff:ff';
const VM2_MAC = '52:54:00:00:00:02';
/** 1100 addresses, the VM's own (10.77.0.3) among them: more than the bpf backend holds in one rule group. */
const BIG_IPS = ['10.77.0.3', ...Array.from({ length: 1099 }, (_, i) => `10.${100 + ((i >> 8) & 63)}.${i & 255}.1`)];

describe.skipIf(!isRoot)('--backend both: rules only one layer enforces, through a real bridge', () => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  let opts: { stateDir: string; netns: string; pinDir: string };
  const loadSrc = () => {
    const b = mkdtempSync(join(work, 'b-'));
    const f = mkdtempSync(join(work, 'f-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'garp-web', PARAMS));
    writeFileSync(join(b, 'vnet1.xml'), bindingXml('vnet1', VM2_MAC, 'clean-traffic', { IP: BIG_IPS }));
    writeFileSync(join(f, 'garp-web.xml'), FILTER);
    return loadSources({ filterDirs: [f], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
  };

  beforeAll(async () => {
    tb = await createTestbed({ prefix: 'nwfbl', vms: [{ name: 'vm', tap: 'vnet0', mac: VM_MAC }, { name: 'vm2', tap: 'vnet1', mac: VM2_MAC }], peers: [{ name: 'peer', mac: PEER_MAC }] });
    for (const port of ['vnet0', 'vnet1', tb.guest('peer').port]) {
      await execa('ip', ['netns', 'exec', tb.hostNs, 'bridge', 'link', 'set', 'dev', port, 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
    }
    work = mkdtempSync(join(tmpdir(), 'nwf-both-'));
    pinDir = `/sys/fs/bpf/nwf-fast-both-${process.pid}`;
    opts = { stateDir: join(work, 'state'), netns: tb.hostNs, pinDir };
  });
  afterAll(async () => {
    if (tb && opts) await unload(opts).catch(() => undefined);
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  it('nft alone refuses the policy, bpf alone refuses it, both accepts it and says which rules only one layer enforces', async () => {
    const src = loadSrc();
    expect(nwfErrorOf(() => compileGeneration(src, 'nft')).code).toBe('NWF1402');
    expect(() => compileGeneration(src, 'bpf')).toThrow(/L3|--backend both/);
    const g = compileGeneration(src, 'both');
    const one = (g.manifest.oneLayer ?? []).map((r) => `${r.layer} ${r.rule} ${r.directions.join(',')}`).sort();
    expect(one).toEqual(['ebpf garp-web/1 fromVm', 'ebpf garp-web/2 toVm', 'nft * fromVm,toVm', 'nft garp-web/3 fromVm,toVm,toHost', 'nft garp-web/4 fromVm,toVm,toHost']);
    expect(g.manifest.oneLayer?.find((r) => r.rule === '*')?.interfaces).toEqual(['vnet1']);
  });

  it('every corpus frame (and gratuitous ARPs both ways) is delivered exactly when the evaluator accepts', async () => {
    const dir = join(work, 'gen');
    await writeGeneration(dir, compileGeneration(loadSrc(), 'both'));
    await loadGeneration(dir, opts);
    const policy = (JSON.parse(readFileSync(join(dir, 'policy.json'), 'utf8')).interfaces as InterfacePolicy[]).find((p) => p.iface === 'vnet0') as InterfacePolicy;
    const garp = (direction: 'out' | 'in', src: string, ip: string, op: 'Request' | 'Reply' = 'Request'): CorpusFrame => ({
      name: `gratuitous ${direction} ${ip} ${op}`,
      direction,
      frame: F.arpFrame({ srcMac: src, dstMac: BCAST, sha: src, spa: ip, tpa: ip, tha: '00:00:00:00:00:00', op }),
      tags: [],
    });
    const extra = [garp('out', VM_MAC, '10.77.0.2'), garp('out', VM_MAC, '10.77.0.2', 'Reply'), garp('in', PEER_MAC, '10.77.0.9'), garp('in', PEER_MAC, '10.77.0.8')];
    // what this test is about: the evaluator drops the VM's gratuitous ARP (eBPF only) and accepts the peer's
    expect(extra.map((c) => evaluate(policy, c.direction, c.frame).verdict)).toEqual(['drop', 'drop', 'accept', 'drop']);
    const corpus = [...generateCorpus(policy, { peerMac: PEER_MAC }), ...extra];
    const isIp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && f[13] === 0x00) || (f[12] === 0x86 && f[13] === 0xdd));
    const r = await runDifferential(tb, policy, corpus, { oneByOne: (f) => isIp(f.frame) });
    for (const m of r.mismatches) console.log(`  MISMATCH ${m.direction} ${m.name}: evaluator ${m.expected}, kernel ${m.delivered ? 'delivered' : 'dropped'} ${m.hex.slice(0, 100)}`);
    console.log(`[both layers] sent ${r.sent} (${r.accepted} accept, ${r.dropped} drop), skipped ${r.skipped}, mismatches ${r.mismatches.length}`);
    expect(r.sent).toBeGreaterThan(100);
    expect(r.mismatches).toEqual([]);
    const st = await status(opts);
    const port = st.interfaces.find((i) => i.iface === 'vnet0');
    expect(port?.status).toBe('protected');
    expect((port?.oneLayer ?? []).map((o) => `${o.layer} ${o.rule}`)).toEqual(['ebpf garp-web/1', 'ebpf garp-web/2', 'nft garp-web/3', 'nft garp-web/4']);
    // the VM's gratuitous ARPs were dropped by the eBPF program (the nft second line leaves that rule out)
    expect(port?.bpfDrops?.['arp-spoof'] ?? 0).toBeGreaterThan(0);
  });

  it('the port over the eBPF limit: no program on its tap, nft alone passes its addresses and drops spoofed ones', async () => {
    const progs = withNetns(tb.hostNs, () => {
      const ifindex = ifIndex('vnet1');
      return (['ingress', 'egress'] as const).map((direction) => tcQuery({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY })?.progId);
    });
    expect(progs).toEqual([undefined, undefined]);
    const udp = (srcMac: string, srcIp: string): Uint8Array => F.udpFrame({ srcMac, dstMac: PEER_MAC, srcIp, dstIp: '10.77.0.9', sport: 5000, dport: 5001 });
    const frames = [udp(VM2_MAC, '10.77.0.3'), udp(VM2_MAC, BIG_IPS[1099] as string), udp(VM2_MAC, '10.77.0.66'), udp('52:54:00:00:00:66', '10.77.0.3')];
    const r = await deliver(tb.guest('vm2').endpoint, tb.guest('peer').endpoint, frames, { key: canonicalFrame, quietMs: 60, maxWaitMs: 2000 });
    expect(r.arrived).toEqual([true, true, false, false]);
    const st = await status(opts);
    const port = st.interfaces.find((i) => i.iface === 'vnet1');
    expect(port?.status).toBe('protected');
    expect(port?.oneLayer?.map((o) => `${o.layer} ${o.rule}`)).toEqual(['nft *']);
    expect((port?.drops['ip-spoof'] ?? 0) + (port?.drops['mac-spoof'] ?? 0)).toBeGreaterThanOrEqual(2);
  });
});

if (!isRoot) console.warn(`SKIP --backend both layer tests: ${ROOT_REASON}`);
