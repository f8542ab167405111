// L3 (iptables-layer) rules over a learned $IP, on a namespaced host with a
// real bridge and br_netfilter, nft and both backends (issue 10 item 1:
// "once learned, the port is locked to it exactly as if $IP had been given").
// The bridge table decides whether ip saddr / daddr is the port's learned
// address and carries the answer to the ip table in the packet mark
// (backends/nft/l3.ts markCommands). Before the lock the learning table
// holds frame by frame and the L3 rules let nothing extra through (nor
// hold anything back: libvirt has no iptables rules while it learns); after
// the first packet locks .2, TCP to port 22 of the VM passes, to port 80
// drops, from the VM only .2 to port 80 passes, and every frame of the
// evaluator's corpus gets the verdict of the same policy with IP=.2 given.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, rollback, unload } from '../../src/host/apply.js';
import { writeGeneration } from '../../src/host/generation.js';
import { LoadedStore } from '../../src/host/loaded.js';
import { MARK_LAYOUT } from '../../src/backends/nft/l3.js';
import { copyBpfLearnedToNft, readLearnedFromKernel, readNftLearned } from '../../src/host/learn/kernel.js';
import { evaluate } from '../../src/ir/eval.js';
import { evaluateLearning } from '../../src/ir/eval/learning.js';
import { anyBeforeProbes, expectedVerdicts, outFrames, passes, probeVerdicts } from '../../src/lab/learning.js';
import * as F from '../../src/lab/frames/build.js';
import { generateCorpus } from '../../src/lab/frames/corpus.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml, policyFor } from '../support/policy.js';
import { flushConntrack, isRoot, PEER_MAC, ROOT_REASON, runDifferential, VM_MAC } from './support/differential.js';
import { learningHost } from './support/learning-host.js';

const FILTER = `<filter name='ssh-learned' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='100'><tcp dstipaddr='$IP' dstportstart='22'/></rule>
  <rule action='accept' direction='out' priority='100'><tcp srcipaddr='$IP' dstportstart='80'/></rule>
  <rule action='drop' direction='inout' priority='900'><tcp/></rule>
</filter>`;
const PEER_IP = '10.77.0.9';

let seq = 1;
/** A TCP SYN peer -> VM (dir 'in') or VM -> peer (dir 'out'), a fresh source port each. */
function syn(dir: 'in' | 'out', vmIp: string, dport: number): Uint8Array {
  const sport = 30000 + seq++;
  return dir === 'in'
    ? F.tcpFrame({ srcMac: PEER_MAC, dstMac: VM_MAC, srcIp: PEER_IP, dstIp: vmIp, sport, dport, flags: ['SYN'] })
    : F.tcpFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, srcIp: vmIp, dstIp: PEER_IP, sport, dport, flags: ['SYN'] });
}

