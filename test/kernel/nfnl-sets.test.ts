// Set creation through the netlink encoder (src/host/nfnl/sets.ts) against
// the kernel and nft's own decoder, in twin network namespaces:
//  - every set and map kind of the recorded fixture (every kind the lowering
//    declares, and more), created by the encoder in one namespace and by
//    libnftables in the other, must list alike (`nft -j list set` and the
//    text), then take the same elements alike;
//  - a port that brings a new shape (the shape's chains, sets and rules,
//    the port's elements, in one batch) on top of the same skeleton: the
//    encoder's namespace must list exactly as the one libnftables loaded
//    (but for the loads nft merges in a port's own RARP rules).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ElementObject, MapObject, NftCommand, SetObject } from '../../src/backends/nft/model.js';
import { NftPortLowering } from '../../src/backends/nft/lower.js';
import { markCommands } from '../../src/backends/nft/l3.js';
import { newTag } from '../../src/backends/nft/names.js';
import { familiesOf, orderBatch } from '../../src/backends/nft/parts.js';
import { DEFAULT_SKELETON_CONFIG, lowerSkeleton } from '../../src/backends/nft/skeleton.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { normalizeListing } from '../../src/host/inventory.js';
import { setIndexOf, tagCommands } from '../../src/host/load-plan.js';
import { nftApply, nftListTable, runLibnftables } from '../../src/host/nft.js';
import { encodeChangeBatch, NfnlEncodeError, newSetOf, nfnlChangesOf, NfnlSocket, sendChangeBatch, type NfnlChange } from '../../src/host/nfnl/index.js';
import { netnsAdd, withNetns } from '../../src/host/netns.js';
import { resolveInterface } from '../../src/resolve/resolve.js';
import type { FilterDef } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const NFNL = `nwfs-a-${process.pid}`;
/** A policy with L3 rules (the ip table; the port gets a mark). */
const L3_FILTER = `<filter name='ssh-in'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'><tcp dstportstart='22'/></rule>
  <rule action='drop' direction='in'><tcp/></rule>
</filter>`;
const NFT = `nwfs-b-${process.pid}`;
const rec = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'nfnl', 'nft-objects.json'), 'utf8')) as { sets: { name: string; object: SetObject | MapObject }[] };

const str = (value: string) => ({ kind: 'string' as const, value });
const tuple = (...items: string[]) => ({ kind: 'tuple' as const, items: items.map(str) });

/** A few elements of a set kind (those the element encoder takes), by fixture name. */
const ELEMENTS: Record<string, ElementObject['elements']> = {
  'ifname . ipv4_addr': [tuple('vnet0', '10.0.0.1'), tuple('vnet1', '10.0.0.2')],
  'ifname . ether_addr . ether_addr . ipv4_addr': [tuple('vnet0', '52:54:00:00:00:01', 'ff:ff:ff:ff:ff:ff', '10.0.0.1')],
  'ifname . ether_addr . ipv6_addr': [tuple('vnet0', '52:54:00:00:00:01', 'fe80::1')],
  'ifname, counter': [str('vnet0')],
  'ifname . ipv4_addr, interval (concat)': [{ kind: 'tuple', items: [str('vnet0'), { kind: 'prefix', addr: '10.1.0.0', len: 16 }] }],
  'map ifname : mark': [[str('vnet0'), { kind: 'number', value: 0x80010000 }]],
  'map ifname . ipv4_addr : verdict': [[tuple('vnet0', '10.0.0.1'), { kind: 'drop' }]],
};

/** `nft -j list set` without handles, and the text listing. */
function listSet(ns: string, o: SetObject | MapObject): { json: unknown; text: string } {
  const what = `${o.kind} ${o.family} ${o.table} ${o.name}`;
  const json = JSON.parse(runLibnftables(`list ${what}`, { netns: ns, json: true }).output) as { nftables: Record<string, Record<string, unknown>>[] };
  for (const x of json.nftables) for (const v of Object.values(x)) delete v.handle;
  return { json, text: runLibnftables(`list ${what}`, { netns: ns }).output };
}

