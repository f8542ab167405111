// libvirt qemu hook scripts for namespace hosts.
//
// libvirt runs every executable in /etc/libvirt/hooks/qemu.d/ (in name order)
// at each lifecycle step of a domain, as `SCRIPT DOMAIN OPERATION SUBOP
// EXTRA`, with the domain XML on stdin; it reads that directory only when the
// daemon starts, so these scripts are installed before (LibvirtdOptions
// qemuHooks). A hook runs inside the daemon's namespaces (mount, network,
// UTS), with libvirt's reduced environment.
//
//  - commandHook(argv, env): runs a command of the test's choosing (e.g.
//    nwf-fast's libvirt-hook) with the hook's arguments appended and its
//    stdin and stdout passed through (libvirt reads a `migrate begin`
//    hook's stdout as the new XML: empty means unchanged), so its exit code
//    is the hook's;
//  - recordingHook(file): appends {t, argv, stdin} as one JSON line to file
//    (prints nothing, exits 0), to learn what libvirt passes at each step.
import fs from 'node:fs';
import { CODES, NwfError } from '../../util/errors.js';

/** A string as one sh word. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A hook script that runs `argv` followed by the hook's own arguments, with `env` set. */
export function commandHook(argv: readonly string[], env: Readonly<Record<string, string>> = {}): string {
  if (!argv.length || !argv[0]?.startsWith('/')) throw new NwfError(CODES.VALUE_INVALID, `hook command must start with an absolute path: ${JSON.stringify(argv)}`, { expected: 'an argv like ["/usr/bin/node", "/path/bin/nwf-fast.js", "libvirt-hook"]' });
  const exports = Object.entries(env).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new NwfError(CODES.VALUE_INVALID, `hook environment variable name ${JSON.stringify(k)}`);
    return `export ${k}=${shQuote(v)}`;
  });
  return ['#!/bin/sh', '# nwf-fast vmlab: command hook', ...exports, `exec ${argv.map(shQuote).join(' ')} "$@"`, ''].join('\n');
}

/** A hook script (run by node) that appends one JSON line per call to `file` (a path in the daemon's view). */
export function recordingHook(file: string, node = process.execPath): string {
  return [
    `#!${node}`,
    '// nwf-fast vmlab: records one libvirt hook call (time, argv, stdin) as a JSON line',
    "'use strict';",
    "const fs = require('node:fs');",
    'const t = Date.now();',
    "let stdin = '';",
    "try { stdin = fs.readFileSync(0, 'utf8'); } catch (e) { stdin = `<unreadable: ${e.code}>`; }",
    `fs.appendFileSync(${JSON.stringify(file)}, JSON.stringify({ t, pid: process.pid, script: process.argv[1], argv: process.argv.slice(2), stdin }) + '\\n');`,
    '',
  ].join('\n');
}

/** One recorded hook call. */
export interface HookCall {
  /** Epoch milliseconds at the call. */
  t: number;
  /** DOMAIN OPERATION SUBOP EXTRA */
  argv: string[];
  /** The XML libvirt wrote to stdin. */
  stdin: string;
  domain: string;
  op: string;
  subop: string;
}

/** The calls a recording hook wrote to `hostFile` so far, in order. */
export function readHookCalls(hostFile: string): HookCall[] {
  let text = '';
  try {
    text = fs.readFileSync(hostFile, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const r = JSON.parse(l) as { t: number; argv: string[]; stdin: string };
      return { t: r.t, argv: r.argv, stdin: r.stdin, domain: r.argv[0] ?? '', op: r.argv[1] ?? '', subop: r.argv[2] ?? '' };
    });
}

/** The root element of a hook's stdin and the tap names (<target dev>) in it, for reports. */
export function describeHookXml(xml: string): { root: string; targetDevs: string[]; filterrefs: number; hasMetadata: boolean; bytes: number } {
  const root = /<([A-Za-z][\w-]*)[\s>]/.exec(xml.replace(/<\?[^>]*\?>/g, ''))?.[1] ?? '(empty)';
  const targetDevs = [...xml.matchAll(/<target\s+dev=['"]([^'"]+)['"]/g)].map((m) => m[1] as string);
  return { root, targetDevs, filterrefs: (xml.match(/<filterref\b/g) ?? []).length, hasMetadata: /<metadata\b/.test(xml), bytes: Buffer.byteLength(xml) };
}
