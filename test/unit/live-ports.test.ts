// The desired state: a domain's ports replacing its old ones (and any port on
// a tap it reuses), a resync against an observation of libvirt (entries
// changed meanwhile by a hook stay), and the file round trip.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bindingOfPort, isUnfiltered, portsFile, readPorts, replaceDomainPorts, resyncPorts, UNFILTERED, writePorts, type DesiredPort } from '../../src/host/live/ports.js';
import { portsOfDomain } from '../../src/host/live/observe.js';
import { parseLiveDomain } from '../../src/xml/live-domain.js';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const at = (s: number): string => new Date(T0 + s * 1000).toISOString();

function port(tap: string, owner: string, ip = '10.0.0.1', when = 0): DesiredPort {
  return { tap, mac: '52:54:00:00:00:01', owner: { name: owner, uuid: `uuid-${owner}` }, filterref: { filter: 'clean-traffic', params: { IP: [ip] } }, origin: 'filterref', source: 'hook', at: at(when) };
}

describe('replaceDomainPorts', () => {
  it("replaces the domain's ports, drops ports on the taps it reuses, keeps the others and unchanged records", () => {
    const cur = [port('vnet0', 'a'), port('vnet1', 'b'), port('vnet2', 'a')];
    const next = [port('vnet1', 'a', '10.0.0.9', 5), port('vnet2', 'a', '10.0.0.1', 5)];
    const r = replaceDomainPorts(cur, 'uuid-a', ['vnet1', 'vnet2', 'vnet7'], next);
    expect(r.ports.map((p) => `${p.tap}:${p.owner.name}`).sort()).toEqual(['vnet1:a', 'vnet2:a']);
    expect(r.removed.map((p) => `${p.tap}:${p.owner.name}`).sort()).toEqual(['vnet0:a', 'vnet1:b']);
    expect(r.added.map((p) => p.tap)).toEqual(['vnet1']);
    // vnet2 did not change: its record (time) stays
    expect(r.ports.find((p) => p.tap === 'vnet2')?.at).toBe(at(0));
  });
});

describe('resyncPorts', () => {
  const obs = (ports: DesiredPort[], scope: 'all' | Set<string> = 'all') => ({ startedAt: T0 + 10_000, scope, ports });

  it('adds what libvirt runs, removes what it does not, replaces what changed', () => {
    const cur = [port('vnet0', 'a'), port('vnet1', 'b'), port('vnet2', 'c')];
    const o = [port('vnet0', 'a', '10.0.0.1', 20), port('vnet1', 'b', '10.0.0.5', 20), port('vnet3', 'd', '10.0.0.1', 20)];
    const next = resyncPorts(cur, obs(o), new Set());
    expect(next.map((p) => `${p.tap}:${p.filterref.params.IP}:${p.at === at(0) ? 'kept' : 'new'}`).sort()).toEqual(['vnet0:10.0.0.1:kept', 'vnet1:10.0.0.5:new', 'vnet3:10.0.0.1:new']);
  });

  it('leaves alone entries a hook changed after the observation started, and entries out of scope', () => {
    const cur = [port('vnet0', 'a', '10.0.0.1', 11), port('vnet1', 'b'), port('vnet2', 'c')];
    const next = resyncPorts(cur, obs([], new Set(['b'])), new Set());
    expect(next.map((p) => p.tap).sort()).toEqual(['vnet0', 'vnet2']);
    const full = resyncPorts(cur, obs([port('vnet0', 'z', '1.1.1.1', 20)]), new Set());
    expect(full.map((p) => `${p.tap}:${p.owner.name}`)).toEqual(['vnet0:a']);
  });

  it('keeps the last good policy of a port whose new one does not compile, and never adds a bad one', () => {
    const cur = [port('vnet0', 'a')];
    const changed = port('vnet0', 'a', '10.0.0.7', 20);
    const fresh = port('vnet5', 'e', '10.0.0.8', 20);
    const next = resyncPorts(cur, obs([changed, fresh]), new Set([changed, fresh]));
    expect(next).toEqual(cur);
  });
});

describe('ports.json', () => {
  it('round-trips, sorted by tap; refuses a malformed file with a hint', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-ports-'));
    expect(readPorts(dir)).toEqual([]);
    writePorts(dir, [port('vnet9', 'a'), port('vnet10', 'b')]);
    expect(readPorts(dir).map((p) => p.tap)).toEqual(['vnet10', 'vnet9']);
    writeFileSync(portsFile(dir), '{"format":"nwf-fast-ports/1","ports":[{"tap":1}]}');
    expect(() => readPorts(dir)).toThrow(/port 1 is malformed/);
    writeFileSync(portsFile(dir), '{"format":"nwf-fast-ports/1","ports":[');
    expect(() => readPorts(dir)).toThrow(/unreadable/);
  });
});

describe('bindingOfPort', () => {
  it("carries the owner's UUID (it keys a learning port's seeds and its learned state read back)", () => {
    const b = bindingOfPort(port('vnet3', 'vm1'), '/state/ports.json');
    expect(b).toMatchObject({ owner: 'vm1', ownerUuid: 'uuid-vm1', iface: 'vnet3', mac: '52:54:00:00:00:01' });
    expect(bindingOfPort({ ...port('vnet3', 'vm1'), owner: { name: 'vm1', uuid: '' } }, '/state/ports.json').ownerUuid).toBeUndefined();
  });
});

describe('portsOfDomain', () => {
  it("takes nwf-fast's metadata over libvirt's filterref, records an interface without a filter as unfiltered, skips one without a tap, and leaves MAC out of the parameters", () => {
    const d = parseLiveDomain(
      `<domain><name>vm</name><uuid>11111111-2222-4333-8444-555555555555</uuid>
      <metadata><nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'><nwf:interface mac='52:54:00:00:00:02'><nwf:filterref filter='no-mac-spoofing'/></nwf:interface></nwf:filters></metadata>
      <devices>
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='vnet0'/><filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.1'/><parameter name='MAC' value='52:54:00:00:00:01'/></filterref></interface>
        <interface type='bridge'><mac address='52:54:00:00:00:02'/><target dev='vnet1'/><filterref filter='clean-traffic'/></interface>
        <interface type='bridge'><mac address='52:54:00:00:00:03'/><target dev='vnet2'/></interface>
        <interface type='bridge'><mac address='52:54:00:00:00:04'/><filterref filter='clean-traffic'/></interface>
      </devices></domain>`,
      'd.xml',
    );
    expect(portsOfDomain(d, 'hook', at(0)).map((p) => [p.tap, p.filterref.filter, p.filterref.params, p.origin])).toEqual([
      ['vnet0', 'clean-traffic', { IP: ['10.0.0.1'] }, 'filterref'],
      ['vnet1', 'no-mac-spoofing', {}, 'metadata'],
      ['vnet2', UNFILTERED, {}, 'none'],
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'nwf-ports-'));
    writePorts(dir, portsOfDomain(d, 'hook', at(0)));
    expect(readPorts(dir).filter(isUnfiltered).map((p) => p.tap)).toEqual(['vnet2']);
    // 'none' only with the reserved filter
    writeFileSync(portsFile(dir), JSON.stringify({ format: 'nwf-fast-ports/1', ports: [{ ...port('vnet5', 'a'), origin: 'none' }] }));
    expect(() => readPorts(dir)).toThrow(/port 1 is malformed/);
  });
});
