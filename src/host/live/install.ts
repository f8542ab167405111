// `nwf-fast install [--root DIR]`: the libvirt hook script, a default
// configuration (only if there is none) and the two systemd units, written
// under DIR (default /). Nothing is enabled or started: the command prints
// what to run.
//
//  - nwf-fast-restore.service (oneshot, early boot): loads the last recorded
//    generation before the network comes up and before libvirt starts guests
//    (Before=network-pre.target libvirtd.service virtqemud.service), so a VM
//    port is never up without nwf-fast's rules; DefaultDependencies=no, after
//    the local file systems (the state directory) and bpffs (the pins);
//  - nwf-fast-reconcile.service: `reconcile --follow` once libvirt runs.
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_CONFIG_FILE, defaultConfigText } from '../config.js';

export const HOOK_PATH = '/etc/libvirt/hooks/qemu.d/nwf-fast';
export const UNIT_DIR = '/etc/systemd/system';
export const RESTORE_UNIT = 'nwf-fast-restore.service';
export const RECONCILE_UNIT = 'nwf-fast-reconcile.service';

export interface InstallOptions {
  /** Where / is (tests write into a temporary directory). */
  root: string;
  /** The node binary and the CLI script the hook and units run. */
  node: string;
  cli: string;
}

const shQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** systemd ExecStart= quoting: each word in double quotes, with \ and " escaped, % doubled. */
const unitWord = (s: string): string => `"${s.replace(/[\\"]/g, '\\$&').replace(/%/g, '%%')}"`;

export function hookScript(o: Pick<InstallOptions, 'node' | 'cli'>): string {
  return [
    '#!/bin/sh',
    "# nwf-fast's libvirt qemu hook (written by `nwf-fast install`). libvirt runs it at every",
    '# lifecycle step of a domain with the domain XML on stdin; it reads this directory when',
    '# the daemon starts (restart libvirtd or virtqemud after installing or removing it).',
    `exec ${shQuote(o.node)} ${shQuote(o.cli)} libvirt-hook "$@"`,
    '',
  ].join('\n');
}

export function restoreUnit(o: Pick<InstallOptions, 'node' | 'cli'>): string {
  return [
    '[Unit]',
    'Description=nwf-fast: restore the VM port filters before the network and libvirt start',
    'DefaultDependencies=no',
    'After=local-fs.target sys-fs-bpf.mount systemd-modules-load.service',
    'Wants=network-pre.target',
    'Before=network-pre.target libvirtd.service virtqemud.service',
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=${unitWord(o.node)} ${unitWord(o.cli)} restore`,
    '',
    '[Install]',
    'WantedBy=sysinit.target',
    '',
  ].join('\n');
}

export function reconcileUnit(o: Pick<InstallOptions, 'node' | 'cli'>): string {
  return [
    '[Unit]',
    "Description=nwf-fast: follow libvirt's domains (hot-plugged NICs, daemon restarts, takeover)",
    'After=nwf-fast-restore.service libvirtd.service virtqemud.service',
    'Wants=nwf-fast-restore.service',
    '',
    '[Service]',
    `ExecStart=${unitWord(o.node)} ${unitWord(o.cli)} reconcile --follow`,
    'Restart=always',
    'RestartSec=2',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

export interface InstallResult {
  /** Files written (paths under root). */
  written: string[];
  /** Files left as they were (an existing configuration). */
  kept: string[];
}

function put(root: string, path: string, text: string, mode: number, res: InstallResult): void {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text, { mode });
  chmodSync(file, mode);
  res.written.push(file);
}

export function install(o: InstallOptions): InstallResult {
  const res: InstallResult = { written: [], kept: [] };
  put(o.root, HOOK_PATH, hookScript(o), 0o755, res);
  const conf = join(o.root, DEFAULT_CONFIG_FILE);
  if (existsSync(conf)) res.kept.push(conf);
  else put(o.root, DEFAULT_CONFIG_FILE, defaultConfigText(), 0o644, res);
  put(o.root, join(UNIT_DIR, RESTORE_UNIT), restoreUnit(o), 0o644, res);
  put(o.root, join(UNIT_DIR, RECONCILE_UNIT), reconcileUnit(o), 0o644, res);
  return res;
}

/** Parses a unit file into section -> key -> values (repeated keys and space-separated lists flattened). */
export function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let sec: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      sec = new Map();
      out.set(m[1] as string, sec);
      continue;
    }
    const eq = line.indexOf('=');
    if (!sec || eq < 0) continue;
    const k = line.slice(0, eq).trim();
    const v = line.slice(eq + 1).trim();
    sec.set(k, [...(sec.get(k) ?? []), ...(k === 'ExecStart' ? [v] : v.split(/\s+/).filter(Boolean))]);
  }
  return out;
}
