// Regression tests of issue 9 faults 1-3, on a namespaced host:
//  1. every load puts the eBPF programs on every present tap of the
//     generation (a tc filter removed by hand, a tap deleted and re-created,
//     a load while a tap was missing), and status sees when they are not;
//  2. an incremental load runs only on a kernel that matches what was
//     recorded: drift (a foreign rule in a shared chain, a set element
//     deleted, the bridge table deleted) is repaired by the next load, not
//     recorded as the new truth;
//  3. generated names are injective: tap `a` with a per-interface sub-chain
//     `mac` and tap `a_mac` get different chains, and the frame libvirt
//     drops from `a_mac` is dropped.
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, loadedStatus as status, unload } from '../../src/host/apply.js';
import { writeGeneration } from '../../src/host/generation.js';
import { TC_HANDLE, TC_PRIORITY } from '../../src/host/bpf-apply.js';
import { tcQuery } from '../../src/host/bpf/libbpf.js';
import { ifIndex, withNetns } from '../../src/host/netns.js';
import { evaluate } from '../../src/ir/eval.js';
import type { PolicyIR } from '../../src/ir/types.js';
import * as F from '../../src/lab/frames/build.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import { createTestbed, destroyStale, type Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, isRoot, PEER_MAC, ROOT_REASON, VM_MAC } from './support/differential.js';

const SPOOF_MAC = '52:54:00:00:00:66';

async function generation(dir: string, backend: Backend, bindings: Record<string, string>, filters: Record<string, string> = {}): Promise<string> {
  const b = mkdtempSync(join(tmpdir(), 'nwf-vb-'));
  const f = mkdtempSync(join(tmpdir(), 'nwf-vf-'));
  for (const [name, xml] of Object.entries(bindings)) writeFileSync(join(b, `${name}.xml`), xml);
  for (const [name, xml] of Object.entries(filters)) writeFileSync(join(f, `${name}.xml`), xml);
  const src = loadSources({ filterDirs: [f], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
  await writeGeneration(dir, compileGeneration(src, backend));
  rmSync(b, { recursive: true });
  rmSync(f, { recursive: true });
  return dir;
}

const cleanTraffic = (ips: string[]) => ({ vnet0: bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: ips }) });
/** vnet0 and a second port whose address changes (the generations then differ in set elements only). */
const twoPorts = (otherIp: string) => ({
  vnet0: bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: '10.77.0.2' }),
  vnet9: bindingXml('vnet9', '52:54:00:00:00:09', 'clean-traffic', { IP: otherIp }),
});

/** One legitimate and one spoofed (source MAC and IP) UDP frame from the VM: which arrived at the peer. */
async function probe(tb: Testbed): Promise<{ legit: boolean; spoofed: boolean }> {
  const frame = (mac: string, ip: string, sport: number) => F.udpFrame({ srcMac: mac, dstMac: PEER_MAC, srcIp: ip, dstIp: '10.77.0.9', sport, dport: 6000 });
  const r = await deliver(tb.guest('vm').endpoint, tb.guest('peer').endpoint, [frame(VM_MAC, '10.77.0.2', 5001), frame(SPOOF_MAC, '10.77.0.66', 5002)], { key: canonicalFrame, quietMs: 60 });
  return { legit: r.arrived[0] as boolean, spoofed: r.arrived[1] as boolean };
}

