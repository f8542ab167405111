// The eBPF backend on a namespaced host, with each attach mechanism (tc
// clsact filters, tcx links, XDP from the VM with tcx towards it):
// generations with programs on the taps, real frames through the bridge,
// reloads under a spoofed flood, rollback, unload, a verifier refusal that
// changes nothing, status; and switching a loaded host from one mechanism to
// another under a spoofed flood.
import { execa } from 'execa';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { readGeneration, sha256, writeGeneration } from '../../src/host/generation.js';
import { loadGeneration, rollback, unload } from '../../src/host/apply.js';
import { status } from '../../src/host/status.js';
import { queryPort, TC_HANDLE, TC_PRIORITY, type BpfHookChoice, type HookMechanism } from '../../src/host/bpf/hook.js';
import { attachTcx, BpfObject, tcDetach } from '../../src/host/bpf/libbpf.js';
import { withNetns, ifIndex } from '../../src/host/netns.js';
import type { Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { generateCorpus } from '../../src/lab/frames/corpus.js';
import * as F from '../../src/lab/frames/build.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, floodDuring, isRoot, PEER_MAC, ROOT_REASON, runDifferential, VM_MAC } from './support/differential.js';

const L3_FILTER = `<filter name='web-only' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='100'><tcp dstportstart='80'/></rule>
  <rule action='drop' direction='inout' priority='900'><all/></rule>
</filter>`;

/** The mechanism of each direction a hook choice gives on this kernel (6.18: tcx, links pinned on the host's bpffs). */
const EXPECT: Record<Exclude<BpfHookChoice, 'auto'>, { out: HookMechanism; in: HookMechanism }> = {
  tc: { out: 'tc', in: 'tc' },
  tcx: { out: 'tcx', in: 'tcx' },
  xdp: { out: 'xdp', in: 'tc' },
};

describe.skipIf(!isRoot).each(['tc', 'tcx', 'xdp'] as const)('eBPF backend on a namespaced host, --bpf-hook %s', (hook) => {
  let tb: Testbed;
  let work: string;
  let pinDir: string;
  let opts: { stateDir: string; netns: string; pinDir: string; bpfHook: BpfHookChoice };
  const gen = async (name: string, backend: Backend, filter: string, params: Record<string, string | string[]>, extra?: string) => {
    const dir = join(work, name);
    const b = mkdtempSync(join(tmpdir(), 'nwf-bb-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, filter, params));
    const f = mkdtempSync(join(tmpdir(), 'nwf-bf-'));
    if (extra) writeFileSync(join(f, 'extra.xml'), extra);
    const src = loadSources({ filterDirs: [f], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
    await writeGeneration(dir, compileGeneration(src, backend));
    rmSync(b, { recursive: true });
    rmSync(f, { recursive: true });
    return { dir, src };
  };
  /** The ids of nwf-fast's programs on vnet0 (from the VM, to the VM), each checked to be on the expected mechanism. */
  const attached = () =>
    withNetns(tb.hostNs, () => {
      const q = queryPort({ iface: 'vnet0', ifindex: ifIndex('vnet0') }, pinDir);
      return (['out', 'in'] as const).map((d) => {
        if (q[d]) expect(q[d]!.mechanism).toBe(EXPECT[hook][d]);
        return q[d]?.progId;
      });
    });

  beforeAll(async () => {
    tb = await createDemoHost('nwfb');
    work = mkdtempSync(join(tmpdir(), 'nwf-bpf-'));
    pinDir = `/sys/fs/bpf/nwf-fast-test-${process.pid}-${hook}`;
    opts = { stateDir: join(work, 'state'), netns: tb.hostNs, pinDir, bpfHook: hook };
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });
  let foreignObj: string;
  beforeAll(async () => {
    foreignObj = join(work, 'foreign.bpf.o');
    writeFileSync(`${foreignObj}.c`, '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nSEC("tc") int foreign_pass(struct __sk_buff *s) { return -1; }\nchar LICENSE[] SEC("license") = "GPL";\n');
    await execa('clang-19', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', `${foreignObj}.c`, '-o', foreignObj]);
  });

  it.each([
    { backend: 'bpf' as const, filter: 'clean-traffic', params: { IP: ['10.77.0.2', '10.77.0.3'] } },
    { backend: 'bpf' as const, filter: 'clean-traffic-gateway', params: { IP: '10.77.0.2', GATEWAY_MAC: '52:54:00:00:00:fe' } },
    { backend: 'both' as const, filter: 'web-only', params: { IP: '10.77.0.2' }, extra: L3_FILTER },
  ])('$backend, $filter: every corpus frame through the bridge is delivered exactly when the evaluator accepts', async (c) => {
    const { dir } = await gen(`d-${c.backend}-${c.filter}`, c.backend, c.filter, c.params as Record<string, string | string[]>, c.extra);
    await loadGeneration(dir, opts);
    expect(attached().every((id) => typeof id === 'number' && id > 0)).toBe(true);
    const policy = JSON.parse(readFileSync(join(dir, 'policy.json'), 'utf8')).interfaces[0];
    const corpus = generateCorpus(policy, { peerMac: PEER_MAC });
    const isIp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && f[13] === 0x00) || (f[12] === 0x86 && f[13] === 0xdd));
    const r = await runDifferential(tb, policy, corpus, c.extra ? { oneByOne: (f) => isIp(f.frame) } : {});
    for (const m of r.mismatches) console.log(`  MISMATCH ${m.direction} ${m.name}: evaluator ${m.expected}, kernel ${m.delivered ? 'delivered' : 'dropped'} ${m.hex.slice(0, 100)}`);
    console.log(`[bpf differential] ${hook}: ${c.backend} ${c.filter}: sent ${r.sent} (${r.accepted} accept, ${r.dropped} drop), mismatches ${r.mismatches.length}`);
    expect(r.mismatches).toEqual([]);
    const st = await status(opts);
    const drops = st.interfaces[0]?.bpfDrops ?? {};
    expect(Object.values(drops).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(st.interfaces[0]?.bpfHooks).toEqual(EXPECT[hook]);
    expect(st.drift).toBe(false);
  });

  it('50 reloads alternating two generations under a spoofed flood deliver no spoofed frame (programs replaced in place, or values updated in place)', async () => {
    const g1 = (await gen('r1', 'bpf', 'clean-traffic', { IP: '10.77.0.2' })).dir;
    const g2 = (await gen('r2', 'bpf', 'clean-traffic', { IP: ['10.77.0.2', '10.77.0.5'] })).dir;
    await loadGeneration(g1, opts);
    const ids = new Set<number | undefined>();
    const { sent, delivered: got } = await floodDuring(tb, async () => {
      for (let i = 0; i < 50; i++) {
        // alternate full replacement (new programs, swapped in place) and in-place value updates
        await loadGeneration(i % 2 === 0 ? g2 : g1, { ...opts, full: i % 4 < 2 });
        ids.add(attached()[0]);
      }
    });
    console.log(`[bpf reload] ${hook}: 50 loads; spoofed sent ${sent.spoofed}, delivered ${got.spoofed}; legitimate sent ${sent.legit}, delivered ${got.legit}; ${ids.size} program ids`);
    expect(sent.spoofed).toBeGreaterThan(500);
    expect(got.spoofed).toBe(0);
    expect(got.legit).toBeGreaterThanOrEqual(Math.floor(sent.legit * 0.99));
    expect(ids.size).toBeGreaterThan(1); // a new program each load, swapped in place
  });

  it('a verifier refusal attaches nothing and leaves the previous generation in force', async () => {
    const good = (await gen('v1', 'bpf', 'clean-traffic', { IP: '10.77.0.2' })).dir;
    await loadGeneration(good, opts);
    const before = attached();
    const bad = (await gen('v2', 'bpf', 'clean-traffic', { IP: '10.77.0.3' })).dir;
    // replace the object by one the verifier refuses (out-of-bounds packet read), keeping the program names
    const src = join(work, 'bad.bpf.c');
    writeFileSync(
      src,
      `#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nstruct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u8[4096]); } nwf_cfg SEC(".maps");\nstruct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } nwf_slot SEC(".maps");\nstruct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } nwf_ifx SEC(".maps");\nstruct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } nwf_ifx_dir SEC(".maps");\nstruct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 32); __type(key, __u32); __type(value, __u64); } nwf_stats SEC(".maps");\nSEC("tc") int nwf_from_vm(struct __sk_buff *s) { unsigned char *d = (void *)(long)s->data; return d[100]; }\nSEC("tc") int nwf_to_vm(struct __sk_buff *s) { unsigned char *d = (void *)(long)s->data; return d[100]; }\nSEC("xdp") int nwf_from_vm_xdp(struct xdp_md *x) { return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n`,
    );
    const stored = readGeneration(bad).bpf!;
    const obj = join(bad, stored.interfaces[0]!.object);
    await execa('clang-19', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', src, '-o', `${obj}.new`]);
    copyFileSync(`${obj}.new`, obj);
    rmSync(`${obj}.new`);
    // a generation whose object the verifier refuses (its manifest hash updated: load checks the object's hash first)
    const mf = join(bad, 'manifest.json');
    const m = JSON.parse(readFileSync(mf, 'utf8'));
    m.objects = m.objects.map((o: { file: string }) => (o.file === stored.interfaces[0]!.object ? { ...o, sha256: sha256(readFileSync(obj)) } : o));
    writeFileSync(mf, JSON.stringify(m));
    let err: unknown;
    try {
      await loadGeneration(bad, { ...opts, full: true });
    } catch (e) {
      err = e;
    }
    expect(String((err as Error)?.message)).toMatch(/nwf_from_vm|verif|invalid|load/i);
    expect(JSON.stringify((err as { details?: unknown }).details ?? {})).toMatch(/invalid access to packet|R\d/);
    expect(attached()).toEqual(before);
  });

  it('rollback restores the previous programs; unload removes only ours', async () => {
    const a = (await gen('ra', 'bpf', 'clean-traffic', { IP: '10.77.0.2' })).dir;
    const b = (await gen('rb', 'bpf', 'no-mac-spoofing', {})).dir;
    await loadGeneration(a, opts);
    await loadGeneration(b, opts);
    // no-mac-spoofing lets IPv6 through, clean-traffic does not
    const v6 = F.ipv6UdpFrame({ srcMac: VM_MAC, dstMac: '33:33:00:00:00:01', srcIp: 'fe80::1', dstIp: 'ff02::1', sport: 1, dport: 2 });
    const { deliver, canonicalFrame } = await import('../../src/lab/packet-io.js');
    const send = async () => (await deliver(tb.guest('vm').endpoint, tb.guest('peer').endpoint, [v6], { key: canonicalFrame, quietMs: 50 })).arrived[0];
    expect(await send()).toBe(true);
    await rollback(opts);
    expect(await send()).toBe(false);
    // somebody else's tc filter and tcx program on the same tap survive unload
    await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'qdisc', 'replace', 'dev', 'vnet0', 'clsact']);
    await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'filter', 'add', 'dev', 'vnet0', 'ingress', 'prio', '7', 'protocol', 'all', 'bpf', 'bytecode', '1,6 0 0 4294967295,']);
    const foreign = BpfObject.open(foreignObj).load();
    const link = withNetns(tb.hostNs, () => attachTcx(foreign.program('foreign_pass'), ifIndex('vnet0'), 'egress'));
    try {
      await unload(opts);
      expect(attached()).toEqual([undefined, undefined]);
      expect(await send()).toBe(true);
      const tcOut = (await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'filter', 'show', 'dev', 'vnet0', 'ingress'])).stdout;
      expect(tcOut).toContain("bytecode '1,6 0 0 4294967295'");
      expect(link.info().tcx?.ifindex).toBeGreaterThan(0); // still attached
      expect(readdirSync(pinDir).filter((d) => d.startsWith('tap-') || d.startsWith('shape-'))).toEqual([]);
    } finally {
      link.close();
      foreign.close();
      await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'filter', 'del', 'dev', 'vnet0', 'ingress', 'prio', '7'], { reject: false });
    }
  });

  it('status reports a tap whose program was taken off by someone else as drift', async () => {
    const g = (await gen('s1', 'bpf', 'clean-traffic', { IP: '10.77.0.2' })).dir;
    await loadGeneration(g, opts);
    expect((await status(opts)).drift).toBe(false);
    // take nwf-fast's to-VM program off behind its back
    withNetns(tb.hostNs, () => {
      const ifindex = ifIndex('vnet0');
      if (EXPECT[hook].in === 'tc') tcDetach({ ifindex, direction: 'egress', handle: TC_HANDLE, priority: TC_PRIORITY });
      else rmSync(join(pinDir, 'tap-vnet0', 'to_vm')); // the last reference of the link: it is released
    });
    const st = await status(opts);
    expect(st.drift).toBe(true);
    expect(st.driftDetail).toMatch(/eBPF programs missing on vnet0 \(to the VM\)/);
    expect(st.interfaces[0]?.bpfHooks).toEqual({ ...EXPECT[hook], in: null });
    // a load puts it back
    await loadGeneration(g, { ...opts, full: true });
    expect((await status(opts)).drift).toBe(false);
  });
});

