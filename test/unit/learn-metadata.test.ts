// Learned addresses in a domain's nwf-fast metadata (design ip-learning.md
// 4.4, 5.5): the <nwf:learned> parser and its errors with their path, the
// text written back, and the merge with native mode's <nwf:interface>
// entries for `virsh metadata --set`, driven through a recorded virsh.
import { describe, expect, it } from 'vitest';
import { parseLiveDomain } from '../../src/xml/live-domain.js';
import { learnedElementsText } from '../../src/xml/learned-metadata.js';
import { learnedOfDomain, mergedMetadataText, newMetadataSync, noteObserved, parseVirshMetadata, syncLearnedMetadata } from '../../src/host/live/learned.js';
import type { VirshClient, VirshResult } from '../../src/host/live/observe.js';
import type { DesiredPort } from '../../src/host/live/ports.js';
import { writeLearned } from '../../src/host/learn/store.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nwfErrorOf } from '../support/cli.js';

const UUID = '0f0e0d0c-0b0a-4000-8000-000000000001';
const NS = `xmlns:nwf='urn:x-nwf-fast:metadata:1'`;
const M1 = '52:54:00:72:00:11';
const M2 = '52:54:00:72:00:12';

function domain(filtersInner: string): string {
  return `<domain type='kvm'>
  <name>vm1</name>
  <uuid>${UUID}</uuid>
  <metadata>
    <nwf:filters ${NS}>
      ${filtersInner}
    </nwf:filters>
  </metadata>
  <devices>
    <interface type='bridge'><mac address='${M1}'/><source bridge='br0'/><target dev='vnet0'/><filterref filter='clean-traffic'/></interface>
    <interface type='bridge'><mac address='${M2}'/><source bridge='br0'/><target dev='vnet1'/><filterref filter='clean-traffic'><parameter name='CTRL_IP_LEARNING' value='dhcp'/></filterref></interface>
  </devices>
</domain>`;
}

const GOOD = `<nwf:learned mac='52:54:00:72:00:11' mode='any'><nwf:ip address='10.72.0.11' since='2026-12-03T11:28:39.657Z'/></nwf:learned>
      <nwf:learned mac='52:54:00:72:00:12' mode='dhcp'>
        <nwf:ip address='10.72.0.12' server='10.72.0.1' expires='2026-12-03T12:28:39Z'/>
        <nwf:ip address='10.72.0.13' expires='2026-12-03T12:30:00Z'/>
      </nwf:learned>`;

