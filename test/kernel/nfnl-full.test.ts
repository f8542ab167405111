// Whole nft generations over the netlink encoder (host/apply.ts
// applyFullTransaction): every golden lowering and a 1000-port
// clean-traffic host, loaded as one netlink batch in one namespace and
// through libnftables in a twin namespace, must list the same ruleset
// (`nft -j list ruleset`, normalized); a full replacement of one generation by
// another too; a batch the kernel refuses leaves the previous generation in
// force and names the refused change. Every namespace is created and removed
// here; nothing is sent elsewhere.
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NftCommand } from '../../src/backends/nft/model.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { applyFullTransaction, listOurs } from '../../src/host/apply.js';
import { kernelInventory, normalizeListing } from '../../src/host/inventory.js';
import { planFullLoad } from '../../src/host/load-plan.js';
import { nftApply, nftListRuleset } from '../../src/host/nft.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { NfnlBatchError, NfnlSocket } from '../../src/host/nfnl/index.js';
import { withNetns } from '../../src/host/netns.js';
import { destroyStale } from '../../src/lab/testbed.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingTexts, parseBindings, resolveAll } from '../../bench/lib/policy.js';
import { sourceArgs } from '../support/fixture-cases.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const PREFIX = 'nwfl';
const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');

function goldenPolicy(name: string): PolicyIR {
  const args = sourceArgs(join(GOLDEN, name));
  const s = { filterDirs: [] as string[], bundled: true, bindingPaths: [] as string[], domainPaths: [] as string[], libvirt: false };
  for (let i = 0; i < args.length; i += 2) {
    const v = args[i + 1] as string;
    if (args[i] === '--filters') s.filterDirs.push(v);
    else if (args[i] === '--binding') s.bindingPaths.push(v);
    else s.domainPaths.push(v);
  }
  const src = loadSources(s);
  return resolvePolicy(src.filters, src.bindings);
}

const ns = (suffix: string): string => `${PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}-${suffix}`;

/** The namespace's ruleset, normalized (load tags are `*` there). */
async function ruleset(netns: string): Promise<string> {
  return JSON.stringify(normalizeListing(await nftListRuleset({ netns, inProcess: true })));
}

/** A full load of `build` over what the namespace holds (as commit does), over netlink or through libnftables. */
async function fullLoad(netns: string, build: (tag: string) => readonly NftCommand[], netlink: boolean, tag: string): Promise<Awaited<ReturnType<typeof applyFullTransaction>>> {
  const opts = { netns, inProcess: true };
  const plan = planFullLoad(kernelInventory(await listOurs(opts)), build(tag), tag);
  const sock = netlink ? withNetns(netns, () => NfnlSocket.open()) : undefined;
  try {
    const r = await applyFullTransaction(plan.apply, opts, sock);
    // what the previous generation left (as a load's cleanup), through libnftables on both sides
    if (plan.cleanup.length) await nftApply(toNftJson(plan.cleanup), opts);
    return r;
  } finally {
    sock?.close();
  }
}

const lowered = (ir: PolicyIR) => (tag: string) => lowerToNft(ir, { tag }).batch;

describe.skipIf(!isRoot)('full generations over netlink', () => {
  const viaNl = ns('nl');
  const viaLib = ns('lib');
  const cases = readdirSync(GOLDEN).sort();

  beforeAll(async () => {
    await destroyStale(PREFIX);
    for (const n of [viaNl, viaLib]) await execa('ip', ['netns', 'add', n]);
  });
  afterAll(async () => {
    for (const n of [viaNl, viaLib]) await execa('ip', ['netns', 'del', n], { reject: false });
  });

  it('has the golden cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(8);
  });

  it.each(cases.map((name, i) => ({ name, tag: `g0000a${i.toString(16)}` })))('golden $name: one netlink batch lists as libnftables loads it, also as a replacement of the previous case', async ({ name, tag }) => {
    const ir = goldenPolicy(name);
    const nl = await fullLoad(viaNl, lowered(ir), true, tag);
    await fullLoad(viaLib, lowered(ir), false, tag);
    expect(nl.via, nl.fallback).toBe('nfnl');
    const a = await ruleset(viaNl);
    expect(a).toContain('nwf_fast');
    expect(a).toBe(await ruleset(viaLib));
  });

  it('a 1000-port clean-traffic host: one netlink batch, the same ruleset, and a replacement of it', async () => {
    const ir = resolveAll(parseBindings(bindingTexts(1000)));
    for (const tag of ['g0000b1', 'g0000b2']) {
      const nl = await fullLoad(viaNl, lowered(ir), true, tag);
      expect(nl.via, nl.fallback).toBe('nfnl');
      await fullLoad(viaLib, lowered(ir), false, tag);
      const a = await ruleset(viaNl);
      expect(a).toContain('"vnet999"');
      expect(a).toBe(await ruleset(viaLib));
    }
  }, 120_000);

  it('a generation with a rule the encoder does not cover goes through libnftables whole, saying which rule', async () => {
    const ir = resolveAll(parseBindings(bindingTexts(3)));
    const withLog = (tag: string): NftCommand[] => [
      ...lowerToNft(ir, { tag }).batch,
      { op: 'add', object: { kind: 'rule', family: 'bridge', table: 'nwf_fast', chain: 'pre', statements: [{ kind: 'log', prefix: 'nwf ' }] } },
    ];
    const nl = await fullLoad(viaNl, withLog, true, 'g0000d1');
    expect(nl.via).toBe('nft');
    expect(nl.fallback).toMatch(/the statement log is not encoded here/);
    await fullLoad(viaLib, withLog, false, 'g0000d1');
    const a = await ruleset(viaNl);
    expect(a).toContain('"log"');
    expect(a).toBe(await ruleset(viaLib));
  });

  it('a refused batch leaves the previous generation in force and names the refused change', async () => {
    const before = await ruleset(viaNl);
    const ir = resolveAll(parseBindings(bindingTexts(3)));
    const bad = (tag: string): NftCommand[] => [
      ...lowerToNft(ir, { tag }).batch,
      { op: 'add', object: { kind: 'rule', family: 'bridge', table: 'nwf_fast', chain: 'pre', statements: [{ kind: 'jump', target: 'no-such-chain' }] } },
    ];
    const err = await fullLoad(viaNl, bad, true, 'g0000c1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NfnlBatchError);
    expect((err as Error).message).toMatch(/add a rule to chain bridge nwf_fast pre.*ENOENT/);
    expect(await ruleset(viaNl)).toBe(before);
  });
});

describe.skipIf(isRoot)('full generations over netlink (not root)', () => {
  it.skip(ROOT_REASON, () => undefined);
});
