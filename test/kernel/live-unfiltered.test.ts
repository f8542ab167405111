// An interface with no filterref is not filtered by libvirt, and so not by
// nwf-fast either: through the installed CLI's libvirt hook, a domain with
// one filtered (clean-traffic) and one unfiltered interface. The unfiltered
// one passes everything (an explicit accept entry, not the fail-closed
// drop), a tap of no domain at all is dropped and counted unprotected,
// status names the unfiltered port, and a stopped domain's unfiltered port
// loses its entry like any port (then dropped). Once per backend.
import { execa } from 'execa';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import { canonicalFrame, deliver } from '../../src/lab/packet-io.js';
import * as F from '../../src/lab/frames/build.js';
import { readPorts, UNFILTERED } from '../../src/host/live/ports.js';
import { hookDomainXml } from './support/live.js';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'nwf-fast.js');
const isRoot = process.getuid?.() === 0;
const built = existsSync(join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js'));
const skip = !isRoot ? 'needs root (network namespaces, nftables, eBPF)' : !built ? 'needs the built CLI (npm run build)' : undefined;
if (skip) console.warn(`SKIP unfiltered ports through the libvirt hook: ${skip}`);

const DOMAIN = { name: 'mixed', uuid: '5e0c0000-0000-4000-8000-0000000000aa' };
const FILTERED = { name: 'f', tap: 'vnet0', mac: '52:54:00:7a:00:01', ip: '10.122.0.1' };
const OPEN = { name: 'u', tap: 'vnet1', mac: '52:54:00:7a:00:02', ip: '10.122.0.2' };
const STRAY = { name: 's', tap: 'vnet2', mac: '52:54:00:7a:00:03', ip: '10.122.0.3' };
const PEER = { mac: '52:54:00:7a:00:99', ip: '10.122.0.200' };

describe.skipIf(skip !== undefined).each(['nft', 'bpf'] as const)('unfiltered ports through the libvirt hook (%s)', (backend) => {
  let tb: Testbed;
  let work: string;
  let config: string;
  const state = (): string => join(work, 'state');
  const cli = (args: string[], input?: string) =>
    execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, ...args], { input: input ?? '', reject: false, timeout: 120_000, env: { NWF_FAST_CONFIG: config } });
  const xml = hookDomainXml(DOMAIN.name, DOMAIN.uuid, [
    { tap: FILTERED.tap, mac: FILTERED.mac, filter: 'clean-traffic', params: { IP: FILTERED.ip } },
    { tap: OPEN.tap, mac: OPEN.mac },
  ]);
  const hook = (op: string, subop: string) => cli(['libvirt-hook', DOMAIN.name, op, subop, '-'], xml);
  /** Whether a frame with a spoofed source MAC and IP from a guest reaches the peer, and a legitimate one. */
  const probe = async (g: typeof FILTERED, n: number): Promise<{ spoofed: boolean; legit: boolean }> => {
    const mk = (mac: string, ip: string, sport: number) => F.udpFrame({ srcMac: mac, dstMac: PEER.mac, srcIp: ip, dstIp: PEER.ip, sport, dport: 9 });
    const r = await deliver(tb.guest(g.name).endpoint, tb.guest('peer').endpoint, [mk('52:54:00:7a:66:66', '10.122.0.66', 1000 + n), mk(g.mac, g.ip, 2000 + n)], { key: canonicalFrame, maxWaitMs: 500 });
    return { spoofed: r.arrived[0] as boolean, legit: r.arrived[1] as boolean };
  };
  const statusJson = async () => {
    const r = await cli(['status', '--json']);
    return {
      code: r.exitCode,
      s: JSON.parse(r.stdout) as {
        unknownPortDrops?: { fromVm: number; toVm: number };
        live: { counts: Record<string, number>; ports: { port: string; protection: string; unfiltered?: boolean }[] };
      },
    };
  };

  beforeAll(async () => {
    tb = await createTestbed({
      prefix: backend === 'nft' ? 'nwfun' : 'nwfub',
      vms: [FILTERED, OPEN, STRAY].map((g) => ({ name: g.name, tap: g.tap, mac: g.mac, ipv4: [`${g.ip}/24`] })),
      peers: [{ name: 'peer', mac: PEER.mac, ipv4: [`${PEER.ip}/24`] }],
    });
    work = mkdtempSync(join(tmpdir(), 'nwf-unfiltered-'));
    config = join(work, 'nwf-fast.conf');
    writeFileSync(config, [`state_dir = ${state()}`, `pin_dir = /sys/fs/bpf/nwf-fast-unf-${backend}-${process.pid}`, `backend = ${backend}`, 'lock_timeout = 60', ''].join('\n'));
  }, 180_000);

  afterAll(async () => {
    if (tb && config) await cli(['unload']);
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('start: the filtered interface is filtered, the unfiltered one passes everything, a tap of no domain is dropped and counted', async () => {
    const r = await hook('start', 'begin');
    expect([r.exitCode, r.stderr, r.stdout]).toEqual([0, '', '']);
    const ports = readPorts(state());
    expect(ports.map((p) => [p.tap, p.origin, p.filterref.filter])).toEqual([
      [FILTERED.tap, 'filterref', 'clean-traffic'],
      [OPEN.tap, 'none', UNFILTERED],
    ]);
    expect(await probe(FILTERED, 1)).toEqual({ spoofed: false, legit: true });
    expect(await probe(OPEN, 2)).toEqual({ spoofed: true, legit: true });
    const before = (await statusJson()).s.unknownPortDrops?.fromVm ?? 0;
    expect(await probe(STRAY, 3)).toEqual({ spoofed: false, legit: false });
    const { code, s } = await statusJson();
    expect(s.unknownPortDrops?.fromVm ?? 0).toBeGreaterThanOrEqual(before + 2);
    expect(s.live.counts).toMatchObject({ 'nwf-fast': 2, unprotected: 1 });
    expect(s.live.ports.map((p) => [p.port, p.protection, p.unfiltered === true])).toEqual([
      [FILTERED.tap, 'nwf-fast', false],
      [OPEN.tap, 'nwf-fast', true],
      [STRAY.tap, 'unprotected', false],
    ]);
    expect(code).toBe(3);
    const text = await cli(['status']);
    expect(text.stdout).toMatch(new RegExp(`${OPEN.tap}\\s+br0\\s+${DOMAIN.name}\\s+no filterref: not filtered \\(as libvirt\\)`));
    expect(text.stdout).toMatch(new RegExp(`${STRAY.tap}\\s+br0\\s+UNPROTECTED`));
    expect(text.stdout).toContain('2 nwf-fast, 0 nwf-fast and libvirt, 0 libvirt only, 1 UNPROTECTED (1 with no filterref)');
  }, 240_000);

  it('stop: the unfiltered port loses its entry like any port (then dropped by the skeleton)', async () => {
    const r = await hook('stopped', 'end');
    expect([r.exitCode, r.stderr]).toEqual([0, '']);
    expect(readPorts(state())).toEqual([]);
    expect(await probe(OPEN, 4)).toEqual({ spoofed: false, legit: false });
    expect(await probe(FILTERED, 5)).toEqual({ spoofed: false, legit: false });
    const { s } = await statusJson();
    expect(s.live.counts).toMatchObject({ 'nwf-fast': 0, unprotected: 3 });
  }, 120_000);
});
