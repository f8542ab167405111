// nwf-fast adopt: move domains' interface filterrefs into nwf-fast metadata (native mode), or back.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adoptXml, metadataForVirsh, revertXml, type AdoptEdit } from '../host/live/adopt.js';
import { virshClient, type VirshClient } from '../host/live/observe.js';
import { loadConfig } from '../host/config.js';
import { NWF_METADATA_NS, NWF_METADATA_PREFIX } from '../xml/live-domain.js';
import { unifiedDiff } from '../util/diff.js';
import { CODES, NwfError } from '../util/errors.js';
import { one, type Command, type ParsedArgs } from './args.js';
import type { CliIo } from './io.js';

export const adoptCommand: Command = {
  name: 'adopt',
  summary: "move domains' filterrefs into nwf-fast metadata, or back",
  description:
    "Prints, as a unified diff of the persistent domain XML (virsh dumpxml\n--inactive), the change that moves each interface's <filterref> into the\ndomain's <metadata> under nwf-fast's namespace (keyed by the interface MAC),\nso libvirt's nwfilter no longer instantiates it and nwf-fast (native mode)\nprotects it. --revert prints the opposite. --apply defines the edited XML with\nvirsh; for a running domain libvirt's filterref stays in force until its next\nstart, and adopt also sets the metadata on the live domain so nwf-fast\nprotects it now (revert takes effect at the next start). --xml FILE edits a\nfile instead of asking libvirt (no --apply).",
  options: {
    revert: { value: false, help: "move nwf-fast's metadata filterrefs back into the interfaces" },
    apply: { value: false, help: 'define the edited XML with virsh (and set the live metadata of a running domain)' },
    connect: { value: true, arg: 'URI', help: 'libvirt URI (default: libvirt_uri of the configuration, qemu:///system)' },
    xml: { value: true, arg: 'FILE', help: 'edit this domain XML file instead of a domain of libvirt' },
  },
  positionals: { usage: 'DOMAIN...', max: 4096 },
  run: runAdopt,
};

async function virshOut(v: VirshClient, args: readonly string[]): Promise<string> {
  const r = await v.run(args);
  if (r.exitCode !== 0) throw new NwfError(CODES.COMMAND_FAILED, `virsh -c ${v.uri} ${args.join(' ')} failed (exit ${r.exitCode}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function edit(xml: string, file: string, revert: boolean): AdoptEdit {
  return revert ? revertXml(xml, file) : adoptXml(xml, file);
}

async function runAdopt(p: ParsedArgs, io: CliIo): Promise<number> {
  const revert = p.flags.has('revert');
  const file = one(p, 'xml');
  if (file) {
    if (p.flags.has('apply') || p.positionals.length) throw new NwfError(CODES.USAGE, '--xml FILE edits a file: give no DOMAIN and no --apply', { hint: 'nwf-fast adopt --xml domain.xml' });
    const xml = readFileSync(file, 'utf8');
    const e = edit(xml, file, revert);
    for (const n of e.notes) io.err(`note: ${e.name}: ${n}\n`);
    io.out(unifiedDiff(xml, e.xml, { a: `${file}`, b: `${file} (${revert ? 'reverted' : 'adopted'})` }));
    return 0;
  }
  if (!p.positionals.length) throw new NwfError(CODES.USAGE, 'give at least one DOMAIN (or --xml FILE)', { hint: 'nwf-fast adopt vm1 vm2' });
  const v = virshClient(one(p, 'connect') ?? loadConfig().libvirtUri);
  const tmp = mkdtempSync(join(tmpdir(), 'nwf-fast-adopt-'));
  try {
    for (const dom of p.positionals) {
      const persistent = /^Persistent:\s+yes/m.test(await virshOut(v, ['dominfo', dom]));
      const xml = await virshOut(v, ['dumpxml', '--inactive', '--security-info', dom]);
      const e = edit(xml, `virsh dumpxml --inactive ${dom}`, revert);
      for (const n of e.notes) io.err(`note: ${dom}: ${n}\n`);
      io.out(unifiedDiff(xml, e.xml, { a: `${dom} (libvirt)`, b: `${dom} (${revert ? 'reverted' : 'adopted'})` }));
      if (!p.flags.has('apply') || e.xml === xml) continue;
      if (!persistent) throw new NwfError(CODES.STATE_INVALID, `domain ${dom} is transient (no persistent definition to change)`, { hint: 'define it first (virsh define), or edit its XML where it is created' });
      const f = join(tmp, `${dom.replace(/[^A-Za-z0-9_.-]/g, '_')}.xml`);
      writeFileSync(f, e.xml);
      await virshOut(v, ['define', f]);
      io.err(`defined ${dom}\n`);
      const running = (await virshOut(v, ['domstate', dom])).trim() === 'running';
      if (!running) continue;
      if (revert) {
        io.err(`note: ${dom} is running: libvirt's filterref takes effect at its next start; nwf-fast keeps protecting it from its live metadata until then\n`);
        continue;
      }
      const meta = metadataForVirsh(e.xml, f);
      if (meta) {
        await virshOut(v, ['metadata', dom, '--uri', NWF_METADATA_NS, '--key', NWF_METADATA_PREFIX, '--set', meta, '--live']);
        io.err(`note: ${dom} is running: its live metadata is set (nwf-fast protects it at the next reconcile); libvirt's filterref stays in force next to it until the domain's next start\n`);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return 0;
}
