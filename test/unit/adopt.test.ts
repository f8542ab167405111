// adopt / --revert: the edit of the domain XML that moves interface
// filterrefs into nwf-fast's metadata and back, shown as a unified diff;
// every other line stays as it was, and adopt then revert gives the input
// back.
import { execa } from 'execa';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adoptXml, metadataForVirsh, revertXml } from '../../src/host/live/adopt.js';
import { parseLiveDomain } from '../../src/xml/live-domain.js';
import { unifiedDiff } from '../../src/util/diff.js';
import { run } from '../support/cli.js';

const DOMAIN = `<domain type='kvm'>
  <name>web1</name>
  <uuid>4a3b2c1d-0000-4000-8000-00000000abcd</uuid>
  <title>Web server</title>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:01'/>
      <source bridge='br0'/>
      <model type='virtio'/>
      <filterref filter='clean-traffic'>
        <parameter name='IP' value='192.0.2.10'/>
        <parameter name='IP' value='192.0.2.11'/>
      </filterref>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:12:34:02'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:03'/>
      <source bridge='br1'/>
      <filterref filter='no-mac-spoofing'/>
    </interface>
  </devices>
</domain>
`;

describe('adoptXml', () => {
  it("moves every interface filterref into nwf-fast's metadata, after <title>, keeping the other lines", () => {
    const e = adoptXml(DOMAIN, 'web1.xml');
    expect(e.moved).toEqual(['52:54:00:12:34:01', '52:54:00:12:34:03']);
    expect(unifiedDiff(DOMAIN, e.xml, { a: 'web1 (libvirt)', b: 'web1 (adopted)' })).toBe(`--- web1 (libvirt)
+++ web1 (adopted)
@@ -2,6 +2,19 @@
   <name>web1</name>
   <uuid>4a3b2c1d-0000-4000-8000-00000000abcd</uuid>
   <title>Web server</title>
+  <metadata>
+    <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>
+      <nwf:interface mac='52:54:00:12:34:01'>
+        <nwf:filterref filter='clean-traffic'>
+          <nwf:parameter name='IP' value='192.0.2.10'/>
+          <nwf:parameter name='IP' value='192.0.2.11'/>
+        </nwf:filterref>
+      </nwf:interface>
+      <nwf:interface mac='52:54:00:12:34:03'>
+        <nwf:filterref filter='no-mac-spoofing'/>
+      </nwf:interface>
+    </nwf:filters>
+  </metadata>
   <memory unit='KiB'>1048576</memory>
   <vcpu placement='static'>1</vcpu>
   <os>
@@ -13,10 +26,6 @@
       <mac address='52:54:00:12:34:01'/>
       <source bridge='br0'/>
       <model type='virtio'/>
-      <filterref filter='clean-traffic'>
-        <parameter name='IP' value='192.0.2.10'/>
-        <parameter name='IP' value='192.0.2.11'/>
-      </filterref>
       <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
     </interface>
     <interface type='network'>
@@ -28,7 +37,6 @@
     <interface type='bridge'>
       <mac address='52:54:00:12:34:03'/>
       <source bridge='br1'/>
-      <filterref filter='no-mac-spoofing'/>
     </interface>
   </devices>
 </domain>
`);
    // what nwf-fast reads from the result: the same filters, now from the metadata
    const d = parseLiveDomain(e.xml, 'adopted.xml');
    expect(d.interfaces.map((i) => [i.mac, i.filterref?.filter, i.metadata?.filter, i.metadata ? [...i.metadata.params] : []])).toEqual([
      ['52:54:00:12:34:01', undefined, 'clean-traffic', [['IP', ['192.0.2.10', '192.0.2.11']]]],
      ['52:54:00:12:34:02', undefined, undefined, []],
      ['52:54:00:12:34:03', undefined, 'no-mac-spoofing', []],
    ]);
  });

  it('revert gives the input back; adopting twice changes nothing more', () => {
    const a = adoptXml(DOMAIN, 'web1.xml');
    expect(revertXml(a.xml, 'adopted.xml').xml).toBe(DOMAIN);
    const again = adoptXml(a.xml, 'adopted.xml');
    expect(again.xml).toBe(a.xml);
    expect(again.notes).toEqual(['no interface <filterref> to move']);
  });

  it('adds entries to existing metadata, keeping the other namespaces there', () => {
    const withMeta = DOMAIN.replace('  <title>Web server</title>\n', "  <title>Web server</title>\n  <metadata>\n    <app:owner xmlns:app='urn:example:app'>team-a</app:owner>\n  </metadata>\n");
    const a = adoptXml(withMeta, 'x.xml');
    expect(a.xml).toContain("    <app:owner xmlns:app='urn:example:app'>team-a</app:owner>\n    <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>");
    const r = revertXml(a.xml, 'y.xml');
    expect(r.xml).toBe(withMeta);
  });

  it('the element virsh metadata --set takes for the live domain', () => {
    expect(metadataForVirsh(adoptXml(DOMAIN, 'x').xml, 'x')).toBe(
      "<filters><interface mac='52:54:00:12:34:01'><filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.10'/><parameter name='IP' value='192.0.2.11'/></filterref></interface><interface mac='52:54:00:12:34:03'><filterref filter='no-mac-spoofing'/></interface></filters>",
    );
  });
});

describe('unifiedDiff', () => {
  it('agrees with diff -u', async () => {
    const a = 'a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n';
    const b = 'X\na\nb\nc\nd\ne\nf\ng\nh\ni\nj\nl\nm\nn\n';
    const dir = mkdtempSync(join(tmpdir(), 'nwf-diff-'));
    writeFileSync(join(dir, 'a'), a);
    writeFileSync(join(dir, 'b'), b);
    const ref = await execa('diff', ['-u', join(dir, 'a'), join(dir, 'b')], { reject: false });
    const body = (s: string): string => s.split('\n').slice(2).join('\n');
    expect(body(unifiedDiff(a, b, { a: 'a', b: 'b' }))).toBe(body(`${ref.stdout}\n`));
    expect(unifiedDiff(a, a, { a: 'a', b: 'b' })).toBe('');
  });
});

describe('nwf-fast adopt --xml', () => {
  it('prints the diff of a file (and --revert the opposite)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-adopt-'));
    const f = join(dir, 'web1.xml');
    writeFileSync(f, DOMAIN);
    const r = await run(['adopt', '--xml', f]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^--- .*web1.xml\n\+\+\+ .*web1.xml \(adopted\)\n@@ -2,6 \+2,19 @@/);
    expect(r.err).toBe('');
    expect((await run(['adopt', '--xml', f, '--apply'])).code).toBe(2);
  });
});