describe.skipIf(!isRoot).each(['nft', 'both'] as const)('L3 rules over a learned $IP, %s backend (kernel; skipped unless root: network namespaces)', (backend: Backend) => {
  const h = learningHost(`nwl3${backend[0]}`, 'learn-l3');
  const { opts, vm, peer } = h;
  /** The same policy with IP given: what the learning port must do once locked to .2. */
  const staticTwin = () => policyFor('ssh-learned', { IP: '10.77.0.2' }, [FILTER], { iface: 'vnet0', mac: VM_MAC });
  /** Whether `frame` crosses the bridge (a fresh conntrack table, as the evaluator's NEW connection). */
  const crosses = async (dir: 'in' | 'out', frame: Uint8Array): Promise<boolean> => {
    await flushConntrack(h.tb);
    return dir === 'out' ? passes(vm(), peer(), frame) : passes(peer(), vm(), frame);
  };

  /** A generation of vnet0 (learning); with `extra`, also vnet9 (the same filter, IP given: a second port with L3 rules). */
  async function generation(name: string, extra = false): Promise<string> {
    const fdir = join(h.work, `${name}-filters`);
    const bdir = join(h.work, `${name}-bindings`);
    mkdirSync(fdir);
    mkdirSync(bdir);
    writeFileSync(join(fdir, 'ssh-learned.xml'), FILTER);
    writeFileSync(join(bdir, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'ssh-learned', {}));
    if (extra) writeFileSync(join(bdir, 'vnet9.xml'), bindingXml('vnet9', '52:54:00:00:00:09', 'ssh-learned', { IP: '10.77.0.99' }));
    const src = loadSources({ filterDirs: [fdir], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false });
    const dir = join(h.work, name);
    await writeGeneration(dir, compileGeneration(src, backend, { partial: true }));
    return dir;
  }

  it('before the lock: the learning table frame by frame, the L3 rules let nothing extra through, nothing is learned', async () => {
    expect(h.tb.brNfCallIptables, 'br_netfilter in the host namespace').toBe(true);
    const r = await loadGeneration(await generation('g1'), opts());
    expect(r.commit.failed).toEqual([]);
    const probes = anyBeforeProbes(VM_MAC, PEER_MAC);
    expect(await probeVerdicts(vm(), peer(), probes)).toEqual(expectedVerdicts(probes));
    // the evaluator's learning table (explain on a port not locked yet) says the same
    const learning = policyFor('ssh-learned', {}, [FILTER], { iface: 'vnet0', mac: VM_MAC });
    expect(Object.fromEntries(probes.map((p) => [p.what, evaluateLearning(learning, p.dir, p.frame).verdict === 'accept']))).toEqual(expectedVerdicts(probes));
    // TCP from 0.0.0.0 (never teaches) to port 443: the learning table passes it, no L3 rule of the port runs (libvirt: none while learning)
    expect(await crosses('out', F.tcpFrame({ srcMac: VM_MAC, dstMac: PEER_MAC, srcIp: '0.0.0.0', dstIp: PEER_IP, sport: 1000, dport: 443, flags: ['SYN'] }))).toBe(true);
    expect(await crosses('in', syn('in', '10.77.0.2', 80))).toBe(true);
    // spoofed MACs and IPv6 stay dropped by the learning table
    expect(await crosses('out', F.tcpFrame({ srcMac: '52:54:00:00:00:66', dstMac: PEER_MAC, srcIp: '10.77.0.66', dstIp: PEER_IP, sport: 1000, dport: 80, flags: ['SYN'] }))).toBe(false);
    expect(await readLearnedFromKernel(opts())).toEqual([]);
  });

  it('the first IPv4 frame locks .2; from then on the L3 rules test the learned address', async () => {
    expect(await passes(vm(), peer(), outFrames(VM_MAC, PEER_MAC).udp('10.77.0.2'))).toBe(true);
    expect((await readLearnedFromKernel(opts()))[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
    if (backend === 'both') {
      // the eBPF program learned; the nft line (and its L3 rules) follow once nwf-fast copies the address
      expect((await readNftLearned({ netns: h.tb.hostNs })).size).toBe(0);
      expect(await copyBpfLearnedToNft(opts())).toEqual(['vnet0']);
    }
    expect([...(await readNftLearned({ netns: h.tb.hostNs }))]).toEqual([['vnet0', ['10.77.0.2']]]);
    const twin = staticTwin();
    const cases: [string, 'in' | 'out', Uint8Array, boolean][] = [
      ['peer -> VM .2 TCP 22', 'in', syn('in', '10.77.0.2', 22), true],
      ['peer -> VM .2 TCP 80 (policy: drop)', 'in', syn('in', '10.77.0.2', 80), false],
      ['peer -> .3 TCP 22 (not the learned address)', 'in', syn('in', '10.77.0.3', 22), false],
      ['VM .2 -> peer TCP 80', 'out', syn('out', '10.77.0.2', 80), true],
      ['VM .2 -> peer TCP 443 (policy: drop)', 'out', syn('out', '10.77.0.2', 443), false],
      ['VM .66 -> peer TCP 80 (spoofed)', 'out', syn('out', '10.77.0.66', 80), false],
      ['VM .66 -> peer UDP (spoofed)', 'out', outFrames(VM_MAC, PEER_MAC).udp('10.77.0.66'), false],
      ['VM .2 -> peer UDP', 'out', outFrames(VM_MAC, PEER_MAC).udp('10.77.0.2'), true],
    ];
    for (const [what, dir, frame, want] of cases) {
      expect(evaluate(twin, dir, frame, { conn: { state: 'new', direction: 'original' } }).verdict, `evaluator, IP=.2 given: ${what}`).toBe(want ? 'accept' : 'drop');
      expect(await crosses(dir, frame), `kernel: ${what}`).toBe(want);
    }
    expect((await readLearnedFromKernel(opts()))[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
  });

  it('every frame of the corpus: the locked port agrees with the evaluator on the policy with IP=.2 given', { timeout: 300_000 }, async () => {
    const twin = staticTwin();
    const corpus = generateCorpus(twin, { peerMac: PEER_MAC });
    const isIp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && f[13] === 0x00) || (f[12] === 0x86 && f[13] === 0xdd));
    const r = await runDifferential(h.tb, twin, corpus, { oneByOne: (f) => isIp(f.frame) });
    console.log(`[learning L3 ${backend}] corpus ${corpus.length} frames, sent ${r.sent} (${r.accepted} accept, ${r.dropped} drop), skipped ${r.skipped}, mismatches ${r.mismatches.length}`);
    for (const m of r.mismatches) console.log(`  MISMATCH ${m.direction} ${m.name}: evaluator ${m.expected}, kernel ${m.delivered ? 'delivered' : 'dropped'} ${m.hex.slice(0, 120)}`);
    expect(r.mismatches).toEqual([]);
    expect(r.accepted).toBeGreaterThan(0);
    expect(r.dropped).toBeGreaterThan(0);
    // the corpus taught nothing more
    expect((await readLearnedFromKernel(opts()))[0]?.addresses.map((a) => a.ip)).toEqual(['10.77.0.2']);
  });

  it('the lock and its L3 rules survive a reload and a rollback', async () => {
    for (const step of ['load', 'rollback'] as const) {
      const r = step === 'load' ? await loadGeneration(await generation('g2', true), opts()) : await rollback(opts());
      expect(r.commit.failed).toEqual([]);
      if (backend === 'both') await copyBpfLearnedToNft(opts());
      expect(await crosses('in', syn('in', '10.77.0.2', 22)), `${step}: TCP 22`).toBe(true);
      expect(await crosses('in', syn('in', '10.77.0.2', 80)), `${step}: TCP 80`).toBe(false);
      expect(await crosses('out', syn('out', '10.77.0.2', 80)), `${step}: VM TCP 80`).toBe(true);
      expect(await crosses('out', syn('out', '10.77.0.2', 443)), `${step}: VM TCP 443`).toBe(false);
    }
  });

  it('a record of the earlier mark layout (15-bit ids, no learned bits) is reloaded whole, and the L3 rules hold after', async () => {
    const store = new LoadedStore(h.state);
    const head = store.readHead();
    expect(head?.markLayout).toBe(MARK_LAYOUT);
    const { markLayout: _, ...old } = head as NonNullable<typeof head>;
    store.writeHead(old);
    const r = await loadGeneration(await generation('g3', true), opts());
    expect(r.commit.path).toBe('full');
    expect(r.commit.fullReason).toMatch(/mark layout changes \(1 -> 2\)/);
    expect(store.readHead()?.markLayout).toBe(MARK_LAYOUT);
    if (backend === 'both') await copyBpfLearnedToNft(opts());
    expect(await crosses('in', syn('in', '10.77.0.2', 22))).toBe(true);
    expect(await crosses('in', syn('in', '10.77.0.2', 80))).toBe(false);
    await unload(opts());
  });
});

if (!isRoot) console.warn(`SKIP learning L3: ${ROOT_REASON}`);