describe.skipIf(!isRoot)('issue 9: every load verified against the kernel (namespaced host)', () => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  const nft = (args: string[]) => execa('ip', ['netns', 'exec', tb.hostNs, 'nft', ...args]);
  const ip = (args: string[]) => execa('ip', ['-n', tb.hostNs, ...args]);
  const attached = () =>
    withNetns(tb.hostNs, () => {
      const ifindex = ifIndex('vnet0');
      return (['ingress', 'egress'] as const).map((direction) => tcQuery({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY })?.progId);
    });
  /** Deletes the tap (and the VM's eth0 with it), as a VM that stops. */
  const deleteTap = () => ip(['link', 'del', 'vnet0']);
  /** Re-creates the tap with the VM's eth0 behind it, as a VM that starts again. */
  const createTap = async () => {
    const vm = tb.guest('vm');
    await ip(['link', 'add', 'vnet0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vm.ns]);
    await ip(['link', 'set', 'vnet0', 'master', tb.bridge, 'up']);
    await execa('bridge', ['-n', tb.hostNs, 'link', 'set', 'dev', 'vnet0', 'learning', 'off', 'flood', 'on', 'mcast_flood', 'on']);
    await execa('ip', ['-n', vm.ns, 'link', 'set', 'eth0', 'address', VM_MAC, 'up']);
  };

  beforeAll(async () => {
    tb = await createDemoHost('nwfv');
    work = mkdtempSync(join(tmpdir(), 'nwf-verify-'));
    pinDir = `/sys/fs/bpf/nwf-fast-verify-${process.pid}`;
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  describe('fault 1: eBPF programs on every present tap after every load', () => {
    let g1: string;
    let g2: string;
    let opts: { stateDir: string; netns: string; pinDir: string };
    beforeAll(async () => {
      g1 = await generation(join(work, 'b1'), 'bpf', cleanTraffic(['10.77.0.2']));
      g2 = await generation(join(work, 'b2'), 'bpf', cleanTraffic(['10.77.0.2', '10.77.0.3']));
      opts = { stateDir: join(work, 'state-bpf'), netns: tb.hostNs, pinDir };
    });
    afterAll(async () => {
      if (opts) await unload(opts);
    });

    it('a tc filter removed by hand: status reports it, the next (incremental) load puts it back', async () => {
      await loadGeneration(g1, opts);
      expect(attached().every((id) => typeof id === 'number')).toBe(true);
      expect((await status(opts)).drift).toBe(false);
      await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'filter', 'del', 'dev', 'vnet0', 'ingress', 'pref', String(TC_PRIORITY)]);
      expect(attached()[0]).toBeUndefined();
      expect((await probe(tb)).spoofed).toBe(true); // unfiltered now
      expect((await status(opts)).drift).toBe(true);
      await loadGeneration(g2, opts);
      expect(attached().every((id) => typeof id === 'number')).toBe(true);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      expect((await status(opts)).drift).toBe(false);
    });

    it('a tap deleted and re-created (a VM restart): the next load attaches the programs to the new tap', async () => {
      await loadGeneration(g1, opts);
      await deleteTap();
      await createTap();
      expect(attached()).toEqual([undefined, undefined]);
      expect((await status(opts)).drift).toBe(true);
      await loadGeneration(g2, opts);
      expect(attached().every((id) => typeof id === 'number')).toBe(true);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
    });

    it('a load while the tap was missing, then a later load: the programs are on the tap', async () => {
      await deleteTap();
      await loadGeneration(g1, opts);
      await createTap();
      await loadGeneration(g2, opts);
      expect(attached().every((id) => typeof id === 'number')).toBe(true);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      expect((await status(opts)).drift).toBe(false);
    });
  });

  describe('fault 2: an incremental load repairs drift instead of hiding it', () => {
    let g1: string;
    let g2: string;
    let opts: { stateDir: string; netns: string };
    /** The chain the dispatch map sends vnet0's frames to (from the VM). */
    const entryChain = async (): Promise<string> => {
      const doc = JSON.parse((await nft(['-j', 'list', 'table', 'bridge', 'nwf_fast'])).stdout) as { nftables: Record<string, { name?: string; elem?: unknown[] }>[] };
      const pre = doc.nftables.find((o) => o.rule && JSON.stringify(o.rule).includes('iifname') && (o.rule as { chain?: string }).chain === 'pre' && JSON.stringify(o.rule).includes('vmap'));
      const mapName = /"@([^"]+)"/.exec(JSON.stringify(pre))?.[1];
      const map = doc.nftables.map((o) => o.map).find((m) => m?.name === mapName);
      const entry = JSON.stringify(map?.elem?.find((e) => JSON.stringify(e).includes('"vnet0"')));
      const target = /"target":\s*"([^"]+)"/.exec(entry)?.[1];
      if (!target) throw new Error(`no dispatch entry for vnet0 in ${entry}`);
      return target;
    };

    beforeAll(async () => {
      g1 = await generation(join(work, 'n1'), 'nft', twoPorts('10.77.0.20'));
      g2 = await generation(join(work, 'n2'), 'nft', twoPorts('10.77.0.21'));
      opts = { stateDir: join(work, 'state-nft'), netns: tb.hostNs };
    });

    it('a foreign rule inserted in a shared chain', async () => {
      await loadGeneration(g1, opts);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      await nft(['insert', 'rule', 'bridge', 'nwf_fast', await entryChain(), 'accept']);
      expect((await probe(tb)).spoofed).toBe(true);
      expect((await status(opts)).drift).toBe(true);
      await loadGeneration(g2, opts);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      expect((await status(opts)).drift).toBe(false);
    });

    it('a set element deleted', async () => {
      await loadGeneration(g1, opts);
      const doc = JSON.parse((await nft(['-j', 'list', 'table', 'bridge', 'nwf_fast'])).stdout) as { nftables: Record<string, { name?: string; type?: unknown; elem?: unknown[] }>[] };
      // the set holding vnet0's MAC: delete that element (the VM's legitimate traffic then drops)
      const set = doc.nftables.map((o) => o.set).find((s) => JSON.stringify(s?.type) === '["ifname","ether_addr"]' && JSON.stringify(s?.elem ?? []).includes('"vnet0"'));
      expect(set?.name).toBeDefined();
      await nft(['delete', 'element', 'bridge', 'nwf_fast', set!.name!, `{ "vnet0" . ${VM_MAC} }`]);
      expect((await status(opts)).drift).toBe(true);
      await loadGeneration(g2, opts);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      expect((await status(opts)).drift).toBe(false);
    });

    it('the bridge table deleted', async () => {
      await loadGeneration(g1, opts);
      await nft(['delete', 'table', 'bridge', 'nwf_fast']);
      expect((await probe(tb)).spoofed).toBe(true);
      expect((await status(opts)).drift).toBe(true);
      await loadGeneration(g2, opts);
      expect(await probe(tb)).toEqual({ legit: true, spoofed: false });
      expect((await status(opts)).drift).toBe(false);
    });
  });
});