/**
 * A listing with the expressions of the rules in a port's own chains
 * (`sp-*`, tag masked: its RARP announce tests) left out, their comments kept: nft
 * merges their adjacent loads, the encoder does not (the same tests; the
 * nfnl-rules test reads each of them back as written).
 */
function perInterface(listing: unknown): unknown {
  return (listing as Record<string, { chain?: string; expr?: unknown }>[]).map((o) => (/^(\*-)?sp-/.test(o.rule?.chain ?? '') ? { rule: { ...o.rule, expr: 'a port\'s own rule' } } : o));
}

describe.skipIf(!isRoot)('netlink set creation: what nft reads back (twin namespaces)', () => {
  let sock: NfnlSocket | undefined;
  beforeAll(async () => {
    await netnsAdd(NFNL);
    await netnsAdd(NFT);
    sock = withNetns(NFNL, () => NfnlSocket.open());
  });
  afterAll(async () => {
    sock?.close();
    await execa('ip', ['netns', 'delete', NFNL], { reject: false });
    await execa('ip', ['netns', 'delete', NFT], { reject: false });
  });

  it('every recorded set and map kind lists as libnftables creates it, and takes the same elements', async () => {
    let withElements = 0;
    for (const c of rec.sets) {
      const o = c.object;
      const table: NftCommand = { op: 'add', object: { kind: 'table', family: o.family, name: o.table } };
      for (const ns of [NFNL, NFT]) runLibnftables('flush ruleset', { netns: ns });
      await nftApply(toNftJson([table]), { netns: NFNL, inProcess: true });
      await nftApply(toNftJson([table, { op: 'add', object: o }]), { netns: NFT, inProcess: true });
      sendChangeBatch(sock as NfnlSocket, [newSetOf(o)]);
      const ours = listSet(NFNL, o);
      expect(ours, c.name).toEqual(listSet(NFT, o));
      const elements = ELEMENTS[c.name];
      if (!elements) continue;
      const el = { kind: 'element' as const, family: o.family, table: o.table, name: o.name, elements };
      await nftApply(toNftJson([{ op: 'add', object: el }]), { netns: NFT, inProcess: true });
      const changes = nfnlChangesOf([{ op: 'add', object: el }], setIndexOf([[{ op: 'add', object: o }]]), newTag());
      // the tag only renames tagged names: the fixture's are not
      sendChangeBatch(sock as NfnlSocket, (changes ?? []).map((x) => (x.kind === 'elements' ? { ...x, change: { ...x.change, set: { ...x.change.set, name: o.name } } } : x)));
      expect(listSet(NFNL, o), `${c.name} with elements`).toEqual(listSet(NFT, o));
      withElements++;
    }
    expect(withElements).toBe(Object.keys(ELEMENTS).length);
  });

  /**
   * One port of `filter` on the skeleton (and its shape, with `shapeLoaded`)
   * loaded by libnftables in both namespaces, then its shape (unless loaded)
   * and its part through the encoder in one and libnftables in the other:
   * whether the encoder took the batch (else why not), the tables compared.
   */
  async function twin(filter: string, filters: Map<string, FilterDef>, shapeLoaded: boolean): Promise<string | undefined> {
    const nft = new NftPortLowering({});
    const p = resolveInterface(filters, parseFilterBindingXml(bindingXml('vnet7', '52:54:00:00:00:07', filter, { IP: '10.0.0.7' }), 'vnet7.xml'));
    const part = nft.port(p, []);
    const tag = newTag();
    const families = familiesOf([part]);
    const shape = part.shapes.flatMap((s) => nft.shape(s)?.commands ?? []);
    const base = [...lowerSkeleton(DEFAULT_SKELETON_CONFIG, families), ...(shapeLoaded ? shape : [])];
    const cmds = orderBatch([...(shapeLoaded ? [] : shape), ...part.commands, ...(families.length ? markCommands('vnet7', 1, families) : [])]);
    const changes = nfnlChangesOf(cmds, setIndexOf([base, cmds]), tag);
    expect(changes, filter).toBeDefined();
    try {
      encodeChangeBatch(changes as NfnlChange[], 1);
    } catch (e) {
      if (!(e instanceof NfnlEncodeError && e.unsupported)) throw e;
      return e.message;
    }
    for (const ns of [NFNL, NFT]) {
      runLibnftables('flush ruleset', { netns: ns });
      await nftApply(toNftJson(tagCommands(orderBatch(base), tag)), { netns: ns, inProcess: true });
    }
    await nftApply(toNftJson(tagCommands(cmds, tag)), { netns: NFT, inProcess: true });
    sendChangeBatch(sock as NfnlSocket, changes as NfnlChange[]);
    for (const family of ['bridge', ...families.map((f) => (f === 'ipv4' ? 'ip' : 'ip6'))]) {
      const listing = async (ns: string) => perInterface(normalizeListing(await nftListTable(family, 'nwf_fast', { netns: ns, inProcess: true })));
      expect(await listing(NFNL), `${filter}: ${family} nwf_fast`).toEqual(await listing(NFT));
    }
    return undefined;
  }

  it('a port bringing a new shape: chains, sets, rules and elements in one batch list as libnftables loads them', async () => {
    const filters = bundledFilters();
    const sent: string[] = [];
    const left: string[] = [];
    for (const filter of ['no-ip-spoofing', 'no-mac-spoofing', 'no-arp-spoofing', 'allow-arp', 'no-ip-multicast', 'allow-incoming-ipv4', 'clean-traffic', 'allow-dhcp']) {
      const why = await twin(filter, filters, false);
      if (why) left.push(`${filter} (${why})`);
      else sent.push(filter);
    }
    console.log(`[nfnl sets] new shapes through the encoder: ${sent.join(', ')}; left to libnftables: ${left.join('; ') || 'none'}`);
    expect(sent).toContain('no-ip-spoofing');
    expect(sent).toContain('clean-traffic');
    expect(sent.length).toBeGreaterThanOrEqual(6);
  });

  it('a port with L3 rules: its mark chains (meta mark set) list as libnftables loads them; its L3 rules are still left to libnftables', async () => {
    const filters = bundledFilters();
    const f = parseFilterXml(L3_FILTER, 'ssh-in.xml');
    filters.set(f.name, f);
    // the whole port, its per-port L3 rules too (several ct states: an anonymous set in the same batch)
    expect(await twin(f.name, filters, true)).toBeUndefined();
    // its mark chains and entries alone, on the skeleton, its shape and its own (empty) chains
    const nft = new NftPortLowering({});
    const part = nft.port(resolveInterface(filters, parseFilterBindingXml(bindingXml('vnet7', '52:54:00:00:00:07', f.name, { IP: '10.0.0.7' }), 'vnet7.xml')), []);
    const families = familiesOf([part]);
    expect(families.length).toBeGreaterThan(0);
    const tag = newTag();
    const base = [...lowerSkeleton(DEFAULT_SKELETON_CONFIG, families), ...part.shapes.flatMap((x) => nft.shape(x)?.commands ?? []), ...part.commands.filter((c) => c.object.kind === 'chain')];
    const marks = orderBatch(markCommands('vnet7', 3, families));
    const changes = nfnlChangesOf(marks, setIndexOf([base, marks]), tag) as NfnlChange[];
    expect(changes.some((c) => c.kind === 'rule' && c.statements.some((x) => x.kind === 'mangle'))).toBe(true);
    for (const ns of [NFNL, NFT]) {
      runLibnftables('flush ruleset', { netns: ns });
      await nftApply(toNftJson(tagCommands(orderBatch(base), tag)), { netns: ns, inProcess: true });
    }
    await nftApply(toNftJson(tagCommands(marks, tag)), { netns: NFT, inProcess: true });
    sendChangeBatch(sock as NfnlSocket, changes);
    for (const family of ['bridge', ...families.map((x) => (x === 'ipv4' ? 'ip' : 'ip6'))]) {
      const listing = async (ns: string) => normalizeListing(await nftListTable(family, 'nwf_fast', { netns: ns, inProcess: true }));
      expect(await listing(NFNL), `${family} nwf_fast`).toEqual(await listing(NFT));
    }
  });
});

if (!isRoot) console.warn(`SKIP netlink set creation: ${ROOT_REASON}`);
