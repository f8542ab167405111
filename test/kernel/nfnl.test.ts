// The netlink element encoder against the kernel: on real nwf-fast tables (the
// bridge table's concatenated sets, interval sets, verdict and counter maps,
// and the ip table's mark maps), element changes sent by the encoder in one
// namespace must leave exactly the tables that libnftables leaves in a twin
// namespace given the same changes; a refused batch changes nothing.
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NftBatch } from '../../src/backends/nft/model.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { applyNft } from '../../src/host/apply.js';
import { idKey as idKeyOf, inventoryOf, normalizeListing, type Element } from '../../src/host/inventory.js';
import { diffParts, elementBatch, setIndexOf, type SetDelta } from '../../src/host/load-plan.js';
import { nftApply, nftListTable } from '../../src/host/nft.js';
import { applyElementDelta, elementChanges, NfnlBatchError, NfnlSocket, sendElementBatch } from '../../src/host/nfnl/index.js';
import { withNetns } from '../../src/host/netns.js';
import { destroyStale } from '../../src/lab/testbed.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { resolvePolicy } from '../../src/resolve/resolve.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const PREFIX = 'nwfn';
const EXTRA = [
  // a prefix that differs per interface: an interval set of ifname . ipv4_addr
  `<filter name='from-net' chain='ipv4' priority='-500'>
     <rule action='accept' direction='out'><ip srcipaddr='$NET' srcipmask='24'/></rule>
     <rule action='drop' direction='out'><ip/></rule>
   </filter>`,
  // an L3 rule: the ip table's mark maps
  `<filter name='ssh-in'>
     <filterref filter='from-net'/>
     <rule action='accept' direction='in'><tcp dstportstart='22'/></rule>
     <rule action='drop' direction='in'><tcp/></rule>
   </filter>`,
];

interface Port {
  iface: string;
  mac: string;
  filter: string;
  params: Record<string, string | string[]>;
}

function policy(ports: readonly Port[]): PolicyIR {
  const filters = bundledFilters();
  EXTRA.forEach((x, i) => {
    const f = parseFilterXml(x, `extra-${i}.xml`);
    filters.set(f.name, f);
  });
  const bindings = ports.map((p) => parseFilterBindingXml(bindingXml(p.iface, p.mac, p.filter, p.params), `${p.iface}.xml`));
  return resolvePolicy(filters, bindings);
}

/** The generation's nft part lowered under a load's tag. */
const lowered = (ir: PolicyIR, tag: string): NftBatch => lowerToNft(ir, { tag }).batch;

const PORTS_A: Port[] = [
  { iface: 'vnet0', mac: '52:54:00:00:00:01', filter: 'clean-traffic', params: { IP: '10.0.0.1' } },
  { iface: 'vnet1', mac: '52:54:00:00:00:02', filter: 'clean-traffic', params: { IP: ['10.0.0.2', '10.0.0.12'] } },
  { iface: 'vnet2', mac: '52:54:00:00:00:03', filter: 'no-ipv6-spoofing', params: { IPV6: 'fd00::3' } },
  { iface: 'vnet3', mac: '52:54:00:00:00:04', filter: 'no-ipv6-spoofing', params: { IPV6: 'fd00::4' } },
  { iface: 'vnet4', mac: '52:54:00:00:00:05', filter: 'ssh-in', params: { NET: '10.5.0.0' } },
  { iface: 'vnet5', mac: '52:54:00:00:00:06', filter: 'ssh-in', params: { NET: '10.6.0.0' } },
];
// addresses change: IPv4 (one more in a list), IPv6, prefixes (a MAC change is structural:
// per-interface RARP chains hold the MAC)
const PORTS_B: Port[] = [
  { ...PORTS_A[0]!, params: { IP: '10.0.1.1' } },
  { ...PORTS_A[1]!, params: { IP: ['10.0.0.2', '10.0.0.22', '10.0.0.32'] } },
  { ...PORTS_A[2]!, params: { IPV6: ['fd00::3', 'fd00:1::3'] } },
  PORTS_A[3]!,
  { ...PORTS_A[4]!, params: { NET: '10.55.0.0' } },
  PORTS_A[5]!,
];

