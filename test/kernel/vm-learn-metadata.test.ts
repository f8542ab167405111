// Real VMs, the host side of carrying learned addresses across a live
// migration (design ip-learning.md 4.4), with real libvirtds and nwf-fast's
// hook on both hosts, independent of the kernel's learning: vm1's port
// has no IP parameter, so nwf-fast treats it as a learning port
// (learnModeOf reads the parameters), and its policy (no-mac-spoofing) does
// not reference $IP, so it compiles with any kernel side. A learned address
// is planted in A's learned.json (what reconcile records from the kernel);
//  - `reconcile --once vm1` writes it into vm1's live metadata;
//  - with `reconcile --follow` running, a changed address reaches the
//    metadata within its 1 s round;
//  - `virsh migrate --live` to B: B's `migrate begin` notes vm1 as incoming,
//    its `start begin` seeds the port from the metadata (hook.log) and
//    records the seed in B's learned.json;
//  - A's ports for vm1 go; A's learned.json keeps the address.
// vm-learn.test.ts is the same with the kernel learning for real.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { within } from './support/live.js';
import { destroyStale } from '../../src/lab/testbed.js';
import { VmGuest } from '../../src/lab/vm/guest.js';
import { commandHook } from '../../src/lab/vm/hooks.js';
import { createVmLab, type VmHost, type VmLab } from '../../src/lab/vm/host.js';
import { guestImage, vmAvailable } from '../../src/lab/vm/image.js';
import { writeLearned, readLearned } from '../../src/host/learn/store.js';
import { readPorts } from '../../src/host/live/ports.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'bin', 'nwf-fast.js');
const avail = vmAvailable();
const skip = !avail.ok ? avail.reason : !existsSync(join(ROOT, 'dist', 'cli', 'main.js')) ? 'needs the built CLI (npm run build)' : undefined;
if (skip) console.warn(`SKIP real VMs, learned addresses in the migration metadata: ${skip}`);
const PEER = { mac: '52:54:00:7c:00:01', ipv4: '10.74.0.1' };
const VM1 = { mac: '52:54:00:7c:00:11', ip: '10.74.0.11', first: '10.74.0.99' };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip !== undefined)('real VMs: learned addresses travel in the live metadata and seed the destination', () => {
  let lab: VmLab; let A: VmHost; let B: VmHost; let work: string; let vm1: VmGuest | undefined; let follow: ResultPromise | undefined;
  const conf = (h: string): string => join(work, `nwf-fast-${h}.conf`);
  const state = (h: string): string => join(work, `state-${h}`);
  beforeAll(async () => {
    await destroyStale('nwfvh');
    const image = await guestImage();
    work = mkdtempSync(join(tmpdir(), 'nwf-vm-lh-'));
    for (const h of ['a', 'b']) writeFileSync(conf(h), ['mode = takeover', `state_dir = ${state(h)}`, 'tap_patterns = vnet*', 'lock_timeout = 60', ''].join('\n'));
    const hook = (h: string): string => commandHook([process.execPath, CLI, 'libvirt-hook', '--verbose'], { NWF_FAST_CONFIG: conf(h) });
    lab = await createVmLab({ prefix: 'nwfvh', hosts: [{ name: 'a', hooks: { '50-nwf-fast': hook('a') } }, { name: 'b', hooks: { '50-nwf-fast': hook('b') } }], peer: { mac: PEER.mac, ipv4: `${PEER.ipv4}/24` } });
    A = lab.host('a'); B = lab.host('b');
    vm1 = await VmGuest.start(A, { name: 'vm1', tag: 9, nics: [{ mac: VM1.mac, ipv4: `${VM1.ip}/24`, filterref: { filter: 'no-mac-spoofing' } }], peer: PEER, steps: [{ nic: 0, send: { kinds: ['udp'], pps: 20, seconds: 150 } }], lifetimeS: 200 }, image);
  }, 300_000);
  afterAll(async () => {
    await vm1?.destroy().catch(() => undefined);
    follow?.kill('SIGTERM');
    const r = follow ? await Promise.race([follow, sleep(10_000).then(() => undefined)]) : undefined;
    if (r) console.log(`[lh] reconcile --follow log:\n${String(r.stderr ?? '').split('\n').slice(-15).join('\n')}`);
    follow?.kill('SIGKILL');
    await lab?.destroy();
    for (const h of ['a', 'b']) if (work && existsSync(join(state(h), 'hook.log'))) console.log(`[lh] ${h} hook.log:\n${readFileSync(join(state(h), 'hook.log'), 'utf8')}`);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 120_000);
  it('reconcile --once, then --follow, write the metadata; B notes vm1 incoming and seeds it from the metadata; A keeps the address in learned.json', async () => {
    const uuid = (vm1 as VmGuest).uuid;
    const port = readPorts(state('a')).find((p) => p.mac === VM1.mac);
    expect(port?.owner.uuid).toBe(uuid);
    const plant = (ip: string): void => writeLearned(state('a'), [{ owner: { name: 'vm1', uuid }, mac: VM1.mac, mode: 'any', addresses: [{ ip, since: new Date().toISOString(), source: 'kernel' }] }]);
    const metadataSays = (xml: string, ip: string): boolean => new RegExp(`<nwf:learned mac=["']${VM1.mac}["'] mode=["']any["']>\\s*<nwf:ip address=["']${ip}["']`).test(xml);
    plant(VM1.first);
    const once = await A.exec([process.execPath, CLI, 'reconcile', '--once', 'vm1'], { env: { NWF_FAST_CONFIG: conf('a') }, check: false });
    console.log(`[lh] reconcile --once: exit ${once.exitCode}\n${once.stdout}${once.stderr}`);
    const xml = (await A.libvirtd.virsh(['dumpxml', 'vm1'])).stdout;
    console.log(`[lh] A metadata: ${/<metadata>[\s\S]*?<\/metadata>/.exec(xml)?.[0]}`);
    expect(once.exitCode).toBe(0);
    expect(once.stdout).toContain('learned addresses written to the live metadata of: vm1');
    expect(metadataSays(xml, VM1.first)).toBe(true);
    follow = A.spawn([process.execPath, CLI, 'reconcile', '--follow', '--period', '30'], { env: { NWF_FAST_CONFIG: conf('a') } });
    await sleep(3000);
    plant(VM1.ip);
    const t = await within(10_000, async () => metadataSays((await A.libvirtd.virsh(['dumpxml', 'vm1'])).stdout, VM1.ip), 100);
    console.log(`[lh] reconcile --follow: the changed address in the metadata after ${t === undefined ? 'NEVER' : `${(t / 1000).toFixed(2)} s`}`);
    expect(t).toBeDefined();
    expect(t as number).toBeLessThan(3000);
    const st = await A.exec([process.execPath, CLI, 'status'], { env: { NWF_FAST_CONFIG: conf('a') }, check: false });
    console.log(`[lh] status A:\n${st.stdout}`);
    expect(st.stdout).toMatch(/learning ports: /);
    const ms = await (vm1 as VmGuest).migrate(B);
    await sleep(3000);
    const hookB = readFileSync(join(state('b'), 'hook.log'), 'utf8');
    console.log(`[lh] migrate ${(ms / 1000).toFixed(2)} s`);
    expect(hookB).toMatch(/vm1 migrate begin: noted as incoming/);
    expect(hookB).toMatch(new RegExp(`vm1 start begin: ok.*seeded vnet\\d+ \\(${VM1.mac}, any\\) seeded from metadata: ${VM1.ip}`));
    expect(await (vm1 as VmGuest).state()).toBe('running');
    for (let i = 0; i < 100 && readPorts(state('a')).some((p) => p.owner.name === 'vm1'); i++) await sleep(200);
    expect(readPorts(state('a')).some((p) => p.owner.name === 'vm1')).toBe(false);
    expect(readLearned(state('a')).map((e) => [e.mac, e.addresses.map((a) => a.ip)])).toEqual([[VM1.mac, [VM1.ip]]]);
    expect(readLearned(state('b')).map((e) => [e.owner.uuid, e.mac, e.addresses.map((a) => a.ip)])).toEqual([[uuid, VM1.mac, [VM1.ip]]]);
    const stB = JSON.parse((await B.exec([process.execPath, CLI, 'status', '--json'], { env: { NWF_FAST_CONFIG: conf('b') }, check: false })).stdout) as { learning: { ports: { tap: string; mac: string; mode: string }[] } };
    expect(stB.learning.ports.map((p) => [p.mac, p.mode])).toEqual([[VM1.mac, 'any']]);
  }, 300_000);
});
