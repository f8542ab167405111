// What the live host reads from libvirt's domain XML: taps, MACs, bridges,
// libvirt's filterrefs and nwf-fast's own in the domain metadata (any
// prefix bound to nwf-fast's namespace), and the errors for bad metadata.
import { describe, expect, it } from 'vitest';
import { parseLiveBinding, parseLiveDomain } from '../../src/xml/live-domain.js';
import type { NwfError } from '../../src/util/errors.js';
import { nwfErrorOf } from '../support/cli.js';

const UUID = '0f0e0d0c-0b0a-4000-8000-000000000001';

function domain(meta: string, ifaces = IFACES): string {
  return `<domain type='kvm' id='3'>
  <name>web</name>
  <uuid>${UUID.toUpperCase()}</uuid>
  ${meta}
  <devices>
${ifaces}
  </devices>
</domain>`;
}

const IFACES = `    <interface type='bridge'>
      <mac address='52:54:00:AA:00:01'/>
      <source bridge='br0'/>
      <target dev='vnet4'/>
      <filterref filter='clean-traffic'>
        <parameter name='IP' value='10.0.0.1'/>
      </filterref>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:00:02'/>
      <source network='default' bridge='virbr0'/>
      <target dev='vnet5'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:00:03'/>
      <source bridge='br0'/>
    </interface>`;

const META = `<metadata>
    <other:thing xmlns:other='urn:someone:else'><other:x/></other:thing>
    <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>
      <nwf:interface mac='52:54:00:aa:00:02'>
        <nwf:filterref filter='no-ip-spoofing'>
          <nwf:parameter name='IP' value='10.0.0.2'/>
          <nwf:parameter name='IP' value='10.0.0.3'/>
        </nwf:filterref>
      </nwf:interface>
    </nwf:filters>
  </metadata>`;

const error = (xml: string): NwfError => nwfErrorOf(() => parseLiveDomain(xml, 'dom.xml'));

