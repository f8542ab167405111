// nwf-fast install: the libvirt hook, a default configuration, systemd units.
import { join } from 'node:path';
import { install, RECONCILE_UNIT, RESTORE_UNIT } from '../host/live/install.js';
import { PACKAGE_ROOT } from '../resolve/sources.js';
import { one, type Command, type ParsedArgs } from './args.js';
import type { CliIo } from './io.js';

export const installCommand: Command = {
  name: 'install',
  summary: 'write the libvirt hook, a configuration, the systemd units',
  description:
    "Writes the qemu hook /etc/libvirt/hooks/qemu.d/nwf-fast, the configuration\n/etc/nwf-fast/nwf-fast.conf (only if there is none), and the systemd units\nnwf-fast-restore.service (restores the last generation at boot, before the\nnetwork and libvirt) and nwf-fast-reconcile.service (reconcile --follow).\nThey run this node and this nwf-fast. Nothing is enabled or started: the\ncommand prints what to run.",
  options: {
    root: { value: true, arg: 'DIR', help: 'write under DIR instead of / (packaging, tests)' },
  },
  run: async (p: ParsedArgs, io: CliIo): Promise<number> => {
    const root = one(p, 'root') ?? '/';
    const r = install({ root, node: process.execPath, cli: join(PACKAGE_ROOT, 'bin', 'nwf-fast.js') });
    for (const f of r.written) io.out(`wrote ${f}\n`);
    for (const f of r.kept) io.out(`kept ${f} (already there)\n`);
    io.out(
      [
        '',
        'next:',
        `  systemctl daemon-reload && systemctl enable ${RESTORE_UNIT} && systemctl enable --now ${RECONCILE_UNIT}`,
        '  systemctl restart libvirtd   # or virtqemud: libvirt reads its hooks when it starts',
        '',
      ].join('\n'),
    );
    return 0;
  },
};
