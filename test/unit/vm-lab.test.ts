// The real-VM rig's pieces that need no root and no VM: the guest's frame
// sender (built with gcc -static and run in file mode, its frames decoded
// here), the initramfs archive (listed by cpio), the scenario on the kernel
// command line, the domain XML (checked by libvirt's own schema), the hook
// scripts (run by sh and node) and the module load order.
import { execa } from 'execa';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockFileFor } from '../../src/lab/libvirt.js';
import { buildCpio } from '../../src/lab/vm/cpio.js';
import { domainXml, interfaceXml } from '../../src/lab/vm/domain.js';
import { commandHook, describeHookXml, readHookCalls, recordingHook } from '../../src/lab/vm/hooks.js';
import { buildSender, moduleLoadOrder } from '../../src/lab/vm/image.js';
import { FRAME_KINDS, LEGIT_KINDS, MARKER_OFFSET, parseMarker, scenarioCmdline, SPOOFED_KINDS, tagOf, type FrameKind, type GuestScenario } from '../../src/lab/vm/scenario.js';

const dir = mkdtempSync(join(tmpdir(), 'nwf-vmlab-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ME = { mac: '52:54:00:71:00:11', ip: '10.71.0.11' };
const PEER = { mac: '52:54:00:71:00:01', ip: '10.71.0.1' };
const SPOOF = { mac: '52:54:00:71:00:66', ip: '10.71.0.66' };

const canGcc = existsSync('/usr/bin/gcc') && existsSync('/usr/lib/x86_64-linux-gnu/libc.a');
if (!canGcc) console.warn('SKIP nwf-send: gcc -static needs /usr/bin/gcc and libc.a (Debian packages gcc, libc6-dev)');

const mac = (f: Uint8Array, o: number): string => Array.from(f.subarray(o, o + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
const ip = (f: Uint8Array, o: number): string => Array.from(f.subarray(o, o + 4)).join('.');
const u16 = (f: Uint8Array, o: number): number => ((f[o] as number) << 8) | (f[o + 1] as number);

function ipChecksumOk(f: Uint8Array): boolean {
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += u16(f, i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

function readFrames(file: string): Uint8Array[] {
  const b = readFileSync(file);
  const out: Uint8Array[] = [];
  for (let o = 0; o + 2 <= b.length; ) {
    const n = b.readUInt16BE(o);
    out.push(new Uint8Array(b.subarray(o + 2, o + 2 + n)));
    o += 2 + n;
  }
  return out;
}

describe.skipIf(!canGcc)('nwf-send, the guest frame sender', () => {
  const sender = join(dir, 'nwf-send');
  beforeAll(async () => {
    await buildSender(sender);
  }, 120_000);

  const send = async (args: string[]): Promise<Uint8Array[]> => {
    const out = join(dir, `frames-${Math.random().toString(16).slice(2)}`);
    await execa(sender, ['-o', out, '-s', ME.mac, '-a', ME.ip, '-d', PEER.mac, '-A', PEER.ip, '-S', SPOOF.mac, '-I', SPOOF.ip, ...args]);
    return readFrames(out);
  };

  it('sends COUNT of each kind round-robin, 60 bytes each, every frame marked with kind, tag, step and sequence numbers', async () => {
    const frames = await send(['-k', 'all', '-n', '3', '-g', String(tagOf(5, 2)), '-x', '7']);
    expect(frames).toHaveLength(3 * FRAME_KINDS.length);
    frames.forEach((f, i) => {
      expect(f.length).toBe(60);
      expect(parseMarker(f)).toEqual({ kind: FRAME_KINDS[i % FRAME_KINDS.length], tag: 82, step: 7, seq: Math.floor(i / FRAME_KINDS.length), total: i });
    });
  });

  it('builds each kind as described', async () => {
    const frames = await send(['-k', 'all', '-n', '1']);
    const by = Object.fromEntries(frames.map((f) => [parseMarker(f)?.kind, f])) as Record<FrameKind, Uint8Array>;
    const udp = (f: Uint8Array, srcMac: string, srcIp: string): void => {
      expect([mac(f, 0), mac(f, 6), u16(f, 12)]).toEqual([PEER.mac, srcMac, 0x0800]);
      expect([f[14], u16(f, 16), f[23], ip(f, 26), ip(f, 30), u16(f, 36), u16(f, 38)]).toEqual([0x45, 46, 17, srcIp, PEER.ip, 9, 26]);
      expect(ipChecksumOk(f), 'IPv4 header checksum (br_netfilter drops bad ones)').toBe(true);
    };
    const arp = (f: Uint8Array, type: number, op: number, sha: string, spa: string, tha: string, tpa: string): void => {
      expect([mac(f, 0), mac(f, 6), u16(f, 12)]).toEqual(['ff:ff:ff:ff:ff:ff', ME.mac, type]);
      expect([u16(f, 14), u16(f, 16), f[18], f[19], u16(f, 20), mac(f, 22), ip(f, 28), mac(f, 32), ip(f, 38)]).toEqual([1, 0x0800, 6, 4, op, sha, spa, tha, tpa]);
    };
    udp(by.udp, ME.mac, ME.ip);
    udp(by.mac, SPOOF.mac, ME.ip);
    udp(by.ip, ME.mac, SPOOF.ip);
    arp(by.arp, 0x0806, 1, ME.mac, ME.ip, '00:00:00:00:00:00', PEER.ip);
    arp(by.arpip, 0x0806, 1, ME.mac, SPOOF.ip, '00:00:00:00:00:00', PEER.ip);
    arp(by.arpmac, 0x0806, 1, SPOOF.mac, ME.ip, '00:00:00:00:00:00', PEER.ip);
    arp(by.garp, 0x0806, 1, ME.mac, SPOOF.ip, '00:00:00:00:00:00', SPOOF.ip);
    arp(by.rarp, 0x8035, 3, ME.mac, '0.0.0.0', SPOOF.mac, '0.0.0.0');
    // QEMU's announce, exactly what libvirt's qemu-announce-self-rarp accepts.
    arp(by.announce, 0x8035, 3, ME.mac, '0.0.0.0', ME.mac, '0.0.0.0');
    expect([...LEGIT_KINDS, ...SPOOFED_KINDS].sort()).toEqual([...FRAME_KINDS].sort());
  });

  it('spoofs the own addresses with the last byte changed by default', async () => {
    const out = join(dir, 'default-spoof');
    await execa(sender, ['-o', out, '-s', ME.mac, '-a', ME.ip, '-d', PEER.mac, '-A', PEER.ip, '-k', 'mac,ip', '-n', '1']);
    const [m, i] = readFrames(out) as [Uint8Array, Uint8Array];
    expect(mac(m, 6)).toBe('52:54:00:71:00:4b');
    expect(ip(i, 26)).toBe('10.71.0.111');
  });

  it('refuses an unbounded run, an unknown kind and missing addresses', async () => {
    for (const args of [['-k', 'udp'], ['-k', 'nope', '-n', '1'], ['-n', '1', '-k', 'udp', '-s', 'zz']]) {
      const r = await execa(sender, ['-o', join(dir, 'x'), '-s', ME.mac, '-a', ME.ip, '-d', PEER.mac, '-A', PEER.ip, ...args], { reject: false });
      expect(r.exitCode, args.join(' ')).toBe(2);
    }
    const r = await execa(sender, ['-o', join(dir, 'x'), '-n', '1'], { reject: false });
    expect(r.exitCode).toBe(2);
  });

  it('paces: -r 200 -t 0.3 sends about 60 frames, and stops at the time bound', async () => {
    const t = performance.now();
    const frames = await send(['-k', 'udp', '-r', '200', '-t', '0.3']);
    expect(performance.now() - t).toBeLessThan(5_000);
    expect(frames.length).toBeGreaterThan(30);
    expect(frames.length).toBeLessThanOrEqual(61);
  });
});

describe('the marker', () => {
  it('is found only at its offset, with the magic and version, and a known kind', () => {
    const f = new Uint8Array(60);
    f.set([0x4e, 0x57, 0x46, 0x4d, 1, 2, 0, 17, 3, 0, 0, 9, 0, 0, 0, 42], MARKER_OFFSET);
    expect(parseMarker(f)).toEqual({ kind: 'arp', tag: 17, step: 3, seq: 9, total: 42 });
    expect(parseMarker(f.subarray(0, 57))).toBeUndefined();
    const bad = f.slice();
    bad[MARKER_OFFSET + 5] = 10;
    expect(parseMarker(bad)).toBeUndefined();
    bad[MARKER_OFFSET + 5] = 2;
    bad[MARKER_OFFSET + 4] = 2;
    expect(parseMarker(bad)).toBeUndefined();
  });
});

const SCENARIO: GuestScenario = {
  tag: 3,
  nics: [
    { mac: ME.mac, ipv4: `${ME.ip}/24` },
    { mac: '52:54:00:71:00:12', ipv4: '10.71.0.12/24' },
  ],
  peer: { mac: PEER.mac, ipv4: PEER.ip },
  spoof: { mac: SPOOF.mac, ipv4: SPOOF.ip },
  steps: [
    { nic: 0, send: { kinds: 'all', count: 20 } },
    { nic: 0, sleep: 1.5 },
    { nic: 1, send: { kinds: ['udp', 'garp'], pps: 50, seconds: 30 } },
  ],
  lifetimeS: 120,
};

describe('the scenario on the kernel command line', () => {
  it('is one nwf.* word per setting, NIC and step, in order', () => {
    expect(scenarioCmdline(SCENARIO)).toEqual([
      'nwf.tag=3',
      `nwf.peer=${PEER.mac}+${PEER.ip}`,
      `nwf.spoof=${SPOOF.mac}+${SPOOF.ip}`,
      `nwf.net=${ME.mac}+${ME.ip}/24`,
      'nwf.net=52:54:00:71:00:12+10.71.0.12/24',
      'nwf.run=0+send+all+20+0+0',
      'nwf.run=0+sleep+1.5',
      'nwf.run=1+send+udp,garp+0+50+30',
      'nwf.life=120',
    ]);
  });

  it.each<[string, Partial<GuestScenario>]>([
    ['an unbounded send', { steps: [{ nic: 0, send: { kinds: 'all' } }] }],
    ['a step for a NIC that does not exist', { steps: [{ nic: 2, sleep: 1 }] }],
    ['an unknown kind', { steps: [{ nic: 0, send: { kinds: ['udp', 'bogus' as FrameKind], count: 1 } }] }],
    ['an IP without prefix length on a NIC', { nics: [{ mac: ME.mac, ipv4: ME.ip }] }],
    ['an uppercase MAC', { peer: { mac: '52:54:00:71:00:AB', ipv4: PEER.ip } }],
    ['a tag out of range', { tag: 4096 }],
  ])('refuses %s', (_name, change) => {
    expect(() => scenarioCmdline({ ...SCENARIO, ...change })).toThrow(expect.objectContaining({ code: 'NWF1101' }));
  });
});

const IMAGE = { kernel: { version: '6.1.0-57-cloud-amd64', path: '/boot/vmlinuz-6.1.0-57-cloud-amd64', modulesDir: '/lib/modules/6.1.0-57-cloud-amd64' }, initrd: '/var/cache/nwf-fast/vm/0123/initramfs.cpio' };

describe('domain XML', () => {
  const xml = domainXml(
    {
      name: 'vm1',
      uuid: 'd54df46f-1ab5-4a22-8618-4560ef5fac2c',
      interfaces: [{ mac: ME.mac, filterref: { filter: 'clean-traffic', params: { IP: [ME.ip, '10.71.0.13'] } } }],
      scenario: { ...SCENARIO, nics: [SCENARIO.nics[0]!], steps: [] },
      consolePath: '/var/log/libvirt/qemu/vm1-console.log',
      metadata: "<nwf:x xmlns:nwf='urn:example:nwf-test'/>",
    },
    IMAGE,
  );

  it('is a TCG guest with direct kernel boot, the scenario on its command line, a file console, QEMU virtio (no vhost) and the filterref', () => {
    expect(xml).toContain("<domain type='qemu'>");
    expect(xml).toContain(`<kernel>${IMAGE.kernel.path}</kernel>`);
    expect(xml).toContain(`<initrd>${IMAGE.initrd}</initrd>`);
    expect(xml).toMatch(/<cmdline>console=ttyS0 .*nwf\.net=52:54:00:71:00:11\+10\.71\.0\.11\/24 .*<\/cmdline>/);
    expect(xml).toContain("<serial type='file'>");
    expect(xml).toContain("<driver name='qemu'/>");
    expect(xml).toContain("<filterref filter='clean-traffic'>\n        <parameter name='IP' value='10.71.0.11'/>\n        <parameter name='IP' value='10.71.0.13'/>\n      </filterref>");
    expect(xml).toContain("<metadata>\n<nwf:x xmlns:nwf='urn:example:nwf-test'/>\n  </metadata>");
    expect(interfaceXml({ mac: ME.mac })).not.toContain('filterref');
  });

  it('refuses interfaces that are not the scenario NICs in order', () => {
    expect(() => domainXml({ name: 'vm1', interfaces: [{ mac: '52:54:00:71:00:12' }], scenario: SCENARIO, consolePath: '/x' }, IMAGE)).toThrow(/not the scenario's NIC 0/);
  });

  const validate = existsSync('/usr/bin/virt-xml-validate') && existsSync('/usr/bin/xmllint');
  it.skipIf(!validate)("is valid for libvirt's domain schema (virt-xml-validate)", async () => {
    const f = join(dir, 'domain.xml');
    writeFileSync(f, xml);
    const r = await execa('virt-xml-validate', [f, 'domain'], { reject: false });
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  });
  if (!validate) console.warn('SKIP domain schema: virt-xml-validate or xmllint missing (Debian packages libvirt-clients, libxml2-utils)');
});

describe('hook scripts', () => {
  it('a command hook runs the command with its own arguments, then the hook arguments, passing stdin, stdout and the exit code', async () => {
    const script = join(dir, 'cmd-hook');
    const argvOut = join(dir, "argv out's");
    writeFileSync(
      script,
      commandHook([process.execPath, '-e', "const fs=require('fs');fs.writeFileSync(process.argv[1],JSON.stringify({a:process.argv.slice(2),e:process.env.NWF_X}));process.stdout.write(fs.readFileSync(0,'utf8').toUpperCase());process.exit(3)", argvOut, "it's a \"test\" $HOME"], { NWF_X: "v'1" }),
      { mode: 0o755 },
    );
    const r = await execa(script, ['vm1', 'migrate', 'begin', '-'], { input: '<domain/>', reject: false, env: {} });
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toBe('<DOMAIN/>');
    expect(JSON.parse(readFileSync(argvOut, 'utf8'))).toEqual({ a: ['it\'s a "test" $HOME', 'vm1', 'migrate', 'begin', '-'], e: "v'1" });
    expect(() => commandHook(['nwf-fast'])).toThrow(/absolute path/);
  });

  it('the recording hook appends one JSON line per call, prints nothing and exits 0', async () => {
    const log = join(dir, 'hooks.jsonl');
    const script = join(dir, 'record-hook');
    writeFileSync(script, recordingHook(log), { mode: 0o755 });
    for (const op of ['prepare', 'start']) {
      const r = await execa(script, ['vm1', op, 'begin', '-'], { input: `<domain><devices><interface><target dev='vnet0'/><filterref filter='x'/></interface></devices></domain>`, env: {} });
      expect([r.exitCode, r.stdout]).toEqual([0, '']);
    }
    const calls = readHookCalls(log);
    expect(calls.map((c) => [c.domain, c.op, c.subop, c.argv])).toEqual([
      ['vm1', 'prepare', 'begin', ['vm1', 'prepare', 'begin', '-']],
      ['vm1', 'start', 'begin', ['vm1', 'start', 'begin', '-']],
    ]);
    expect(describeHookXml(calls[1]!.stdin)).toMatchObject({ root: 'domain', targetDevs: ['vnet0'], filterrefs: 1, hasMetadata: false });
  });
});

describe('the initramfs archive', () => {
  const hasCpio = existsSync('/usr/bin/cpio');
  it.skipIf(!hasCpio)('lists as written (cpio -t), with modes, a symlink and a device node', async () => {
    const archive = buildCpio([
      { type: 'dir', path: 'bin' },
      { type: 'file', path: 'bin/busybox', data: Buffer.from('x'.repeat(5)), mode: 0o755 },
      { type: 'symlink', path: 'bin/sh', target: 'busybox' },
      { type: 'dir', path: 'dev' },
      { type: 'char', path: 'dev/console', major: 5, minor: 1 },
      { type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
    ]);
    expect(archive.length % 4).toBe(0);
    const names = (await execa('cpio', ['-t', '--quiet'], { input: archive })).stdout.split('\n');
    const long = (await execa('cpio', ['-t', '-v', '--quiet'], { input: archive })).stdout.split('\n');
    expect(names).toEqual(['bin', 'bin/busybox', 'bin/sh', 'dev', 'dev/console', 'init']);
    expect(long.map((l) => l.split(/\s+/)[0])).toEqual(['drwxr-xr-x', '-rwxr-xr-x', 'lrwxrwxrwx', 'drwxr-xr-x', 'crw-------', '-rwxr-xr-x']);
    expect(long[2]).toMatch(/ bin\/sh -> busybox$/);
    expect(long[4]).toMatch(/ 5, +1 /);
    expect(buildCpio([{ type: 'dir', path: 'bin' }]).equals(buildCpio([{ type: 'dir', path: 'bin' }])), 'the same input gives the same bytes').toBe(true);
    expect(() => buildCpio([{ type: 'dir', path: '/abs' }])).toThrow(/bad path/);
  });
  if (!hasCpio) console.warn('SKIP initramfs listing: cpio missing (Debian package cpio)');
});

describe('module load order', () => {
  it('puts dependencies first, each once', () => {
    const dep = [
      'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio_ring.ko:',
      'kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/virtio/virtio_pci_legacy_dev.ko:',
      'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
      'kernel/net/core/failover.ko:',
    ].join('\n');
    expect(moduleLoadOrder(dep, ['virtio_pci', 'virtio_net']).map((m) => m.name)).toEqual(['virtio_pci_legacy_dev', 'virtio_ring', 'virtio', 'virtio_pci', 'failover', 'net_failover', 'virtio_net']);
    expect(() => moduleLoadOrder(dep, ['e1000'])).toThrow(/not in modules.dep/);
  });
});

describe('private libvirtd locks', () => {
  it('are per network namespace', () => {
    expect(lockFileFor('nwfvm-1-ab12-host')).toBe('/run/lock/nwf-fast-libvirtd-nwfvm-1-ab12-host.lock');
    expect(lockFileFor('a/b')).toBe('/run/lock/nwf-fast-libvirtd-a_b.lock');
  });
});
