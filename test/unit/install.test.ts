// nwf-fast install: the files it writes under --root, the hook script, and
// the boot ordering of the systemd units.
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { install, parseUnit, RECONCILE_UNIT, RESTORE_UNIT } from '../../src/host/live/install.js';
import { parseConfig } from '../../src/host/config.js';
import { run } from '../support/cli.js';

const NODE = '/usr/bin/node';
const CLI = '/opt/nwf fast/bin/nwf-fast.js';

describe('nwf-fast install --root', () => {
  it('writes the hook (executable), a configuration that parses, and both units', () => {
    const root = mkdtempSync(join(tmpdir(), 'nwf-install-'));
    const r = install({ root, node: NODE, cli: CLI });
    expect(r.written.map((f) => f.slice(root.length))).toEqual([
      '/etc/libvirt/hooks/qemu.d/nwf-fast',
      '/etc/nwf-fast/nwf-fast.conf',
      '/etc/systemd/system/nwf-fast-restore.service',
      '/etc/systemd/system/nwf-fast-reconcile.service',
    ]);
    const hook = join(root, 'etc/libvirt/hooks/qemu.d/nwf-fast');
    expect(statSync(hook).mode & 0o777).toBe(0o755);
    expect(readFileSync(hook, 'utf8')).toContain(`exec '/usr/bin/node' '/opt/nwf fast/bin/nwf-fast.js' libvirt-hook "$@"`);
    expect(parseConfig(readFileSync(join(root, 'etc/nwf-fast/nwf-fast.conf'), 'utf8'), 'x').mode).toBe('takeover');
  });

  it('keeps an existing configuration', () => {
    const root = mkdtempSync(join(tmpdir(), 'nwf-install-'));
    mkdirSync(join(root, 'etc/nwf-fast'), { recursive: true });
    writeFileSync(join(root, 'etc/nwf-fast/nwf-fast.conf'), 'mode = native\n');
    const r = install({ root, node: NODE, cli: CLI });
    expect(r.kept).toEqual([join(root, 'etc/nwf-fast/nwf-fast.conf')]);
    expect(readFileSync(join(root, 'etc/nwf-fast/nwf-fast.conf'), 'utf8')).toBe('mode = native\n');
  });

  it('the hook script passes argv and stdin through to the CLI, and its exit code back', async () => {
    const root = mkdtempSync(join(tmpdir(), 'nwf-install-'));
    // a stand-in CLI that echoes its arguments and stdin, and exits 7
    const fake = join(root, 'fake-cli.js');
    writeFileSync(fake, "process.stdout.write(JSON.stringify(process.argv.slice(2)) + require('fs').readFileSync(0, 'utf8')); process.exit(7);");
    install({ root, node: process.execPath, cli: fake });
    const r = await execa(join(root, 'etc/libvirt/hooks/qemu.d/nwf-fast'), ['vm 1', 'start', 'begin', '-'], { input: '<domain/>', reject: false });
    expect(r.exitCode).toBe(7);
    expect(r.stdout).toBe('["libvirt-hook","vm 1","start","begin","-"]<domain/>');
  });
});

describe('unit ordering', () => {
  const root = mkdtempSync(join(tmpdir(), 'nwf-install-'));
  install({ root, node: NODE, cli: CLI });
  const unit = (name: string) => parseUnit(readFileSync(join(root, 'etc/systemd/system', name), 'utf8'));

  it('restore runs early: before the network and before libvirt starts guests, after local file systems and bpffs', () => {
    const u = unit(RESTORE_UNIT);
    const un = u.get('Unit') as Map<string, string[]>;
    expect(un.get('DefaultDependencies')).toEqual(['no']);
    expect(un.get('Before')).toEqual(expect.arrayContaining(['network-pre.target', 'libvirtd.service', 'virtqemud.service']));
    expect(un.get('Wants')).toEqual(['network-pre.target']);
    expect(un.get('After')).toEqual(expect.arrayContaining(['local-fs.target', 'sys-fs-bpf.mount']));
    expect(un.get('After')).not.toEqual(expect.arrayContaining(['network-pre.target']));
    const svc = u.get('Service') as Map<string, string[]>;
    expect(svc.get('Type')).toEqual(['oneshot']);
    expect(svc.get('RemainAfterExit')).toEqual(['yes']);
    expect(svc.get('ExecStart')).toEqual(['"/usr/bin/node" "/opt/nwf fast/bin/nwf-fast.js" restore']);
    expect(u.get('Install')?.get('WantedBy')).toEqual(['sysinit.target']);
  });

  it('reconcile follows libvirt: after the daemons and the restore, restarted always', () => {
    const u = unit(RECONCILE_UNIT);
    expect(u.get('Unit')?.get('After')).toEqual(expect.arrayContaining([RESTORE_UNIT, 'libvirtd.service', 'virtqemud.service']));
    expect(u.get('Unit')?.get('Before') ?? []).not.toEqual(expect.arrayContaining(['libvirtd.service']));
    expect(u.get('Service')?.get('ExecStart')).toEqual(['"/usr/bin/node" "/opt/nwf fast/bin/nwf-fast.js" reconcile --follow']);
    expect(u.get('Service')?.get('Restart')).toEqual(['always']);
  });

  it('systemd-analyze verify accepts both units (where systemd-analyze exists)', async () => {
    if (!existsSync('/usr/bin/systemd-analyze')) return;
    const dir = join(root, 'etc/systemd/system');
    const r = await execa('systemd-analyze', ['verify', '--man=no', join(dir, RESTORE_UNIT), join(dir, RECONCILE_UNIT)], { reject: false, env: { SYSTEMD_LOG_LEVEL: 'err' } });
    // the units name binaries that do not exist here; anything else is a unit error
    const errors = r.stderr.split('\n').filter((l) => l.trim() && !/is not executable|No such file or directory|Failed to prepare filename|Command .* is not executable|Unit .* not found|virtqemud|libvirtd/.test(l));
    expect(errors).toEqual([]);
  });
});

describe('nwf-fast install (CLI)', () => {
  it('writes under --root and says what to run next', async () => {
    const root = mkdtempSync(join(tmpdir(), 'nwf-install-'));
    const { code, out } = await run(['install', '--root', root]);
    expect(code).toBe(0);
    expect(out).toContain(`wrote ${join(root, '/etc/libvirt/hooks/qemu.d/nwf-fast')}`);
    expect(out).toContain('systemctl enable nwf-fast-restore.service');
  });
});
