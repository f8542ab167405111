// The netlink rule encoder (src/host/nfnl/rules.ts) against the kernel and
// nft's own decoder: every rule of the lowerings of the golden cases and of
// the corpus policies that the encoder covers is sent through it into a
// chain of its own, listed by nft, and must read back as the rule that was
// written (nft decodes the expressions it finds in the kernel) or as the
// same rule loaded by libnftables into the chain next to it (nft merges
// adjacent loads, and decodes raw bytes after an EtherType test as that
// protocol's fields; it may also move a merged test before a length test:
// then the words are the same, in another order). Rules it
// does not cover are left to libnftables (counted, and a port's RARP rule,
// the fast path of a port joining a shape, must be covered).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { add, nftTable } from '../../src/backends/nft/build.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import type { NftCommand, RuleObject } from '../../src/backends/nft/model.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { nftApply, runLibnftables } from '../../src/host/nft.js';
import { encodeChangeBatch, NfnlEncodeError, NfnlSocket, sendChangeBatch } from '../../src/host/nfnl/index.js';
import { execa } from 'execa';
import { netnsAdd, withNetns } from '../../src/host/netns.js';
import { loadSources } from '../../src/resolve/sources.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { caseDirs, sourceArgs } from '../support/fixture-cases.js';
import { policyFor } from '../support/policy.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const NS = `nwfr-${process.pid}`;

/** Every rule command of a lowering, with the chains and counters it refers to. */
function lowerings(): NftCommand[][] {
  const out: NftCommand[][] = [];
  for (const { dir } of caseDirs(GOLDEN)) {
    const args = sourceArgs(dir);
    const of = (opt: string) => args.flatMap((a, i) => (args[i - 1] === opt ? [a] : []));
    const src = loadSources({ filterDirs: of('--filters'), bundled: true, bindingPaths: of('--binding'), domainPaths: of('--domain'), libvirt: false });
    out.push([...lowerToNft(resolvePolicy(src.filters, src.bindings)).batch]);
  }
  out.push([...lowerToNft({ version: 1, interfaces: [policyFor('clean-traffic', { IP: '10.0.0.2' })], notes: [] }, { share: false }).batch]);
  return out;
}

/** A listed or printed rule in one form: raw values and EtherTypes as numbers, `meta iifname` as nft prints it (`iifname`). */
function normal(rule: string): string {
  const names: Record<string, number> = { ip: 0x800, arp: 0x806, ip6: 0x86dd, vlan: 0x8100, '8021q': 0x8100, '8021ad': 0x88a8 };
  return rule
    .replace(/(@(?:ll|nh|th),\d+,\d+ )(0x[0-9a-f]+|\d+)/g, (_, sel: string, v: string) => `${sel}${BigInt(v).toString(16)}`)
    .replace(/(^|[\s.]) ?meta (iifname|oifname)\b/g, (_, pre: string, key: string) => `${pre}${pre === '.' ? ' ' : ''}${key}`)
    .replace(/ether type (!= )?(0x[0-9a-f]+|\w+)/g, (_, ne: string | undefined, v: string) => `ether type ${ne ?? ''}${(names[v] ?? Number(v)).toString(16)}`)
    .trim();
}

describe.skipIf(!isRoot)('netlink rule encoder: what nft reads back', () => {
  beforeAll(async () => {
    await netnsAdd(NS);
  });
  afterAll(async () => {
    await execa('ip', ['netns', 'delete', NS], { reject: false });
  });

  it('every rule it covers lists as libnftables loads it; a port\'s per-interface rules are covered', async () => {
    const t = nftTable('bridge', 'nwf_fast');
    let covered = 0;
    let left = 0;
    let portRules = 0;
    let asWritten = 0;
    let asNft = 0;
    let reordered = 0;
    const sock = withNetns(NS, () => NfnlSocket.open());
    try {
      for (const batch of lowerings()) {
        runLibnftables('flush ruleset', { netns: NS });
        // the chains, counters, sets and maps rules refer to, empty
        const decls = batch.flatMap((c): NftCommand[] =>
          c.object.kind === 'table' || c.object.kind === 'counter' || (c.object.kind === 'chain' && !('base' in c.object && c.object.base))
            ? [c]
            : (c.object.kind === 'set' || c.object.kind === 'map') && c.op === 'add'
              ? [{ op: 'add', object: { ...c.object, elements: [] } as typeof c.object }]
              : [],
        );
        await nftApply(toNftJson(decls), { netns: NS, inProcess: true });
        const rules = batch.filter((c): c is NftCommand & { object: RuleObject } => c.object.kind === 'rule' && c.object.family === 'bridge' && 'statements' in c.object);
        for (const [i, c] of rules.entries()) {
          const change = { op: 'add' as const, kind: 'rule' as const, family: 'bridge' as const, table: 'nwf_fast', chain: `r${i}`, statements: c.object.statements, ...(c.object.comment !== undefined ? { comment: c.object.comment } : {}) };
          try {
            encodeChangeBatch([change], 1);
          } catch (e) {
            if (!(e instanceof NfnlEncodeError)) throw e;
            left++;
            continue;
          }
          // the same rule through libnftables, next to it: both must list alike
          await nftApply(toNftJson([add(t.chain(`r${i}`)), add(t.chain(`n${i}`)), add({ ...c.object, chain: `n${i}` })]), { netns: NS, inProcess: true });
          sendChangeBatch(sock, [change]);
          const list = (chain: string): string[] => runLibnftables(`list chain bridge nwf_fast ${chain}`, { netns: NS }).output.split('\n').map((l) => l.trim()).filter((l) => l && !/^(table|chain|\})/.test(l));
          const listed = list(`r${i}`);
          const want = printNftText([add({ ...c.object, chain: `r${i}` })]).replace(/^add rule bridge nwf_fast r\d+ /, '');
          // nft merges adjacent loads the encoder keeps apart: then the rule reads back as written instead
          const viaNft = list(`n${i}`);
          const written = listed.length === 1 && normal(listed[0] as string) === normal(want);
          // nft may also put a merged test before a length check: the same words, in another order
          const words = (l: readonly string[]): string => l.join(' ').split(' ').sort().join(' ');
          const same = JSON.stringify(listed) === JSON.stringify(viaNft);
          if (!same && !written && words(listed) === words(viaNft)) reordered++;
          expect(same || written || words(listed) === words(viaNft), `${want}\n  encoder: ${listed.join(' / ')}\n  nft:     ${viaNft.join(' / ')}`).toBe(true);
          if (written) asWritten++;
          if (same) asNft++;
          covered++;
          if (/^sp-/.test(c.object.chain)) portRules++;
        }
      }
    } finally {
      sock.close();
    }
    console.log(`[nfnl rules] ${covered} rules through the encoder read back as written (${asWritten}) or as libnftables loads them (${asNft}; ${reordered} with the same tests in another order), ${left} left to libnftables, ${portRules} per-interface rules of shapes`);
    expect(covered).toBeGreaterThan(50);
    expect(asNft).toBeGreaterThan(50);
    expect(portRules).toBeGreaterThan(0);
  });
});

if (!isRoot) console.warn(`SKIP netlink rule encoder: ${ROOT_REASON}`);
