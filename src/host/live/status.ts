// The live host's part of `nwf-fast status`: every port on a managed bridge
// whose name matches tap_patterns, and who protects it right now:
//   nwf-fast      nwf-fast's rules are in force, libvirt's dispatch is gone
//   both          both are in force (takeover not done yet, or native mode
//                 with a domain that still has a libvirt filterref)
//   libvirt       only libvirt's rules
//   unprotected   neither
// A port whose interface has no filterref (an unfiltered port, ports.ts) is
// 'nwf-fast' (its explicit accept entries are in force) and `unfiltered`.
import { hostRunner, inNetns } from '../netns.js';
import { isManagedBridge, isTapName } from '../config.js';
import { tapsInForce } from './apply.js';
import type { LiveHost } from './host.js';
import { isUnfiltered } from './ports.js';

export type PortProtection = 'nwf-fast' | 'both' | 'libvirt' | 'unprotected';

export interface LivePortStatus {
  port: string;
  bridge: string;
  protection: PortProtection;
  /** The owner domain in the desired state, if any. */
  owner?: string;
  /** The desired state has it as unfiltered: its interface has no filterref (not filtered, as libvirt). */
  unfiltered?: true;
}

export interface LiveStatus {
  mode: 'takeover' | 'native';
  ports: LivePortStatus[];
  counts: Record<PortProtection, number>;
}

interface IpLink {
  ifname: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
}

/** Bridge ports (name, bridge) in the namespace, from `ip -d -j link show`. */
export async function bridgePorts(host: LiveHost): Promise<{ port: string; bridge: string }[]> {
  const r = await (host.opts.runner ?? hostRunner()).run(inNetns(host.opts.netns, ['ip', '-d', '-j', 'link', 'show']), { timeoutMs: 30_000 });
  const links = JSON.parse(r.stdout || '[]') as IpLink[];
  const bridges = new Set(links.filter((l) => l.linkinfo?.info_kind === 'bridge').map((l) => l.ifname));
  return links.filter((l) => l.master && bridges.has(l.master)).map((l) => ({ port: l.ifname, bridge: l.master as string }));
}

export async function liveStatus(host: LiveHost): Promise<LiveStatus> {
  const c = host.config;
  const ports = (await bridgePorts(host)).filter((p) => isManagedBridge(c, p.bridge) && isTapName(c, p.port));
  const taps = ports.map((p) => p.port);
  const [inForce, libvirt] = await Promise.all([tapsInForce(taps, host.applyOptions), host.libvirtDispatch(taps)]);
  const desired = new Map(host.ports().map((p) => [p.tap, p]));
  const counts: Record<PortProtection, number> = { 'nwf-fast': 0, both: 0, libvirt: 0, unprotected: 0 };
  const out: LivePortStatus[] = ports.map((p) => {
    const n = inForce.has(p.port);
    const l = libvirt.has(p.port);
    const protection: PortProtection = n && l ? 'both' : n ? 'nwf-fast' : l ? 'libvirt' : 'unprotected';
    counts[protection]++;
    const d = desired.get(p.port);
    return { port: p.port, bridge: p.bridge, protection, ...(d ? { owner: d.owner.name } : {}), ...(d && isUnfiltered(d) ? { unfiltered: true as const } : {}) };
  });
  return { mode: c.mode, ports: out.sort((a, b) => (a.port < b.port ? -1 : 1)), counts };
}
