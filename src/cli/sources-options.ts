// The source options shared by compile, explain and load.
import { loadSources, type LoadedSources } from '../resolve/sources.js';
import { many, type OptionSpec, type ParsedArgs } from './args.js';

export const SOURCE_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  filters: { value: true, repeatable: true, arg: 'DIR', help: 'directory of nwfilter XML; later directories override earlier names' },
  'no-bundled': { value: false, help: 'do not include the bundled library of the 24 standard filters' },
  binding: { value: true, repeatable: true, arg: 'FILE|DIR', help: 'filterbinding XML (libvirt <filterbinding>)' },
  domain: { value: true, repeatable: true, arg: 'FILE|DIR', help: 'domain XML; interfaces without <target dev> are skipped' },
  libvirt: { value: false, help: 'read a live libvirt host: /etc/libvirt/nwfilter, /run/libvirt/qemu, /run/libvirt/nwfilter-binding' },
  'allow-empty': { value: false, help: "with --libvirt: accept a host without libvirt's directories (an empty policy) instead of failing" },
};

export function sourcesFrom(p: ParsedArgs): LoadedSources {
  return loadSources({
    filterDirs: many(p, 'filters'),
    bundled: !p.flags.has('no-bundled'),
    bindingPaths: many(p, 'binding'),
    domainPaths: many(p, 'domain'),
    libvirt: p.flags.has('libvirt'),
    allowEmpty: p.flags.has('allow-empty'),
  });
}