/**
 * For every map of the build: its first entry deleted and added back with the
 * second entry's data; for every set: its first element deleted and added back.
 */
function touchEverything(b: NftBatch): SetDelta[] {
  const out: SetDelta[] = [];
  const inv = inventoryOf(b);
  for (const s of inv.sets.values()) {
    const elements = [...(inv.elements.get(idKeyOf(s.id))?.values() ?? [])];
    // the tap patterns (`vnet*`): interface wildcards go through libnftables (the encoder refuses them)
    if (elements.some((e) => !Array.isArray(e) && (e as { kind: string; value?: unknown }).kind === 'string' && String((e as { value: unknown }).value).endsWith('*'))) continue;
    const first = elements[0];
    if (first === undefined) continue;
    if (s.definition.kind === 'map') {
      const [k] = first as readonly [Element, unknown];
      const data = ((elements[1] ?? first) as readonly [unknown, unknown])[1];
      out.push({ set: s.definition, remove: [k as never], add: [[k, data] as never] });
    } else out.push({ set: s.definition, remove: [first as never], add: [first] });
  }
  return out;
}

/** The element delta from one generation to the other, both lowered under `tag`. */
function delta(from: PolicyIR, to: PolicyIR, tag: string): SetDelta[] {
  const x = lowered(from, tag);
  const y = lowered(to, tag);
  const d = diffParts([{ id: 'g', commands: x }], [{ id: 'g', commands: y }], setIndexOf([x, y]))?.deltas;
  if (!d) throw new Error('the generations differ in more than elements');
  return d;
}

const ns = (suffix: string) => `${PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}-${suffix}`;

