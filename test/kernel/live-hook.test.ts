// The libvirt hook through the installed CLI, on a namespace host without
// libvirt: 20 `start begin` calls in parallel for 20 domains (domain XML on
// stdin, configuration from NWF_FAST_CONFIG) all end protected and the state
// is consistent; status then shows no drift and no unprotected port; a
// reboot (the namespace's rules flushed) is repaired by `restore`; `load`
// refuses to unprotect every port; 20 `stopped end` calls remove them all.
import { execa } from 'execa';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import * as F from '../../src/lab/frames/build.js';
import { readPorts } from '../../src/host/live/ports.js';
import { hookDomainXml } from './support/live.js';
import { nftNames } from '../../src/backends/nft/names.js';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'nwf-fast.js');
const isRoot = process.getuid?.() === 0;
const built = existsSync(join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js'));
const skip = !isRoot ? 'needs root (network namespaces, nftables)' : !built ? 'needs the built CLI (npm run build)' : undefined;
if (skip) console.warn(`SKIP libvirt hook through the CLI: ${skip}`);

const N = 20;
const vm = (i: number) => ({
  name: `vm${i}`,
  uuid: `5e0c0000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  tap: `vnet${i}`,
  mac: `52:54:00:79:00:${i.toString(16).padStart(2, '0')}`,
  ip: `10.79.0.${i + 1}`,
});
const PEER = { mac: '52:54:00:79:00:99', ip: '10.79.0.200' };

describe.skipIf(skip !== undefined)('the libvirt hook through the CLI, 20 domains at once', () => {
  let tb: Testbed;
  let work: string;
  let config: string;
  const state = (): string => join(work, 'state');
  const cli = (args: string[], input?: string) =>
    execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, ...args], { input: input ?? '', reject: false, timeout: 120_000, env: { NWF_FAST_CONFIG: config } });
  const hook = (i: number, op: string, subop: string) => cli(['libvirt-hook', vm(i).name, op, subop, '-'], hookDomainXml(vm(i).name, vm(i).uuid, [{ tap: vm(i).tap, mac: vm(i).mac, filter: 'clean-traffic', params: { IP: vm(i).ip } }]));
  const statusJson = async () => {
    const r = await cli(['status', '--json']);
    return { code: r.exitCode, s: JSON.parse(r.stdout) as { drift: boolean; current: string | null; interfaces: unknown[]; live: { counts: Record<string, number>; ports: { port: string; protection: string }[] } } };
  };
  /** Whether a frame with a spoofed source MAC from VM i reaches the peer, and a legitimate one. */
  const probe = async (i: number): Promise<{ spoofed: boolean; legit: boolean }> => {
    const from = tb.guest(vm(i).name).endpoint;
    const peer = tb.guest('peer').endpoint;
    const mk = (mac: string, sport: number) => F.udpFrame({ srcMac: mac, dstMac: PEER.mac, srcIp: vm(i).ip, dstIp: PEER.ip, sport, dport: 9 });
    const r = await deliver(from, peer, [mk('52:54:00:79:66:66', 1000 + i), mk(vm(i).mac, 2000 + i)], { key: canonicalFrame, maxWaitMs: 500 });
    return { spoofed: r.arrived[0] as boolean, legit: r.arrived[1] as boolean };
  };

  beforeAll(async () => {
    tb = await createTestbed({
      prefix: 'nwflh',
      vms: Array.from({ length: N }, (_, i) => ({ name: vm(i).name, tap: vm(i).tap, mac: vm(i).mac, ipv4: [`${vm(i).ip}/24`] })),
      peers: [{ name: 'peer', mac: PEER.mac, ipv4: [`${PEER.ip}/24`] }],
    });
    work = mkdtempSync(join(tmpdir(), 'nwf-hook-'));
    config = join(work, 'nwf-fast.conf');
    writeFileSync(config, [`state_dir = ${state()}`, `pin_dir = /sys/fs/bpf/nwf-fast-livehook-${process.pid}`, 'lock_timeout = 90', 'keep_generations = 3', ''].join('\n'));
  }, 180_000);

  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('20 start hooks in parallel: every call succeeds, every port ends protected, the state is consistent', async () => {
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: N }, (_, i) => hook(i, 'start', 'begin')));
    const wall = performance.now() - t0;
    for (const r of results) {
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe('');
    }
    const log = readFileSync(join(state(), 'hook.log'), 'utf8').trim().split('\n');
    expect(log).toHaveLength(N);
    const ms = log.map((l) => Number(/ok in ([\d.]+) ms/.exec(l)?.[1])).sort((a, b) => a - b);
    const waits = log.map((l) => Number(/lock wait ([\d.]+) ms/.exec(l)?.[1])).sort((a, b) => a - b);
    console.log(`[hook] ${N} parallel start hooks in ${(wall / 1000).toFixed(1)} s wall; per call (lock wait + change) min ${ms[0]} ms, median ${ms[N >> 1]} ms, max ${ms[N - 1]} ms; lock wait max ${waits[N - 1]} ms`);
    expect(readPorts(state()).map((p) => p.tap).sort()).toEqual(Array.from({ length: N }, (_, i) => vm(i).tap).sort());
    const { code, s } = await statusJson();
    expect(s.drift).toBe(false);
    expect(s.interfaces).toHaveLength(N);
    expect(s.live.counts).toMatchObject({ 'nwf-fast': N, unprotected: 0 });
    expect(code).toBe(0);
    // kept generations are pruned to keep_generations
    expect(readdirSync(join(state(), 'generations')).length).toBeLessThanOrEqual(4);
    for (const i of [0, 7, 19]) expect(await probe(i)).toEqual({ spoofed: false, legit: true });
  }, 240_000);

  it('status names a VM port nobody protects, and exits 3', async () => {
    await execa('ip', ['-n', tb.hostNs, 'link', 'add', 'vnet77', 'type', 'veth', 'peer', 'name', 'x77']);
    await execa('ip', ['-n', tb.hostNs, 'link', 'set', 'vnet77', 'master', 'br0']);
    try {
      const r = await cli(['status']);
      expect(r.exitCode).toBe(3);
      expect(r.stdout).toMatch(/vnet77\s+br0\s+UNPROTECTED/);
      expect(r.stdout).toContain(`${N} nwf-fast, 0 nwf-fast and libvirt, 0 libvirt only, 1 UNPROTECTED`);
    } finally {
      await execa('ip', ['-n', tb.hostNs, 'link', 'del', 'vnet77']);
    }
  }, 60_000);

  it('after a reboot (rules gone) restore loads the recorded generation and reports taps that are not there', async () => {
    await execa('ip', ['netns', 'exec', tb.hostNs, 'nft', 'flush', 'ruleset']);
    expect(await probe(3)).toEqual({ spoofed: true, legit: true });
    let st = await statusJson();
    expect(st.code).toBe(3);
    await execa('ip', ['-n', tb.hostNs, 'link', 'set', vm(N - 1).tap, 'nomaster']);
    await execa('ip', ['-n', tb.hostNs, 'link', 'set', vm(N - 1).tap, 'name', 'gone19']);
    try {
      const r = await cli(['restore']);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/^restored generation [0-9a-f]{16} \(20 interface\(s\)\)/);
      expect(r.stdout).toContain(`not present yet (protected when they appear): ${vm(N - 1).tap}`);
      // the restored table carries the fail-closed skeleton: a VM port without an entry is dropped both ways
      for (const [chain, dir] of [['pre', 'out'], ['post', 'in']] as const) {
        const listed = (await execa('ip', ['netns', 'exec', tb.hostNs, 'nft', 'list', 'chain', 'bridge', 'nwf_fast', chain])).stdout;
        expect(listed).toMatch(new RegExp(`goto (\\S+-)?${nftNames.dropChain(dir, 'unprotected')} `));
      }
    } finally {
      await execa('ip', ['-n', tb.hostNs, 'link', 'set', 'gone19', 'name', vm(N - 1).tap]);
      await execa('ip', ['-n', tb.hostNs, 'link', 'set', vm(N - 1).tap, 'master', 'br0']);
    }
    expect(await probe(3)).toEqual({ spoofed: false, legit: true });
    expect(await probe(N - 1)).toEqual({ spoofed: false, legit: true });
    st = await statusJson();
    expect(st.s.drift).toBe(false);
    expect(st.code).toBe(0);
  }, 120_000);

  it('load refuses a generation that would unprotect every port, and so does load without DIR on a host whose libvirt runs nothing', async () => {
    const before = readFileSync(join(state(), 'state.json'), 'utf8');
    const empty = join(work, 'empty-gen');
    const c = await execa(process.execPath, [CLI, 'compile', '--out', empty], { reject: false });
    expect(c.exitCode).toBe(0);
    let r = await cli(['load', empty]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/error NWF1409: refusing to load generation [0-9a-f]{16}: it protects no interface, and the loaded generation [0-9a-f]{16} protects 20 /);
    expect(r.stderr).toContain('--allow-empty');
    expect(readFileSync(join(state(), 'state.json'), 'utf8')).toBe(before);
    const runDir = '/run/libvirt/qemu';
    if (!(existsSync(runDir) && readdirSync(runDir).some((f) => f.endsWith('.xml')))) {
      // no domain runs here (or no libvirt at all): refused either way
      r = await cli(['load']);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/error (NWF1409: refusing to load generation [0-9a-f]{16}: it protects no interface|NWF1210: --libvirt: this does not look like a libvirt host)/);
      expect(readFileSync(join(state(), 'state.json'), 'utf8')).toBe(before);
    }
    expect(await probe(5)).toEqual({ spoofed: false, legit: true });
  }, 60_000);

  it('20 stop hooks in parallel remove every port', async () => {
    const results = await Promise.all(Array.from({ length: N }, (_, i) => hook(i, 'stopped', 'end')));
    for (const r of results) expect([r.exitCode, r.stderr]).toEqual([0, '']);
    expect(readPorts(state())).toEqual([]);
    const { s } = await statusJson();
    expect(s.interfaces).toEqual([]);
    expect(s.live.counts.unprotected).toBe(N);
    // the taps are still on the bridge with no entry: nwf-fast's skeleton fails them closed
    expect(await probe(2)).toEqual({ spoofed: false, legit: false });
  }, 240_000);
});