describe.skipIf(!isRoot)('eBPF attach mechanisms on a loaded host', () => {
  let tb: Testbed;
  let work: string;
  const pinDir = `/sys/fs/bpf/nwf-fast-test-${process.pid}-switch`;
  beforeAll(async () => {
    tb = await createDemoHost('nwfs');
    work = mkdtempSync(join(tmpdir(), 'nwf-bpfs-'));
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    rmSync(pinDir, { recursive: true, force: true });
  });

  it('moves vnet0 between tc, tcx and xdp under a spoofed flood: no spoofed frame gets through, no legitimate one is lost', async () => {
    const b = mkdtempSync(join(tmpdir(), 'nwf-bb-'));
    writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: '10.77.0.2' }));
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
    const dir = join(work, 'g');
    await writeGeneration(dir, compileGeneration(src, 'bpf'));
    rmSync(b, { recursive: true });
    const opts = { stateDir: join(work, 'state'), netns: tb.hostNs, pinDir };
    const order: BpfHookChoice[] = ['tc', 'tcx', 'xdp', 'tc', 'xdp', 'tcx', 'tc', 'auto', 'xdp', 'auto'];
    const seen: string[] = [];
    await loadGeneration(dir, { ...opts, bpfHook: 'auto' });
    const { sent, delivered } = await floodDuring(tb, async () => {
      for (const h of order) {
        // another hook than the loaded one moves the programs (no incremental load)
        const r = await loadGeneration(dir, { ...opts, bpfHook: h });
        const q = withNetns(tb.hostNs, () => queryPort({ iface: 'vnet0', ifindex: ifIndex('vnet0') }, pinDir));
        const want = h === 'auto' ? EXPECT.tc : EXPECT[h];
        expect(r.incremental).toBe(false);
        expect(r.bpfHooks?.vnet0).toEqual(want);
        expect({ out: q.out?.mechanism, in: q.in?.mechanism }).toEqual(want);
        seen.push(`${h}:${q.out?.mechanism}/${q.in?.mechanism}`);
        // exactly one program per direction is left: the other mechanisms' are gone
        const tc = (await execa('ip', ['netns', 'exec', tb.hostNs, 'tc', 'filter', 'show', 'dev', 'vnet0', 'ingress'])).stdout;
        expect(tc.includes('nwf_from_vm')).toBe(want.out === 'tc');
        const link = (await execa('ip', ['-n', tb.hostNs, '-d', 'link', 'show', 'dev', 'vnet0'])).stdout;
        expect(/prog\/xdp/.test(link)).toBe(want.out === 'xdp');
      }
    });
    console.log(`[bpf hooks] ${seen.join(' -> ')}; spoofed sent ${sent.spoofed}, delivered ${delivered.spoofed}; legitimate sent ${sent.legit}, delivered ${delivered.legit}`);
    expect(sent.spoofed).toBeGreaterThan(500);
    expect(delivered.spoofed).toBe(0);
    expect(delivered.legit).toBeGreaterThanOrEqual(Math.floor(sent.legit * 0.99));
    // the choice sticks: a load that names none keeps the last one
    await loadGeneration(dir, { ...opts, bpfHook: 'xdp' });
    const r = await loadGeneration(dir, { ...opts, full: true });
    expect(r.bpfHooks?.vnet0).toEqual(EXPECT.xdp);
    await unload(opts);
    const q = withNetns(tb.hostNs, () => queryPort({ iface: 'vnet0', ifindex: ifIndex('vnet0') }, pinDir));
    expect(q).toEqual({ out: undefined, in: undefined });
  });
});

if (!isRoot) console.warn(`SKIP eBPF host tests: ${ROOT_REASON}`);