describe.skipIf(!isRoot)('netlink element encoder on nwf-fast tables', () => {
  const viaNfnl = ns('nfnl');
  const viaLib = ns('lib');
  const a = policy(PORTS_A);
  const b = policy(PORTS_B);
  let tagN = '';
  let tagL = '';
  const listing = async (netns: string) => {
    const out: Record<string, unknown> = {};
    for (const [fam, table] of [['bridge', 'nwf_fast'], ['ip', 'nwf_fast']] as const) out[fam] = normalizeListing(await nftListTable(fam, table, { netns, inProcess: true }));
    return out;
  };

  beforeAll(async () => {
    await destroyStale(PREFIX);
    for (const n of [viaNfnl, viaLib]) await execa('ip', ['netns', 'add', n]);
    tagN = await applyNft((tag) => lowered(a, tag), { netns: viaNfnl, inProcess: true });
    tagL = await applyNft((tag) => lowered(a, tag), { netns: viaLib, inProcess: true });
  });
  afterAll(async () => {
    for (const n of [viaNfnl, viaLib]) await execa('ip', ['netns', 'del', n], { reject: false });
  });

  it('the generations differ only in elements: IPv4, IPv6 and prefix (interval) keys', () => {
    const changes = elementChanges(delta(a, b, tagN));
    const types = new Set(changes.flatMap((c) => [typeof c.set.type === 'string' ? c.set.type : c.set.type.join(' . '), ...(c.set.flags ?? [])]));
    // the shapes' address sets, and the optimizer's fast sets in the base chain (MAC . IP, ARP MAC . MAC . IP, MAC . IPv6)
    expect([...types].sort()).toEqual([
      'ifname . ether_addr . ether_addr . ipv4_addr',
      'ifname . ether_addr . ipv4_addr',
      'ifname . ether_addr . ipv6_addr',
      'ifname . ipv4_addr',
      'ifname . ipv6_addr',
      'interval',
    ]);
  });

  it('an IP change through the encoder leaves the same tables as through libnftables', async () => {
    expect(await listing(viaNfnl)).toEqual(await listing(viaLib));
    const r = await applyElementDelta(delta(a, b, tagN), { netns: viaNfnl, inProcess: true });
    expect(r).toEqual({ path: 'nfnl' });
    await nftApply(toNftJson(elementBatch(delta(a, b, tagL))), { netns: viaLib, inProcess: true });
    const got = await listing(viaNfnl);
    expect(got).toEqual(await listing(viaLib));
    // and the kernel holds the new addresses, not the old ones
    const text = JSON.stringify(got);
    for (const s of ['"10.0.1.1"', '"10.0.0.32"', '"fd00:1::3"', '"10.55.0.0"']) expect(text).toContain(s);
    for (const s of ['"10.0.0.1"', '"10.0.0.12"', '"10.5.0.0"']) expect(text).not.toContain(s);
    // and back: the same as the first generation loaded from scratch
    await applyElementDelta(delta(b, a, tagN), { netns: viaNfnl, inProcess: true });
    await nftApply(toNftJson(elementBatch(delta(b, a, tagL))), { netns: viaLib, inProcess: true });
    expect(await listing(viaNfnl)).toEqual(await listing(viaLib));
  });

  it('every set and map of both tables (verdict maps, counting maps, mark maps) takes deletions and additions like libnftables', async () => {
    const touched = touchEverything(lowered(a, tagN));
    const changes = elementChanges(touched);
    const kinds = new Set(changes.map((c) => `${c.set.family}:${c.set.map ?? 'set'}:${typeof c.set.type === 'string' ? c.set.type : c.set.type.join('.')}`));
    expect(changes.some((c) => c.set.name.includes('cnt-out-'))).toBe(true);
    for (const k of ['bridge:verdict:ifname', 'bridge:set:ifname', 'ip:verdict:mark', 'bridge:set:ifname.ipv4_addr', 'bridge:set:ifname.ether_addr', 'bridge:set:ifname.ipv6_addr']) {
      expect(kinds).toContain(k);
    }
    const before = await listing(viaNfnl);
    const r = await applyElementDelta(touched, { netns: viaNfnl, inProcess: true });
    expect(r.path).toBe('nfnl');
    await nftApply(toNftJson(elementBatch(touchEverything(lowered(a, tagL)))), { netns: viaLib, inProcess: true });
    const after = await listing(viaNfnl);
    expect(after).toEqual(await listing(viaLib));
    expect(after).not.toEqual(before); // the maps' first entries now carry other data
  });

  it('deleting an absent element is refused with the set and the element named, and the whole batch changes nothing', async () => {
    const changes = elementChanges(delta(a, b, tagN));
    const set = changes.find((c) => c.op === 'delete')!.set;
    const before = await listing(viaNfnl);
    const sock = withNetns(viaNfnl, () => NfnlSocket.open());
    let err: unknown;
    try {
      sendElementBatch(sock, [
        ...changes.filter((c) => c.op === 'add'), // valid additions first
        { op: 'delete', set, elements: [{ kind: 'tuple', items: [{ kind: 'string', value: 'vnet9' }, { kind: 'string', value: '10.9.9.9' }] }] },
      ]);
    } catch (e) {
      err = e;
    } finally {
      sock.close();
    }
    expect(err).toBeInstanceOf(NfnlBatchError);
    expect((err as NfnlBatchError).errno).toBe(2);
    expect((err as Error).message).toBe(`nf_tables refused to delete element "vnet9" . 10.9.9.9 from set bridge nwf_fast ${set.name}: ENOENT (no such file or directory): the element is not in the set`);
    expect(await listing(viaNfnl)).toEqual(before);
  });

  it('acts in the namespace it is given, not in the caller\'s', async () => {
    const before = await listing(viaLib);
    // the tag of viaNfnl does not exist in viaLib: a socket there would be refused; the one in viaNfnl is not
    await applyElementDelta(delta(a, b, tagN), { netns: viaNfnl, inProcess: true });
    expect(await listing(viaLib)).toEqual(before);
    await expect(applyElementDelta(delta(a, b, tagN), { netns: viaLib, inProcess: true })).rejects.toThrow(/the table or the set does not exist|not in the set/);
  });
});

if (!isRoot) console.warn(`SKIP netlink element encoder: ${ROOT_REASON}`);
