// Generations on a real (namespaced) host: load, reload under a spoofed
// flood, atomic failure, rollback, unload, and foreign rules left alone.
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGeneration, generationOf } from '../../src/compile.js';
import { loadGeneration } from '../../src/host/apply.js';
import { sha256, writeGeneration } from '../../src/host/generation.js';
import { normalizeListing } from '../../src/host/inventory.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { nftListRuleset } from '../../src/host/nft.js';
import type { Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, floodDuring, isRoot, ROOT_REASON, VM_MAC } from './support/differential.js';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'nwf-fast.js');

async function generation(dir: string, ips: string[]): Promise<string> {
  const bdir = mkdtempSync(join(tmpdir(), 'nwf-b-'));
  writeFileSync(join(bdir, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: ips }));
  const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false });
  await writeGeneration(dir, compileGeneration(src, 'nft'));
  rmSync(bdir, { recursive: true });
  return dir;
}

describe.skipIf(!isRoot)('nft generations on a namespaced host', () => {
  let tb: Testbed;
  let work: string;
  let state: string;
  let g1: string;
  let g2: string;
  const cli = (args: string[], env: Record<string, string> = {}) =>
    execa('ip', ['netns', 'exec', tb.hostNs, process.execPath, CLI, ...args, '--state-dir', state], { reject: false, env, timeout: 30_000 });
  const nft = (args: string[]) => execa('ip', ['netns', 'exec', tb.hostNs, 'nft', ...args]);
  const ours = async () => {
    const all = await nftListRuleset({ netns: tb.hostNs });
    return normalizeListing({ nftables: all.nftables.filter((o) => JSON.stringify(o).includes('"nwf_fast"')) });
  };
  const foreign = async () => ({
    nft: normalizeListing(JSON.parse((await nft(['-j', 'list', 'table', 'ip', 'foreign'])).stdout)),
    ebt: (await execa('ip', ['netns', 'exec', tb.hostNs, 'ebtables-save'])).stdout.split('\n').filter((l) => !l.startsWith('#')).join('\n'),
  });

  beforeAll(async () => {
    tb = await createDemoHost('nwfl');
    work = mkdtempSync(join(tmpdir(), 'nwf-life-'));
    state = join(work, 'state');
    g1 = await generation(join(work, 'g1'), ['10.77.0.2']);
    g2 = await generation(join(work, 'g2'), ['10.77.0.2', '10.77.0.3']);
    // Somebody else's firewall in the same namespace.
    await nft(['add', 'table', 'ip', 'foreign']);
    await nft(['add', 'chain', 'ip', 'foreign', 'c', '{ type filter hook forward priority 10; policy accept; }']);
    await nft(['add', 'rule', 'ip', 'foreign', 'c', 'ip daddr 192.0.2.1 counter drop']);
    await execa('ip', ['netns', 'exec', tb.hostNs, 'ebtables', '-t', 'filter', '-A', 'FORWARD', '-p', '0x88b6', '-j', 'DROP']);
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('load, status, rollback and unload through the CLI inside the namespace; foreign rules untouched', async () => {
    const before = await foreign();
    let r = await cli(['load', g1]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const afterG1 = await ours();
    r = await cli(['status', '--json']);
    expect(r.exitCode).toBe(0);
    const st = JSON.parse(r.stdout);
    expect(st.drift).toBe(false);
    expect(st.interfaces.map((i: { iface: string }) => i.iface)).toEqual(['vnet0']);
    expect((await cli(['load', g2])).exitCode).toBe(0);
    expect(await ours()).not.toEqual(afterG1);
    r = await cli(['rollback']);
    expect(r.exitCode).toBe(0);
    expect(await ours()).toEqual(afterG1); // rollback restores the previous generation exactly
    expect(await foreign()).toEqual(before);
    // drift: somebody adds a rule to a chain of ours
    await nft(['add', 'rule', 'bridge', 'nwf_fast', 'pre', 'counter']);
    r = await cli(['status']);
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toContain('drift: YES');
    r = await cli(['unload']);
    expect(r.exitCode).toBe(0);
    expect(await ours()).toEqual([]);
    expect((await nft(['list', 'tables'])).stdout).not.toContain('nwf_fast');
    expect(await foreign()).toEqual(before);
    r = await cli(['status', '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ current: null, drift: false });
  });

  it('a load that nft refuses leaves the previous generation in force, identical', async () => {
    expect((await cli(['load', g1])).exitCode).toBe(0);
    const before = await ours();
    const bad = join(work, 'bad');
    // g2's policy with a MAC address nft cannot parse: it lowers (load lowers policy.json), and nft refuses the transaction
    const policy = readFileSync(join(g2, 'policy.json'), 'utf8').replaceAll(VM_MAC, 'zz:zz:zz:zz:zz:zz');
    await writeGeneration(bad, generationOf(JSON.parse(policy) as PolicyIR, 'nft'));
    const r = await cli(['load', bad]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('NWF1404');
    expect(await ours()).toEqual(before);
    expect(JSON.parse(readFileSync(join(state, 'state.json'), 'utf8')).current).toBe(JSON.parse(readFileSync(join(g1, 'manifest.json'), 'utf8')).id);
  });

  it('a load killed part-way leaves the previous generation in force, identical', async () => {
    const before = await ours();
    const stateBefore = readFileSync(join(state, 'state.json'), 'utf8');
    const p = cli(['load', g2], { NWF_FAST_FAULT: 'pause-before-apply:5000' });
    await new Promise((res) => setTimeout(res, 1500));
    await execa('pkill', ['-KILL', '-f', `${CLI} load ${g2}`], { reject: false });
    const r = await p;
    expect(r.exitCode === 0).toBe(false);
    expect(await ours()).toEqual(before);
    expect(readFileSync(join(state, 'state.json'), 'utf8')).toBe(stateBefore);
  });

  it('50 reloads alternating two generations under a spoofed flood deliver no spoofed frame and keep a legitimate flow', async () => {
    const opts = { stateDir: state, netns: tb.hostNs };
    await loadGeneration(g1, opts);
    const { sent, delivered: got } = await floodDuring(tb, async () => {
      for (let i = 0; i < 50; i++) await loadGeneration(i % 2 === 0 ? g2 : g1, { ...opts, full: i % 4 < 2 });
    });
    console.log(`[reload] 50 loads (full and incremental); spoofed sent ${sent.spoofed}, delivered ${got.spoofed}; legitimate sent ${sent.legit}, delivered ${got.legit}`);
    expect(sent.spoofed).toBeGreaterThan(500);
    expect(got.spoofed).toBe(0);
    expect(got.legit).toBeGreaterThanOrEqual(Math.floor(sent.legit * 0.99));
  });

  it('the state and the generation files agree (content hash)', () => {
    const m = JSON.parse(readFileSync(join(g1, 'manifest.json'), 'utf8'));
    expect(sha256(readFileSync(join(g1, 'nft-parts.json'), 'utf8')).slice(0, 16)).toBe(m.id);
  });
});

if (!isRoot) console.warn(`SKIP nft lifecycle: ${ROOT_REASON}`);