// ---- fault 3 ---------------------------------------------------------------------------------

/** A sub-chain `mac` whose negated list test cannot be shared: every interface gets its own chains. */
const MAC_CHAIN = `<filter name='own-mac' chain='mac'>
  <rule action='return' direction='out' priority='10'><mac srcmacaddr='$MAC'/></rule>
  <rule action='drop' direction='out' priority='20'><mac srcmacaddr='$ALLOWED' match='no'/></rule>
</filter>`;
const ROOT = `<filter name='own-root' chain='root'>
  <filterref filter='own-mac'/>
</filter>`;
const MAC_A = '52:54:00:00:0a:01';
const MAC_AMAC = '52:54:00:00:0a:02';

describe.skipIf(!isRoot)('issue 9 fault 3: injective names (tap a with sub-chain mac, tap a_mac)', () => {
  let tb: Testbed;
  let work: string;
  beforeAll(async () => {
    await destroyStale('nwfn3');
    tb = await createTestbed({ prefix: 'nwfn3', vms: [{ name: 'vm', tap: 'a_mac', mac: MAC_AMAC }], peers: [{ name: 'peer', mac: PEER_MAC }] });
    work = mkdtempSync(join(tmpdir(), 'nwf-names-'));
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('a frame from a_mac with a\'s MAC is dropped, as libvirt drops it', async () => {
    const dir = await generation(
      join(work, 'g'),
      'nft',
      {
        a: bindingXml('a', MAC_A, 'own-root', { ALLOWED: [MAC_A, '52:54:00:00:0a:09'] }),
        a_mac: bindingXml('a_mac', MAC_AMAC, 'own-root', { ALLOWED: [MAC_AMAC, '52:54:00:00:0a:08'] }),
      },
      { 'own-mac': MAC_CHAIN, 'own-root': ROOT },
    );
    await loadGeneration(dir, { stateDir: join(work, 'state'), netns: tb.hostNs });
    const ir = JSON.parse((await import('node:fs')).readFileSync(join(dir, 'policy.json'), 'utf8')) as PolicyIR;
    const policy = ir.interfaces.find((p) => p.iface === 'a_mac')!;
    const spoof = F.udpFrame({ srcMac: MAC_A, dstMac: PEER_MAC, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 1, dport: 2 });
    const own = F.udpFrame({ srcMac: MAC_AMAC, dstMac: PEER_MAC, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 3, dport: 4 });
    expect(evaluate(policy, 'out', spoof).verdict).toBe('drop');
    expect(evaluate(policy, 'out', own).verdict).toBe('accept');
    const r = await deliver(tb.guest('vm').endpoint, tb.guest('peer').endpoint, [spoof, own], { key: canonicalFrame, quietMs: 60 });
    expect(r.arrived).toEqual([false, true]);
  });
});

if (!isRoot) console.warn(`SKIP load verification tests: ${ROOT_REASON}`);