describe('<nwf:learned> in the domain metadata', () => {
  it('reads the design example: one any address, dhcp leases with expiry and server', () => {
    const d = parseLiveDomain(domain(GOOD), 'dom.xml');
    expect(learnedOfDomain(d)).toEqual([
      { owner: { name: 'vm1', uuid: UUID }, mac: M1, mode: 'any', addresses: [{ ip: '10.72.0.11', since: '2026-12-03T11:28:39.657Z', source: 'metadata' }] },
      {
        owner: { name: 'vm1', uuid: UUID },
        mac: M2,
        mode: 'dhcp',
        addresses: [
          { ip: '10.72.0.12', server: '10.72.0.1', expires: '2026-12-03T12:28:39Z', source: 'metadata' },
          { ip: '10.72.0.13', expires: '2026-12-03T12:30:00Z', source: 'metadata' },
        ],
      },
    ]);
    // next to native-mode entries in the same element
    const both = parseLiveDomain(domain(`<nwf:interface mac='${M1}'><nwf:filterref filter='clean-traffic'/></nwf:interface>${GOOD}`), 'dom.xml');
    expect(both.interfaces[0]?.metadata?.filter).toBe('clean-traffic');
    expect(both.learned?.size).toBe(2);
  });

  it('reads what libvirt hands the hook back after `virsh metadata --set` (children without prefix)', () => {
    const d = parseLiveDomain(domain(`<learned mac='${M1.toUpperCase()}' mode='any'><ip address='10.72.0.11'/></learned>`), 'dom.xml');
    expect(d.learned?.get(M1)?.addresses.map((a) => a.ip)).toEqual(['10.72.0.11']);
  });

  const ip = (attrs: string): string => `<nwf:ip ${attrs}/>`;
  const lease = (n: number): string => ip(`address='10.0.0.${n}' expires='2026-12-03T12:00:00Z'`);
  it.each([
    [`<nwf:learned mode='any'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1004', /nwf:learned has no 'mac'/, 'learned'],
    [`<nwf:learned mac='zz' mode='any'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1101', /invalid MAC address 'zz'/, 'learned@mac'],
    [`<nwf:learned mac='${M1}'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1004', /has no 'mode'/, `learned[mac=${M1}]`],
    [`<nwf:learned mac='${M1}' mode='none'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1101', /invalid learning mode 'none'/, `learned[mac=${M1}]@mode`],
    [`<nwf:learned mac='${M1}' mode='any' extra='1'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1003', /unknown attribute 'extra'/, 'learned@extra'],
    [`<nwf:learned mac='${M1}' mode='any'><nwf:lease address='10.0.0.1'/></nwf:learned>`, 'NWF1002', /unknown element <lease> in nwf:learned/, `learned[mac=${M1}]/lease`],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("address='10.0.0.1' expires='2026-12-03T12:00:00Z'")}</nwf:learned>`, 'NWF1003', /unknown attribute 'expires'/, 'ip[1]@expires'],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("address='10.0.0.1'")}${ip("address='10.0.0.2'")}</nwf:learned>`, 'NWF1101', /exactly one nwf:ip, this one 2/, `learned[mac=${M1}]`],
    [`<nwf:learned mac='${M1}' mode='any'></nwf:learned>`, 'NWF1101', /exactly one nwf:ip, this one 0/, `learned[mac=${M1}]`],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("address='10.0.0.256'")}</nwf:learned>`, 'NWF1101', /invalid IPv4 address '10.0.0.256'/, 'ip[1]@address'],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("since='2026-12-03T11:00:00Z'")}</nwf:learned>`, 'NWF1004', /nwf:ip has no 'address'/, 'ip[1]'],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("address='10.0.0.1' since='yesterday'")}</nwf:learned>`, 'NWF1101', /invalid time 'yesterday'/, 'ip[1]@since'],
    [`<nwf:learned mac='${M2}' mode='dhcp'>${ip("address='10.0.0.1'")}</nwf:learned>`, 'NWF1004', /lease \(nwf:ip\) has no 'expires'/, 'ip[1]'],
    [`<nwf:learned mac='${M2}' mode='dhcp'>${[1, 2, 3, 4, 5].map(lease).join('')}</nwf:learned>`, 'NWF1101', /1 to 4 leases, this one 5/, `learned[mac=${M2}]`],
    [`<nwf:learned mac='${M2}' mode='dhcp'>${lease(1)}${lease(1)}</nwf:learned>`, 'NWF1006', /address 10.0.0.1 twice/, 'ip[2]'],
    [`<nwf:learned mac='${M2}' mode='dhcp'>${ip("address='10.0.0.1' expires='2026-12-03T12:00:00Z' server='x'")}</nwf:learned>`, 'NWF1101', /invalid IPv4 address 'x' in server/, 'ip[1]@server'],
    [`<nwf:learned mac='${M1}' mode='any'>${ip("address='10.0.0.1'")}</nwf:learned><nwf:learned mac='${M1.toUpperCase()}' mode='any'>${ip("address='10.0.0.2'")}</nwf:learned>`, 'NWF1006', /two nwf:learned entries for MAC/, `learned[mac=${M1}]`],
  ])('refuses %#: %s', (inner, code, message, pathEnd) => {
    const e = nwfErrorOf(() => parseLiveDomain(domain(inner), 'dom.xml'));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
    expect(e.details.location?.file).toBe('dom.xml');
    expect(e.details.location?.path).toMatch(/^metadata\/nwf:filters\/learned/);
    expect(e.details.location?.path?.endsWith(pathEnd)).toBe(true);
  });

  it('writes what it reads: the text round-trips through the parser', () => {
    const d = parseLiveDomain(domain(GOOD), 'dom.xml');
    const entries = [...(d.learned?.values() ?? [])];
    const again = parseLiveDomain(domain(learnedElementsText(entries, 'nwf:')), 'dom.xml');
    expect(learnedOfDomain(again)).toEqual(learnedOfDomain(d));
    expect(learnedElementsText([{ mac: M1, mode: 'any', addresses: [] }])).toBe('');
  });
});

