// --backend both with a policy each backend refuses alone: ARP gratuitous
// tests (nft cannot express them: the eBPF programs enforce them, nft leaves
// them out) and L3 rules (eBPF implements L2 only: nftables enforces them).
// Every corpus frame goes through a real bridge with both layers loaded and
// must be delivered exactly when the reference evaluator accepts it.
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
import type { Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { generateCorpus, type CorpusFrame } from '../../src/lab/frames/corpus.js';
import * as F from '../../src/lab/frames/build.js';
import { nwfErrorOf } from '../support/cli.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, isRoot, PEER_MAC, ROOT_REASON, runDifferential, VM_MAC } from './support/differential.js';

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

describe.skipIf(!isRoot)('--backend both: rules only one layer enforces, through a real bridge', () => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  let opts: { stateDir: string; netns: string; pinDir: string };
  const loadSrc = () => {
    const b = mkdtempSync(join(work, 'b-'));
    const f = mkdtempSync(join(work, 'f-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'garp-web', PARAMS));
    writeFileSync(join(f, 'garp-web.xml'), FILTER);
    return loadSources({ filterDirs: [f], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
  };

  beforeAll(async () => {
    tb = await createDemoHost('nwfbl');
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
    expect(one).toEqual(['ebpf garp-web/1 fromVm', 'ebpf garp-web/2 toVm', 'nft garp-web/3 fromVm,toVm,toHost', 'nft garp-web/4 fromVm,toVm,toHost']);
  });

  it('every corpus frame (and gratuitous ARPs both ways) is delivered exactly when the evaluator accepts', async () => {
    const dir = join(work, 'gen');
    await writeGeneration(dir, compileGeneration(loadSrc(), 'both'));
    await loadGeneration(dir, opts);
    const policy = JSON.parse(readFileSync(join(dir, 'policy.json'), 'utf8')).interfaces[0] as InterfacePolicy;
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
});

if (!isRoot) console.warn(`SKIP --backend both layer tests: ${ROOT_REASON}`);