describe('parseLiveDomain', () => {
  it('reads name, uuid (lowercase), taps, MACs, bridges, filterrefs and metadata filterrefs by MAC', () => {
    const d = parseLiveDomain(domain(META), 'dom.xml');
    expect(d.name).toBe('web');
    expect(d.uuid).toBe(UUID);
    expect(d.interfaces.map((i) => [i.tap, i.mac, i.bridge, i.filterref?.filter, i.metadata?.filter])).toEqual([
      ['vnet4', '52:54:00:aa:00:01', 'br0', 'clean-traffic', undefined],
      ['vnet5', '52:54:00:aa:00:02', 'virbr0', undefined, 'no-ip-spoofing'],
      [undefined, '52:54:00:aa:00:03', 'br0', undefined, undefined],
    ]);
    expect([...(d.interfaces[1]?.metadata?.params ?? [])]).toEqual([['IP', ['10.0.0.2', '10.0.0.3']]]);
    expect(d.unmatchedMetadata).toEqual([]);
  });

  it('recognises the namespace, not the prefix: another prefix, a default namespace, children without one (virsh metadata --set)', () => {
    const variants = [
      `<metadata><x:filters xmlns:x='urn:x-nwf-fast:metadata:1'><x:interface mac='52:54:00:aa:00:02'><x:filterref filter='f'/></x:interface></x:filters></metadata>`,
      `<metadata><filters xmlns='urn:x-nwf-fast:metadata:1'><interface mac='52:54:00:aa:00:02'><filterref filter='f'/></interface></filters></metadata>`,
      `<metadata><nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'><interface mac='52:54:00:aa:00:02'><filterref filter='f'/></interface></nwf:filters></metadata>`,
    ];
    for (const m of variants) expect(parseLiveDomain(domain(m), 'dom.xml').interfaces[1]?.metadata?.filter).toBe('f');
    // the nwf prefix bound to another namespace is not ours
    const foreign = `<metadata><nwf:filters xmlns:nwf='urn:other'><nwf:anything/></nwf:filters></metadata>`;
    expect(parseLiveDomain(domain(foreign), 'dom.xml').interfaces[1]?.metadata).toBeUndefined();
  });

  it('reports metadata entries for MACs the domain does not have', () => {
    const m = `<metadata><nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'><nwf:interface mac='52:54:00:ff:ff:ff'><nwf:filterref filter='f'/></nwf:interface></nwf:filters></metadata>`;
    expect(parseLiveDomain(domain(m), 'dom.xml').unmatchedMetadata).toEqual(['52:54:00:ff:ff:ff']);
  });

  it('reads a <domstatus> file', () => {
    const d = parseLiveDomain(`<domstatus state='running' pid='1'>${domain('')}</domstatus>`, 'status.xml');
    expect(d.interfaces[0]?.tap).toBe('vnet4');
  });

  const ns = `xmlns:nwf='urn:x-nwf-fast:metadata:1'`;
  it.each([
    [`<nwf:filters ${ns}><nwf:leases ip='1.2.3.4'/></nwf:filters>`, 'NWF1002', /unknown element <leases> in nwf:filters/],
    [`<nwf:rules ${ns}/>`, 'NWF1002', /unknown element <nwf:rules> in nwf-fast's metadata namespace/],
    [`<nwf:filters ${ns}><nwf:interface><nwf:filterref filter='f'/></nwf:interface></nwf:filters>`, 'NWF1004', /nwf:interface has no 'mac'/],
    [`<nwf:filters ${ns}><nwf:interface mac='zz'><nwf:filterref filter='f'/></nwf:interface></nwf:filters>`, 'NWF1101', /invalid MAC address 'zz'/],
    [`<nwf:filters ${ns}><nwf:interface mac='52:54:00:aa:00:02'/></nwf:filters>`, 'NWF1004', /without nwf:filterref/],
    [`<nwf:filters ${ns}><nwf:interface mac='52:54:00:aa:00:02'><nwf:filterref filter='f'/></nwf:interface><nwf:interface mac='52:54:00:AA:00:02'><nwf:filterref filter='g'/></nwf:interface></nwf:filters>`, 'NWF1006', /two nwf:interface entries for MAC 52:54:00:aa:00:02/],
    [`<nwf:filters ${ns}><nwf:interface mac='52:54:00:aa:00:02'><nwf:filterref filter='f'><nwf:param name='IP' value='1'/></nwf:filterref></nwf:interface></nwf:filters>`, 'NWF1002', /unknown element <param> in <filterref>/],
    [`<nwf:filters ${ns}><nwf:interface mac='52:54:00:aa:00:02'><nwf:filterref filter='f' extra='1'/></nwf:interface></nwf:filters>`, 'NWF1003', /unknown attribute 'extra'/],
  ])('bad metadata %#: %s', (inner, code, message) => {
    const e = error(domain(`<metadata>\n    ${inner}\n  </metadata>`));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
    expect(e.details.location?.file).toBe('dom.xml');
    expect(e.details.location?.line).toBeGreaterThanOrEqual(5);
  });

  it('refuses a domain without a valid uuid, and a bad tap name', () => {
    expect(error(`<domain><name>x</name></domain>`).message).toMatch(/no valid <uuid>/);
    expect(error(domain('', `<interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='a b'/></interface>`)).code).toBe('NWF1106');
  });
});

describe('parseLiveBinding', () => {
  it('reads the owner uuid with the rest of libvirt binding XML', () => {
    const b = parseLiveBinding(
      `<filterbinding><owner><name>vm1</name><uuid>${UUID}</uuid></owner><portdev name='vnet0'/><mac address='52:54:00:00:00:01'/><filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.1'/><parameter name='MAC' value='52:54:00:00:00:01'/></filterref></filterbinding>`,
      'b.xml',
    );
    expect(b).toMatchObject({ tap: 'vnet0', mac: '52:54:00:00:00:01', owner: { name: 'vm1', uuid: UUID } });
    expect(b.filterref.filter).toBe('clean-traffic');
  });
});