describe('merging learned entries with native mode entries', () => {
  const current = parseVirshMetadata(
    `<filters>\n  <interface mac="${M1}">\n    <filterref filter="clean-traffic"/>\n  </interface>\n  <learned mac="${M1}" mode="any">\n    <ip address="10.72.0.99"/>\n  </learned>\n</filters>`,
    'virsh',
  );

  it('reads `virsh metadata --live` output (no prefix, no namespace declaration)', () => {
    expect([...current.refs.keys()]).toEqual([M1]);
    expect(current.learned.get(M1)?.addresses[0]?.ip).toBe('10.72.0.99');
    expect(parseVirshMetadata('  ', 'virsh')).toEqual({ refs: new Map(), learned: new Map() });
  });

  it('keeps the interface entries and replaces the learned ones', () => {
    const t = mergedMetadataText(current, [{ mac: M1, mode: 'any', addresses: [{ ip: '10.72.0.11', since: '2026-12-03T11:00:00.000Z', source: 'kernel' }] }]);
    expect(t).toBe(`<filters><interface mac='${M1}'><filterref filter='clean-traffic'/></interface><learned mac='${M1}' mode='any'><ip address='10.72.0.11' since='2026-12-03T11:00:00.000Z'/></learned></filters>`);
    const back = parseVirshMetadata(t as string, 'set');
    expect(back.refs.get(M1)?.filter).toBe('clean-traffic');
    expect(back.learned.get(M1)?.addresses.map((a) => a.ip)).toEqual(['10.72.0.11']);
    // nothing learned: the interface entries alone; nothing at all: no element
    expect(mergedMetadataText(current, [])).toBe(`<filters><interface mac='${M1}'><filterref filter='clean-traffic'/></interface></filters>`);
    expect(mergedMetadataText({ refs: new Map(), learned: new Map() }, [])).toBeUndefined();
  });
});

