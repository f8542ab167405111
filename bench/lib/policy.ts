// The benchmark's host: N interfaces vnet0..vnet{N-1}, each bound to
// clean-traffic with its own MAC and IP, and the compile paths measured on it.
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { nftJsonText as batchJsonText } from '../../src/backends/nft/serialize.js';
import { encodeConfig, planInterface } from '../../src/backends/bpf/plan.js';
import type { BpfInterfaceLowering } from '../../src/backends/bpf/lower.js';
import { MAP_NAMES } from '../../src/backends/bpf/names.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { resolveInterface, resolvePolicy } from '../../src/resolve/resolve.js';
import { loadSources } from '../../src/resolve/sources.js';
import type { FilterDef, InterfaceBinding } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';

export const FILTER = 'clean-traffic';
/** The peer (frames' destination): not a protected port. */
export const PEER_MAC = '52:54:00:fe:00:01';
export const PEER_IP = '10.254.0.1';
/** Source address of the spoofed flood: no VM's address, old or new. */
export const SPOOF_IP = '10.253.0.66';
/** The address vm0 (vnet0) changes to and back in the IP-change measurements. */
export const ALT_IP = '10.252.0.1';

const hex2 = (n: number): string => (n & 255).toString(16).padStart(2, '0');

export const portName = (i: number): string => `vnet${i}`;
/** 52:54:00:XX:XX:XX from i + 1 (vnet0 has 52:54:00:00:00:01). */
export function portMac(i: number): string {
  const k = i + 1;
  return `52:54:00:${hex2(k >> 16)}:${hex2(k >> 8)}:${hex2(k)}`;
}
/** 10.1.0.1 for vnet0, unique up to 2^16 ports per /16. */
export function portIp(i: number): string {
  const k = i + 1;
  return `10.${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
}

let filtersCache: Map<string, FilterDef> | undefined;
/** The bundled standard filters (nwf-fast's rewrite of libvirt's). */
export function filters(): Map<string, FilterDef> {
  return (filtersCache ??= loadSources({ filterDirs: [], bundled: true, bindingPaths: [], domainPaths: [], libvirt: false }).filters);
}

/** libvirt `<filterbinding>` XML of port i (as virsh nwfilter-binding-create takes it). */
export function bindingXml(i: number, ip = portIp(i)): string {
  return bindingWith(i, `<parameter name='IP' value='${ip}'/>`);
}

/** Port i bound to clean-traffic without an IP: the address is learned from the VM's first IPv4 frame (CTRL_IP_LEARNING=any). */
export function learnBindingXml(i: number): string {
  return bindingWith(i, "<parameter name='CTRL_IP_LEARNING' value='any'/>");
}

function bindingWith(i: number, params: string): string {
  return [
    '<filterbinding>',
    `  <owner><name>vm${i}</name><uuid>00000000-0000-4000-8000-${(i + 1).toString(16).padStart(12, '0')}</uuid></owner>`,
    `  <portdev name='${portName(i)}'/>`,
    `  <mac address='${portMac(i)}'/>`,
    `  <filterref filter='${FILTER}'>${params}</filterref>`,
    '</filterbinding>',
    '',
  ].join('\n');
}

/** The XML texts of N bindings (inputs, as they would be read from disk). */
export function bindingTexts(n: number, ipOf: (i: number) => string = portIp): string[] {
  return Array.from({ length: n }, (_, i) => bindingXml(i, ipOf(i)));
}

export function parseBindings(texts: readonly string[]): InterfaceBinding[] {
  return texts.map((t, i) => parseFilterBindingXml(t, `binding-${i}.xml`));
}

export function resolveAll(bindings: readonly InterfaceBinding[]): PolicyIR {
  return resolvePolicy(filters(), bindings);
}

/** resolve + lower + serialize: the nft JSON text of one generation. */
export function nftJsonText(ir: PolicyIR, opts: { optimize?: boolean } = {}): string {
  return batchJsonText(lowerToNft(ir, opts).batch);
}

/** Parse + resolve + lower + serialize, from binding XML texts to nft JSON text (`optimize: false`: without the nft optimizer). */
export function compileNft(texts: readonly string[], opts: { optimize?: boolean } = {}): string {
  return nftJsonText(resolveAll(parseBindings(texts)), opts);
}

/** The BPF backend's per-interface work without clang: plan (shape/value split) and encode nwf_cfg. */
export function planAndEncode(ir: PolicyIR): number {
  let bytes = 0;
  for (const p of ir.interfaces) bytes += encodeConfig(planInterface(p)).length;
  return bytes;
}

/** The nwf_cfg value for vnet0 with another IP (what an in-place update writes), from its binding text. */
export function vm0Config(ip: string): Pick<BpfInterfaceLowering, 'shapeId' | 'maps'> {
  const b = parseFilterBindingXml(bindingXml(0, ip), 'binding-0.xml');
  const plan = planInterface(resolveInterface(filters(), b));
  return { shapeId: plan.shapeId, maps: [{ map: MAP_NAMES.cfg, key: new Uint8Array(4), value: encodeConfig(plan) }] };
}
