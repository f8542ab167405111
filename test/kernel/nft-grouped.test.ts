// A generation's nft.json with one `add element` command per set
// (serialize.ts nftJsonText) loads through libnftables and lists exactly as
// the batch with one command per port and set, in twin network namespaces
// this test creates and removes: a randomized multi-shape host (clean-traffic
// with lists, the gateway filter, constant prefixes, DHCP servers, IPv6,
// learning ports, L3 rules), rules mode and second-line mode.
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { nftJsonText, toNftJson } from '../../src/backends/nft/serialize.js';
import { newTag } from '../../src/backends/nft/names.js';
import { normalizeListing } from '../../src/host/inventory.js';
import { nftApply, nftListTable } from '../../src/host/nft.js';
import { netnsAdd } from '../../src/host/netns.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { randomHost } from '../support/random-host.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const ONE = `nwfg-a-${process.pid}`;
const GROUPED = `nwfg-b-${process.pid}`;

async function listing(ns: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const [family, table] of [['bridge', 'nwf_fast'], ['ip', 'nwf_fast'], ['ip6', 'nwf_fast']] as const) {
    const r = await execa('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', family, table], { reject: false });
    if (r.exitCode === 0) out.push(normalizeListing(await nftListTable(family, table, { netns: ns, inProcess: true })));
  }
  return out;
}

describe.skipIf(!isRoot)('nft.json with one element command per set: what the kernel holds (twin namespaces)', () => {
  beforeAll(async () => {
    await netnsAdd(ONE);
    await netnsAdd(GROUPED);
  });
  afterAll(async () => {
    await execa('ip', ['netns', 'delete', ONE], { reject: false });
    await execa('ip', ['netns', 'delete', GROUPED], { reject: false });
  });

  it.each([
    { seed: 11, mode: 'rules' as const },
    { seed: 12, mode: 'second-line' as const },
  ])('a randomized host (seed $seed, $mode) lists alike', async ({ seed, mode }) => {
    const { filters, bindings } = randomHost(seed, 120);
    const ir = resolvePolicy(filters, bindings, [], { onInterfaceError: () => {} });
    const { batch } = lowerToNft(ir, { mode, strict: false, tag: newTag() });
    const ungrouped = JSON.stringify(toNftJson(batch));
    const grouped = nftJsonText(batch);
    expect(grouped.length).toBeLessThan(ungrouped.length);
    for (const ns of [ONE, GROUPED]) await execa('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset']);
    await nftApply(ungrouped, { netns: ONE, inProcess: true });
    await nftApply(grouped, { netns: GROUPED, inProcess: true });
    const a = await listing(ONE);
    expect(a.length).toBeGreaterThan(0);
    expect(JSON.stringify(await listing(GROUPED))).toBe(JSON.stringify(a));
  }, 120_000);
});

if (!isRoot) console.warn(`SKIP nft.json grouped elements: ${ROOT_REASON}`);