describe('syncLearnedMetadata (recorded virsh)', () => {
  const port = (tap: string, mac: string, params: Record<string, string[]>, name = 'vm1', uuid = UUID): DesiredPort => ({ tap, mac, owner: { name, uuid }, filterref: { filter: 'clean-traffic', params }, origin: 'filterref', source: 'hook', at: '2026-12-03T11:00:00Z' });
  const PORTS = [port('vnet0', M1, {}), port('vnet1', M2, { IP: ['10.0.0.9'] })];

  function recorded(answers: ((args: readonly string[]) => VirshResult | undefined)[]): VirshClient & { calls: string[][] } {
    const calls: string[][] = [];
    return {
      uri: 'test:///',
      calls,
      run: (args) => {
        calls.push([...args]);
        for (const a of answers) {
          const r = a(args);
          if (r) return Promise.resolve(r);
        }
        return Promise.resolve({ exitCode: 0, stdout: '', stderr: '' });
      },
    };
  }

  function withState<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-learn-sync-'));
    return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
  }

  it('reads, merges and writes once; unchanged state writes nothing; a busy domain is retried; rate limit', async () =>
    withState(async (dir) => {
      writeLearned(dir, [{ owner: { name: 'vm1', uuid: UUID }, mac: M1, mode: 'any', addresses: [{ ip: '10.72.0.11', since: '2026-12-03T11:00:00.000Z', source: 'kernel' }] }]);
      let busy = true;
      const v = recorded([
        (a) => (a.includes('--set') && busy ? { exitCode: 1, stdout: '', stderr: 'error: Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainMigratePerform3Params)' } : undefined),
        (a) => (!a.includes('--set') ? { exitCode: 0, stdout: `<filters><interface mac="${M1}"><filterref filter="clean-traffic"/></interface></filters>`, stderr: '' } : undefined),
      ]);
      const sync = newMetadataSync();
      const r1 = await syncLearnedMetadata(v, dir, PORTS, sync, { now: 1_000_000 });
      expect(r1.retry.join()).toMatch(/vm1: writing its metadata: .*state change lock/);
      expect(r1.written).toEqual([]);
      // within the rate limit: not even asked
      const n = v.calls.length;
      expect((await syncLearnedMetadata(v, dir, PORTS, sync, { now: 1_000_500 })).retry).toEqual(['vm1: rate limit']);
      expect(v.calls.length).toBe(n);
      busy = false;
      const r2 = await syncLearnedMetadata(v, dir, PORTS, sync, { now: 1_001_500 });
      expect(r2.written).toEqual(['vm1']);
      const set = v.calls.at(-1) as string[];
      expect(set.slice(0, 6)).toEqual(['metadata', UUID, '--uri', 'urn:x-nwf-fast:metadata:1', '--key', 'nwf']);
      expect(set.at(-1)).toBe('--live');
      expect(set[7]).toBe(`<filters><interface mac='${M1}'><filterref filter='clean-traffic'/></interface><learned mac='${M1}' mode='any'><ip address='10.72.0.11' since='2026-12-03T11:00:00.000Z'/></learned></filters>`);
      const m = v.calls.length;
      expect((await syncLearnedMetadata(v, dir, PORTS, sync, { now: 1_010_000 })).written).toEqual([]);
      expect(v.calls.length).toBe(m);
      // a full resync saw the metadata without the address (changed behind reconcile's back): written again
      noteObserved(sync, [{ uuid: UUID, learned: [] }]);
      expect((await syncLearnedMetadata(v, dir, PORTS, sync, { now: 1_020_000 })).written).toEqual(['vm1']);
    }));

  it('a domain whose metadata already says it is not written; no metadata and nothing learned: nothing; forgotten: removed', async () =>
    withState(async (dir) => {
      writeLearned(dir, [{ owner: { name: 'vm1', uuid: UUID }, mac: M1, mode: 'any', addresses: [{ ip: '10.72.0.11', source: 'kernel' }] }]);
      const v = recorded([(a) => (!a.includes('--set') && !a.includes('--remove') ? { exitCode: 0, stdout: `<filters><learned mac="${M1}" mode="any"><ip address="10.72.0.11"/></learned></filters>`, stderr: '' } : undefined)]);
      expect((await syncLearnedMetadata(v, dir, PORTS, newMetadataSync(), { now: 1 })).written).toEqual([]);
      expect(v.calls.length).toBe(1);
      writeLearned(dir, []);
      const r = await syncLearnedMetadata(v, dir, PORTS, newMetadataSync(), { now: 1 });
      expect(r.written).toEqual(['vm1']);
      expect(v.calls.at(-1)).toEqual(['metadata', UUID, '--uri', 'urn:x-nwf-fast:metadata:1', '--remove', '--live']);
      const none = recorded([(a) => (!a.includes('--set') ? { exitCode: 1, stdout: '', stderr: 'error: metadata not found: Requested metadata element is not present' } : undefined)]);
      expect((await syncLearnedMetadata(none, dir, PORTS, newMetadataSync(), { now: 1 })).written).toEqual([]);
      expect(none.calls.length).toBe(1);
    }));

  it('never writes the address of a static port, of another mode, or an expired lease', async () =>
    withState(async (dir) => {
      writeLearned(dir, [
        { owner: { name: 'vm1', uuid: UUID }, mac: M2, mode: 'any', addresses: [{ ip: '10.0.0.9', source: 'kernel' }] },
        { owner: { name: 'vm1', uuid: UUID }, mac: M1, mode: 'dhcp', addresses: [{ ip: '10.0.0.8', expires: '2020-01-01T00:00:00Z', source: 'kernel' }] },
      ]);
      const v = recorded([(a) => (!a.includes('--set') ? { exitCode: 1, stdout: '', stderr: 'metadata not found' } : undefined)]);
      const r = await syncLearnedMetadata(v, dir, PORTS, newMetadataSync());
      expect(r.written).toEqual([]);
      expect(v.calls.some((c) => c.includes('--set'))).toBe(false);
    }));
});
