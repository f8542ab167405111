// libvirt domain XML for test guests: <domain type='qemu'> (TCG: nested KVM
// hangs on this machine), direct kernel boot of the guest image, no disk, the
// serial console to a file, virtio NICs on a bridge (QEMU's own virtio
// backend: no vhost-net here), each with or without a <filterref>.
import { randomUUID } from 'node:crypto';
import { CODES, NwfError } from '../../util/errors.js';
import type { GuestImage } from './image.js';
import { QEMU } from './image.js';
import { scenarioCmdline, type GuestScenario } from './scenario.js';

const XML_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };
export const xmlEscape = (s: string): string => s.replace(/[&<>'"]/g, (c) => XML_ESC[c] as string);

export interface FilterRefSpec {
  filter: string;
  /** Repeated values make a list (several <parameter> elements of one name). */
  params?: Readonly<Record<string, string | readonly string[]>>;
}

export interface InterfaceSpec {
  mac: string;
  /** Default br0. */
  bridge?: string;
  /** libvirt's nwfilter on this NIC; none when absent. */
  filterref?: FilterRefSpec;
  /** The tap name (<target dev>); default: libvirt picks vnetN. */
  targetDev?: string;
}

export interface DomainSpec {
  name: string;
  /** Default: a random UUID. */
  uuid?: string;
  /** Default 128. */
  memoryMiB?: number;
  /** NICs present at boot, in order (the guest's NIC 0, 1, ...). */
  interfaces: readonly InterfaceSpec[];
  /** The guest's scenario: the kernel command line. */
  scenario: GuestScenario;
  /** Where the daemon writes the serial console (a path in its private view). */
  consolePath: string;
  /** Raw XML placed inside <metadata> (elements in their own namespaces). */
  metadata?: string;
}

/** Kernel command line of a test guest (before its scenario words). */
export const GUEST_KERNEL_ARGS = ['console=ttyS0', 'panic=-1', 'ipv6.disable=1', 'quiet'];

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/** One <filterref> element, indented by `indent`. */
export function filterRefXml(f: FilterRefSpec, indent = ''): string {
  const params = Object.entries(f.params ?? {}).flatMap(([k, v]) => (typeof v === 'string' ? [v] : v).map((x) => `${indent}  <parameter name='${xmlEscape(k)}' value='${xmlEscape(x)}'/>`));
  if (!params.length) return `${indent}<filterref filter='${xmlEscape(f.filter)}'/>`;
  return [`${indent}<filterref filter='${xmlEscape(f.filter)}'>`, ...params, `${indent}</filterref>`].join('\n');
}

/** An <interface type='bridge'> element (also what `virsh attach-device` takes for a hot-plug). */
export function interfaceXml(i: InterfaceSpec, indent = ''): string {
  const lines = [
    `${indent}<interface type='bridge'>`,
    `${indent}  <mac address='${xmlEscape(i.mac)}'/>`,
    `${indent}  <source bridge='${xmlEscape(i.bridge ?? 'br0')}'/>`,
    ...(i.targetDev ? [`${indent}  <target dev='${xmlEscape(i.targetDev)}'/>`] : []),
    `${indent}  <model type='virtio'/>`,
    `${indent}  <driver name='qemu'/>`,
    `${indent}  <rom enabled='no'/>`,
    ...(i.filterref ? [filterRefXml(i.filterref, `${indent}  `)] : []),
    `${indent}</interface>`,
  ];
  return lines.join('\n');
}

/** The domain XML of a test guest booting `image`. */
export function domainXml(spec: DomainSpec, image: Pick<GuestImage, 'kernel' | 'initrd'>): string {
  if (!NAME_RE.test(spec.name)) throw new NwfError(CODES.VALUE_INVALID, `vm: invalid domain name ${JSON.stringify(spec.name)}`, { expected: '[A-Za-z0-9_.-]{1,64}' });
  const nics = spec.scenario.nics;
  spec.interfaces.forEach((i, n) => {
    if (nics[n]?.mac !== i.mac) throw new NwfError(CODES.VALUE_INVALID, `vm ${spec.name}: interface ${n} (${i.mac}) is not the scenario's NIC ${n} (${nics[n]?.mac ?? 'none'})`);
  });
  const cmdline = [...GUEST_KERNEL_ARGS, ...scenarioCmdline(spec.scenario)].join(' ');
  return [
    `<domain type='qemu'>`,
    `  <name>${xmlEscape(spec.name)}</name>`,
    `  <uuid>${xmlEscape(spec.uuid ?? randomUUID())}</uuid>`,
    ...(spec.metadata !== undefined ? [`  <metadata>`, spec.metadata, `  </metadata>`] : []),
    `  <memory unit='MiB'>${spec.memoryMiB ?? 128}</memory>`,
    `  <vcpu>1</vcpu>`,
    `  <os>`,
    `    <type arch='x86_64' machine='pc'>hvm</type>`,
    `    <kernel>${xmlEscape(image.kernel.path)}</kernel>`,
    `    <initrd>${xmlEscape(image.initrd)}</initrd>`,
    `    <cmdline>${xmlEscape(cmdline)}</cmdline>`,
    `  </os>`,
    `  <features><acpi/></features>`,
    `  <clock offset='utc'/>`,
    `  <on_poweroff>destroy</on_poweroff>`,
    `  <on_reboot>destroy</on_reboot>`,
    `  <on_crash>destroy</on_crash>`,
    `  <devices>`,
    `    <emulator>${QEMU}</emulator>`,
    ...spec.interfaces.map((i) => interfaceXml(i, '    ')),
    `    <serial type='file'>`,
    `      <source path='${xmlEscape(spec.consolePath)}' append='on'/>`,
    `      <target port='0'/>`,
    `    </serial>`,
    `    <memballoon model='none'/>`,
    `  </devices>`,
    `</domain>`,
    '',
  ].join('\n');
}
